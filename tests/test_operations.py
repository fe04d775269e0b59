"""The rest of the operation set on real LVM (host tier, no device-mapper): every result
is checked against what LVM reports when run directly as root."""

from __future__ import annotations

import subprocess
import time

import pytest

import rig
from lvmsuper.client import (AlreadyExists, Client, InvalidRequest, LvmFailed, NotFound,
                             PermissionDenied)

pytestmark = pytest.mark.system
MiB = 2**20
ALL_TAG_CHARS = "Az09_+.-/=!:&#"


@pytest.fixture
def client(daemon: rig.Daemon, lvm: rig.Sandbox) -> Client:
    lvm.lvm("pvcreate", *lvm.loops[:3])
    lvm.lvm("vgcreate", "vgops", lvm.loops[0], lvm.loops[1])
    c = Client(daemon.socket)
    return c


def test_tags_round_trip_on_pv_vg_lv(client: Client, lvm: rig.Sandbox) -> None:
    tag = "t" + ALL_TAG_CHARS
    pv = client.call("pvchange", device=lvm.loops[0], add_tags=[tag, "x"])
    assert pv.tags == sorted([tag, "x"]) or set(pv.tags) == {tag, "x"}
    assert set(lvm.report("pv", "pv_tags", lvm.loops[0])[0]["pv_tags"].split(",")) == {tag, "x"}
    pv = client.call("pvchange", device=lvm.loops[0], del_tags=["x"])
    assert pv.tags == [tag]
    vg = client.call("vgchange", vg="vgops", add_tags=[tag])
    assert vg.tags == [tag] and lvm.report("vg", "vg_tags", "vgops")[0]["vg_tags"] == tag
    client.lvcreate("vgops", "tagged", size=MiB)
    lv = client.call("lvchange", lv="vgops/tagged", add_tags=["IU_abc", tag])
    assert set(lv.tags) == {"IU_abc", tag}
    assert [x.full_name for x in client.lvs(tags=["IU_abc"])] == ["vgops/tagged"]
    lv = client.call("lvchange", lv="vgops/tagged", del_tags=["IU_abc"])
    assert lv.tags == [tag]
    with pytest.raises(InvalidRequest) as err:
        client.call("lvchange", lv="vgops/tagged")
    assert err.value.data["field"] == "activate"


def test_vgextend_vgreduce_and_allocatable(client: Client, lvm: rig.Sandbox) -> None:
    vg = client.call("vgextend", vg="vgops", devices=[lvm.loops[2]])
    assert vg.pv_count == 3 and lvm.report("pv", "vg_name", lvm.loops[2])[0]["vg_name"] == "vgops"
    pv = client.call("pvchange", device=lvm.loops[2], allocatable=False)
    assert pv.allocatable is False
    assert lvm.report("pv", "pv_attr", lvm.loops[2])[0]["pv_attr"][0] != "a"
    vg = client.call("vgreduce", vg="vgops", devices=[lvm.loops[2]])
    assert vg.pv_count == 2 and lvm.report("pv", "vg_name", lvm.loops[2])[0]["vg_name"] == ""
    with pytest.raises(InvalidRequest):
        client.call("vgreduce", vg="vgops")
    with pytest.raises(NotFound):
        client.call("vgextend", vg="nosuch", devices=[lvm.loops[2]])


def test_renames(client: Client, lvm: rig.Sandbox) -> None:
    client.lvcreate("vgops", "old", size=MiB)
    lv = client.call("lvrename", lv="vgops/old", new_name="new")
    assert lv.full_name == "vgops/new" and lvm.report("lv", "lv_name", "vgops/new")
    client.lvcreate("vgops", "other", size=MiB)
    with pytest.raises(AlreadyExists):
        client.call("lvrename", lv="vgops/other", new_name="new")
    vg = client.call("vgrename", vg="vgops", new_name="vgren")
    assert vg.name == "vgren" and lvm.report("vg", "vg_name") == [{"vg_name": "vgren"}]
    with pytest.raises(NotFound):
        client.call("vgrename", vg="vgops", new_name="vgx")


def test_pvresize_after_the_device_grew(client: Client, lvm: rig.Sandbox) -> None:
    dev = lvm.loops[2]
    before = client.pvs(names=[dev])[0].size
    image = lvm.dir / "disk2.img"
    with open(image, "r+b") as fh:
        fh.truncate(96 * MiB)
    subprocess.run(["losetup", "--set-capacity", dev], check=True)
    try:
        pv = client.call("pvresize", device=dev)
        assert pv.size > before and pv.size == int(lvm.report("pv", "pv_size", dev)[0]["pv_size"])
        pv = client.call("pvresize", device=dev, size=80 * MiB)
        assert pv.size <= 80 * MiB
    finally:
        lvm.lvm("pvresize", "--yes", "--setphysicalvolumesize", "64m", dev, check=False)
        with open(image, "r+b") as fh:
            fh.truncate(64 * MiB)
        subprocess.run(["losetup", "--set-capacity", dev], check=True)


