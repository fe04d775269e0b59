"""lv_open over D-Bus with a descriptor actually handed over, on the host tier: a private
dbus-daemon, the real polkitd deciding org.lvmsuper.open, an unprivileged caller in a
process of its own. As in tests/test_lv_open.py, a fake lvm reports vgopen/data active
on a spare loop device (the host has no device-mapper); everything else is real. Its
own module: only one daemon at a time can own the bus name."""

from __future__ import annotations

import hashlib
import json

import pytest

import rig
from lvmsuper.client.dbus import BUS_NAME
from test_dbus import ADMIN, Bus, Polkitd, bus, polkit  # noqa: F401
from test_lv_open import PATTERN, fake_active, spare, vg  # noqa: F401

pytestmark = pytest.mark.system

USER_CODE = """\
import asyncio, hashlib, json, os
from lvmsuper.client import AsyncClient, Client, InUse
out = {}
with Client(transport="dbus") as c:
    f = c.lv_open("vgopen/data", "rw")
    out["rw"] = [type(f).__name__, f.mode, os.geteuid() != 0]
    f.seek(4096); f.write(bytes(range(256)) * 256); f.close()
    r = c.lv_open("vgopen/data", "r"); r.seek(4096)
    out["r"] = [hashlib.sha256(r.read(65536)).hexdigest(), r.mode]
    r.close()
    first = c.lv_open("vgopen/data", "rw")
    try:
        c.lv_open("vgopen/data", "rw"); out["twice"] = "opened"
    except InUse as e:
        out["twice"] = e.name
    first.close()
    for i in range(20):
        c.lv_open("vgopen/data", ("r", "rw")[i % 2]).close()

async def main():
    async with AsyncClient(transport="dbus") as a:
        with await a.lv_open("vgopen/data", "r") as h:
            h.seek(4096)
            return hashlib.sha256(h.read(65536)).hexdigest()

out["async"] = asyncio.run(main())
out["fds"] = sorted(os.listdir("/proc/self/fd"))
print(json.dumps(out))
"""


def test_unprivileged_dbus_caller_gets_a_working_descriptor(
        sandbox: rig.Sandbox, polkit: Polkitd, bus: Bus, vg: str, spare: str) -> None:
    fake = fake_active(sandbox, "fakedbus", vg, spare)
    with rig.running(sandbox, "fakedbus", lvm={"binary": fake},
                     dbus={"enabled": True, "bus": bus.address}) as d:
        bus.wait_for_owner(BUS_NAME)
        warm = rig.run_as(ADMIN, [str(rig.VENV_BIN / "python"), "-c",
                                  "from lvmsuper.client import Client\n"
                                  "Client(transport='dbus').lv_open('vgopen/data', 'r')"
                                  ".close()"],
                          env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})
        assert warm.returncode == 0, warm.stderr
        baseline = d.steady_fd_count()
        proc = rig.run_as(ADMIN, [str(rig.VENV_BIN / "python"), "-c", USER_CODE],
                          env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address,
                               "PYTHONDONTWRITEBYTECODE": "1"})
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        digest = hashlib.sha256(PATTERN).hexdigest()
        assert out["rw"] == ["FileIO", "rb+", True], out
        assert out["r"] == [digest, "rb"] and out["async"] == digest, out
        assert out["twice"] == "InUse", out
        with open(spare, "rb") as dev:
            dev.seek(4096)
            assert dev.read(len(PATTERN)) == PATTERN
        assert d.settled_fd_count(baseline) == baseline
        audit = [ln for ln in d.log().splitlines() if "audit: lv_open " in ln]
        assert all("via dbus" in ln for ln in audit), audit
        assert sum("result=ok" in ln for ln in audit) == 25, audit  # warm + 24
        assert any("result=InUse" in ln for ln in audit), audit
