"""Stopping the service while a pvmove of real data runs (issue 13, point 6): systemd's
stop waits for LVM (the daemon never kills a change mid-write), the move completes,
the VG checks clean, the data is intact and the outcome is in the journal."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import sysrig
from sysrig import MEMBER, ctl, run, wait_for

MiB = 2**20
VG, SIZE = "sysmv", 40 * MiB
# The share of time dm-mirror's copy may spend on I/O (see tests/dm/test_dm_daemon.py):
# lowered so that the move is still under way when the stop comes.
THROTTLE = Path("/sys/module/dm_mirror/parameters/raid1_resync_throttle")


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(SIZE)).hexdigest()


def kernel_has_dm(name: str) -> bool:
    return any(p.read_text().strip() == name for p in Path("/sys/block").glob("dm-*/dm/name"))


def test_stop_during_pvmove_waits_and_leaves_a_consistent_vg() -> None:
    loops = sysrig.make_loops(2, 64, "move")
    run("modprobe", "dm_mirror")  # its throttle exists once loaded (run alone, nothing has)
    old = THROTTLE.read_text().strip()
    try:
        sysrig.lvm("pvcreate", "-q", *loops)
        sysrig.lvm("vgcreate", "-q", VG, *loops)
        sysrig.lvm("lvcreate", "-q", "-y", "-n", "data", "-L", f"{SIZE // MiB}m", VG, loops[0])
        run("udevadm", "settle")
        lv = f"/dev/{VG}/data"
        fd = os.open(lv, os.O_WRONLY)
        try:
            os.write(fd, os.urandom(SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)
        before = digest(lv)

        THROTTLE.write_text("3\n")
        ref = json.loads(ctl(MEMBER, "--json", "pvmove", loops[0], loops[1],
                             "--wait", "0").stdout)
        wait_for("the pvmove mirror in the kernel",
                 lambda: kernel_has_dm(f"{VG}-pvmove0"), timeout=120, interval=0.1)
        assert kernel_has_dm(f"{VG}-pvmove0")  # still under way when the stop comes
        cursor = sysrig.journal_cursor()
        started = time.monotonic()
        run("systemctl", "stop", "lvmsuper.service", timeout=600)
        took = time.monotonic() - started
        print(f"stop waited {took:.1f} s for pvmove (job {ref})")

        # LVM was never killed: the move finished, nothing of it is left.
        journal = sysrig.journal_after(cursor, "-u", "lvmsuper", "-o", "cat")
        assert "Stopped lvmsuper.service" in journal or "Deactivated successfully" in journal
        assert "SIGKILL" not in journal and "Killing process" not in journal, journal
        assert not kernel_has_dm(f"{VG}-pvmove0")
        lvs = sysrig.lvm("lvs", "-a", "--noheadings", "-o", "lv_name,devices", VG).stdout
        assert "pvmove" not in lvs and loops[1] in lvs and loops[0] not in lvs, lvs
        assert sysrig.lvm("vgck", VG).returncode == 0
        THROTTLE.write_text(f"{old}\n")
        assert digest(lv) == before

        # After the restart the daemon reports the moved LV and the audit has the outcome.
        got = json.loads(ctl(MEMBER, "--json", "lvs", f"{VG}/data").stdout)
        assert got[0]["devices"] == [loops[1]], got
        records = [r for r in map(json.loads, run(
            "journalctl", "-u", "lvmsuper", "-o", "json", "--no-pager").stdout.splitlines())
            if r.get("LVMSUPER_METHOD") == "pvmove"]
        assert records and records[-1]["LVMSUPER_RESULT"] == "ok", records
    finally:
        THROTTLE.write_text(f"{old}\n")
        sysrig.drop_loops(loops, [VG])
