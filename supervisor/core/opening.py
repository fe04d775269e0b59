"""Opening an active LV's device for a caller (``lv_open``): a descriptor, nothing else.

Rules: the node opened is the one the kernel names for the LV's major:minor as LVM
reports them (``/sys/dev/block/M:m``), opened without following a symlink, and kept
only when ``fstat`` shows that very block device. The descriptor is close-on-exec
(LVM's processes never inherit it) and has one owner at a time (``Handoff``): the core
until it answers, then the transport, which closes it as soon as the answer carrying
it is written, or cannot be. ``rw`` opens with ``O_EXCL`` unless ``shared``: a second
writer, a mounted filesystem or a holder such as another LV gets ``InUse``.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from lvmsuper.client.errors import InUse, InvalidRequest, NotFound, PermissionDenied

__all__ = ["Handoff", "open_device", "SYSFS_BLOCK"]

SYSFS_BLOCK = "/sys/dev/block"


class Handoff:
    """An open descriptor on its way to the caller, with what the answer says of it."""

    def __init__(self, fd: int, path: str, size: int) -> None:
        self.fd = fd
        self.path = path
        self.size = size

    def wire(self) -> dict[str, Any]:
        """The answer's result: ``fd`` is the index among the descriptors passed."""
        return {"fd": 0, "path": self.path, "size": self.size}

    def close(self) -> None:
        """Idempotent: whoever holds it last closes it."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Handoff:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Handoff(fd={self.fd}, path={self.path!r}, size={self.size})"


def _node(major: int, minor: int, lv: str) -> str:
    """``/dev/<DEVNAME>`` of a block device number, as the kernel names it."""
    try:
        with open(f"{SYSFS_BLOCK}/{major}:{minor}/uevent", encoding="ascii",
                  errors="replace") as fh:
            fields = dict(line.strip().partition("=")[::2] for line in fh if "=" in line)
    except OSError:
        raise NotFound(f"LV {lv!r}: the kernel has no block device {major}:{minor} (it was "
                       "deactivated meanwhile?)", object_type="lv", object_name=lv) from None
    name = fields.get("DEVNAME", "")
    if not name or ".." in name.split("/") or name.startswith("/"):
        raise PermissionDenied(f"LV {lv!r}: the kernel names its device {name!r}, which is "
                               "not a device node this daemon opens", required="policy",
                               object_type="lv", object_name=lv)
    return f"/dev/{name}"


def open_device(lv: str, major: int, minor: int, mode: str, shared: bool) -> Handoff:
    """Opens LV ``lv``'s device (``major:minor``) for ``mode`` ("r" or "rw")."""
    path = _node(major, minor, lv)
    flags = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY
    flags |= os.O_RDONLY if mode == "r" else os.O_RDWR | (0 if shared else os.O_EXCL)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _refusal(exc, lv, path, mode) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISBLK(st.st_mode) or st.st_rdev != os.makedev(major, minor):
            raise PermissionDenied(
                f"LV {lv!r}: {path} is not its block device {major}:{minor}; nothing was "
                "opened", required="policy", object_type="lv", object_name=lv)
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return Handoff(fd, path, size)


def _refusal(exc: OSError, lv: str, path: str, mode: str) -> Exception:
    if exc.errno == errno.EBUSY:
        return InUse(f"LV {lv!r} is in use (opened exclusively, mounted or held by "
                     f"another device); {mode} without shared=true needs it to itself",
                     object_type="lv", object_name=lv)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and mode == "rw":
        return InvalidRequest(f"LV {lv!r} is read-only; open it with mode 'r'", field="mode")
    if exc.errno in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
        return NotFound(f"LV {lv!r}: its device {path} is gone (deactivated meanwhile?)",
                        object_type="lv", object_name=lv)
    if exc.errno == errno.ELOOP:
        return PermissionDenied(f"LV {lv!r}: {path} is a symbolic link; nothing was opened",
                                required="policy", object_type="lv", object_name=lv)
    return exc
