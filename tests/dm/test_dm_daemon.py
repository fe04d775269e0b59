"""Device-mapper tier: lvmsuperd in a guest kernel with real device-mapper, clients as
unprivileged users, activation on. What the daemon returns is checked against the
kernel (device nodes, `blockdev`, data read back), not against the daemon itself.

Scenarios are grouped (TCG makes every LVM command cost ~0.3 s): each test earns its
minute. Every call is made by an unprivileged user over a connection that user opened
(rig.client_as), and that client refuses to reconnect (as root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rig
from lvmsuper.client import LvmFailed
from lvmsuper.client.errors import ConnectionFailed, PermissionDenied

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


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def node_exists(path: str) -> bool:
    """Whether the LV's /dev node is there once udev has handled LVM's events (as a
    manager waits for before it uses a device: the kernel state comes first)."""
    subprocess.run(["udevadm", "settle", "--timeout=30"], check=False)
    return os.path.exists(path)


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
    assert lv.path == "/dev/vgdm/act" and node_exists(lv.path)
    assert size_of(lv.path) == lv.size == 8 * MiB
    assert lv.devices == [lvm.loops[0]]

    off = admin.call("lvchange", lv="vgdm/act", activate=False)
    assert off.active is False and not node_exists("/dev/vgdm/act")
    on = admin.call("lvchange", lv="vgdm/act", activate=True)
    assert on.active is True and node_exists("/dev/vgdm/act")

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
    assert quiet.active is False and not node_exists("/dev/vgdm/quiet")

    vg_off = admin.call("vgchange", vg="vgdm", activate=False)
    assert vg_off.name == "vgdm"
    assert all(x.active is False for x in admin.lvs(vg="vgdm"))
    assert not node_exists("/dev/vgdm/act")
    admin.call("vgchange", vg="vgdm", activate=True)
    assert all(x.active is True for x in admin.lvs(vg="vgdm"))
    assert node_exists("/dev/vgdm/act") and node_exists("/dev/vgdm/quiet")


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
    assert not node_exists("/dev/vgdm/snap")


def test_thin_pool_volume_and_snapshot(admin: Any, lvm: rig.Sandbox) -> None:
    pool = admin.lvcreate("vgdm", "pool", size=16 * MiB, type="thin-pool")
    assert pool.segtype == "thin-pool" and pool.active is True
    assert is_number(pool.data_percent) and is_number(pool.metadata_percent)
    thin = admin.lvcreate("vgdm", "thin", type="thin", pool="pool", virtual_size=64 * MiB)
    assert thin.segtype == "thin" and thin.pool == "pool" and thin.size == 64 * MiB
    assert thin.active is True and is_number(thin.data_percent)
    assert size_of(thin.path) == 64 * MiB
    write(thin.path, PATTERN)
    used = admin.lvs(names=["vgdm/pool"])[0].data_percent
    assert is_number(used) and used > 0
    assert admin.lvs(names=["vgdm/thin"])[0].data_percent > 0

    tsnap = admin.lvcreate("vgdm", "tsnap", type="snapshot", origin="thin")
    assert tsnap.pool == "pool" and tsnap.origin == "thin" and tsnap.segtype == "thin"
    # LVM creates thin snapshots with the activation-skip flag (lv_attr 'k'): inactive,
    # and skipped when the whole VG is activated; activating it by name activates it.
    assert tsnap.active is False and tsnap.attr[9] == "k"
    admin.vgchange("vgdm", activate=True)
    assert admin.lvs(names=["vgdm/tsnap"])[0].active is False
    tsnap = admin.lvchange("vgdm/tsnap", activate=True)
    assert tsnap.active is True and node_exists("/dev/vgdm/tsnap")
    tsnap = admin.lvs(names=["vgdm/tsnap"])[0]
    assert tsnap.active is True and is_number(tsnap.data_percent) and tsnap.data_percent > 0
    write(thin.path, b"\0" * len(PATTERN))  # the origin changes after the snapshot
    assert read(tsnap.path, len(PATTERN)) == PATTERN
    for name in ("tsnap", "thin", "pool"):
        admin.lvremove(f"vgdm/{name}")
    assert admin.lvs(vg="vgdm") == []


# pvmove copies through a dm-mirror device (vgdm-pvmove0) with kcopyd. This module
# parameter is the share of time, in percent, that copy may spend on I/O: lowered, a
# move lasts long enough to be watched (LVM prints progress every `-i 1` second, and
# under TCG one poll takes one or two) or cancelled while under way. The effect is far
# from linear (measured under TCG, 40 MiB): 20% took 2.5-15 s, 3% 4-5 s with two or
# three progress values in between, 1% stays at 0% for many seconds.
MIRROR_THROTTLE = Path("/sys/module/dm_mirror/parameters/raid1_resync_throttle")
MOVE_SIZE = 40 * MiB  # of the 60 MiB a 64 MiB loop PV holds


def kernel_has_dm(name: str) -> bool:
    """Whether the kernel has a device-mapper device of that name (sysfs, not udev)."""
    return any(p.read_text().strip() == name for p in Path("/sys/block").glob("dm-*/dm/name"))


@contextlib.contextmanager
def mirror_throttle(percent: int) -> Iterator[None]:
    old = MIRROR_THROTTLE.read_text().strip()
    MIRROR_THROTTLE.write_text(f"{percent}\n")
    try:
        yield
    finally:
        MIRROR_THROTTLE.write_text(f"{old}\n")


def fill(path: str, size: int) -> dict[int, bytes]:
    """Random MiBs at the start, middle and end of an LV, to read back after a move."""
    chunks = {off: os.urandom(MiB) for off in (0, size // 2, size - MiB)}
    for off, data in chunks.items():
        write(path, data, off)
    return chunks


def unchanged(path: str, chunks: dict[int, bytes]) -> bool:
    return all(read(path, len(data), off) == data for off, data in chunks.items())


def watch(admin: Any, job_id: str, until: Any, limit: float = 240) -> tuple[Any, list[int]]:
    """Polls job_status until ``until(job)`` or the job ends; the progress values seen."""
    seen: list[int] = []
    deadline = time.monotonic() + limit
    while True:
        job = admin.job_status(job_id)
        if job.progress is not None and (not seen or seen[-1] != job.progress):
            seen.append(job.progress)
        if job.state != "running" or until(job):
            return job, seen
        assert time.monotonic() < deadline, f"job {job_id} still running: {job}"
        time.sleep(0.1)


def test_pvmove_job_reports_progress_and_moves_data_intact(admin: Any,
                                                          lvm: rig.Sandbox) -> None:
    lv = admin.lvcreate("vgdm", "moving", size=MOVE_SIZE, devices=[lvm.loops[0]])
    chunks = fill(lv.path, MOVE_SIZE)
    with mirror_throttle(3):
        ref = admin.call("pvmove", source=lvm.loops[0], destination=lvm.loops[1])
        job, seen = watch(admin, ref.id, until=lambda job: False)
    assert job.state == "succeeded", job.error
    assert job.uid == pwd.getpwnam("lvmst-admin").pw_uid  # not root's job
    # 100 alone is what the daemon sets on success: only a value in between shows that
    # LVM's progress lines were followed.
    assert any(0 < p < 100 for p in seen), seen
    assert seen == sorted(seen) and seen[-1] == 100, seen
    assert admin.lvs(names=["vgdm/moving"])[0].devices == [lvm.loops[1]]
    assert unchanged("/dev/vgdm/moving", chunks)
    assert admin.pvs(names=[lvm.loops[0]])[0].used == 0


def test_pvmove_job_cancelled_under_way_leaves_the_lv_on_its_source(
        admin: Any, lvm: rig.Sandbox, daemon: rig.Daemon) -> None:
    lv = admin.lvcreate("vgdm", "staying", size=MOVE_SIZE, devices=[lvm.loops[0]])
    chunks = fill(lv.path, MOVE_SIZE)
    with mirror_throttle(1):  # the copy crawls: the abort lands mid-move
        ref = admin.call("pvmove", source=lvm.loops[0], destination=lvm.loops[1])
        # Under way: the kernel has the pvmove mirror (an abort before that finds no
        # move to stop, and the move would go on).
        job, _ = watch(admin, ref.id, until=lambda job: kernel_has_dm("vgdm-pvmove0"))
        assert job.state == "running" and kernel_has_dm("vgdm-pvmove0"), job
        admin.job_cancel(ref.id)  # LVM's `pvmove --abort`
        job, _ = watch(admin, ref.id, until=lambda job: False)
    assert job.state == "cancelled", job
    assert admin.lvs(names=["vgdm/staying"])[0].devices == [lvm.loops[0]]
    assert admin.pvs(names=[lvm.loops[1]])[0].used == 0
    hidden = lvm.lvm("lvs", "-a", "--noheadings", "-o", "lv_name", "vgdm").stdout.split()
    assert not [name for name in hidden if "pvmove" in name], hidden
    assert not kernel_has_dm("vgdm-pvmove0")
    assert unchanged("/dev/vgdm/staying", chunks)
    audit = [line for line in daemon.log().splitlines() if "audit: pvmove" in line]
    assert "result=cancelled" in audit[-1], audit


def lvm_errors(err: pytest.ExceptionInfo[LvmFailed]) -> list[str]:
    """The error lines of LVM's own command log that the daemon passed on."""
    return [entry["message"] for entry in err.value.data["log"] if entry["type"] == "error"]


