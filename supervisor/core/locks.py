"""Named locks and the bounded wait for them.

Rule: whoever waits for something the daemon rations (a VG lock, a change slot, an LVM
read slot) counts as queued, and ``Busy`` is raised *instead of* waiting once
``[limits] max_queue`` requests wait. A ``Busy`` (or a cancellation) while a set of
locks is being taken releases what was taken and leaves no trace: a lock exists only
while somebody holds or waits for it, so names a caller makes up cannot pile up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager

from lvmsuper.client.errors import Busy

__all__ = ["Queue", "LockTable"]


class Queue:
    """Counts requests waiting for the daemon's rationed resources."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0

    def admit(self) -> None:
        """``Busy`` when the queue is full; called before a request starts waiting."""
        if self.waiting >= self.limit:
            raise Busy(f"the daemon has {self.limit} requests queued; retry later",
                       retry_after=1)

    @contextmanager
    def counted(self) -> Iterator[None]:
        self.admit()
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1

    async def take(self, held: asyncio.Lock | asyncio.Semaphore) -> None:
        """Acquires ``held``, counted as queued while it must wait."""
        if not held.locked():
            await held.acquire()
            return
        with self.counted():
            await held.acquire()


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class LockTable:
    """One ``asyncio.Lock`` per name, taken in sorted order (no lock-order deadlock
    between two changes), dropped when its last user leaves."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def held(self, name: str) -> bool:
        entry = self._entries.get(name)
        return entry is not None and entry.lock.locked()

    @asynccontextmanager
    async def hold(self, names: Iterable[str]) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for name in sorted(set(names)):
                entry = self._entries.setdefault(name, _Entry())
                entry.users += 1
                stack.callback(self._leave, name, entry)
                await self.queue.take(entry.lock)  # Busy: the stack unwinds what we took
                stack.callback(entry.lock.release)
            yield

    def _leave(self, name: str, entry: _Entry) -> None:
        entry.users -= 1
        if not entry.users and self._entries.get(name) is entry:
            del self._entries[name]
