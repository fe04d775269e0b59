"""The one error hierarchy of lvmsuper, shared by the daemon and every client.

Each class carries its wire name (``data.name`` in a JSON-RPC error, the suffix of
``org.lvmsuper.Error.<Name>`` on D-Bus) and its JSON-RPC code::

    LvmSuperError
    ├── InvalidRequest      bad JSON-RPC, unknown method, bad params or names
    ├── PermissionDenied    role or policy forbids the call
    ├── NotFound            the named PV/VG/LV does not exist
    ├── AlreadyExists       create or rename onto an existing name
    ├── LvmFailed           LVM ran and reported failure
    │   ├── InUse           ... because an LV is open (in use): busy, retry later
    │   └── LockConflict    ... because another host holds the lvmlockd lock (shared VGs)
    ├── LvmOutputInvalid    LVM's output could not be parsed
    ├── Timeout             a read-only LVM command ran too long and was killed
    ├── Busy                the daemon's queue is full; retry later
    ├── Internal            a bug in the daemon
    └── ConnectionFailed    client side only: the daemon cannot be reached

The daemon raises these classes too, so both ends agree by construction.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "LvmSuperError",
    "InvalidRequest",
    "PermissionDenied",
    "NotFound",
    "AlreadyExists",
    "LvmFailed",
    "LvmOutputInvalid",
    "Timeout",
    "Busy",
    "InUse",
    "LockConflict",
    "Internal",
    "ConnectionFailed",
    "ERRORS_BY_NAME",
    "error_from_wire",
]

# JSON-RPC 2.0 reserves -32768..-32000; application errors use -32000..-32099
# ("server error") plus the standard codes where they fit.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


class LvmSuperError(Exception):
    """Base of every lvmsuper error; ``data`` holds the wire ``data`` fields."""

    name: ClassVar[str] = "LvmSuperError"
    wire_code: ClassVar[int] = -32000

    def __init__(self, message: str, *, code: int | None = None, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.wire_code if code is None else code
        self.data: dict[str, Any] = {k: v for k, v in data.items() if v is not None}

    def to_wire(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member for this exception."""
        return {"code": self.code, "message": self.message,
                "data": {"name": self.name, **self.data}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, data={self.data!r})"


class InvalidRequest(LvmSuperError):
    name = "InvalidRequest"
    wire_code = INVALID_PARAMS


class PermissionDenied(LvmSuperError):
    name = "PermissionDenied"
    wire_code = -32001


class NotFound(LvmSuperError):
    name = "NotFound"
    wire_code = -32002


class AlreadyExists(LvmSuperError):
    name = "AlreadyExists"
    wire_code = -32003


class LvmFailed(LvmSuperError):
    name = "LvmFailed"
    wire_code = -32010


class InUse(LvmFailed):
    """LVM refused because an LV is open ("Logical volume ... in use"): a manager's
    "busy, retry later". ``object_type``/``object_name`` name the LV; ``argv``, ``rc``
    and ``log`` are LVM's, as for any ``LvmFailed``."""

    name = "InUse"
    wire_code = -32013


class LockConflict(LvmFailed):
    """Another host holds the lvmlockd lock the change needs (a shared VG), or this
    host's lockspace of the VG is lost (its sanlock lease could not be renewed) until
    ``lockstart`` works again. ``object_type``/``object_name`` name what is locked
    (``lv``, ``vg`` or ``global``); ``holder`` is the holding host's id, or null when
    neither LVM nor sanlock says. When LVM refused, ``argv``, ``rc`` and ``log`` are
    LVM's, as for any ``LvmFailed``."""

    name = "LockConflict"
    wire_code = -32014


class LvmOutputInvalid(LvmSuperError):
    name = "LvmOutputInvalid"
    wire_code = -32011


class Timeout(LvmSuperError):
    name = "Timeout"
    wire_code = -32012


class Busy(LvmSuperError):
    name = "Busy"
    wire_code = -32020


class Internal(LvmSuperError):
    name = "Internal"
    wire_code = INTERNAL_ERROR


class ConnectionFailed(LvmSuperError):
    """Raised by clients only: the daemon is not reachable or went away."""

    name = "ConnectionFailed"
    wire_code = -32099


ERRORS_BY_NAME: dict[str, type[LvmSuperError]] = {
    cls.name: cls
    for cls in (InvalidRequest, PermissionDenied, NotFound, AlreadyExists, LvmFailed,
                LvmOutputInvalid, Timeout, Busy, InUse, LockConflict, Internal,
                ConnectionFailed)
}


def error_from_wire(error: Any) -> LvmSuperError:
    """Turns a JSON-RPC ``error`` member back into the matching exception."""
    if not isinstance(error, dict):
        return Internal(f"malformed error from daemon: {error!r}")
    message = str(error.get("message", "unknown error"))
    data = error.get("data")
    data = dict(data) if isinstance(data, dict) else {}
    cls = ERRORS_BY_NAME.get(str(data.pop("name", "")), LvmSuperError)
    code = error.get("code")
    exc = cls(message, code=code if isinstance(code, int) and not isinstance(code, bool)
              else None)
    exc.data.update(data)  # as sent: a null the daemon sends (holder) is kept
    return exc
