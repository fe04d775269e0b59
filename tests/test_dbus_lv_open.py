"""lv_open over D-Bus on the host tier (a private dbus-daemon, the real polkitd, real
users; no device-mapper, so no LV is active here): polkit's org.lvmsuper.open decides
who may open, a member reaches the LV (inactive: InvalidRequest), and descriptors a
caller sends to the daemon are closed (its descriptor count stays at baseline). A
descriptor actually handed over on D-Bus is tests/dm/test_dm_lv_open.py (root caller:
the guest has no polkitd)."""

from __future__ import annotations

import json

import pytest

import rig
from test_dbus import (ADMIN, MANAGE, QUERY, Bus, Polkitd, bus, calls, dd,  # noqa: F401
                       polkit)

pytestmark = pytest.mark.system


@pytest.fixture
def inactive_lv(lvm: rig.Sandbox) -> str:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgbusopen", lvm.loops[0])
    lvm.lvm("lvcreate", "--yes", "-n", "data", "-L", "4m", "vgbusopen")
    return "vgbusopen/data"


def test_polkit_open_action_decides(dd: rig.Daemon, bus: Bus, inactive_lv: str) -> None:
    """The test rules grant every org.lvmsuper action to the all-roles group, query and
    manage to their groups, never open: those are PermissionDenied naming the role;
    the member gets past polkit to the LV, which is inactive here."""
    todo = [("lv_open", {"lv": inactive_lv, "mode": "r"}),
            ("lv_open", {"lv": inactive_lv, "mode": "rw", "shared": True})]
    for user in (QUERY, MANAGE):
        out = calls(user, dd, bus, todo)
        assert [o.get("error") for o in out] == ["PermissionDenied"] * 2, (user, out)
        assert all(o["data"]["required"] == "open" for o in out), out
    out = calls(ADMIN, dd, bus, todo)
    assert [o.get("error") for o in out] == ["InvalidRequest"] * 2, out
    assert all("activate it first" in o["message"] for o in out), out
    audit = [ln for ln in dd.log().splitlines() if "audit: lv_open " in ln and "via dbus" in ln]
    assert any("PermissionDenied" in ln and '"mode": "rw"' in ln for ln in audit), audit
    assert any("InvalidRequest" in ln and '"mode": "r"' in ln for ln in audit), audit


SEND_FDS = """\
import asyncio, json, os, sys
from dbus_next.aio import MessageBus
from dbus_next import Message, Variant

async def main():
    bus = await MessageBus(bus_address=sys.argv[1], negotiate_unix_fd=True).connect()
    names = []
    for i in range(int(sys.argv[3])):
        r, w = os.pipe()
        body = {"lv": Variant("s", sys.argv[2]), "mode": Variant("s", "r"),
                "fd": Variant("h", 0)}
        reply = await bus.call(Message(destination="org.lvmsuper.Supervisor1",
                                       path="/org/lvmsuper/Supervisor1",
                                       interface="org.lvmsuper.Supervisor1", member="LvOpen",
                                       signature="a{sv}", body=[body], unix_fds=[r, w]))
        os.close(r); os.close(w)
        names.append(reply.error_name)
    print(json.dumps(names))

asyncio.run(main())
"""


def test_descriptors_sent_to_the_daemon_are_closed(dd: rig.Daemon, bus: Bus,
                                                    inactive_lv: str) -> None:
    """A caller that sends descriptors with its calls (here two per call, to LvOpen with
    a stray ``fd`` parameter) gets a typed error, and the daemon keeps none of them."""
    calls(ADMIN, dd, bus, [("ping", {})])
    baseline = dd.steady_fd_count()
    proc = rig.run_as(ADMIN, [str(rig.VENV_BIN / "python"), "-c", SEND_FDS, bus.address,
                              inactive_lv, "40"], env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["org.lvmsuper.Error.InvalidRequest"] * 40
    assert dd.settled_fd_count(baseline) == baseline
    assert "refuses file descriptors" not in dd.log()  # this bus carries them both ways
