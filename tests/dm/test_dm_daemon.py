"""Device-mapper tier: lvmsuperd in a guest kernel with real device-mapper, clients as
unprivileged users, activation on. What the daemon returns is checked against the
kernel (device nodes, `blockdev`, data read back), not against the daemon itself.

Scenarios are grouped (TCG makes every LVM command cost ~0.3 s): each test earns its
minute.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

import rig
from lvmsuper.client import LvmFailed

MiB = 2**20
PATTERN = b"lvmsuper-dm-tier\n" * 4096  # 68 KiB, recognisable


@pytest.fixture
def admin(daemon: rig.Daemon, lvm: rig.Sandbox) -> Iterator[Any]:
    lvm.lvm("pvcreate", *lvm.loops[:3])
    lvm.lvm("vgcreate", "vgdm", lvm.loops[0], lvm.loops[1])
    client = rig.client_as("lvmst-admin", daemon.socket)
    try:
        yield client
    finally:
        client.close()
        lvm.lvm("vgchange", "--activate", "n", "vgdm", check=False)


def size_of(path: str) -> int:
    out = subprocess.run(["blockdev", "--getsize64", path], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


def write(path: str, data: bytes, offset: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_SYNC)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def read(path: str, size: int, offset: int = 0) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def test_activation_cycle_and_resize_seen_by_the_kernel(admin: Any, lvm: rig.Sandbox) -> None:
    lv = admin.lvcreate("vgdm", "act", size=8 * MiB)
    assert lv.active is True and lv.permissions == "rw"
    assert lv.path == "/dev/vgdm/act" and os.path.exists(lv.path)
    assert size_of(lv.path) == lv.size == 8 * MiB
    assert lv.devices == [lvm.loops[0]]

    off = admin.call("lvchange", lv="vgdm/act", activate=False)
    assert off.active is False and not os.path.exists("/dev/vgdm/act")
    on = admin.call("lvchange", lv="vgdm/act", activate=True)
    assert on.active is True and os.path.exists("/dev/vgdm/act")

    grown = admin.lvresize("vgdm/act", 20 * MiB)
    assert grown.size == 20 * MiB == size_of("/dev/vgdm/act")
    shrunk = admin.lvresize("vgdm/act", 12 * MiB, force=True)
    assert shrunk.size == 12 * MiB == size_of("/dev/vgdm/act")

    ro = admin.call("lvchange", lv="vgdm/act", permission="r")
    assert ro.permissions == "r"
    with pytest.raises(OSError):
        write("/dev/vgdm/act", b"x")
    admin.call("lvchange", lv="vgdm/act", permission="rw")

    quiet = admin.lvcreate("vgdm", "quiet", size=4 * MiB, activate=False, zero=False)
    assert quiet.active is False and not os.path.exists("/dev/vgdm/quiet")

    vg_off = admin.call("vgchange", vg="vgdm", activate=False)
    assert vg_off.name == "vgdm"
    assert all(x.active is False for x in admin.lvs(vg="vgdm"))
    assert not os.path.exists("/dev/vgdm/act")
    admin.call("vgchange", vg="vgdm", activate=True)
    assert all(x.active is True for x in admin.lvs(vg="vgdm"))
    assert os.path.exists("/dev/vgdm/act") and os.path.exists("/dev/vgdm/quiet")


def test_snapshot_keeps_the_origin_data(admin: Any) -> None:
    origin = admin.lvcreate("vgdm", "origin", size=8 * MiB)
    write(origin.path, PATTERN)
    snap = admin.lvcreate("vgdm", "snap", size=4 * MiB, type="snapshot", origin="origin")
    assert snap.origin == "origin" and snap.active is True
    assert isinstance(snap.data_percent, float)
    write(origin.path, b"\0" * len(PATTERN))  # the origin changes after the snapshot
    assert read(snap.path, len(PATTERN)) == PATTERN
    assert read(origin.path, len(PATTERN)) == b"\0" * len(PATTERN)
    assert admin.lvremove("vgdm/snap") == {"removed": ["vgdm/snap"]}
    assert not os.path.exists("/dev/vgdm/snap")


def test_thin_pool_volume_and_snapshot(admin: Any) -> None:
    pool = admin.lvcreate("vgdm", "pool", size=16 * MiB, type="thin-pool")
    assert pool.segtype == "thin-pool" and isinstance(pool.data_percent, float)
    assert isinstance(pool.metadata_percent, float)
    thin = admin.lvcreate("vgdm", "thin", type="thin", pool="pool", virtual_size=64 * MiB)
    assert thin.segtype == "thin" and thin.pool == "pool" and thin.size == 64 * MiB
    assert size_of(thin.path) == 64 * MiB
    write(thin.path, PATTERN)
    used = admin.lvs(names=["vgdm/pool"])[0].data_percent
    assert used is not None and used > 0
    tsnap = admin.lvcreate("vgdm", "tsnap", type="snapshot", origin="thin")
    assert tsnap.pool == "pool" and tsnap.origin == "thin"
    for name in ("tsnap", "thin", "pool"):
        admin.lvremove(f"vgdm/{name}")
    assert admin.lvs(vg="vgdm") == []


def test_pvmove_job_moves_data_intact(admin: Any, lvm: rig.Sandbox) -> None:
    lv = admin.lvcreate("vgdm", "moving", size=24 * MiB, devices=[lvm.loops[0]])
    data = os.urandom(1 * MiB)
    write(lv.path, data, 3 * MiB)
    ref = admin.call("pvmove", source=lvm.loops[0], destination=lvm.loops[1])
    seen: list[int] = []
    for _ in range(1200):
        job = admin.call("job_status", job=ref.id)
        if job.progress is not None:
            seen.append(job.progress)
        if job.state != "running":
            break
        time.sleep(0.1)
    assert job.state == "succeeded", job.error
    assert seen and seen[-1] == 100 and seen == sorted(seen)
    assert admin.lvs(names=["vgdm/moving"])[0].devices == [lvm.loops[1]]
    assert read("/dev/vgdm/moving", len(data), 3 * MiB) == data


def test_open_lv_cannot_be_removed_or_deactivated(admin: Any) -> None:
    lv = admin.lvcreate("vgdm", "busy", size=4 * MiB)
    fd = os.open(lv.path, os.O_RDONLY | os.O_EXCL)  # held open, as a VM would
    try:
        with pytest.raises(LvmFailed) as err:
            admin.lvremove("vgdm/busy")
        assert "in use" in err.value.message or "open" in err.value.message
        with pytest.raises(LvmFailed) as err:
            admin.call("lvchange", lv="vgdm/busy", activate=False)
        assert "in use" in err.value.message or "open" in err.value.message
        assert admin.lvs(names=["vgdm/busy"])[0].active is True
    finally:
        os.close(fd)
    assert admin.lvremove("vgdm/busy") == {"removed": ["vgdm/busy"]}  # active, not open
    assert not os.path.exists("/dev/vgdm/busy")
