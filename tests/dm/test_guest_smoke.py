"""Smoke test: the dm tier really activates and deactivates LVs on loop devices."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tests/conftest.py is also "conftest" at run time: no real import
    from conftest import LvmSandbox


def test_kernel_has_the_targets_lvm_needs() -> None:
    out = subprocess.run(["dmsetup", "targets"], capture_output=True, text=True,
                         check=True).stdout
    targets = {line.split()[0] for line in out.splitlines()}
    assert {"linear", "striped", "snapshot", "mirror", "thin-pool", "thin"} <= targets


def test_lv_activates_and_deactivates(lvm_sandbox: LvmSandbox) -> None:
    sb = lvm_sandbox
    sb.lvm("pvcreate", "-y", *sb.loops)
    sb.lvm("vgcreate", sb.vg, *sb.loops)
    sb.lvm("lvcreate", "-y", "-n", "smoke", "-L", "8m", sb.vg)
    node = Path("/dev", sb.vg, "smoke")
    assert node.exists(), f"{node} missing after lvcreate"
    assert [r["lv_active"] for r in sb.report("lvs", "-o", "lv_active", f"{sb.vg}/smoke")] \
        == ["active"]

    sb.lvm("lvchange", "-an", f"{sb.vg}/smoke")
    assert not node.exists(), f"{node} still there after lvchange -an"
    assert [r["lv_active"] for r in sb.report("lvs", "-o", "lv_active", f"{sb.vg}/smoke")] \
        == [""]
