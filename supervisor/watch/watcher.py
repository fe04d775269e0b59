"""The watcher: tells subscribers about every LVM change, ours and everybody else's.

Rules:
- It keeps a baseline (PVs, VGs by seqno, LVs) and reads LVM only while somebody listens
  (a socket subscriber, or a D-Bus peer): one cheap read (PVs with their VG's seqno) per
  wake-up, whatever the number of subscribers, every ``[events] poll_interval`` seconds
  and after a burst of udev events (settled for ``SETTLE`` s); LVs are re-read only for
  VGs whose seqno moved, or all of them after a udev event (activation moves no seqno).
- Every change made here reports to it (``begin``/``finished``, as the core's change
  observer): while it runs, its scope (its VGs with their PVs and LVs, and its PVs) is
  left out of the scans; when it ends, the watcher reads that scope once, under the
  change's locks: what the change declared is announced as ``"lvmsuper"`` (with the VGs'
  seqnos), anything else that moved there as ``"external"``. A scan that overlapped such
  a read looks again. Differences in a VG where a long change of ours runs (pvmove) are
  ours.
- The baseline is kept when nobody listens, and when a read fails: what changed
  meanwhile is told when somebody listens again, never lost silently.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from lvmsuper.client.errors import LvmSuperError

from ..core.service import Service
from ..core.events import plan_hints
from ..core.targets import Plan
from .snapshot import Snapshot, blend, diff
from .udev import watch_block_events

__all__ = ["Watcher"]

log = logging.getLogger("lvmsuperd.watch")

SETTLE = 0.2  # seconds a burst of udev events is given to end
BASELINE_WAIT = 10.0  # seconds a first subscribe waits for the baseline (a failing read)


class Watcher:
    def __init__(self, service: Service, poll_interval: float) -> None:
        self.service = service
        self.interval = poll_interval
        self._wake = asyncio.Event()
        self._udev = False
        self._baseline: Snapshot | None = None
        self._generation = 0  # bumped whenever a change of ours moves the baseline
        self._busy_vgs: collections.Counter[str] = collections.Counter()
        self._busy_pvs: collections.Counter[str] = collections.Counter()
        self._long_vgs: collections.Counter[str] = collections.Counter()
        self._task: asyncio.Task[None] | None = None
        self._stop_udev: Any = None
        self._closed = False
        self._wanted = False  # a subscriber waits for the baseline: read it even unwatched
        self._have_baseline = asyncio.Event()

    def start(self) -> None:
        self.service.changes.observer = self
        self.service.on_subscribe = self.subscribed
        self.service.baseline_ready = self.baseline_ready
        self._stop_udev = watch_block_events(asyncio.get_running_loop(), self.udev_event)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Ends the loop. A flag as well as the cancel: Python 3.11's wait_for() drops a
        cancel that arrives just as what it waits for is done (a udev event in the same
        tick), and the loop would then run on and the daemon never exit."""
        self.service.on_subscribe = None
        self.service.baseline_ready = None
        self._closed = True
        if self._stop_udev is not None:
            self._stop_udev()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def subscribed(self, first: bool) -> None:
        """A subscriber came: look now."""
        self._wake.set()

    async def baseline_ready(self) -> None:
        """Returns once there is a baseline (at most ``BASELINE_WAIT`` s): a subscriber
        attached after that is told of every change made after its subscribe."""
        if self._have_baseline.is_set():
            return
        self._wanted = True
        self._wake.set()
        try:
            async with asyncio.timeout(BASELINE_WAIT):
                await self._have_baseline.wait()
        except TimeoutError:
            log.warning("no baseline of LVM's state after %.0f s: a subscriber starts "
                        "without one", BASELINE_WAIT)

    def udev_event(self) -> None:
        self._udev = True
        self._wake.set()

    # ---- changes made here (the core's change observer) -------------------------------

    def begin(self, plan: Plan) -> None:
        (self._long_vgs if plan.touches.long else self._busy_vgs).update(plan.vgs)
        if not plan.touches.long:
            self._busy_pvs.update(_pvs_of(plan))

    async def finished(self, plan: Plan, ran: bool, completed: bool) -> None:
        declared = plan.changed()
        try:
            if ran:
                await self._absorb(plan, declared, completed)
        except Exception as exc:  # never a reason to lose the change's notice
            log.warning("reading LVM after %s: %s", declared,
                        exc.message if isinstance(exc, LvmSuperError) else exc)
            if completed:
                self.service.events.publish(declared, "lvmsuper", plan_hints(plan))
        finally:
            (self._long_vgs if plan.touches.long else self._busy_vgs).subtract(plan.vgs)
            if not plan.touches.long:
                self._busy_pvs.subtract(_pvs_of(plan))
            for counter in (self._busy_vgs, self._busy_pvs, self._long_vgs):
                counter += collections.Counter()  # drops the zero counts

    async def _absorb(self, plan: Plan, declared: list[dict[str, Any]],
                      completed: bool) -> None:
        """One read of the change's scope: ours is what it declared, the rest there is
        external; the baseline moves to what LVM now says of that scope."""
        if self._baseline is None or not self.service.watched():
            if completed:
                self.service.events.publish(declared, "lvmsuper", plan_hints(plan))
            return
        lvm = self.service.lvm
        snap = self._learn(await self.service.read(("poll",), lvm.poll, []))
        base = self._baseline
        pvs = set(_pvs_of(plan))
        vgs = {*plan.vgs, *(e[1] for n, e in (*snap.pvs.items(), *base.pvs.items())
                            if n in pvs and e[1])}
        present = sorted(v for v in vgs if v in snap.vgs)
        if present:
            snap.add_lvs(await self.service.read(("lvs", *present), lambda: lvm.lvs(present),
                                                 []))
        base = self._baseline
        if base is None:
            if completed:
                self.service.events.publish(declared, "lvmsuper", plan_hints(plan))
            return
        after = blend(snap, base, vgs, pvs)
        changed = diff(base, after, vgs)
        self._baseline = after
        self._generation += 1
        keys = {(o["type"], o["name"]) for o in declared}
        seen = {(c["type"], c["name"]): c for c in changed}
        ours = ([seen.get((o["type"], o["name"])) or _with_seqno(o, after) for o in declared]
                if completed else [c for c in changed if (c["type"], c["name"]) in keys])
        hints = {**_hints(base, after), **plan_hints(plan)}
        self.service.events.publish(ours, "lvmsuper", hints)
        self.service.events.publish([c for c in changed if (c["type"], c["name"]) not in keys],
                                    "external", hints)

    # ---- scans ---------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            try:
                async with asyncio.timeout(self.interval if self.interval > 0 else None):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._udev:
                await asyncio.sleep(SETTLE)
            try:
                await self._scan()
            except LvmSuperError as exc:  # the baseline stays: nothing is lost
                log.warning("watching LVM: %s", exc.message)
            except Exception:
                log.exception("watching LVM failed")

    async def _scan(self) -> None:
        if not self.service.watched() and not self._wanted:
            return  # nobody listens: no LVM read at all (the baseline waits)
        udev, self._udev = self._udev, False
        generation = self._generation
        lvm = self.service.lvm
        snap = self._learn(await self.service.read(("poll",), lvm.poll, []))
        base = self._baseline
        if base is None:
            snap.add_lvs(await self.service.read(("lvs", None), lvm.lvs, []))
            again = Snapshot.from_rows(await self.service.read(("poll",), lvm.poll, []))
            if again.moved_vgs(snap):
                self._wake.set()  # LVM moved between the two reads: LVs and seqnos disagree
                return
            if self._baseline is None:
                self._baseline = snap
            self._wanted = False
            self._have_baseline.set()
            return
        busy_vgs, busy_pvs = set(self._busy_vgs), set(self._busy_pvs)
        lv_vgs = sorted(v for v in (snap.vgs if udev else snap.moved_vgs(base))
                        if v in snap.vgs and v not in busy_vgs)
        if lv_vgs:
            snap.add_lvs(await self.service.read(("lvs", *lv_vgs), lambda: lvm.lvs(lv_vgs),
                                                 []))
        if self._generation != generation or self._baseline is not base:
            self._udev = self._udev or udev
            self._wake.set()  # a change of ours moved the baseline meanwhile: again
            return
        for name, state in base.lvs.items():  # LVs of VGs not read again are as they were
            if name.split("/")[0] not in lv_vgs and name.split("/")[0] in snap.vgs:
                snap.lvs.setdefault(name, state)
        after = blend(base, snap, busy_vgs, busy_pvs)  # changes running here: later
        changed = diff(base, after, lv_vgs)
        self._baseline = after
        long_vgs = set(self._long_vgs)
        hints = _hints(base, after)
        self.service.events.publish([c for c in changed if _vg_of(c, after) in long_vgs],
                                    "lvmsuper", hints)
        self.service.events.publish([c for c in changed if _vg_of(c, after) not in long_vgs],
                                    "external", hints)

    def _learn(self, rows: list[dict[str, str]]) -> Snapshot:
        """The poll's rows as a snapshot; the stream learns from them which VG each PV
        is in and the VGs' tags (what a scoped subscriber's notifications are judged by)."""
        self.service.events.learn(rows)
        return Snapshot.from_rows(rows)


def _hints(before: Snapshot, after: Snapshot) -> dict[str, tuple[str, ...]]:
    """A PV's VGs for the stream: the one it was in and the one it is in now."""
    out: dict[str, tuple[str, ...]] = {}
    for name in set(before.pvs) | set(after.pvs):
        vgs = {(snap.pvs.get(name) or ("", "", ""))[1] for snap in (before, after)}
        out[name] = tuple(sorted(v for v in vgs if v))
    return out


def _pvs_of(plan: Plan) -> list[str]:
    return [d.real for d in (*plan.touches.pvs, *plan.touches.new_pvs)]


def _vg_of(obj: dict[str, Any], snap: Snapshot) -> str | None:
    if obj["type"] == "vg":
        return str(obj["name"])
    if obj["type"] == "lv":
        return str(obj["name"]).split("/")[0]
    entry = snap.pvs.get(obj["name"])
    return entry[1] if entry and entry[1] else None


def _with_seqno(obj: dict[str, Any], snap: Snapshot) -> dict[str, Any]:
    vg = _vg_of(obj, snap)
    seqno = snap.seqno(vg) if vg else None
    return {**obj, "seqno": seqno} if seqno is not None else dict(obj)
