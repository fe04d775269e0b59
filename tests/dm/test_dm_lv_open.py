"""Device-mapper tier, issue 15 point 1: real I/O through a descriptor lvmsuperd opened
(``lv_open``). An unprivileged user writes an active LV through the socket client and
the data is checked as root; reads back with mode r; a second exclusive writer is
``InUse``; the CLI runs dd on the descriptor as that user; the AsyncClient, and D-Bus
(a private dbus-daemon, root caller) get working descriptors too; afterwards the
daemon holds no descriptor of the LV's device, and its descriptors but its LVM shells'
pipes (started and retired by the shell runner as it likes) are those it had before. TCG makes every LVM command
cost ~0.3 s: one VG, few LVM runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

import rig
from lvmsuper.client import AsyncClient, Client, InUse, InvalidRequest, PermissionDenied

MiB = 2**20
ADMIN, QUERY = "lvmst-admin", "lvmst-query"
VG, LV = "vgopen", "data"
FULL = f"{VG}/{LV}"
OFFSET = MiB  # the pattern is written here, past anything LVM might look at
PATTERN = hashlib.sha256(b"lvmsuper lv_open").digest() * 2048  # 64 KiB, not all zeros


def fd_targets(daemon: rig.Daemon) -> list[str]:
    assert daemon.proc is not None
    out = []
    for name in os.listdir(f"/proc/{daemon.proc.pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{daemon.proc.pid}/fd/{name}"))
        except OSError:
            pass  # closed meanwhile
    return sorted(out)


def steady(daemon: rig.Daemon) -> list[str]:
    """The daemon's descriptors but the pipes (and pidfds) of its LVM shells, whose
    number changes as the shell runner starts and retires shells: what is left
    (sockets, devices, files, the event loop's) must not grow with lv_open."""
    return [t for t in fd_targets(daemon)
            if not t.startswith("pipe:") and t != "anon_inode:[pidfd]"]


def settled(daemon: rig.Daemon, expected: list[str], timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while (now := steady(daemon)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return now


def warm(client: Client, daemon: rig.Daemon) -> list[str]:
    """The baseline: after one open and close (the first LVM read starts the daemon's
    LVM shell), once the daemon has finished with it and with earlier connections (a
    guest vCPU may run the test before the daemon is past its last step): no
    descriptor of the device, the same set twice in a row."""
    client.lv_open(FULL, "r").close()
    deadline = time.monotonic() + 20
    before = steady(daemon)
    while True:
        time.sleep(0.5)
        now = steady(daemon)
        device = os.path.realpath(f"/dev/mapper/{VG}-{LV}")
        if (now == before and device not in now) or time.monotonic() > deadline:
            return now
        before = now


def holds_no_device(daemon: rig.Daemon) -> None:
    """No descriptor of the daemon is the LV's device (checked by name, whatever the
    count): none is kept after its answer."""
    device = os.path.realpath(f"/dev/mapper/{VG}-{LV}")
    targets = fd_targets(daemon)
    assert device not in targets and not any(t.startswith("/dev/dm-") for t in targets), \
        targets


def read_as_root(offset: int, size: int) -> bytes:
    subprocess.run(["udevadm", "settle", "--timeout=30"], check=False)
    fd = os.open(f"/dev/mapper/{VG}-{LV}", os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def as_user(user: str, code: str, daemon: rig.Daemon) -> str:
    """Python ``code`` run as ``user`` with a socket Client ``c``; its stdout."""
    prelude = ("import hashlib, os, sys\n"
               "from lvmsuper.client import Client, InUse, LvmSuperError\n"
               "PATTERN = hashlib.sha256(b'lvmsuper lv_open').digest() * 2048\n"
               "c = Client()\n")
    out = rig.python_as(user, prelude + code, daemon.socket)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def active_lv(lvm: rig.Sandbox) -> Iterator[str]:
    lvm.lvm("pvcreate", *lvm.loops[:2])
    lvm.lvm("vgcreate", "--setautoactivation", "n", VG, *lvm.loops[:2])
    lvm.lvm("lvcreate", "--yes", "-L", "8m", "-n", LV, VG)
    try:
        yield FULL
    finally:
        lvm.lvm("vgchange", "--activate", "n", VG, check=False)


def test_unprivileged_rw_then_r_through_passed_descriptors(daemon: rig.Daemon,
                                                          active_lv: str) -> None:
    with Client(daemon.socket) as root:
        baseline = warm(root, daemon)
        # nobody may open without the open role, active or not
        with rig.client_as(QUERY, daemon.socket) as query:
            with pytest.raises(PermissionDenied) as denied:
                query.lv_open(FULL, "r")
        assert denied.value.data["required"] == "open"

        # the unprivileged user, in a process of its own, writes the pattern
        out = as_user(ADMIN, (
            f"f = c.lv_open({FULL!r}, 'rw')\n"
            "print(type(f).__name__, f.mode, os.geteuid())\n"
            f"f.seek({OFFSET}); n = f.write(PATTERN); f.close()\n"
            "print(n)\n"), daemon)
        kind, mode, euid, written = out.split()
        assert (kind, mode) == ("FileIO", "rb+") and int(euid) != 0
        assert int(written) == len(PATTERN)
        # as root, straight from the device: the data is there
        assert read_as_root(OFFSET, len(PATTERN)) == PATTERN

        # mode r: read back as the user; writing through it fails
        out = as_user(ADMIN, (
            f"f = c.lv_open({FULL!r}, 'r')\n"
            f"f.seek({OFFSET}); data = f.read({len(PATTERN)})\n"
            "print(hashlib.sha256(data).hexdigest(), f.mode)\n"
            "try:\n    f.write(b'x'); print('wrote')\n"
            "except OSError as e:\n    print('refused')\n"
            "f.close()\n"), daemon)
        digest, mode, write = out.split()
        assert digest == hashlib.sha256(PATTERN).hexdigest() and mode == "rb"
        assert write == "refused"

        # rw is exclusive: a second rw without shared is InUse; shared=True gets in
        out = as_user(ADMIN, (
            f"first = c.lv_open({FULL!r}, 'rw')\n"
            "try:\n"
            f"    c.lv_open({FULL!r}, 'rw'); print('opened')\n"
            "except InUse as e:\n"
            "    print('InUse', e.data['object_name'])\n"
            f"shared = c.lv_open({FULL!r}, 'rw', shared=True)\n"
            f"reader = c.lv_open({FULL!r}, 'r')\n"
            "print('shared', shared.mode, reader.mode)\n"
            "first.close(); shared.close(); reader.close()\n"
            f"again = c.lv_open({FULL!r}, 'rw'); again.close(); print('again')\n"), daemon)
        assert out.split() == ["InUse", FULL, "shared", "rb+", "rb", "again"], out

        # the daemon keeps none of the descriptors it passed (nor its clients')
        holds_no_device(daemon)
        assert settled(daemon, baseline) == baseline

    audit = [ln for ln in daemon.log().splitlines() if "audit: lv_open " in ln]
    assert any('"mode": "rw"' in ln and "result=ok" in ln for ln in audit), audit
    assert any('"mode": "r"' in ln and "result=ok" in ln for ln in audit), audit
    assert any('"mode": "rw"' in ln and "result=InUse" in ln for ln in audit), audit


def test_cli_runs_dd_on_the_descriptor_as_the_user(daemon: rig.Daemon, active_lv: str,
                                                   lvm: rig.Sandbox) -> None:
    root = Client(daemon.socket)
    baseline = warm(root, daemon)
    source = lvm.dir / "pattern"  # the sandbox's directory: readable by the test users
    source.write_bytes(PATTERN)
    os.chmod(source, 0o644)
    blocks = len(PATTERN) // 4096
    # write: the descriptor is dd's standard output (--fd 1)
    out = rig.ctl(ADMIN, daemon.socket, "lv-open", FULL, "--mode", "rw", "--fd", "1", "--",
                  "dd", f"if={source}", "bs=4096", f"seek={OFFSET // 4096}", "conv=notrunc",
                  "status=none")
    assert out.returncode == 0, out.stderr
    assert read_as_root(OFFSET, len(PATTERN)) == PATTERN
    # read: the descriptor is dd's standard input
    out = rig.ctl(ADMIN, daemon.socket, "lv-open", FULL, "--mode", "r", "--", "sh", "-c",
                  f"dd bs=4096 skip={OFFSET // 4096} count={blocks} status=none | sha256sum")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == hashlib.sha256(PATTERN).hexdigest()
    # as descriptor 5; and the command's own exit status comes back
    out = rig.ctl(ADMIN, daemon.socket, "lv-open", FULL, "--mode", "r", "--fd", "5", "--",
                  "sh", "-c", "test -e /proc/self/fd/5 && exit 7")
    assert out.returncode == 7, (out.returncode, out.stderr)
    # a user without the role gets the daemon's refusal, and CMD never runs
    out = rig.ctl(QUERY, daemon.socket, "lv-open", FULL, "--mode", "r", "--", "sh", "-c",
                  "echo ran")
    assert out.returncode == 1 and "PermissionDenied" in out.stderr and "ran" not in out.stdout
    holds_no_device(daemon)
    assert settled(daemon, baseline) == baseline
    root.close()


def test_async_client_and_inactive_lv(daemon: rig.Daemon, active_lv: str,
                                      lvm: rig.Sandbox) -> None:
    fd = os.open(f"/dev/mapper/{VG}-{LV}", os.O_WRONLY)
    try:
        os.pwrite(fd, PATTERN, OFFSET)
        os.fsync(fd)
    finally:
        os.close(fd)

    async def main() -> bytes:
        async with AsyncClient(daemon.socket) as client:
            handle = await client.lv_open(FULL, "r")
            with handle:
                handle.seek(OFFSET)
                return handle.read(len(PATTERN))

    assert asyncio.run(main()) == PATTERN
    lvm.lvm("lvchange", "--activate", "n", FULL)
    with Client(daemon.socket) as client:
        with pytest.raises(InvalidRequest) as inactive:
            client.lv_open(FULL, "r")
    assert "activate it first" in inactive.value.message


def test_dbus_lv_open_hands_over_a_unix_fd(sandbox: rig.Sandbox, users: object,
                                           active_lv: str) -> None:
    """A private dbus-daemon (the host's binary, as in tests/test_dbus.py) and a daemon
    serving it; the caller is root (no polkitd in the guest): the descriptor comes as a
    UNIX_FD in the reply and reads the LV's data, for Client and AsyncClient."""
    from test_dbus import Bus  # the same bus as the host tier's D-Bus tests

    fd = os.open(f"/dev/mapper/{VG}-{LV}", os.O_WRONLY)
    try:
        os.pwrite(fd, PATTERN, OFFSET)
        os.fsync(fd)
    finally:
        os.close(fd)
    bus = Bus()
    try:
        with rig.running(sandbox, "dmbus", dbus={"enabled": True, "bus": bus.address}) as d:
            bus.wait_for_owner("org.lvmsuper.Supervisor1", timeout=60)
            with Client(transport="dbus", bus_address=bus.address, timeout=120) as client:
                baseline = warm(client, d)
                for mode in ("r", "rw"):
                    with client.lv_open(FULL, mode) as handle:
                        assert handle.mode == ("rb" if mode == "r" else "rb+")
                        handle.seek(OFFSET)
                        assert handle.read(len(PATTERN)) == PATTERN

                async def main() -> bytes:
                    async with AsyncClient(transport="dbus", bus_address=bus.address,
                                           timeout=120) as aclient:
                        with await aclient.lv_open(FULL, "r") as handle:
                            handle.seek(OFFSET)
                            return handle.read(32)

                assert asyncio.run(main()) == PATTERN[:32]
                holds_no_device(d)
                assert settled(d, baseline) == baseline
    finally:
        bus.stop()
