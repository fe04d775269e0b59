# mypy: disable-error-code="empty-body"
# (the method declarations in ``Methods`` are signatures: their bodies never run)
"""What the sync and async clients share: the daemon's methods, declared once, plus the
place a client connects to, which methods are reads, and result decoding.

Rule: every method of lvmsuperd is declared once, in ``Methods``, by a signature whose
parameters are named as on the wire (optional ones keyword-only, ``None`` meaning "not
given") and whose return annotation is the decoded result. ``Client`` inherits it
through ``BlockingMethods`` and gets functions returning that result; ``AsyncClient``
through ``AsyncMethods`` and gets coroutine functions. A call sends exactly the
arguments given (``None`` left out) via the client's ``call``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import (Any, Concatenate, Generic, Literal, ParamSpec, Self, TypedDict, TypeVar,
                    overload)

from .errors import ConnectionFailed
from .models import LV, PV, VG, Job, Model

__all__ = ["DEFAULT_SOCKET", "default_socket_path", "READ_METHODS", "JobRef", "Report",
           "Methods", "BlockingMethods", "AsyncMethods", "Target", "rpc", "decode",
           "lost", "no_answer", "retry_after_loss"]

DEFAULT_SOCKET = "/run/lvmsuper/lvmsuper.sock"

# Reads may be retried once on a fresh connection; a change never is (its outcome is
# unknown once the connection broke).
READ_METHODS = frozenset({"ping", "version", "status", "subscribe", "pvs", "vgs", "lvs",
                          "report", "jobs", "job_status"})

_LIST_OF: dict[str, type[Model]] = {"pvs": PV, "vgs": VG, "lvs": LV, "pvcreate": PV,
                                    "jobs": Job}
_ONE_OF: dict[str, type[Model]] = {
    "pvresize": PV, "pvchange": PV, "vgcreate": VG, "vgextend": VG, "vgreduce": VG,
    "vgrename": VG, "vgchange": VG, "lvcreate": LV, "lvresize": LV, "lvrename": LV,
    "lvchange": LV, "job_status": Job, "job_cancel": Job}

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JobRef:
    """A change that outlived its ``wait``: collect it with ``job_status(id)``."""

    id: str


class Report(TypedDict):
    """``report``'s result: PVs, VGs and LVs from one consistent LVM run."""

    pvs: list[PV]
    vgs: list[VG]
    lvs: list[LV]


class Target:
    """Where a client connects, the same for both clients: the Unix socket
    (``socket_path``, default ``$LVMSUPER_SOCKET``) or D-Bus; ``timeout`` bounds a call."""

    def __init__(self, socket_path: str | None, timeout: float | None, transport: str) -> None:
        if transport not in ("socket", "dbus"):
            raise ValueError(f"transport must be 'socket' or 'dbus', not {transport!r}")
        self.socket_path = socket_path or default_socket_path()
        self.timeout = timeout
        self.transport = transport


def retry_after_loss(method: str, attempt: int) -> bool:
    """A read may be retried once on a new connection; a change never."""
    return method in READ_METHODS and attempt == 1


def lost(method: str, exc: BaseException, socket: str) -> ConnectionFailed:
    if method not in READ_METHODS:
        return ConnectionFailed(f"connection to lvmsuperd lost during {method}; the change "
                                "may or may not have happened: check with a read or 'jobs'",
                                socket=socket)
    return ConnectionFailed(f"connection to lvmsuperd lost: {exc}", socket=socket)


def no_answer(method: str, timeout: float | None, socket: str) -> ConnectionFailed:
    """A call that outlived the client's ``timeout``: not retried (that would double the
    wait); for a change, its outcome is unknown."""
    unknown = ("; the change may or may not have happened: check with a read or 'jobs'"
               if method not in READ_METHODS else "")
    return ConnectionFailed(f"no answer from lvmsuperd to {method} within {timeout:g} s"
                            f"{unknown}", socket=socket)


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


# ---- one declaration per method --------------------------------------------------------

