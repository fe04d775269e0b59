"""Validation of caller-supplied values, before any argv exists.

Rule: every value that reaches an LVM argv passes one of these checkers first. Each
returns the normalised value or raises ``InvalidRequest`` naming the field, so a
value can never become an option, a second argument, or a path outside /dev.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lvmsuper.client.errors import InvalidRequest, LvmSuperError, PermissionDenied

__all__ = ["Checker", "vg_name", "lv_name", "lv_path", "device", "device_path", "devices",
           "Device", "resolve_device", "existing_pv", "extent_size", "job_id",
           "stripes", "size",
           "extents", "tags", "boolean", "wait", "select", "string_list_of",
           "positive_int", "MAX_SIZE", "MAX_TAGS", "choice", "position", "request_id",
           "lv_paths", "scan_devices", "metadata_copies"]

Checker = Callable[[Any, str], Any]

MAX_SIZE = 2**63 - 1
MAX_TAGS = 64
MAX_TAG_LEN = 128
MAX_NAME_LEN = 127
MAX_LIST = 256
MAX_SELECT = 4096

_NAME_RE = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*\Z")
_TAG_RE = re.compile(r"[A-Za-z0-9_+.=!:&#/][A-Za-z0-9_+.=!:&#/-]*\Z")
_DEVICE_RE = re.compile(r"/dev/[A-Za-z0-9/_.:+@=,#%~\\-]+\Z")
_EXTENTS_RE = re.compile(r"([1-9][0-9]{0,2})%(FREE|VG)\Z")
# LVM keeps these for its hidden sub-LVs; a user LV may not contain or start with them.
_LV_RESERVED_PARTS = ("_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_imeta", "_iorig",
                      "_mimage", "_mlog", "_pmspare", "_rimage", "_rmeta", "_tdata",
                      "_tmeta", "_vdata", "_vorigin", "_wcorig")
_LV_RESERVED_PREFIXES = ("snapshot", "pvmove")


def _fail(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", field=field)


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _fail(field, f"must be a string, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _name(value: Any, field: str, kind: str) -> str:
    text = _text(value, field)
    if not text:
        raise _fail(field, f"{kind} name must not be empty")
    if len(text) > MAX_NAME_LEN:
        raise _fail(field, f"{kind} name is longer than {MAX_NAME_LEN} characters")
    if text in (".", ".."):
        raise _fail(field, f"{kind} name {text!r} is reserved")
    if not _NAME_RE.match(text):
        raise _fail(field, f"{kind} name {text!r} may contain only A-Z a-z 0-9 + _ . - "
                           "and must not start with '-'")
    return text


_UUID_CHARS = re.compile(r"[A-Za-z0-9]{32}\Z")


def vg_name(value: Any, field: str) -> str:
    """A VG name that LVM can only read as a name: LVM takes an argument that is 32
    letters and digits once its dashes are dropped for a VG *UUID* (``vgrename``,
    ``vgchange`` ...), which would let a caller name a VG without naming it."""
    text = _name(value, field, "VG")
    if _UUID_CHARS.match(text.replace("-", "")):
        raise _fail(field, f"{text!r} has the form of an LVM UUID; VGs are named by name")
    return text


def lv_name(value: Any, field: str) -> str:
    text = _name(value, field, "LV")
    if text.startswith(_LV_RESERVED_PREFIXES):
        raise _fail(field, f"LV name {text!r} must not start with 'snapshot' or 'pvmove'")
    for part in _LV_RESERVED_PARTS:
        if part in text:
            raise _fail(field, f"LV name {text!r} must not contain {part!r} (reserved by LVM)")
    return text


def lv_path(value: Any, field: str) -> tuple[str, str]:
    """An existing LV as ``"vg/lv"``; returns (vg, lv)."""
    text = _text(value, field)
    vg, sep, lv = text.partition("/")
    if not sep:
        raise _fail(field, f"{text!r} must name an LV as 'vg/lv'")
    return vg_name(vg, field), lv_name(lv, field)


def device_path(value: Any, field: str) -> str:
    """An absolute, normalised path under /dev (syntax only: for naming existing PVs)."""
    text = _text(value, field)
    if not _DEVICE_RE.match(text) or os.path.normpath(text) != text:
        raise _fail(field, f"{text!r} is not a normalised device path under /dev")
    return text


@dataclass(frozen=True, slots=True)
class Device:
    """A device path as the caller gave it, and what it resolved to at admission: the
    real path under /dev (symlinks followed) that LVM is given, and the device number
    (None when nothing exists there yet: LVM then reports the PV as not found)."""

    given: str
    real: str
    rdev: int | None

    def __str__(self) -> str:
        return self.real

    def still_same(self) -> bool:
        """Re-resolved now (under the change's locks): the same device as at admission."""
        try:
            again = resolve_device(self.given, "device", must_exist=self.rdev is not None)
        except LvmSuperError:
            return False
        return (again.real, again.rdev) == (self.real, self.rdev)


MAX_SYMLINKS = 40


def _check_directory(path: str, given: str, field: str) -> None:
    """Only root may change what a name in ``path`` points at."""
    st = os.stat(path)
    writable_by_others = st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != 0)
    if st.st_uid != 0 or writable_by_others:
        raise PermissionDenied(f"{field}: {given!r} passes through {path}, which users "
                               "other than root can change", required="policy", field=field)


