"""Upgrade and purge (issue 13, point 9): installing the same package again keeps the
socket enabled and the group; purging removes the units, bus and polkit files and the
group, and leaves LVM's volumes alone. Runs last: lvmsuper is gone afterwards."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import sysrig
from sysrig import MEMBER, active, ctl, run

FILES = ("/lib/systemd/system/lvmsuper.service", "/lib/systemd/system/lvmsuper.socket",
         "/usr/share/dbus-1/system.d/org.lvmsuper.Supervisor1.conf",
         "/usr/share/dbus-1/system-services/org.lvmsuper.Supervisor1.service",
         "/usr/share/polkit-1/actions/org.lvmsuper.policy",
         "/usr/lib/sysusers.d/lvmsuper.conf", "/usr/bin/lvmsuperd", "/usr/bin/lvmsuperctl")


def test_reinstall_keeps_state_and_purge_removes_everything_but_lvm() -> None:
    loops = sysrig.make_loops(1, 16, "pkg")
    try:
        sysrig.lvm("pvcreate", "-q", loops[0])
        sysrig.lvm("vgcreate", "-q", "syskeep", loops[0])
        sysrig.lvm("lvcreate", "-q", "-y", "-n", "kept", "-L", "4m", "syskeep")
        ctl(MEMBER, "ping")
        gid = grp.getgrnam("lvmsuper").gr_gid

        run("dpkg", "-i", os.environ["LVMSUPER_DEB"], timeout=600)
        assert run("systemctl", "is-enabled", "lvmsuper.socket").stdout.strip() == "enabled"
        assert active("lvmsuper.socket") == "active"
        assert grp.getgrnam("lvmsuper").gr_gid == gid
        assert MEMBER in grp.getgrnam("lvmsuper").gr_mem
        ctl(MEMBER, "ping")  # the socket starts the (new) daemon again

        run("dpkg", "--purge", "lvmsuper", timeout=600)
        assert run("dpkg-query", "-W", "lvmsuper", check=False).returncode != 0
        assert [f for f in FILES if Path(f).exists()] == []
        assert active("lvmsuper.socket") in ("inactive", "unknown")
        assert active("lvmsuper.service") in ("inactive", "unknown")
        assert not Path("/run/lvmsuper/lvmsuper.sock").exists()
        assert not Path("/etc/systemd/system/sockets.target.wants/lvmsuper.socket").exists()
        assert run("getent", "group", "lvmsuper", check=False).returncode != 0
        # LVM untouched: the VG and its active LV are still there.
        lvs = sysrig.lvm("lvs", "--noheadings", "-o", "lv_name,lv_active", "syskeep").stdout
        assert lvs.split() == ["kept", "active"], lvs
    finally:
        sysrig.drop_loops(loops, ["syskeep"])