class rpc(Generic[P, T]):
    """A daemon method declared by a signature (its name is the wire name). Read from a
    blocking client it is a function returning ``T``; from an asyncio client, a
    coroutine function returning ``T``."""

    def __init__(self, spec: Callable[Concatenate[Any, P], T]) -> None:
        self.name = spec.__name__
        self.__doc__ = spec.__doc__
        signature = inspect.signature(spec)
        self.signature = signature.replace(parameters=list(signature.parameters.values())[1:])

    def params(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The wire params of one call: what was given, less ``None``; a missing or
        unknown argument is a TypeError, as for any Python function."""
        try:
            given = self.signature.bind(*args, **kwargs).arguments
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        return {key: value for key, value in given.items() if value is not None}

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: BlockingMethods, owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: AsyncMethods,
                owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        if obj is None:
            return self
        name, params = self.name, self.params
        if isinstance(obj, AsyncMethods):
            async def bound_async(*args: Any, **kwargs: Any) -> Any:
                return await obj.call(name, **params(args, kwargs))
            return self._dress(bound_async)

        def bound(*args: Any, **kwargs: Any) -> Any:
            return obj.call(name, **params(args, kwargs))
        return self._dress(bound)

    def _dress(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Name, docstring and signature of the declaration, for help() and IDEs."""
        function.__name__ = function.__qualname__ = self.name
        function.__doc__ = self.__doc__
        function.__signature__ = self.signature  # type: ignore[attr-defined]
        return function


_Kind = Literal["linear", "snapshot", "thin-pool", "thin"]


class Methods:
    """Every method of lvmsuperd (DESIGN.md, "Methods"). An existing PV is named by its
    device path, a VG by its name, an LV by ``"vg/lv"``; sizes are bytes. Every change
    takes ``wait`` (seconds): if LVM still runs when it passes, the result is a
    ``JobRef`` and the change runs to completion."""

    # ---- reads (role query)
    @rpc
    def ping(self) -> dict[str, Any]:
        """Checks that the daemon answers (``{}``)."""

    @rpc
    def version(self) -> dict[str, str]:
        """``{"lvmsuper": version, "lvm": LVM's version line}``."""

    @rpc
    def status(self) -> dict[str, Any]:
        """The daemon's status: version, pid, uptime, lvm_version, transports, clients,
        requests, latency_ms, jobs, last_errors."""

    @rpc
    def subscribe(self) -> dict[str, Any]:
        """From now on, ``changed`` notifications arrive in ``notifications``."""

    @rpc
    def pvs(self, *, names: list[str] | None = None, vg: str | None = None,
            select: str | None = None) -> list[PV]:
        """Physical volumes (``names`` are device paths, ``select`` an LVM selection)."""

    @rpc
    def vgs(self, *, names: list[str] | None = None, select: str | None = None) -> list[VG]:
        """Volume groups."""

    @rpc
    def lvs(self, *, vg: str | None = None, names: list[str] | None = None,
            tags: list[str] | None = None, select: str | None = None) -> list[LV]:
        """Logical volumes (``names`` as ``vg/lv``; ``tags``: those carrying them all)."""

    @rpc
    def report(self, *, vg: str | None = None) -> Report:
        """PVs, VGs and LVs from one consistent LVM run."""

    @rpc
    def jobs(self) -> list[Job]:
        """Running jobs and recently finished ones."""

    @rpc
    def job_status(self, job: str) -> Job:
        """One job, by id (``JobRef.id``)."""

    @rpc
    def job_cancel(self, job: str) -> Job:
        """Stops a running job where LVM can stop cleanly (pvmove)."""

    # ---- changes (role manage; removing and shrinking: destroy)
    @rpc
    def pvcreate(self, devices: list[str], *, wait: float | None = None) -> list[PV] | JobRef:
        """Initialises devices as PVs."""

    @rpc
    def pvremove(self, devices: list[str], *,
                 wait: float | None = None) -> dict[str, list[str]] | JobRef:
        """Wipes PV labels: ``{"removed": [device paths]}``."""

    @rpc
    def pvresize(self, device: str, *, size: int | None = None,
                 wait: float | None = None) -> PV | JobRef:
        """Resizes a PV to ``size`` (default: its whole device)."""

    @rpc
    def pvchange(self, device: str, *, allocatable: bool | None = None,
                 add_tags: list[str] | None = None, del_tags: list[str] | None = None,
                 wait: float | None = None) -> PV | JobRef:
        """A PV's allocatable flag and tags."""

    @rpc
    def vgcreate(self, name: str, devices: list[str], *, extent_size: int | None = None,
                 tags: list[str] | None = None, wait: float | None = None) -> VG | JobRef:
        """Creates a VG on PVs."""

    @rpc
    def vgextend(self, vg: str, devices: list[str], *,
                 wait: float | None = None) -> VG | JobRef:
        """Adds PVs to a VG."""

    @rpc
    def vgreduce(self, vg: str, *, devices: list[str] | None = None,
                 missing: bool | None = None, wait: float | None = None) -> VG | JobRef:
        """Removes PVs from a VG: ``devices``, or ``missing=True`` for missing ones."""

    @rpc
    def vgremove(self, vg: str, *, force: bool | None = None,
                 wait: float | None = None) -> dict[str, list[str]] | JobRef:
        """Removes a VG (one holding LVs only with ``force=True``)."""

    @rpc
    def vgrename(self, vg: str, new_name: str, *, wait: float | None = None) -> VG | JobRef:
        """Renames a VG."""

    @rpc
    def vgchange(self, vg: str, *, activate: bool | None = None,
                 add_tags: list[str] | None = None, del_tags: list[str] | None = None,
                 wait: float | None = None) -> VG | JobRef:
        """Activates or deactivates a VG's LVs; adds or removes tags."""

    @rpc
    def lvcreate(self, vg: str, name: str, *, size: int | None = None,
                 extents: int | str | None = None, type: _Kind | None = None,
                 origin: str | None = None, pool: str | None = None,
                 virtual_size: int | None = None, tags: list[str] | None = None,
                 activate: bool | None = None, zero: bool | None = None,
                 contiguous: bool | None = None, stripes: int | None = None,
                 stripe_size: int | None = None, devices: list[str] | None = None,
                 wait: float | None = None) -> LV | JobRef:
        """Creates an LV: linear by default, with ``size`` or ``extents`` (a count, or
        ``"N%FREE"``/``"N%VG"``); ``type="snapshot"`` with ``origin``, ``"thin-pool"``,
        or ``"thin"`` with ``pool`` and ``virtual_size``."""

    @rpc
    def lvremove(self, lv: str, *, wait: float | None = None) -> dict[str, list[str]] | JobRef:
        """Removes an LV: ``{"removed": ["vg/lv"]}``."""

    @rpc
    def lvresize(self, lv: str, size: int, *, force: bool | None = None,
                 wait: float | None = None) -> LV | JobRef:
        """Resizes an LV to ``size``; shrinking needs ``force=True``."""

    @rpc
    def lvrename(self, lv: str, new_name: str, *, wait: float | None = None) -> LV | JobRef:
        """Renames an LV (``new_name`` is the bare LV name)."""

    @rpc
    def lvchange(self, lv: str, *, activate: bool | None = None,
                 permission: Literal["r", "rw"] | None = None,
                 add_tags: list[str] | None = None, del_tags: list[str] | None = None,
                 wait: float | None = None) -> LV | JobRef:
        """Activates or deactivates an LV, sets its permission, adds or removes tags."""

    @rpc
    def pvmove(self, source: str, *, destination: str | None = None, lv: str | None = None,
               wait: float | None = None) -> JobRef:
        """Moves extents off a PV (only those of ``lv``, if given); always a job."""


class BlockingMethods(Methods):
    """Base of the blocking client: each method returns its typed result."""

    def call(self, method: str, **params: Any) -> Any:
        raise NotImplementedError


class AsyncMethods(Methods):
    """Base of the asyncio client: each method is a coroutine function."""

    async def call(self, method: str, **params: Any) -> Any:
        raise NotImplementedError
