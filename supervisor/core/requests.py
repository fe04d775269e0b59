"""Idempotent changes: a change repeated with the same ``request_id`` runs once.

Rule: a change that names a ``request_id`` is remembered, per caller uid, with a
fingerprint of its parameters and its job, for as long as the job stays in the job
table (``[jobs] keep``, ``[jobs] max_kept``). A repeat with the same parameters gets
that job's outcome (its result or error, or the job itself while it runs) and runs
nothing, except after ``Busy`` (the change never ran: the repeat runs it); the same id
with other parameters is ``InvalidRequest``. Entries leave with
their jobs, so the table is bounded by the job table.
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

from lvmsuper.client.errors import Busy, InvalidRequest, NotFound

from .jobs import Job, JobManager

__all__ = ["Requests"]

_NOT_PARAMS = ("wait", "request_id")  # how long to wait is not what was asked


def fingerprint(method: str, params: dict[str, Any]) -> str:
    return json.dumps([method, {k: v for k, v in params.items() if k not in _NOT_PARAMS}],
                      sort_keys=True, default=str)


class Requests:
    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs
        self._seen: collections.OrderedDict[tuple[int, str], tuple[str, str]] = \
            collections.OrderedDict()
        # ids whose first call is still being planned (no job yet): a repeat waits
        self._planning: dict[tuple[int, str], asyncio.Event] = {}

    async def claim(self, uid: int, request_id: str, method: str,
                    params: dict[str, Any]) -> Job | None:
        """The earlier call's job, or None: then this call is the first, and must
        ``settle`` the id once it has a job (or was refused)."""
        key = (uid, request_id)
        while True:
            job = self.earlier(uid, request_id, method, params)
            if job is not None:
                return job
            planning = self._planning.get(key)
            if planning is None:
                self._planning[key] = asyncio.Event()
                return None
            await planning.wait()  # the first is being planned: its outcome is ours

    def settle(self, uid: int, request_id: str, method: str, params: dict[str, Any],
               job: Job | None) -> None:
        """The first call of the id got ``job`` (None: it was refused, nothing ran)."""
        if job is not None:
            self.remember(uid, request_id, method, params, job)
        planning = self._planning.pop((uid, request_id), None)
        if planning is not None:
            planning.set()

    def earlier(self, uid: int, request_id: str, method: str,
                params: dict[str, Any]) -> Job | None:
        """The job of an earlier call with this id, if it is still known."""
        entry = self._seen.get((uid, request_id))
        if entry is None:
            return None
        printed, job_id = entry
        try:
            job = self.jobs.get(job_id)
        except NotFound:
            del self._seen[(uid, request_id)]
            return None
        if printed != fingerprint(method, params):
            raise InvalidRequest(f"request_id {request_id!r} was used for another change "
                                 f"({job.method}) with other parameters", field="request_id")
        if job.state == "failed" and isinstance(job.error, Busy):
            del self._seen[(uid, request_id)]  # it never ran: "retry later" means run it
            return None
        return job

    def remember(self, uid: int, request_id: str, method: str, params: dict[str, Any],
                 job: Job) -> None:
        self._seen[(uid, request_id)] = (fingerprint(method, params), job.id)
        self._prune()

    def _prune(self) -> None:
        """Forgets ids whose jobs the job table no longer holds (oldest first)."""
        limit = self.jobs.max_kept + self.jobs.running
        while self._seen:
            key, (_, job_id) = next(iter(self._seen.items()))
            try:
                self.jobs.get(job_id)
            except NotFound:
                del self._seen[key]
                continue
            if len(self._seen) <= limit:
                return
            del self._seen[key]
