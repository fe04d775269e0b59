"""supervisor/core/opening.py: what the daemon refuses to hand over, checked against a
made-up /sys/dev/block (the kernel's name for a major:minor): a node that is no block
device, a symbolic link, a name leaving /dev, a device number with no sysfs entry.
Every refusal is typed and leaves no descriptor open."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lvmsuper.client.errors import NotFound, PermissionDenied
from lvmsuper.supervisor.core import opening


def own_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def fake_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, devname: str) -> None:
    entry = tmp_path / "7:99"
    entry.mkdir()
    (entry / "uevent").write_text(f"MAJOR=7\nMINOR=99\nDEVNAME={devname}\nDEVTYPE=disk\n")
    monkeypatch.setattr(opening, "SYSFS_BLOCK", str(tmp_path))


@pytest.mark.parametrize("devname, refusal", [
    ("null", "is not its block device"),          # a character device
    ("stdin", "symbolic link"),                   # /dev/stdin: O_NOFOLLOW
    ("../etc/passwd", "not a device node"),       # leaves /dev
    ("/etc/passwd", "not a device node"),
    ("", "not a device node"),
])
@pytest.mark.parametrize("mode", ["r", "rw"])
def test_refused_and_nothing_left_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       devname: str, refusal: str, mode: str) -> None:
    fake_sysfs(tmp_path, monkeypatch, devname)
    before = own_fds()
    with pytest.raises(PermissionDenied) as err:
        opening.open_device("vg/lv", 7, 99, mode, shared=mode == "r")
    assert refusal in err.value.message, err.value
    assert err.value.data["object_name"] == "vg/lv"
    assert own_fds() == before


def test_no_sysfs_entry_is_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opening, "SYSFS_BLOCK", str(tmp_path))
    with pytest.raises(NotFound):
        opening.open_device("vg/lv", 7, 99, "r", shared=False)


def test_handoff_closes_once(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.close(w)
    handoff = opening.Handoff(r, "/dev/vg/lv", 4096)
    assert handoff.wire() == {"fd": 0, "path": "/dev/vg/lv", "size": 4096}
    with handoff:
        pass
    with pytest.raises(OSError):
        os.fstat(r)
    handoff.close()  # idempotent: never closes a number reused meanwhile
    assert handoff.fd == -1
