"""What the sync and async clients share: socket path, method kinds, result decoding."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import ConnectionFailed
from .models import LV, PV, VG, Job, Model

__all__ = ["DEFAULT_SOCKET", "default_socket_path", "READ_METHODS", "JobRef", "decode",
           "lost", "retry_after_loss"]

DEFAULT_SOCKET = "/run/lvmsuper/lvmsuper.sock"

# Reads may be retried once on a fresh connection; a change never is (its outcome is
# unknown once the connection broke).
READ_METHODS = frozenset({"ping", "version", "status", "pvs", "vgs", "lvs", "report",
                          "jobs", "job_status"})

_LIST_OF: dict[str, type[Model]] = {"pvs": PV, "vgs": VG, "lvs": LV, "pvcreate": PV,
                                    "jobs": Job}
_ONE_OF: dict[str, type[Model]] = {
    "pvresize": PV, "pvchange": PV, "vgcreate": VG, "vgextend": VG, "vgreduce": VG,
    "vgrename": VG, "vgchange": VG, "lvcreate": LV, "lvresize": LV, "lvrename": LV,
    "lvchange": LV, "job_status": Job, "job_cancel": Job}


@dataclass(frozen=True, slots=True)
class JobRef:
    """A change that outlived its ``wait``: collect it with ``job_status(id)``."""

    id: str


def retry_after_loss(method: str, attempt: int) -> bool:
    """A read may be retried once on a new connection; a change never."""
    return method in READ_METHODS and attempt == 1


def lost(method: str, exc: BaseException, socket: str) -> ConnectionFailed:
    if method not in READ_METHODS:
        return ConnectionFailed(f"connection to lvmsuperd lost during {method}; the change "
                                "may or may not have happened: check with a read or 'jobs'",
                                socket=socket)
    return ConnectionFailed(f"connection to lvmsuperd lost: {exc}", socket=socket)


def default_socket_path() -> str:
    return os.environ.get("LVMSUPER_SOCKET") or DEFAULT_SOCKET


def decode(method: str, result: Any) -> Any:
    """A method's wire result as typed models (unknown methods: plain JSON)."""
    if isinstance(result, dict) and set(result) == {"job"} and method not in READ_METHODS:
        return JobRef(str(result["job"]))
    if method in _LIST_OF:
        return [_LIST_OF[method].from_wire(item) for item in result]
    if method in _ONE_OF:
        return _ONE_OF[method].from_wire(result)
    if method == "report":
        return {"pvs": [PV.from_wire(p) for p in result["pvs"]],
                "vgs": [VG.from_wire(g) for g in result["vgs"]],
                "lvs": [LV.from_wire(lv) for lv in result["lvs"]]}
    return result