def test_open_lv_cannot_be_removed_or_deactivated(admin: Any) -> None:
    lv = admin.lvcreate("vgdm", "busy", size=4 * MiB)
    in_use = re.compile(r"Logical volume vgdm/busy in use\.")  # LVM's open-count check
    fd = os.open(lv.path, os.O_RDONLY | os.O_EXCL)  # held open, as a VM would
    try:
        with pytest.raises(LvmFailed) as err:
            admin.lvremove("vgdm/busy")
        assert any(in_use.fullmatch(m) for m in lvm_errors(err)), err.value.data
        with pytest.raises(LvmFailed) as err:
            admin.call("lvchange", lv="vgdm/busy", activate=False)
        assert any(in_use.fullmatch(m) for m in lvm_errors(err)), err.value.data
        assert admin.lvs(names=["vgdm/busy"])[0].active is True
    finally:
        os.close(fd)
    assert admin.lvremove("vgdm/busy") == {"removed": ["vgdm/busy"]}  # active, not open
    assert not node_exists("/dev/vgdm/busy")


def test_client_as_is_the_user_and_never_reconnects_as_root(daemon: rig.Daemon) -> None:
    query = rig.client_as("lvmst-query", daemon.socket)
    try:
        assert query.ping() == {}
        with pytest.raises(PermissionDenied):  # a manage call: lvmst-query, not root
            query.call("vgcreate", name="vgnever", devices=daemon.sandbox.loops[3:])
        query._sock.shutdown(socket.SHUT_RDWR)  # the connection breaks
        with pytest.raises(ConnectionFailed, match="does not reconnect"):
            query.ping()
        with pytest.raises(ConnectionFailed, match="does not reconnect"):
            query.ping()
    finally:
        query.close()