def resolve_device(given: str, field: str, *, must_exist: bool = True) -> Device:
    """Follows ``given`` one component at a time, refusing any directory on the way
    (including those symlinks lead through) that a non-root user could write; the end
    must be a block device under /dev. With ``must_exist=False`` a path with nothing at
    its end stays as given (an existing PV whose device is gone)."""
    parts = given.split("/")[1:]
    current, hops = "/", 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        _check_directory(current, given, field)
        candidate = os.path.join(current, name)
        try:
            st = os.lstat(candidate)
        except OSError:
            if must_exist:
                raise _fail(field, f"{given!r} does not exist") from None
            return Device(given, given, None)
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise _fail(field, f"{given!r}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = "/"
            parts = target.split("/") + parts
            continue
        current = candidate
    if not current.startswith("/dev/"):
        raise _fail(field, f"{given!r} resolves to {current!r}, outside /dev")
    st = os.stat(current)
    if not stat.S_ISBLK(st.st_mode):
        raise _fail(field, f"{given!r} is not a block device")
    return Device(given, current, st.st_rdev)


def device(value: Any, field: str) -> Device:
    """A device that is to become (or is) a PV: a normalised path under /dev, resolved
    once (see ``resolve_device``); policy globs are checked by the service."""
    return resolve_device(device_path(value, field), field)


def existing_pv(value: Any, field: str) -> Device:
    """An existing PV's device path: resolved as ``device`` where something is there;
    a path to nothing is kept (LVM will say the PV is not found)."""
    return resolve_device(device_path(value, field), field, must_exist=False)


def devices(value: Any, field: str) -> list[Device]:
    items = _list(value, field, min_len=1)
    out = [device(item, f"{field}[{i}]") for i, item in enumerate(items)]
    if len({d.real for d in out}) != len(out):
        raise _fail(field, "lists a device twice")
    return out


def scan_devices(value: Any, field: str) -> list[Device]:
    """The block devices LVM's scan is limited to for one call (``--devices``): each a
    path under /dev resolved as ``device`` (so the end is an existing block device under
    /dev, reached through root-only directories), given once, and without a comma in
    its real path (LVM splits ``--devices`` values at commas). It only narrows what LVM
    sees; what the daemon may touch is decided as without it."""
    out = devices(value, field)
    for i, dev in enumerate(out):
        if "," in dev.real:
            raise _fail(f"{field}[{i}]", f"{dev.real!r} has a comma, which LVM would split")
    return out


def lv_paths(value: Any, field: str) -> list[tuple[str, str]]:
    """A batch of existing LVs (``"vg/lv"`` each), 1 to 256, all in one VG, none twice;
    a bad element fails the whole list, naming it (``lvs[3]``)."""
    out: list[tuple[str, str]] = []
    for i, item in enumerate(_list(value, field, min_len=1)):
        vg, lv = lv_path(item, f"{field}[{i}]")
        if out and vg != out[0][0]:
            raise _fail(f"{field}[{i}]", f"{vg}/{lv} is not in VG {out[0][0]!r}: a batch "
                        "names LVs of one VG")
        if (vg, lv) in out:
            raise _fail(f"{field}[{i}]", f"{vg}/{lv} is listed twice")
        out.append((vg, lv))
    return out


def metadata_copies(value: Any, field: str) -> int:
    """LVM's ``--metadatacopies``: 0, 1 or 2 metadata areas on a PV."""
    return _integer(value, field, 0, 2)


def _list(value: Any, field: str, *, min_len: int = 0, max_len: int = MAX_LIST) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(field, f"must be an array, not {_json_type(value)}")
    if not min_len <= len(value) <= max_len:
        raise _fail(field, f"must have {min_len} to {max_len} elements")
    return value


def _integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, f"must be an integer, not {_json_type(value)}")
    if not low <= value <= high:
        raise _fail(field, f"must be between {low} and {high}")
    return value


