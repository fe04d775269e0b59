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
from typing import Any

from lvmsuper.client.errors import InvalidRequest

__all__ = ["Checker", "vg_name", "lv_name", "lv_path", "device", "device_path", "devices", "extent_size", "job_id", "stripes", "size",
           "extents", "tags", "boolean", "wait", "select", "string_list_of",
           "positive_int", "MAX_SIZE", "MAX_TAGS", "choice"]

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


def vg_name(value: Any, field: str) -> str:
    return _name(value, field, "VG")


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


def device(value: Any, field: str) -> str:
    """An absolute, normalised device path under /dev whose target is a block device
    under /dev (policy globs are checked separately, by the service)."""
    text = device_path(value, field)
    real = os.path.realpath(text)
    if not real.startswith("/dev/"):
        raise _fail(field, f"{text!r} resolves to {real!r}, outside /dev")
    try:
        mode = os.stat(real).st_mode
    except OSError:
        raise _fail(field, f"{text!r} does not exist") from None
    if not stat.S_ISBLK(mode):
        raise _fail(field, f"{text!r} is not a block device")
    return text


def devices(value: Any, field: str) -> list[str]:
    items = _list(value, field, min_len=1)
    out = [device(item, f"{field}[{i}]") for i, item in enumerate(items)]
    if len(set(out)) != len(out):
        raise _fail(field, "lists a device twice")
    return out


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
