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
import io
import os
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import (Any, Concatenate, Generic, Literal, ParamSpec, Self, TypedDict, TypeVar,
                    overload)

from .errors import ConnectionFailed
from .models import LV, PV, VG, Job, Model
from .passing import OPENS, as_file

__all__ = ["DEFAULT_SOCKET", "DEFAULT_TIMEOUT", "default_socket_path", "READ_METHODS",
           "JobRef", "Report", "Methods", "BlockingMethods", "AsyncMethods", "Target", "rpc",
           "decode", "lost", "no_answer", "call_timeout", "retry_after_loss",
           "next_position", "RESUME_PAUSES", "with_request_id"]

DEFAULT_SOCKET = "/run/lvmsuper/lvmsuper.sock"

# Seconds a call waits for its answer unless the caller says otherwise (``timeout=None``:
# forever). Never waiting forever by default: a socket that systemd accepted but nobody
# serves (the daemon failed to start) would otherwise hang every caller.
DEFAULT_TIMEOUT = 120.0

# Reads may be retried once on a fresh connection; a change never is (its outcome is
# unknown once the connection broke).
READ_METHODS = frozenset({"ping", "version", "status", "subscribe", "pvs", "vgs", "lvs",
                          "report", "vgck", "jobs", "job_status"})
# Changes that take a batch (``lvs``): one LV answers as that LV, a batch of them as
# ``{"lvs": [...]}`` (decoded to a list of LVs), so the wire keeps one type per method.
BATCH_OF: dict[str, type[Model]] = {"lvchange": LV}

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
    (``socket_path``, default ``$LVMSUPER_SOCKET``) or D-Bus; ``timeout`` bounds a call
    (``call_timeout``; ``None``: no bound)."""

    def __init__(self, socket_path: str | None, timeout: float | None, transport: str) -> None:
        if transport not in ("socket", "dbus"):
            raise ValueError(f"transport must be 'socket' or 'dbus', not {transport!r}")
        self.socket_path = socket_path or default_socket_path()
        self.timeout = timeout
        self.transport = transport


def with_request_id(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A change gets a fresh ``request_id`` unless the caller gave one: the daemon runs
    a change repeated with it once, so a retry after a lost connection is safe."""
    if method in READ_METHODS or method in OPENS or "request_id" in params:
        return params
    return {**params, "request_id": uuid.uuid4().hex}


def retry_after_loss(method: str, attempt: int) -> bool:
    """A call whose connection broke is retried once on a new connection: a read, and a
    change (it carries its ``request_id``: the daemon gives the repeat the first call's
    outcome and runs nothing again)."""
    return attempt == 1


def lost(method: str, exc: BaseException, socket: str) -> ConnectionFailed:
    if method not in READ_METHODS and method not in OPENS:
        return ConnectionFailed(f"connection to lvmsuperd lost during {method}, and again "
                                "when it was retried with the same request_id; the change "
                                "may or may not have happened: check with a read or 'jobs'",
                                socket=socket)
    return ConnectionFailed(f"connection to lvmsuperd lost: {exc}", socket=socket)


def call_timeout(timeout: float | None, method: str, params: dict[str, Any]) -> float | None:
    """How long one call waits for its answer: the client's ``timeout``, and for a change
    given ``wait`` that much longer (the daemon answers it by then at the latest, with
    its result or a job), so a ``wait`` longer than the timeout never fails by itself."""
    wait = params.get("wait")
    if (timeout is None or method in READ_METHODS or isinstance(wait, bool)
            or not isinstance(wait, (int, float)) or wait <= 0):
        return timeout
    return timeout + float(wait)


def no_answer(method: str, timeout: float | None, socket: str) -> ConnectionFailed:
    """A call that outlived its timeout (``data.timeout``, seconds): not retried (that
    would double the wait); for a change, its outcome is unknown."""
    unknown = ("; the change may or may not have happened: check with a read or 'jobs'"
               if method not in READ_METHODS else "")
    return ConnectionFailed(f"no answer from lvmsuperd to {method} within {timeout:g} s"
                            f"{unknown}", socket=socket, timeout=timeout)


def default_socket_path() -> str:
    return os.environ.get("LVMSUPER_SOCKET") or DEFAULT_SOCKET