def size(value: Any, field: str) -> int:
    """A size in bytes: a JSON integer, 1 <= size < 2**63."""
    return _integer(value, field, 1, MAX_SIZE)


def extent_size(value: Any, field: str) -> int:
    """A VG extent size in bytes: a power of two from 1 KiB to 16 GiB."""
    number = _integer(value, field, 1024, 16 * 2**30)
    if number & (number - 1):
        raise _fail(field, "must be a power of two")
    return number


def job_id(value: Any, field: str) -> str:
    text = _text(value, field)
    if not re.fullmatch(r"[0-9]{1,20}-[0-9]{1,20}", text):
        raise _fail(field, f"{text!r:.40} is not a job id")
    return text


def stripes(value: Any, field: str) -> int:
    return _integer(value, field, 1, 128)


def positive_int(value: Any, field: str) -> int:
    return _integer(value, field, 1, 2**31 - 1)


def extents(value: Any, field: str) -> str:
    """An extent count, or ``"N%FREE"`` / ``"N%VG"`` with 1 <= N <= 100."""
    if isinstance(value, str):
        match = _EXTENTS_RE.match(value)
        if not match or int(match.group(1)) > 100:
            raise _fail(field, f"{value!r} must be an integer or 'N%FREE'/'N%VG' (N 1..100)")
        return value
    return str(_integer(value, field, 1, 2**32 - 1))


def tags(value: Any, field: str) -> list[str]:
    items = _list(value, field, max_len=MAX_TAGS)
    out = []
    for i, item in enumerate(items):
        text = _text(item, f"{field}[{i}]")
        if not 1 <= len(text) <= MAX_TAG_LEN or not _TAG_RE.match(text):
            raise _fail(f"{field}[{i}]", f"{text!r:.160} is not a valid LVM tag (1-128 of "
                        "A-Z a-z 0-9 _ + . - / = ! : & #, not starting with '-')")
        out.append(text)
    return out


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(field, f"must be true or false, not {_json_type(value)}")
    return value


def activation(value: Any, field: str) -> bool | str:
    """``activate``: true, false, or the lock mode in a shared VG ("exclusive": active
    on this host only; "shared": on several hosts at once)."""
    if isinstance(value, bool) or value in ("exclusive", "shared"):
        return value  # type: ignore[no-any-return]
    raise _fail(field, 'must be true, false, "exclusive" or "shared"')


def wait(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 <= value <= 86400:
        raise _fail(field, "must be a number of seconds between 0 and 86400")
    return float(value)


def select(value: Any, field: str) -> str:
    """An LVM selection string; passed as one argv element after ``--select``."""
    text = _text(value, field)
    if not text or len(text) > MAX_SELECT or any(c in text for c in "\0\n\r"):
        raise _fail(field, f"must be 1 to {MAX_SELECT} characters without NUL or newlines")
    return text


def choice(*allowed: str) -> Checker:
    def check(value: Any, field: str) -> str:
        if value not in allowed:
            raise _fail(field, f"must be one of {', '.join(map(repr, allowed))}")
        return str(value)
    return check


def string_list_of(item: Checker) -> Checker:
    def check(value: Any, field: str) -> list[Any]:
        return [item(v, f"{field}[{i}]") for i, v in enumerate(_list(value, field, min_len=1))]
    return check


def position(value: Any, field: str) -> dict[str, Any]:
    """A place in the change stream: ``{"boot": <id>, "seq": <int >= 0>}``."""
    if not isinstance(value, dict) or set(value) != {"boot", "seq"}:
        raise _fail(field, 'must be an object {"boot": ..., "seq": ...}')
    boot = _text(value["boot"], f"{field}.boot")
    if not re.fullmatch(r"[0-9a-f]{1,64}", boot):
        raise _fail(f"{field}.boot", "is not a boot id")
    return {"boot": boot, "seq": _integer(value["seq"], f"{field}.seq", 0, 2**63 - 1)}


def request_id(value: Any, field: str) -> str:
    """A caller's id for one change: 1 to 64 of ``A-Z a-z 0-9 . _ : -``."""
    text = _text(value, field)
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", text):
        raise _fail(field, "must be 1 to 64 of A-Z a-z 0-9 . _ : -")
    return text
