"""Reads answered from memory, proven fresh: LVM's last report, while nothing moved.

Rules:
- A read takes the fingerprint (``lvm.fingerprint``) after its request arrived. It is
  answered from memory only when that equals the fingerprint its cached report was
  stored under, and no change went through the daemon since.
- A report is stored only if the fingerprint taken after its LVM run equals the one
  taken before it started (so what LVM saw is what that fingerprint describes, even if
  something moved and moved back since), and no change of ours began or ended during
  it. That second fingerprint is taken once the answer is on its way (the loop's next
  turn): later is only stricter. A failed read is never stored.
- Anything the fingerprint cannot vouch for (``Unknown``: a read error, an unfamiliar
  label, ``devices/scan_lvs`` set so LVs may be PVs) runs LVM, as without the cache.
- Bounded: at most ``MAX_ENTRIES`` reports and ``MAX_ROWS`` objects in all; the least
  recently used go first.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from lvmsuper.client.models import to_wire
from lvmsuper.client.protocol import dumps

from ..lvm import fingerprint as fp

__all__ = ["ReadCache", "MAX_ENTRIES", "MAX_ROWS"]

T = TypeVar("T")
MAX_ENTRIES = 64
MAX_ROWS = 20_000


@dataclass(slots=True)
class _Entry:
    print: fp.Fingerprint
    value: Any
    rows: int
    text: str | None = None  # its wire form, once asked for


def _rows(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        return max(1, sum(_rows(v) for v in value)) if value and isinstance(
            value[0], (list, tuple)) else max(1, len(value))
    return 1


class ReadCache:
    def __init__(self, enabled: bool, system_dir: str | None,
                 scan_settings: Callable[[], Awaitable[tuple[bool, bool] | None]]) -> None:
        self.enabled = enabled
        self.system_dir = system_dir or os.environ.get("LVM_SYSTEM_DIR") or "/etc/lvm"
        self._scan_settings = scan_settings
        self._config_seen: tuple[tuple[object, ...], ...] | None = None
        self._settings: tuple[bool, bool] | None = None
        self._buffers = fp.new_buffers()
        self._entries: collections.OrderedDict[Hashable, _Entry] = collections.OrderedDict()
        self._rows = 0
        self.generation = 0  # moves when a change of ours begins or ends
        self.hits = 0
        self.misses = 0
        self.last_miss: str | None = None

    def invalidate(self) -> None:
        """A change through the daemon begins or ends: nothing stored is trusted."""
        self.generation += 1
        self._entries.clear()
        self._rows = 0

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "hits": self.hits, "misses": self.misses,
                "last_miss": self.last_miss, "entries": len(self._entries)}

    async def _take(self) -> fp.Fingerprint:
        """The fingerprint now; ``Unknown`` when it cannot vouch for LVM's scan."""
        config = fp.config_state(self.system_dir)
        if config != self._config_seen:  # LVM's configuration is new to us: ask it
            self._settings = await self._scan_settings()
            self._config_seen = config
        return self._take_now(config)

    def _take_now(self, config: tuple[tuple[object, ...], ...] | None = None
                  ) -> fp.Fingerprint:
        """The fingerprint now, under the LVM settings known (``Unknown`` if they moved)."""
        if (config or fp.config_state(self.system_dir)) != self._config_seen:
            raise fp.Unknown("LVM's configuration changed")
        if self._settings is None:
            raise fp.Unknown("LVM's devices/scan_lvs unknown")
        scan_lvs, all_types = self._settings
        if scan_lvs:
            raise fp.Unknown("LVM scans LVs as PVs (devices/scan_lvs)")
        return fp.take(self.system_dir, self._buffers, all_types=all_types)

    async def read(self, key: Hashable, run: Callable[[], Awaitable[T]]) -> T:
        if not self.enabled:
            return await run()
        try:
            before = await self._take()
        except fp.Unknown as exc:
            self._miss(f"unknown: {exc.reason}")
            return await run()
        entry = self._entries.get(key)
        if entry is not None and entry.print == before:
            self.hits += 1
            self._entries.move_to_end(key)
            return entry.value  # type: ignore[no-any-return]
        self._miss("not cached" if entry is None else entry.print.differs(before))
        generation = self.generation
        value = await run()
        asyncio.get_running_loop().call_soon(self._settle, key, before, generation, value)
        return value

    def _settle(self, key: Hashable, before: fp.Fingerprint, generation: int,
                value: Any) -> None:
        """Stores ``value`` if nothing moved while LVM ran (nor since)."""
        try:
            after = self._take_now()
        except fp.Unknown:
            return
        if after == before and generation == self.generation:
            self._store(key, _Entry(before, value, _rows(value)))

    def encoded(self, value: Any) -> str | None:
        """The wire form (JSON text) of ``value`` if it is a stored report, encoded once
        per report; None for anything else."""
        for entry in reversed(self._entries.values()):
            if entry.value is value:
                if entry.text is None:
                    entry.text = dumps(to_wire(value))
                return entry.text
        return None

    def _miss(self, reason: str) -> None:
        self.misses += 1
        self.last_miss = reason

    def _store(self, key: Hashable, entry: _Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._rows -= old.rows
        if entry.rows > MAX_ROWS:
            return
        self._entries[key] = entry
        self._rows += entry.rows
        while len(self._entries) > MAX_ENTRIES or self._rows > MAX_ROWS:
            _, dropped = self._entries.popitem(last=False)
            self._rows -= dropped.rows
