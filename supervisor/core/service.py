"""The service core's entry point: admission, dispatch, reads, and what methods may ask.

Rule: this module knows nothing of sockets or D-Bus. A transport hands ``call`` a
``Caller`` (identity from the kernel or the bus), a method name, the JSON params and its
``Authority``; it gets back a JSON-ready result or an ``LvmSuperError``. Both transports
go through here, so they cannot drift apart. Changes are run by ``changes``, reads in
``reads``' bounded slots; this module joins them and maps LVM's failures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

from lvmsuper.client import __version__
from lvmsuper.client.errors import (AlreadyExists, Busy, Internal, InvalidRequest, LockConflict,
                                    LvmFailed, LvmSuperError, NotFound, PermissionDenied)
from lvmsuper.client.models import to_wire
from lvmsuper.client.protocol import Encoded, method_not_found

from ..config import Config
from ..lvm.calls import Lvm
from ..lvm.lockd import Lockd
from .audit import audit
from .cache import ReadCache
from .auth import Authority, Caller
from .call import Call, Expect, Method
from .changes import Changes
from .events import Announcer, Events
from .jobs import JobManager
from .locks import Queue
from .methods import METHODS
from .reads import ReadSlots
from .scopes import VgScope
from .stats import Stats
from .targets import Policy

__all__ = ["Service", "Call", "CACHED"]

# The reads whose answer is an LVM report, so the read cache may hold it (vgck is a
# check of the disks: it always reads them).
CACHED = frozenset({"pvs", "vgs", "lvs", "fullreport"})

log = logging.getLogger("lvmsuperd")
T = TypeVar("T")

Listener = Callable[[dict[str, Any]], None]


class Service:
    def __init__(self, config: Config, lvm: Lvm, *, recent: Iterable[Any] = ()) -> None:
        self.config = config
        self.lvm = lvm
        self.recent = recent
        self.jobs = JobManager(config.jobs_keep, config.jobs_max_kept)
        self.stats = Stats()
        self.transports: list[str] = []
        self.queue = Queue(config.max_queue)
        self.reads = ReadSlots(config.max_parallel, self.queue)
        self.cache = ReadCache(config.lvm_cache, config.lvm_system_dir, lvm.scan_settings)
        self.policy = Policy(config)
        self.events = Events(config.events_keep)
        self.changes = Changes(self, self.policy, self.queue, config.max_parallel,
                               Announcer(self.events), invalidate=self.cache.invalidate)
        self.stopping = False
        self.on_subscribe: Callable[[bool], None] | None = None  # watcher
        # the watcher: returns once it has a baseline to tell changes against
        self.baseline_ready: Callable[[], Awaitable[None]] | None = None
        self.lockd = Lockd(system_dir=config.lvm_system_dir)  # shared VGs (lvmlockd)
        self._lvm_version: str | None = None

    # ---- entry point -------------------------------------------------------------

    async def call(self, caller: Caller, name: str, params: dict[str, Any],
                   authority: Authority, *, encoded: bool = False,
                   taken: bool = False) -> Any:
        """One request, answered with its wire result or an LvmSuperError. ``taken``:
        the transport read it before the stop began (the socket stops reading then), so
        it is answered; any other call from the stop on is refused with Busy."""
        started = time.monotonic()
        self.stats.total += 1
        self.stats.in_flight += 1
        error: LvmSuperError | None = None
        try:
            method = METHODS.get(name)
            if method is None:
                raise method_not_found(name)
            if self.stopping and not taken:
                raise Busy("lvmsuperd is shutting down; retry later", retry_after=1)
            if method.declared:
                return await self._change(caller, method, params, authority)
            call = await self._admit(caller, method, params, authority)
            result = await method.run(self, call)
            if encoded and (text := self.cache.encoded(result)) is not None:
                return Encoded(text)  # a transport that sends JSON lines takes it as is
            return to_wire(result)
        except LvmSuperError as exc:
            error = exc
            raise
        except Exception as exc:
            request_id = uuid.uuid4().hex[:12]
            log.exception("internal error in %s (request id %s)", name, request_id)
            error = Internal(f"internal error (request id {request_id}); details are in "
                             "the daemon's log", request_id=request_id)
            raise error from exc
        finally:
            self.stats.finish(name, started, error)

    async def _change(self, caller: Caller, method: Method, params: dict[str, Any],
                      authority: Authority) -> Any:
        try:
            call = await self._admit(caller, method, params, authority)
        except LvmSuperError as exc:  # refused before anything was planned: audited too
            audit(caller, method.name, {k: v for k, v in params.items() if k != "wait"},
                  exc.name, 0.0)
            raise
        return await self.changes.submit(call, params)

    async def _admit(self, caller: Caller, method: Method, params: dict[str, Any],
                     authority: Authority) -> Call:
        """The parameters, then the caller's role for what they name (polkit's details):
        a Call the method may run, with the caller's scope for its role. A caller
        without the role learns nothing of its parameters: PermissionDenied whatever
        they are."""
        try:
            args = self._validate(method, params)
        except LvmSuperError:
            await self._role(caller, method, {"method": method.name, "vg": "", "lv": "",
                                              "devices": ""}, authority)
            raise
        call = Call(caller, method, args, authority)
        await self._role(caller, method, call.details, authority)
        call.scope = authority.scope(caller, method.role)
        return call

    @staticmethod
    async def _role(caller: Caller, method: Method, details: dict[str, str],
                    authority: Authority) -> None:
        if not await authority.allowed(caller, method.role, details):
            raise PermissionDenied(f"{method.name} needs the {method.role} role",
                                   required=str(method.role))

    @staticmethod
    def _validate(method: Method, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(method.params))
        if unknown:
            raise InvalidRequest(f"{method.name} has no parameter {unknown[0]!r}",
                                 field=unknown[0])
        args: dict[str, Any] = {}
        groups: dict[str, list[str]] = {}
        for key, param in method.params.items():
            if param.one_of is not None:
                groups.setdefault(param.one_of, []).append(key)
            if key in params:
                args[key] = param.check(params[key], key)
            elif param.required:
                raise InvalidRequest(f"{method.name} needs the parameter {key!r}", field=key)
        for keys in groups.values():
            given = [k for k in keys if k in args]
            if len(given) != 1:
                raise InvalidRequest(f"{method.name} needs exactly one of "
                                     f"{' and '.join(map(repr, keys))}",
                                     field=given[1] if given else keys[0])
        return args

    async def drain(self) -> None:
        """Shutdown: refuses new calls (``Busy``), then waits until no request is in
        flight and no job runs. Reads finish; changes are waited for, never killed."""
        self.stopping = True
        # Requests a transport took just before this have tasks that have not started
        # yet (so are not counted in flight): they are queued ahead of us and start now.
        await asyncio.sleep(0)
        while self.stats.in_flight or self.jobs.running:
            await asyncio.sleep(0.02)

    # ---- what methods may ask (call.Runtime) ----------------------------------------

    async def lvm_change(self, call: Call, command: str, args: Sequence[str],
                         expect: list[Expect], *, json_log: bool = True) -> None:
        """Runs one mutating LVM command to completion; maps its failure."""
        call.ran = True
        try:
            await self.lvm.scoped(call.scan).change(command, args, json_log=json_log)
        except LvmFailed as exc:
            raise await self.classify(exc, expect) from None
        call.completed = True

    async def read(self, key: Hashable, run: Callable[[], Awaitable[T]],
                   expect: list[Expect]) -> T:
        """Runs one LVM read in a bounded slot; maps a failure on named objects."""
        try:
            if isinstance(key, tuple) and key and key[0] in CACHED:
                return await self.cache.read(key, lambda: self.reads.run(key, run))
            return await self.reads.run(key, run)
        except LvmFailed as exc:
            raise await self.classify(exc, expect) from None

    async def ensure(self, expect: list[Expect]) -> None:
        """NotFound / AlreadyExists now, from LVM's report, unless all is as expected."""
        error = await self.classify(None, expect)
        if error is not None:
            raise error

    async def classify(self, exc: LvmFailed | None, expect: list[Expect]) -> Any:
        """NotFound / AlreadyExists when LVM's own report shows the cause, else ``exc``
        (a ``LockConflict`` on an LV with the holder's host id, where sanlock says)."""
        if isinstance(exc, LockConflict):
            return await self._holder(exc)
        if not expect:
            return exc
        try:
            pvs, vgs, lvs = await self.cache.read(
                ("fullreport", None, ("scan",)),
                lambda: self.reads.exclusive(self.lvm.fullreport))
        except LvmSuperError:
            return exc
        present = {"pv": {p.name for p in pvs} | {os.path.realpath(p.name) for p in pvs},
                   "vg": {g.name for g in vgs}, "lv": {lv.full_name for lv in lvs}}
        for item in expect:
            names = {item.name, os.path.realpath(item.name)} if item.kind == "pv" else {item.name}
            found = bool(names & present[item.kind])
            label = {"pv": "PV", "vg": "VG", "lv": "LV"}[item.kind]
            if item.exists and not found:
                return NotFound(f"{label} {item.name!r} not found",
                                object_type=item.kind, object_name=item.name)
            if not item.exists and found:
                return AlreadyExists(f"{label} {item.name!r} already exists",
                                     object_type=item.kind, object_name=item.name)
        return exc

    async def _holder(self, exc: LockConflict) -> LockConflict:
        """Fills in ``holder``: the host whose sanlock lease the LV's lock is."""
        if exc.data.get("object_type") != "lv" or "holder" in exc.data:
            return exc
        vg, _, name = str(exc.data.get("object_name", "")).partition("/")
        try:
            lvs = await self.reads.exclusive(lambda: self.lvm.lvs([f"{vg}/{name}"]))
            holder = (await self.lockd.holder(vg, name, lvs[0].uuid, lvs[0].lock_args)
                      if lvs else None)
        except (LvmSuperError, OSError):
            holder = None
        exc.data["holder"] = holder
        if holder is not None:
            exc.message = f"{exc.message} (held by host {holder})"
        return exc

    async def refuse_lost(self, vgs: Sequence[str]) -> None:
        """``LockConflict`` for a change in a VG whose lockspace this host lost (its sanlock
        lease could not be renewed) until ``lockstart`` starts it again."""
        if not vgs or not self.lockd.present:
            return
        lost = set((await self.lockd.info()).lost)
        for vg in vgs:
            if vg in lost:
                error = LockConflict(f"the lockspace of VG {vg} is lost on this host (sanlock "
                                     "could not renew its lease): no change in it until "
                                     "lockstart starts it again", object_type="vg",
                                     object_name=vg)
                error.data["holder"] = None
                raise error

    async def lockspaces(self) -> dict[str, list[str]]:
        """``{"lockspaces": [VG started here], "lost_lockspaces": [VG lost here]}``."""
        info = await self.lockd.info()
        return {"lockspaces": info.started, "lost_lockspaces": info.lost}

    # ---- notifications, status ---------------------------------------------------------

    def subscribe(self, listener: Listener, since: dict[str, Any] | None = None,
                  active: Callable[[], bool] | None = None, scope: VgScope | None = None
                  ) -> tuple[dict[str, Any], list[dict[str, Any]], Callable[[], None]]:
        """``listener`` gets every ``changed`` notification's params from now on (it
        listens while ``active()``; a scoped subscriber, only the objects of its
        ``scope``); also returns the stream's position, and what was missed since
        ``since``."""
        first = not self.watched()
        attached = self.events.attach(listener, since, active,
                                      scope.sees if scope is not None else None)
        if self.on_subscribe is not None:
            self.on_subscribe(first)  # the watcher looks at once (afresh if nobody did)
        return attached

    def watched(self) -> bool:
        """Whether anybody listens for changes now (the watcher reads LVM only then)."""
        return self.events.listening > 0

    def position(self) -> dict[str, Any]:
        return self.events.position

    async def lvm_version(self) -> str:
        if self._lvm_version is None:
            self._lvm_version = await self.read(("version",), self.lvm.version, [])
        return self._lvm_version

    async def status(self) -> dict[str, Any]:
        s = self.stats
        return {"version": __version__, "pid": os.getpid(),
                "uptime": round(time.monotonic() - s.started, 3),
                "lvm_version": await self.lvm_version(), "transports": list(self.transports),
                "clients": s.clients,
                "requests": {"total": s.total, "failed": s.failed,
                             "in_flight": s.in_flight, "queued": self.queue.waiting},
                "latency_ms": s.latency(), "jobs": self.jobs.running,
                "cache": self.cache.status(),
                "last_errors": list(s.last_errors), **await self.lockspaces()}

    def summary(self) -> str:
        s = self.stats
        return (f"serving; {s.clients} clients; {s.total} requests, {s.failed} failed; "
                f"{self.jobs.running} jobs running")
