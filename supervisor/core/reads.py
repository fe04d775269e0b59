"""LVM reads in a bounded number of slots, with coalescing of identical queued reads.

Rules: at most ``max_parallel`` reads run at once. A read that must wait counts as
queued (``Busy`` beyond ``[limits] max_queue``) until its LVM run starts, and no longer.
A read whose key (its LVM command) matches one still *waiting* joins it and shares its
result; once that run has started, newcomers queue a new one, so nobody gets a result
older than their request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from .locks import Queue

__all__ = ["ReadSlots"]

T = TypeVar("T")


class _Shared(Generic[T]):
    """One queued LVM run and the requests waiting for it."""

    __slots__ = ("task", "waiters", "started")

    def __init__(self) -> None:
        self.task: asyncio.Task[T] | None = None
        self.waiters = 0
        self.started = False


class ReadSlots:
    def __init__(self, parallel: int, queue: Queue) -> None:
        self.queue = queue
        self.slots = asyncio.Semaphore(parallel)
        self._waiting: dict[Hashable, _Shared[Any]] = {}

    async def run(self, key: Hashable, run: Callable[[], Awaitable[T]]) -> T:
        if not self.slots.locked():
            async with self.slots:
                return await run()
        self.queue.admit()
        shared: _Shared[T] | None = self._waiting.get(key)
        if shared is None:  # the first to wait for this read: its run, when a slot frees
            shared = _Shared()
            shared.task = asyncio.create_task(self._when_free(key, shared, run))
            shared.task.add_done_callback(_retrieve)
            self._waiting[key] = shared
        assert shared.task is not None
        shared.waiters += 1
        self.queue.waiting += 1
        try:
            return await asyncio.shield(shared.task)
        finally:
            if not shared.started:  # left before the run began (e.g. cancelled)
                shared.waiters -= 1
                self.queue.waiting -= 1
                if not shared.waiters:  # nobody wants it any more: it never runs
                    shared.task.cancel()
                    if self._waiting.get(key) is shared:
                        del self._waiting[key]

    async def _when_free(self, key: Hashable, shared: _Shared[T],
                         run: Callable[[], Awaitable[T]]) -> T:
        await self.slots.acquire()  # cancelled while waiting: it never started
        if self._waiting.get(key) is shared:
            del self._waiting[key]  # from now on, newcomers queue a new run
        shared.started = True
        self.queue.waiting -= shared.waiters
        try:
            return await run()
        finally:
            self.slots.release()

    async def exclusive(self, run: Callable[[], Awaitable[T]]) -> T:
        """One read in a slot of its own (never shared), counted while it waits."""
        await self.queue.take(self.slots)
        try:
            return await run()
        finally:
            self.slots.release()


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Marks a shared read's exception as seen even if every waiter went away."""
    if not task.cancelled():
        task.exception()
