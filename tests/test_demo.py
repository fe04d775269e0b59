"""`make demo` as a new user runs it: the walk-through as the unprivileged demo user,
start to finish, and nothing left behind (loops, files, user, group)."""

from __future__ import annotations

import grp
import pwd
import re
import subprocess

import pytest

import rig

pytestmark = pytest.mark.system


def test_demo_walks_through_and_leaves_nothing_behind(users: object) -> None:
    rig.system_ready()
    had_group = any(g.gr_name == "lvmsuper" for g in grp.getgrall())
    loops_before = subprocess.run(["losetup", "--list", "--noheadings", "-O", "NAME"],
                                  capture_output=True, text=True, check=True).stdout
    # --no-guest: the manager flow's activation part runs in the device-mapper tier
    # (tests/dm/test_dm_demo.py); here it ends at the typed refusal of the open.
    proc = subprocess.run([str(rig.VENV_BIN / "python"), str(rig.REPO / "tools" / "demo.py"),
                           *([] if rig.has_device_mapper() else ["--no-guest"])],
                          capture_output=True, text=True, timeout=300)
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    steps = [line.split("$ lvmsuperctl ", 1)[1].split()[0] for line in out.splitlines()
             if line.startswith("lvmsuper-demo$ lvmsuperctl ")]
    assert steps == ["pvs", "pvcreate", "vgcreate", "lvcreate", "lvcreate", "lvs",
                     "lvresize", "lvresize", "lvs", "status", "lvremove", "lvremove",
                     "vgremove", "pvremove", "pvs",
                     # the manager flow on the scoped daemon
                     "vgs", "pvcreate", "vgcreate", "vgcreate", "lvcreate", "lv-open",
                     "lvremove", "vgremove", "pvremove", "vgs"], steps
    assert re.search(r"disk1\s+demo\s+\S+\s+300\.00MiB", out), out  # the grown LV
    assert "InvalidRequest: shrinking demo/disk1" in out  # the typed refusal
    assert "lvmsuperd 0.1.0" in out and "2 failed" not in out
    walk, manager = out.split("a manager on lvmsuper", 1)
    assert walk.count("result=ok") == 9 and "result=InvalidRequest" in walk
    assert "PermissionDenied" in manager and "not active; activate it first" in manager
    assert "admin" not in manager.split("lvmsuper-demo$ lvmsuperctl vgs\n", 1)[1] \
        .split("\n# ", 1)[0], manager  # the admin's VG is outside the scope
    assert "manager sandbox removed" in out
    assert "sandbox removed" in out
    with pytest.raises(KeyError):
        pwd.getpwnam("lvmsuper-demo")
    assert any(g.gr_name == "lvmsuper" for g in grp.getgrall()) == had_group
    assert subprocess.run(["losetup", "--list", "--noheadings", "-O", "NAME"],
                          capture_output=True, text=True, check=True).stdout == loops_before
