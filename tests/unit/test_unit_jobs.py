"""Job states, decided without LVM: what a cancel means depends on whether LVM had
finished (pvmove prints 100% when it has), and finished jobs expire after ``keep``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from lvmsuper.client.errors import LvmFailed
from lvmsuper.supervisor.core.jobs import Job, JobManager


def run_job(progress: int | None, cancelled: bool, fail: bool) -> Job:
    """A job whose work reports ``progress``, is cancelled (or not) while it runs, and
    then returns or fails as LVM would."""
    async def scenario() -> Job:
        jobs = JobManager(keep=60)
        started = asyncio.Event()

        async def work(job: Job) -> Any:
            job.progress = 0
            started.set()
            await asyncio.sleep(0.01)
            job.progress = progress
            if fail:
                raise LvmFailed("LVM pvmove failed: aborted", argv=["lvm", "pvmove"], rc=5,
                                log=[], stderr="")
            return {"name": "/dev/loop0"}

        job = jobs.start("pvmove", 1000, work)
        await started.wait()
        job.cancelled = cancelled
        await asyncio.wait([job.task])
        return job
    return asyncio.run(scenario())


@pytest.mark.parametrize("progress, cancelled, fail, state", [
    (100, False, False, "succeeded"),
    (100, True, False, "succeeded"),   # the cancel came after LVM had finished
    (40, True, False, "cancelled"),    # LVM 2.03.16: an aborted pvmove exits 0
    (40, True, True, "cancelled"),     # an LVM that reports the abort as a failure
    (40, False, True, "failed"),
])
def test_a_cancel_counts_only_if_lvm_had_not_finished(progress: int, cancelled: bool,
                                                      fail: bool, state: str) -> None:
    job = run_job(progress, cancelled, fail)
    assert job.state == state
    wire = job.to_wire()
    assert wire["state"] == state and wire["finished"] is not None
    assert (wire["error"] is not None) == (state == "failed")
    assert (wire["result"] is not None) == (state == "succeeded")
    if state == "succeeded":
        assert wire["progress"] == 100


def test_finished_jobs_expire_after_keep() -> None:
    async def scenario() -> None:
        jobs = JobManager(keep=0.05)

        async def work(job: Job) -> Any:
            return {}
        job = jobs.start("lvcreate", 0, work)
        await asyncio.wait([job.task])
        assert jobs.get(job.id).state == "succeeded"
        time.sleep(0.1)
        with pytest.raises(Exception) as err:
            jobs.get(job.id)
        assert type(err.value).__name__ == "NotFound"
        assert jobs.all() == []
    asyncio.run(scenario())
