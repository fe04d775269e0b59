"""Shared VGs on a host without lvmlockd: the new parameters and methods against real LVM
on loop devices (what lvmlockd itself does is proven in the cluster tier, tests/cluster),
and lvmlockd's refusals, in LVM 2.03's own words, reaching the caller as LockConflict.
Nothing here changes what such a host sees: status shows no lockspace."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import rig
from lvmsuper.client import Client
from lvmsuper.client.errors import (InvalidRequest, LockConflict, LvmFailed, NotFound)

MiB = 1024 * 1024


@pytest.fixture
def client(daemon: rig.Daemon) -> Iterator[Client]:
    with Client(daemon.socket) as c:
        yield c


def test_no_lvmlockd_no_lockspaces(client: Client, daemon: rig.Daemon) -> None:
    status = client.status()
    assert status["lockspaces"] == [] and status["lost_lockspaces"] == []
    assert "lockspaces" not in rig.ctl(None, daemon.socket, "status").stdout


def test_vgcreate_shared_without_lvmlockd_fails_and_creates_nothing(
        client: Client, lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    before = lvm.state()
    with pytest.raises(LvmFailed) as info:
        client.vgcreate("svg", [lvm.loops[0]], shared=True)
    assert type(info.value) is LvmFailed  # no lock was refused: there is no lvmlockd
    assert "--shared" in info.value.data["argv"]
    assert lvm.state() == before
    vg = client.vgcreate("lvg", [lvm.loops[0]])
    assert vg.shared is False and vg.lock_type is None and vg.lock_args is None
    lv = client.lvcreate("lvg", "lv1", size=8 * MiB)
    assert lv.lock_args is None


def test_lockstart_and_lockstop_want_a_shared_vg(client: Client, daemon: rig.Daemon,
                                                 lvm: rig.Sandbox) -> None:
    lvm.lvm("vgcreate", "lvg", lvm.loops[0])
    before = lvm.state()
    for method in (client.lockstart, client.lockstop):
        with pytest.raises(InvalidRequest) as info:
            method(vg="lvg")
        assert info.value.data["field"] == "vg" and "not shared" in info.value.message
        with pytest.raises(NotFound):
            method(vg="nosuchvg")
        # the VG named by its UUID (LVM would take it): only its name is a name here
        uuid = lvm.report("vg", "vg_uuid", "lvg")[0]["vg_uuid"]
        for other in (uuid, uuid.replace("-", "")):
            with pytest.raises(InvalidRequest) as info:
                method(vg=other)
            assert info.value.data["field"] == "vg" and "UUID" in info.value.message
    assert lvm.state() == before
    # without vg: every shared VG's lockspace, of which there is none here
    assert client.lockstart() == {"started": []}
    assert client.lockstop() == {"stopped": []}
    out = rig.ctl(None, daemon.socket, "lockstart", "lvg")
    assert out.returncode == 1 and "InvalidRequest" in out.stderr


def test_activation_modes(client: Client, daemon: rig.Daemon, lvm: rig.Sandbox) -> None:
    lvm.lvm("vgcreate", "lvg", lvm.loops[0])
    client.lvcreate("lvg", "lv1", size=8 * MiB, activate=False)
    for mode in ("exclusive", "shared", False, True):
        assert client.lvchange("lvg/lv1", activate=mode).name == "lv1"
    assert client.vgchange("lvg", activate="exclusive").name == "lvg"
    # (a thin pool refused "shared": the cluster tier; no thin pool without device-mapper)
    before = lvm.state()
    for bad in ("ey", "Shared", 1, None):
        with pytest.raises(InvalidRequest) as info:
            client.call("lvchange", lv="lvg/lv1", activate=bad)
        assert info.value.data["field"] == "activate"
    assert lvm.state() == before
    out = rig.ctl(None, daemon.socket, "--json", "lvchange", "lvg/lv1", "--activate", "ey")
    assert out.returncode == 0 and json.loads(out.stdout)["name"] == "lv1"


LOCKED = """case "$1" in
  lvchange) printf '%s\\n' '{{' '"log": [' \\
    '{{"log_type":"error", "log_message":"LV locked by other host: {vg}/lv1"}},' \\
    '{{"log_type":"error", "log_message":"Failed to lock logical volume {vg}/lv1."}}' \\
    ']' '}}'; exit 5;;
  vgchange) printf '%s\\n' '{{' '"log": [' \\
    '{{"log_type":"error", "log_message":"VG {vg} lock failed: held by other host."}}' \\
    ']' '}}'; exit 5;;
esac"""


def test_lvmlockd_refusals_are_lock_conflicts(sandbox: rig.Sandbox, lvm: rig.Sandbox,
                                              users: object) -> None:
    """LVM's exit 5 with lvmlockd's words (as LVM 2.03.16 prints them in its JSON log)
    from a stand-in lvm for lvchange and vgchange; every other command is real LVM."""
    lvm.lvm("vgcreate", "lvg", lvm.loops[0])
    lvm.lvm("lvcreate", "--activate", "n", "-n", "lv1", "-L", "8m", "lvg")
    fake = rig.fake_lvm(sandbox, "locked", before=LOCKED.format(vg="lvg"))
    with rig.running(sandbox, "locked", lvm={"binary": fake}) as d, Client(d.socket) as c:
        with pytest.raises(LockConflict) as info:
            c.lvchange("lvg/lv1", activate="exclusive")
        data = info.value.data
        assert (data["object_type"], data["object_name"]) == ("lv", "lvg/lv1")
        assert data["holder"] is None  # a local VG's LV has no lease to read
        assert data["rc"] == 5 and isinstance(info.value, LvmFailed)
        with pytest.raises(LockConflict) as info:
            c.vgchange("lvg", activate="shared")
        assert (info.value.data["object_type"], info.value.data["object_name"]) == ("vg", "lvg")
