"""How a change runs: admitted, planned, run as a job under its locks, answered,
announced and audited, each step derived from the method's declaration (``Touches``).

Rules:
- A change is refused (and audited as refused) before any job exists when its role,
  its parameters or policy forbid it.
- Its job takes the plan's locks (sorted; ``Busy`` beyond ``max_queue`` leaves nothing
  held), then, under them, checks that every object is still the one admitted (for
  devices: resolved again, and LVM's PV report read once) and policy still allows it;
  only then does LVM run.
- A change LVM made is reported as made: if the read that answers it fails, the answer
  is that read's error with ``data.completed = true`` and ``data.objects``, the audit
  says ``ok`` and subscribers are told.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from lvmsuper.client.errors import LvmSuperError, NotFound, PermissionDenied
from lvmsuper.client.models import to_wire

from .audit import audit
from .auth import Caller
from .call import Call, Runtime
from .jobs import Job
from .events import ChangeObserver
from .locks import LockTable, Queue
from .requests import Requests
from .scopes import tags_of
from .targets import Answer, Plan, Policy, PvView

__all__ = ["Changes"]

class Changes:
    def __init__(self, rt: Runtime, policy: Policy, queue: Queue, parallel: int,
                 observer: ChangeObserver, *,
                 invalidate: Callable[[], None] = lambda: None) -> None:
        self.rt = rt
        self.policy = policy
        self.queue = queue
        self.locks = LockTable(queue)
        self.requests = Requests(rt.jobs)
        self.slots = asyncio.Semaphore(parallel)  # LVM changes at once
        self.observer = observer  # announces each change (the watcher, when it runs)
        self.invalidate = invalidate  # the read cache: a change begins or ends

    async def submit(self, call: Call, params: dict[str, Any]) -> Any:
        """Plans the change (refusals audited here), starts its job, waits ``wait``."""
        started = time.monotonic()
        shown = {k: v for k, v in params.items() if k != "wait"}
        wait = call.args.pop("wait", None)
        request_id = call.args.pop("request_id", None)
        uid, name = call.caller.uid, call.method.name
        if request_id is not None:  # a repeat gets the first call's outcome
            earlier = await self.requests.claim(uid, request_id, name, params)
            if earlier is not None:
                return await self._outcome(earlier, wait)
        if call.method.inline:
            return await self._inline(call, params, shown, started)
        job: Job | None = None
        try:
            job = await self._start(call, params, shown, started)
        finally:
            if request_id is not None:
                self.requests.settle(uid, request_id, name, params, job)
        return await self._outcome(job, wait)

    async def _start(self, call: Call, params: dict[str, Any], shown: dict[str, Any],
                     started: float) -> Job:
        """The plan (refusals audited here), then the change's job."""
        plan = await self._plan(call, shown, started)
        return self.rt.jobs.start(call.method.name, call.caller.uid,
                                  lambda job: self._run(call, shown, job), plan)

    async def _inline(self, call: Call, params: dict[str, Any], shown: dict[str, Any],
                      started: float) -> Any:
        """A declared call run in the caller's task (``Method.inline``): planned, locked,
        checked and audited as a change, but no job; a caller gone stops it. What it
        hands over (``call.handoff``) is closed here unless it reaches the answer."""
        await self._plan(call, shown, started)
        try:
            return await self._run(call, shown, None)
        except BaseException:
            if call.handoff is not None:
                call.handoff.close()
            raise

    async def _plan(self, call: Call, shown: dict[str, Any], started: float) -> Plan:
        """The call's plan, checked against policy (refusals audited here)."""
        try:
            assert call.method.declare is not None
            plan = Plan(await call.method.declare(self.rt, call), call.args)
            self.policy.check(plan)  # what the call names, before any LVM run
            if plan.touches.pvs:  # then the VGs its PVs are in
                self.policy.resolve(plan, await self._view())
                self.policy.check(plan)
            await self._authorize(call, plan)
            await self._check_scopes(call, plan)
            call.plan = plan
        except Exception as exc:
            _audit(call.caller, call.method.name, shown, _outcome(exc), started)
            raise
        return plan

    @staticmethod
    async def _outcome(job: Job, wait: float | None) -> Any:
        """The job's result (or error) once it ends, or ``{"job": id}`` after ``wait``."""
        if job.plan is not None and job.plan.touches.long:
            wait = 0  # always answered with a job
        if wait is None:
            return await asyncio.shield(job.task)  # a gone caller never stops a change
        done, _ = await asyncio.wait([job.task], timeout=wait)
        return job.task.result() if done else {"job": job.id}

    async def _run(self, call: Call, shown: dict[str, Any], job: Job | None) -> Any:
        call.job = job
        plan = call.plan
        assert plan is not None
        started = time.monotonic()
        outcome = "ok"
        observer, told = self.observer, False
        observer.begin(plan)
        self.invalidate()
        try:
            async with self.locks.hold(plan.run_keys()):
                async with self._checked(call, plan):
                    try:
                        async with self._slot(plan):
                            result = await call.method.run(self.rt, call)
                        if result is None and plan.touches.answer is not None:
                            result = await self._answer(call, plan.touches.answer)
                    finally:  # announced under the change's locks
                        told = True
                        await observer.finished(plan, call.ran, call.completed)
            return to_wire(result)
        except asyncio.CancelledError:  # an inline call whose caller went away
            outcome = "cancelled"
            raise
        except Exception as exc:
            outcome = _outcome(exc)
            if call.completed and isinstance(exc, LvmSuperError):
                exc.data.update(completed=True, objects=plan.changed())
                outcome = "ok"
            raise
        finally:
            self.invalidate()
            if not told:  # refused under its locks (or Busy before them): it never ran
                await observer.finished(plan, False, False)
            _audit(call.caller, call.method.name, shown,
                   "cancelled" if job is not None and job.aborted else outcome, started)

    async def _authorize(self, call: Call, plan: Plan) -> None:
        """Every VG the plan touches (a rename's new name, the VG of a PV) is asked of
        the authority on its own, in every role the call needs, as the VG it named was
        at admission: polkit sees each VG in its details ``vg``."""
        asked = call.details
        for vg in plan.vgs:
            if vg == asked["vg"]:
                continue
            for role in (call.method.role, *call.roles):
                if not await call.authority.allowed(call.caller, role, {**asked, "vg": vg}):
                    raise PermissionDenied(f"{call.method.name} on VG {vg!r} needs the "
                                           f"{role} role", required=str(role),
                                           object_type="vg", object_name=vg,
                                           field=plan.field_of(vg))

    async def _check_scopes(self, call: Call, plan: Plan, view: PvView | None = None) -> None:
        """A scoped caller's change stays within its scopes (for every role it needs),
        judged on the VGs' tags as LVM reports them now (read only when a scope has
        tags): at admission, and again under the locks. A device it would make a PV
        of is no PV of a VG outside them (the PV report is read for that, for a scoped
        caller only)."""
        roles = (call.method.role, *call.roles)
        scopes = [(role, call.authority.scope(call.caller, role)) for role in roles]
        if all(s is None for _, s in scopes):
            return
        if any(s is not None and s.tags for _, s in scopes):
            call.vg_tags = tags_of(await self.rt.read(("vgs", None, ("scan",)),
                                                      self.rt.lvm.vgs, []))
        if plan.touches.new_pvs and view is None:
            view = await self._view()
        for role, scope in scopes:
            self.policy.check_scope(plan, scope, role, call.vg_tags)
            if scope is None or view is None:
                continue
            for dev in plan.touches.new_pvs:
                vg = view.vg_of.get(dev.real)
                if vg and not scope.covers(vg, call.vg_tags.get(vg, ())):
                    raise PermissionDenied(
                        f"{dev.given!r} is a PV of VG {vg!r}, outside the caller's scope "
                        f"for the {role} role", required=str(role), object_type="vg",
                        object_name=vg, field=plan.field_of(dev))

    @asynccontextmanager
    async def _checked(self, call: Call, plan: Plan) -> AsyncIterator[None]:
        """The plan's check locks (all its locks, unless it runs long), and under them
        the check that it acts on what was admitted, by whom it may."""
        keys = [k for k in plan.check_keys() if k not in plan.run_keys()]
        long = plan.touches.long
        async with self.locks.hold(keys):
            view = await self._view() if self.policy.needs_view(plan) else None
            self.policy.verify(plan, view)
            await self._check_scopes(call, plan, view)
            if not plan.touches.lockstart:  # a VG whose lockspace is lost: LockConflict
                await self.rt.refuse_lost(plan.vgs)
            if not long:
                yield
        if long:
            yield  # a long change (pvmove) runs holding only its run keys

    @asynccontextmanager
    async def _slot(self, plan: Plan) -> AsyncIterator[None]:
        """At most ``max_parallel`` LVM changes at once (apart from the read slots, so
        reads never wait behind changes). A long change takes none: its one-per-VG lock
        bounds it."""
        if plan.touches.long:
            yield
            return
        await self.queue.take(self.slots)
        try:
            yield
        finally:
            self.slots.release()

    async def _view(self) -> PvView:
        return PvView(await self.rt.read(("pvs", None), self.rt.lvm.pvs, []))

    async def _answer(self, call: Call, answer: Answer) -> Any:
        """The objects as LVM reports them after the change (its scan limited as the
        change's was)."""
        names = list(answer.names)
        if answer.kind == "removed":
            return {"removed": names}
        lvm = self.rt.lvm.scoped(call.scan)
        found: list[Any] = await (lvm.vgs(names) if answer.kind == "vg" else
                                  lvm.lvs(names) if answer.kind in ("lv", "lvs") else
                                  lvm.pvs(names))
        if answer.kind == "pvs":
            return found
        if answer.kind == "lvs":  # a batch: every LV, in the order the caller named them
            by_name = {lv.full_name: lv for lv in found}
            missing = [n for n in names if n not in by_name]
            if missing:
                raise NotFound(f"LV {missing[0]!r} was not found right after the change",
                               object_type="lv", object_name=missing[0])
            return {"lvs": [by_name[n] for n in names]}
        if not found:
            raise NotFound(f"{answer.kind.upper()} {names[0]!r} was not found right after "
                           "the change", object_type=answer.kind, object_name=names[0])
        return found[0]


def _outcome(exc: BaseException) -> str:
    return exc.name if isinstance(exc, LvmSuperError) else "Internal"


def _audit(caller: Caller, method: str, shown: dict[str, Any], outcome: str,
           started: float) -> None:
    audit(caller, method, shown, outcome, (time.monotonic() - started) * 1000)
