"""Jobs: every change runs as a task the caller cannot cancel.

Rule: a mutating LVM command is never stopped half-way. The caller waits for the job
up to its ``wait``; if the job outlives that (or the caller goes away) it still runs to
completion, and its outcome stays queryable for ``[jobs] keep`` seconds, for at most
``[jobs] max_kept`` finished jobs (beyond it the oldest go first): the table is bounded
whatever callers do, and every operation on it is O(1) amortised.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lvmsuper.client.errors import Internal, LvmSuperError, NotFound

__all__ = ["Job", "JobManager"]

log = logging.getLogger("lvmsuperd.jobs")


@dataclass(slots=True)
class Job:
    id: str
    method: str
    uid: int
    started: float
    task: asyncio.Task[Any]
    state: str = "running"
    progress: int | None = None
    result: Any = None
    error: LvmSuperError | None = None
    finished: float | None = None
    done_at: float = field(default=0.0, repr=False)
    # set by jobs LVM can stop cleanly (pvmove --abort); None: runs to completion
    cancel: Callable[[], Awaitable[Any]] | None = field(default=None, repr=False)
    cancelled: bool = False  # job_cancel asked LVM to stop it
    plan: Any = field(default=None, repr=False)  # what the change touches (targets.Plan)

    @property
    def aborted(self) -> bool:
        """Cancelled before LVM finished: a cancel that came too late (LVM had already
        reported 100%, or its abort found nothing to stop) leaves the job succeeded."""
        return self.cancelled and self.progress != 100

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "method": self.method, "state": self.state,
                "progress": self.progress, "result": self.result,
                "error": self.error.to_wire() if self.error else None, "uid": self.uid,
                "started": self.started, "finished": self.finished}


class JobManager:
    def __init__(self, keep: float, max_kept: int = 1000) -> None:
        self.keep = keep
        self.max_kept = max_kept
        self._running: dict[str, Job] = {}
        self._finished_jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._ids = itertools.count(1)

    def start(self, method: str, uid: int, work: Callable[[Job], Awaitable[Any]],
              plan: Any = None) -> Job:
        self._expire()
        job_id = f"{int(time.time())}-{next(self._ids)}"

        async def run() -> Any:
            return await work(job)

        job = Job(job_id, method, uid, time.time(), asyncio.create_task(run()), plan=plan)
        job.task.add_done_callback(lambda task: self._finished(job, task))
        self._running[job_id] = job
        return job

    def _finished(self, job: Job, task: asyncio.Task[Any]) -> None:
        job.finished = time.time()
        job.done_at = time.monotonic()
        self._running.pop(job.id, None)
        self._finished_jobs[job.id] = job
        self._expire()
        if task.cancelled():
            job.state = "cancelled"
            return
        exc = task.exception()
        if job.aborted:  # LVM 2.03.16's pvmove exits 0 when aborted; others may fail
            job.state = "cancelled"
        elif exc is None:
            job.state, job.result = "succeeded", task.result()
            if job.progress is not None:
                job.progress = 100
        else:
            job.state = "failed"
            if isinstance(exc, LvmSuperError):
                job.error = exc
            else:
                log.error("job %s (%s) failed with a bug", job.id, job.method, exc_info=exc)
                job.error = Internal(f"internal error in job {job.id}; see the daemon's log")

    def _expire(self) -> None:
        """Finished jobs leave in the order they finished: past ``keep``, or the oldest
        beyond ``max_kept``."""
        cutoff = time.monotonic() - self.keep
        kept = self._finished_jobs
        while kept:
            oldest = next(iter(kept.values()))
            if oldest.done_at >= cutoff and len(kept) <= self.max_kept:
                break
            kept.popitem(last=False)

    def get(self, job_id: str) -> Job:
        self._expire()
        job = self._running.get(job_id) or self._finished_jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} (finished jobs are kept {self.keep:g} s, "
                           f"at most {self.max_kept})", object_type="job", object_name=job_id)
        return job

    def all(self) -> list[Job]:
        self._expire()
        return [*self._running.values(), *self._finished_jobs.values()]

    @property
    def running(self) -> int:
        return len(self._running)
