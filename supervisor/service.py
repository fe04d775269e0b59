"""The service core: authorization, validation, policy, concurrency, jobs, audit.

Rule: this module knows nothing of sockets or D-Bus. A transport hands ``call`` a
``Caller`` (identity from the kernel or the bus), a method name, the JSON params and its
``Authority``; it gets back a JSON-ready result or an ``LvmSuperError``. Both transports
go through here, so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import logging
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, TypeVar

from lvmsuper.client import __version__
from lvmsuper.client.errors import (AlreadyExists, Busy, Internal, InvalidRequest, LvmFailed,
                                    LvmSuperError, NotFound, PermissionDenied)
from lvmsuper.client.models import to_wire
from lvmsuper.client.protocol import method_not_found

from .audit import audit
from .auth import Authority, Caller, Role
from .config import Config
from .jobs import Job, JobManager
from .lvm import Lvm
from .methods import METHODS, Expect, Method

__all__ = ["Service", "Call"]

log = logging.getLogger("lvmsuperd")
T = TypeVar("T")

Listener = Callable[[list[dict[str, str]]], None]


@dataclass(slots=True)
class Call:
    """One invocation, as the method implementations see it."""

    caller: Caller
    method: Method
    args: dict[str, Any]
    authority: Authority
    changed: list[dict[str, str]] = field(default_factory=list)
    job: Job | None = None

    async def require(self, role: Role) -> None:
        if not await self.authority.allowed(self.caller, role):
            raise PermissionDenied(f"{self.method.name} as called needs the {role} role",
                                   required=str(role))


class Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.total = self.failed = self.in_flight = self.queued = self.clients = 0
        self.coalesced = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=2048)
        self.last_errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=8)

    def finish(self, method: str, started: float, error: LvmSuperError | None) -> None:
        self.in_flight -= 1
        self.coalesced = 0
        self.latencies.append((time.monotonic() - started) * 1000)
        if error is not None:
            self.failed += 1
            self.last_errors.append({"time": time.time(), "method": method,
                                     "error": error.name, "message": error.message[:200]})

    def latency(self) -> dict[str, float | None]:
        data = sorted(self.latencies)
        if len(data) < 2:
            return {"p50": data[0] if data else None, "p99": data[0] if data else None}
        cuts = statistics.quantiles(data, n=100, method="inclusive")
        return {"p50": round(cuts[49], 3), "p99": round(cuts[98], 3)}


class Service:
    def __init__(self, config: Config, lvm: Lvm, *, recent: Iterable[Any] = ()) -> None:
        self.config = config
        self.lvm = lvm
        self.recent = recent
        self.jobs = JobManager(config.jobs_keep)
        self.stats = Stats()
        self.transports: list[str] = []
        self._slots = asyncio.Semaphore(config.max_parallel)  # LVM reads at once
        self._change_slots = asyncio.Semaphore(config.max_parallel)  # changes at once
        self.stopping = False
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._lock_users: collections.Counter[str] = collections.Counter()
        self._listeners: list[Listener] = []
        self._queued_reads: dict[Hashable, asyncio.Task[Any]] = {}
        self._lvm_version: str | None = None

    # ---- entry point -------------------------------------------------------------

    async def call(self, caller: Caller, name: str, params: dict[str, Any],
                   authority: Authority) -> Any:
        started = time.monotonic()
        self.stats.total += 1
        self.stats.in_flight += 1
        error: LvmSuperError | None = None
        try:
            method = METHODS.get(name)
            if method is None:
                raise method_not_found(name)
            if self.stopping:
                raise Busy("lvmsuperd is shutting down; retry later", retry_after=1)
            if method.change:
                return await self._change_call(caller, method, params, authority)
            return to_wire(await method.run(self, await self._admit(
                caller, method, params, authority)))
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

    async def _admit(self, caller: Caller, method: Method, params: dict[str, Any],
                     authority: Authority) -> Call:
        """The caller's role, then the parameters: a Call the method may run."""
        if not await authority.allowed(caller, method.role):
            raise PermissionDenied(f"{method.name} needs the {method.role} role",
                                   required=str(method.role))
        return Call(caller, method, self._validate(method, params), authority)

    @staticmethod
    def _validate(method: Method, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(method.params))
        if unknown:
            raise InvalidRequest(f"{method.name} has no parameter {unknown[0]!r}",
                                 field=unknown[0])
        args: dict[str, Any] = {}
        for key, param in method.params.items():
            if key in params:
                args[key] = param.check(params[key], key)
            elif param.required:
                raise InvalidRequest(f"{method.name} needs the parameter {key!r}", field=key)
        return args

    # ---- policy ---------------------------------------------------------------

    def _check_policy(self, call: Call) -> None:
        for key, param in call.method.params.items():
            value = call.args.get(key)
            if value is None or param.policy is None:
                continue
            if param.policy == "vg" and value in self.config.protected_vgs:
                raise PermissionDenied(f"VG {value!r} is protected by policy",
                                       required="policy", field=key)
            if param.policy == "lv" and value[0] in self.config.protected_vgs:
                raise PermissionDenied(f"VG {value[0]!r} is protected by policy",
                                       required="policy", field=key)
            if param.policy in ("device", "devices"):
                for dev in ([value] if param.policy == "device" else value):
                    if not self.device_allowed(dev):
                        raise PermissionDenied(
                            f"device {dev!r} is not allowed by [policy] devices",
                            required="policy", field=key)

    async def check_pv_not_protected(self, device: str) -> None:
        """A change to an existing PV changes its VG: refused for a protected VG."""
        if not self.config.protected_vgs:
            return
        pvs = await self.read(("pvs", device, None), lambda: self.lvm.pvs([device]),
                              [Expect("pv", device)])
        if pvs and pvs[0].vg in self.config.protected_vgs:
            raise PermissionDenied(f"{device} belongs to VG {pvs[0].vg!r}, which is "
                                   "protected by policy", required="policy")

    def device_allowed(self, device: str) -> bool:
        real = os.path.realpath(device)
        return any(fnmatch.fnmatchcase(device, glob) or fnmatch.fnmatchcase(real, glob)
                   for glob in self.config.policy_devices)

    # ---- changes ----------------------------------------------------------------

    async def _change_call(self, caller: Caller, method: Method, params: dict[str, Any],
                           authority: Authority) -> Any:
        """A change: refused now (and audited as refused), or run in a job."""
        started = time.monotonic()
        shown = {k: v for k, v in params.items() if k != "wait"}
        try:
            call = await self._admit(caller, method, params, authority)
            wait = call.args.pop("wait", None)
            if method.name == "pvmove":
                wait = 0  # always answered with a job
            self._check_policy(call)
            for key, param in method.params.items():  # before any job exists
                if param.policy == "device" and key in call.args:
                    await self.check_pv_not_protected(call.args[key])
        except Exception as exc:
            audit(caller, method.name, shown,
                  exc.name if isinstance(exc, LvmSuperError) else "Internal",
                  (time.monotonic() - started) * 1000)
            raise
        job = self.jobs.start(method.name, caller.uid,
                              lambda job: self._run_change(call, shown, job))
        if wait is None:
            return await asyncio.shield(job.task)  # a gone caller never stops a change
        done, _ = await asyncio.wait([job.task], timeout=wait)
        return job.task.result() if done else {"job": job.id}

    async def _run_change(self, call: Call, shown: dict[str, Any], job: Job) -> Any:
        call.job = job
        started = time.monotonic()
        outcome = "ok"
        try:
            async with self._guarded(call):
                result = to_wire(await call.method.run(self, call))
            if call.changed:
                self._notify(call.changed)
            return result
        except LvmSuperError as exc:
            outcome = exc.name
            raise
        except Exception:
            outcome = "Internal"
            raise
        finally:
            audit(call.caller, call.method.name, shown,
                  "cancelled" if job.aborted else outcome,
                  (time.monotonic() - started) * 1000)

    @asynccontextmanager
    async def _guarded(self, call: Call) -> AsyncIterator[None]:
        """What a change holds while it runs, taken in one order by all changes: its
        own lock keys (sorted; ``#orphans`` sorts before any VG name), then the VGs of
        the existing PVs it changes, then a change slot. The PVs' VGs are looked up
        under ``#orphans``, which every change that moves a PV into or out of a VG, or
        renames or removes a VG, also holds: the answer cannot go stale meanwhile."""
        async with self._locked(sorted(set(call.method.locks(call.args)))):
            async with self._locked(await self._vgs_of_pvs(call)):
                async with self._change_slot(call):
                    yield

    async def _vgs_of_pvs(self, call: Call) -> list[str]:
        if not call.method.locks_pv_vg:
            return []
        vgs: set[str] = set()
        for key, param in call.method.params.items():
            if param.policy == "device" and key in call.args:
                dev = call.args[key]
                pvs = await self.read(("pvs", dev, None), lambda: self.lvm.pvs([dev]),
                                      [Expect("pv", dev)])
                vgs.update(pv.vg for pv in pvs if pv.vg)
        return sorted(vgs)

    @asynccontextmanager
    async def _change_slot(self, call: Call) -> AsyncIterator[None]:
        """At most ``max_parallel`` LVM changes at once (apart from the read slots, so
        reads never wait behind changes). pvmove, which may run for hours, takes none:
        its own per-PV lock bounds it."""
        if call.method.name == "pvmove":
            yield
            return
        await self._take(self._change_slots)
        try:
            yield
        finally:
            self._change_slots.release()

    async def _take(self, held: asyncio.Lock | asyncio.Semaphore) -> None:
        """Acquires a VG lock or a change slot; while it waits, the request counts as
        queued (``Busy`` beyond ``[limits] max_queue``)."""
        if not held.locked():
            await held.acquire()
            return
        with self._queued():
            await held.acquire()

    async def drain(self) -> None:
        """Shutdown: refuses new calls (``Busy``), then waits until no request is in
        flight and no job runs. Reads finish; changes are waited for, never killed."""
        self.stopping = True
        while self.stats.in_flight or self.jobs.running:
            await asyncio.sleep(0.02)

    @asynccontextmanager
    async def _locked(self, keys: list[str]) -> AsyncIterator[None]:
        """Holds the locks of ``keys`` (VG names); a lock lives only while someone holds
        or waits for it, so names a caller makes up do not pile up."""
        for key in keys:
            self._lock_users[key] += 1
        try:
            async with AsyncExitStack() as stack:
                for key in keys:  # sorted order: no lock-order deadlock between changes
                    lock = self._locks[key]
                    await self._take(lock)
                    stack.callback(lock.release)
                yield
        finally:
            for key in keys:
                self._lock_users[key] -= 1
                if not self._lock_users[key]:
                    del self._lock_users[key], self._locks[key]

    async def change(self, call: Call, command: str, args: list[str], expect: list[Expect],
                     changed: Iterable[tuple[str, str]], *, json_log: bool = True) -> None:
        """Runs one mutating LVM command to completion; maps its failure."""
        try:
            await self.lvm.change(command, args, json_log=json_log)
        except LvmFailed as exc:
            raise await self.classify(exc, expect) from None
        call.changed += [{"type": kind, "name": name} for kind, name in changed]

    # ---- reads ----------------------------------------------------------------------

    async def read(self, key: Hashable, run: Callable[[], Awaitable[T]],
                   expect: list[Expect]) -> T:
        """Runs one LVM read in a bounded slot; maps a failure on named objects.

        Coalescing: a read whose ``key`` (its LVM command) matches one that is still
        queued joins it and shares its result; once that run has started, new arrivals
        queue a new run, so nobody gets a result older than their request."""
        try:
            if not self._slots.locked():
                async with self._slots:
                    return await run()
            queued = self._queued_reads.get(key)
            if queued is None:
                with self._queued():
                    queued = asyncio.create_task(self._queued_read(key, run))
                    self._queued_reads[key] = queued
                    queued.add_done_callback(_retrieve)
                    return await asyncio.shield(queued)
            self.stats.coalesced += 1
            return await asyncio.shield(queued)
        except LvmFailed as exc:
            raise await self.classify(exc, expect) from None

    async def _queued_read(self, key: Hashable, run: Callable[[], Awaitable[T]]) -> T:
        try:
            await self._slots.acquire()
        finally:
            self._queued_reads.pop(key, None)  # from now on, newcomers queue a new run
        try:
            return await run()
        finally:
            self._slots.release()

    def _queued(self) -> Any:
        stats, limit = self.stats, self.config.max_queue
        if stats.queued >= limit:
            raise Busy(f"the daemon has {limit} requests queued; retry later",
                       retry_after=1)
        return _counting(stats)

    async def ensure(self, expect: list[Expect]) -> None:
        """NotFound / AlreadyExists now, from LVM's report, unless all is as expected."""
        error = await self.classify(None, expect)
        if error is not None:
            raise error

    async def classify(self, exc: LvmFailed | None, expect: list[Expect]) -> Any:
        """NotFound / AlreadyExists when LVM's own report shows the cause, else ``exc``."""
        if not expect:
            return exc
        try:
            async with self._slots:
                pvs, vgs, lvs = await self.lvm.fullreport()
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

    # ---- notifications, status ---------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, objects: list[dict[str, str]]) -> None:
        for listener in list(self._listeners):
            try:
                listener(objects)
            except Exception:
                log.exception("change listener failed")

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
                             "in_flight": s.in_flight, "queued": s.queued},
                "latency_ms": s.latency(), "jobs": self.jobs.running,
                "last_errors": list(s.last_errors)}

    def summary(self) -> str:
        s = self.stats
        return (f"serving; {s.clients} clients; {s.total} requests, {s.failed} failed; "
                f"{self.jobs.running} jobs running")


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Marks a shared read's exception as seen even if every waiter went away."""
    if not task.cancelled():
        task.exception()


class _counting:
    """Counts a request as queued while it waits for an LVM slot or a VG lock."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def __enter__(self) -> None:
        self.stats.queued += 1

    def __exit__(self, *exc: object) -> None:
        self.stats.queued -= 1

