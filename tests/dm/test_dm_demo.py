"""Device-mapper tier, issue 15: the manager flow of `make demo` (README "Running a
manager on lvmsuper") runs whole where LVs can be activated: the scoped user creates
its VG and LV, activates it, writes data through the descriptor lv_open passes, reads
it back, and root finds the same bytes; what lies outside the scope is refused."""

from __future__ import annotations

import re
import subprocess
import sys

import rig


def test_the_demo_manager_flow_writes_through_a_passed_descriptor() -> None:
    proc = subprocess.run([sys.executable, str(rig.REPO / "tools" / "demo.py"),
                           "--manager-only"], capture_output=True, text=True, timeout=600)
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    steps = [line.split("$ lvmsuperctl ", 1)[1].split()[0] for line in out.splitlines()
             if line.startswith("lvmsuper-demo$ lvmsuperctl ")]
    assert steps == ["vgs", "pvcreate", "vgcreate", "vgcreate", "lvcreate", "lvchange",
                     "lv-open", "lv-open", "lvchange", "lvremove", "vgremove", "pvremove",
                     "vgs"], steps
    first_vgs = out.split("lvmsuper-demo$ lvmsuperctl vgs\n", 1)[1].split("\n# ", 1)[0]
    assert "admin" not in first_vgs, out  # the admin's VG is outside the scope
    assert "PermissionDenied" in out, out
    assert "the LV's first MiB equals what the user wrote" in out, out
    assert re.search(r"audit: lv_open by uid=\d+ .*\"mode\": \"rw\".* result=ok", out), out
    assert "manager sandbox removed" in out
