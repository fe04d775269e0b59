"""Counters for ``status`` and systemd's STATUS= line: requests, latency, recent errors.

Rule: only counts and a few bounded samples; nothing here grows with the number of
requests served.
"""

from __future__ import annotations

import collections
import statistics
import time
from typing import Any

from lvmsuper.client.errors import LvmSuperError

__all__ = ["Stats"]


class Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.total = self.failed = self.in_flight = self.clients = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=2048)
        self.last_errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=8)

    def finish(self, method: str, started: float, error: LvmSuperError | None) -> None:
        self.in_flight -= 1
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