def decode(method: str, result: Any, params: dict[str, Any] | None = None) -> Any:
    """A method's wire result as typed models (unknown methods: plain JSON); lv_open's
    descriptor as a file object opened for its ``mode``."""
    if method in OPENS:
        return as_file(result, (params or {}).get("mode", "r"))
    if isinstance(result, dict) and set(result) == {"job"} and method not in READ_METHODS:
        return JobRef(str(result["job"]))
    # the result was just decoded and is ours alone: its lists need no copy
    if method in _LIST_OF:
        return list(map(_LIST_OF[method].from_fresh, result))
    if method in BATCH_OF and isinstance(result, dict) and set(result) == {"lvs"}:
        return list(map(BATCH_OF[method].from_fresh, result["lvs"]))
    if method in _ONE_OF:
        return _ONE_OF[method].from_fresh(result)
    if method == "report":
        return {"pvs": list(map(PV.from_fresh, result["pvs"])),
                "vgs": list(map(VG.from_fresh, result["vgs"])),
                "lvs": list(map(LV.from_fresh, result["lvs"]))}
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
# true, false, or in a shared VG the lock mode ("exclusive": this host only; "shared")
_Activate = bool | Literal["exclusive", "shared"]


class Methods:
    """Every method of lvmsuperd (DESIGN.md, "Methods"). An existing PV is named by its
    device path, a VG by its name, an LV by ``"vg/lv"``; sizes are bytes. Every change
    takes ``wait`` (seconds): if LVM still runs when it passes, the result is a
    ``JobRef`` and the change runs to completion. Every method that runs LVM on devices
    takes ``scan_devices`` (block devices under /dev): LVM's scan sees only those for
    this call (its ``--devices``); what may be touched is decided as without it."""

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
        requests, latency_ms, jobs, last_errors, cache (``{"hits", "misses",
        "last_miss"}``: reads answered from memory, proven fresh), lockspaces (shared VGs
        whose lockspace is started here), lost_lockspaces (lost here: changes refused
        until lockstart)."""

    @rpc
    def subscribe(self, *, since: dict[str, Any] | None = None) -> dict[str, Any]:
        """From now on, ``changed`` notifications arrive in ``notifications`` (first
        those missed since ``since``, a ``{"boot", "seq"}`` position); answers the
        stream's current position. ``changes()`` does this for you, resuming."""

    @rpc
    def pvs(self, *, names: list[str] | None = None, vg: str | None = None,
            select: str | None = None, scan_devices: list[str] | None = None) -> list[PV]:
        """Physical volumes (``names`` are device paths, ``select`` an LVM selection)."""

    @rpc
    def vgs(self, *, names: list[str] | None = None, select: str | None = None,
            scan_devices: list[str] | None = None) -> list[VG]:
        """Volume groups."""

    @rpc
    def lvs(self, *, vg: str | None = None, names: list[str] | None = None,
            tags: list[str] | None = None, select: str | None = None,
            scan_devices: list[str] | None = None) -> list[LV]:
        """Logical volumes (``names`` as ``vg/lv``; ``tags``: those carrying them all)."""

    @rpc
    def report(self, *, vg: str | None = None,
               scan_devices: list[str] | None = None) -> Report:
        """PVs, VGs and LVs from one consistent LVM run."""

    @rpc
    def vgck(self, vg: str, *, scan_devices: list[str] | None = None) -> dict[str, Any]:
        """LVM's consistency check of a VG: ``{"ok": bool, "log": [LVM's log entries]}``."""

    @rpc
    def jobs(self) -> list[Job]:
        """Running jobs and recently finished ones."""

    @rpc
    def job_status(self, job: str) -> Job:
        """One job, by id (``JobRef.id``)."""

    @rpc
    def job_cancel(self, job: str, *, request_id: str | None = None,
                 wait: float | None = None) -> Job | JobRef:
        """Stops a running job where LVM can stop cleanly (pvmove); its owner or root
        only."""

    # ---- changes (role manage; removing and shrinking: destroy)
    @rpc
    def pvcreate(self, devices: list[str], *, wipe: bool | None = None,
                 metadata_size: int | None = None, metadata_copies: int | None = None,
                 metadata_ignore: bool | None = None, scan_devices: list[str] | None = None,
                 request_id: str | None = None,
                 wait: float | None = None) -> list[PV] | JobRef:
        """Initialises devices as PVs; a device carrying a signature (a filesystem, a
        partition table) is refused unless ``wipe=True`` (role destroy). Metadata
        layout: ``metadata_size`` (bytes), ``metadata_copies`` (0-2), ``metadata_ignore``
        (keep the areas but leave them unused)."""

    @rpc
    def pvremove(self, devices: list[str], *, scan_devices: list[str] | None = None,
                 request_id: str | None = None,
                 wait: float | None = None) -> dict[str, list[str]] | JobRef:
        """Wipes PV labels: ``{"removed": [device paths]}``."""

    @rpc
    def pvresize(self, device: str, *, size: int | None = None,
                 scan_devices: list[str] | None = None, request_id: str | None = None,
                 wait: float | None = None) -> PV | JobRef:
        """Resizes a PV to ``size`` (default: its whole device)."""

    @rpc
    def pvchange(self, device: str, *, allocatable: bool | None = None,
                 metadata_ignore: bool | None = None,
                 add_tags: list[str] | None = None, del_tags: list[str] | None = None,
                 scan_devices: list[str] | None = None,
                 request_id: str | None = None,
                 wait: float | None = None) -> PV | JobRef:
        """A PV's allocatable flag, whether its metadata areas are used, and tags."""

    @rpc
    def vgcreate(self, name: str, devices: list[str], *, extent_size: int | None = None,
                 tags: list[str] | None = None, wipe: bool | None = None,
                 auto_activation: bool | None = None, shared: bool | None = None,
                 scan_devices: list[str] | None = None, request_id: str | None = None,
                 wait: float | None = None) -> VG | JobRef:
        """Creates a VG on PVs (or on devices, which become PVs: see ``wipe`` in
        ``pvcreate``); ``auto_activation=False``: LVM's autoactivation skips it.
        ``shared=True``: a VG shared by hosts through lvmlockd and sanlock (its lockspace
        is started here; the first shared VG goes straight on devices)."""

    @rpc
    def vgextend(self, vg: str, devices: list[str], *, wipe: bool | None = None,
                 scan_devices: list[str] | None = None, request_id: str | None = None,
                 wait: float | None = None) -> VG | JobRef:
        """Adds PVs (or devices, see ``wipe`` in ``pvcreate``) to a VG."""

    @rpc
    def vgreduce(self, vg: str, *, devices: list[str] | None = None,
                 missing: bool | None = None, scan_devices: list[str] | None = None,
                 request_id: str | None = None,
                 wait: float | None = None) -> VG | JobRef:
        """Removes PVs from a VG: ``devices``, or ``missing=True`` for missing ones."""

    @rpc
    def vgremove(self, vg: str, *, force: bool | None = None,
                 scan_devices: list[str] | None = None, request_id: str | None = None,
                 wait: float | None = None) -> dict[str, list[str]] | JobRef:
        """Removes a VG (one holding LVs only with ``force=True``)."""

    @rpc
    def vgrename(self, vg: str, new_name: str, *, scan_devices: list[str] | None = None,
                 request_id: str | None = None,
                 wait: float | None = None) -> VG | JobRef:
        """Renames a VG."""

    @rpc
    def vgchange(self, vg: str, *, activate: _Activate | None = None,
                 add_tags: list[str] | None = None, del_tags: list[str] | None = None,
                 scan_devices: list[str] | None = None,
                 request_id: str | None = None,
                 wait: float | None = None) -> VG | JobRef:
        """Activates or deactivates a VG's LVs (in a shared VG ``"exclusive"`` or
        ``"shared"``; ``True`` is exclusive there); adds or removes tags."""

    @rpc
    def lvcreate(self, vg: str, name: str, *, size: int | None = None,
                 extents: int | str | None = None, type: _Kind | None = None,
                 origin: str | None = None, pool: str | None = None,
                 virtual_size: int | None = None, tags: list[str] | None = None,
                 activate: bool | None = None, zero: bool | None = None,
                 contiguous: bool | None = None, stripes: int | None = None,
                 stripe_size: int | None = None, devices: list[str] | None = None,
                 wipe_signatures: bool | None = None, scan_devices: list[str] | None = None,
                 request_id: str | None = None,
                 wait: float | None = None) -> LV | JobRef:
        """Creates an LV: linear by default, with ``size`` or ``extents`` (a count, or
        ``"N%FREE"``/``"N%VG"``); ``type="snapshot"`` with ``origin``, ``"thin-pool"``,
        or ``"thin"`` with ``pool`` and ``virtual_size``. ``wipe_signatures=False``:
        LVM leaves signatures found in the new LV's extents (the caller writes it)."""

    @rpc
    def lvremove(self, lv: str | None = None, *, lvs: list[str] | None = None,
                 scan_devices: list[str] | None = None,
                 request_id: str | None = None,
                 wait: float | None = None) -> dict[str, list[str]] | JobRef:
        """Removes an LV, or a batch ``lvs`` of one VG in one LVM run (exactly one of the
        two): ``{"removed": ["vg/lv", ...]}``."""

    @rpc
    def lvresize(self, lv: str, size: int, *, force: bool | None = None,
                 scan_devices: list[str] | None = None, request_id: str | None = None,
                 wait: float | None = None) -> LV | JobRef:
        """Resizes an LV to ``size``; shrinking needs ``force=True``."""

    @rpc
    def lvrename(self, lv: str, new_name: str, *, scan_devices: list[str] | None = None,
                 request_id: str | None = None,
                 wait: float | None = None) -> LV | JobRef:
        """Renames an LV (``new_name`` is the bare LV name)."""

    @rpc
    def lvchange(self, lv: str | None = None, *, lvs: list[str] | None = None,
                 activate: _Activate | None = None, refresh: bool | None = None,
                 permission: Literal["r", "rw"] | None = None,
                 add_tags: list[str] | None = None, del_tags: list[str] | None = None,
                 scan_devices: list[str] | None = None,
                 request_id: str | None = None,
                 wait: float | None = None) -> LV | list[LV] | JobRef:
        """Activates or deactivates, refreshes (alone), sets the permission of, adds or
        removes tags of an LV (answered with it) or of a batch ``lvs`` of one VG in one
        LVM run (exactly one of the two; answered with the list of LVs). In a shared VG
        ``activate`` is ``"exclusive"`` (``True``) or ``"shared"`` (linear and striped
        LVs only); ``refresh=True`` reloads an LV another host extended."""

    @rpc
    def lockstart(self, *, vg: str | None = None, request_id: str | None = None,
                  wait: float | None = None) -> dict[str, list[str]] | JobRef:
        """Starts a shared VG's lockspace here (every shared VG's without ``vg``) and
        waits until its locks can be had (tens of seconds: give ``wait``):
        ``{"started": [VG names]}``."""

    @rpc
    def lockstop(self, *, vg: str | None = None, request_id: str | None = None,
                 wait: float | None = None) -> dict[str, list[str]] | JobRef:
        """Stops a shared VG's lockspace here (every one without ``vg``); its LVs must be
        inactive here: ``{"stopped": [VG names]}``."""

    # ---- using volumes (role open)
    @rpc
    def lv_open(self, lv: str, mode: Literal["r", "rw"], *, shared: bool | None = None,
                scan_devices: list[str] | None = None) -> io.FileIO:
        """Opens an active LV's device as root and hands over the descriptor, as an
        unbuffered file object (``rb`` for mode ``"r"``, ``r+b`` for ``"rw"``) that the
        caller closes. ``"rw"`` is exclusive (a second writer, a mounted LV: ``InUse``)
        unless ``shared=True``; an inactive LV is ``InvalidRequest``."""

    @rpc
    def pvmove(self, source: str, *, destination: str | None = None, lv: str | None = None,
               scan_devices: list[str] | None = None, request_id: str | None = None,
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


def next_position(params: dict[str, Any], current: dict[str, Any] | None
                  ) -> dict[str, Any] | None:
    """Where the stream stands after the ``changed`` notification ``params``."""
    if "seq" in params and "boot" in params:
        return {"boot": params["boot"], "seq": params["seq"]}
    return current


RESUME_PAUSES = (0.2, 0.5, 1.0, 2.0, 5.0)  # seconds between attempts to get back
