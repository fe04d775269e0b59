"""Smoke test: the dm tier really activates and deactivates LVs on loop devices."""

from __future__ import annotations

from pathlib import Path

from conftest import LvmSandbox, run


def test_kernel_has_the_targets_lvm_needs() -> None:
    targets = {line.split()[0] for line in run(["dmsetup", "targets"]).stdout.splitlines()}
    assert {"linear", "striped", "snapshot", "mirror", "thin-pool", "thin"} <= targets


def test_lv_activates_and_deactivates(lvm_sandbox: LvmSandbox) -> None:
    sb = lvm_sandbox
    sb.lvm("pvcreate", "-y", *sb.loops)
    sb.lvm("vgcreate", sb.vg, *sb.loops)
    sb.lvm("lvcreate", "-y", "-n", "smoke", "-L", "8m", sb.vg)
    node = Path("/dev", sb.vg, "smoke")
    assert node.exists(), f"{node} missing after lvcreate"
    assert [row["lv_active"] for row in sb.report("lvs", "-o", "lv_active", f"{sb.vg}/smoke")] \
        == ["active"]

    sb.lvm("lvchange", "-an", f"{sb.vg}/smoke")
    assert not node.exists(), f"{node} still there after lvchange -an"
    assert [row["lv_active"] for row in sb.report("lvs", "-o", "lv_active", f"{sb.vg}/smoke")] \
        == [""]