def test_lvcreate_options(client: Client, lvm: rig.Sandbox) -> None:
    striped = client.lvcreate("vgops", "striped", size=8 * MiB, stripes=2,
                              stripe_size=64 * 1024)
    assert striped.segtype == "striped" and sorted(striped.devices) == sorted(lvm.loops[:2])
    placed = client.lvcreate("vgops", "placed", size=4 * MiB, devices=[lvm.loops[1]],
                             contiguous=True)
    assert placed.devices == [lvm.loops[1]]
    assert lvm.report("lv", "devices", "vgops/placed")[0]["devices"].startswith(lvm.loops[1])
    with pytest.raises(InvalidRequest) as err:
        client.lvcreate("vgops", "snap", size=MiB, type="snapshot")
    assert err.value.data["field"] == "origin"
    with pytest.raises(InvalidRequest):
        client.lvcreate("vgops", "thin1", type="thin", pool="pool")


def test_device_mapper_operations_fail_typed_on_this_kernel(client: Client,
                                                            lvm: rig.Sandbox) -> None:
    """Without device-mapper in the kernel LVM refuses these; the caller gets LvmFailed
    with LVM's reason, and nothing is left half-made (the real thing runs in the
    device-mapper tier)."""
    if rig.has_device_mapper():
        pytest.skip("this kernel has device-mapper: covered by the device-mapper tier")
    client.lvcreate("vgops", "origin", size=4 * MiB)

    def objects() -> dict[str, object]:  # LVM may bump vg_seqno while rolling back
        state = lvm.state()
        return {**state, "vg": [{k: v for k, v in vg.items() if k != "vg_seqno"}
                                for vg in state["vg"]]}
    before = objects()
    for params in ({"name": "pool", "size": 8 * MiB, "type": "thin-pool"},
                   {"name": "snap", "size": 4 * MiB, "type": "snapshot", "origin": "origin"}):
        with pytest.raises(LvmFailed) as err:
            client.lvcreate("vgops", **params)
        assert err.value.data["argv"][1] == "lvcreate" and err.value.data["rc"] != 0
        assert "device-mapper" in err.value.message, err.value.message  # LVM's real reason
        assert objects() == before
    # LVM skips activation when the kernel has none and says so: active is unknown
    assert client.call("lvchange", lv="vgops/origin", activate=True).active is None


def test_destroy_role_for_vgreduce(daemon: rig.Daemon, client: Client,
                                   lvm: rig.Sandbox) -> None:
    code = ("from lvmsuper.client import Client, PermissionDenied\n"
            "try:\n"
            f"    Client().call('vgreduce', vg='vgops', devices=[{lvm.loops[1]!r}])\n"
            "except PermissionDenied as e:\n"
            "    print('denied', e.data['required'])\n")
    out = rig.python_as("lvmst-manage", code, daemon.socket)
    assert out.stdout.strip() == "denied destroy", out.stderr
    assert lvm.report("vg", "pv_count", "vgops")[0]["pv_count"] == "2"
    assert PermissionDenied.name == "PermissionDenied"


def test_cli_covers_the_operations(client: Client, daemon: rig.Daemon,
                                   lvm: rig.Sandbox) -> None:
    def ctl(*args: str) -> str:
        out = rig.ctl("lvmst-admin", daemon.socket, *args)
        assert out.returncode == 0, out.stderr
        return out.stdout
    assert "vgops" in ctl("vgextend", "vgops", lvm.loops[2]).split()
    ctl("lvcreate", "vgops", "cli", "--size", "4M", "--stripes", "2", "--stripe-size", "64K")
    assert "IU_x" in ctl("lvchange", "vgops/cli", "--addtag", "IU_x")
    ctl("pvchange", lvm.loops[2], "--allocatable", "n")
    assert lvm.report("pv", "pv_attr", lvm.loops[2])[0]["pv_attr"][0] != "a"
    assert "renamed" in ctl("lvrename", "vgops/cli", "renamed")
    assert "vgnew" in ctl("vgrename", "vgops", "vgnew")
    assert lvm.report("lv", "lv_full_name,lv_tags") == [
        {"lv_full_name": "vgnew/renamed", "lv_tags": "IU_x"}]
    assert "vgnew" in ctl("vgreduce", "vgnew", lvm.loops[2])


def test_finished_jobs_are_kept_for_the_configured_time(sandbox: rig.Sandbox, users: object,
                                                         lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgjob", lvm.loops[0])
    d = rig.Daemon(sandbox, "keep", jobs={"keep": 1}).start()
    try:
        with Client(d.socket) as c:
            ref = c.lvcreate("vgjob", "kept", size=MiB, wait=0)
            for _ in range(100):
                if c.call("job_status", job=ref.id).state == "succeeded":
                    break
                time.sleep(0.02)
            assert c.call("job_status", job=ref.id).result["full_name"] == "vgjob/kept"
            time.sleep(1.3)
            with pytest.raises(NotFound):
                c.call("job_status", job=ref.id)
    finally:
        d.stop()
