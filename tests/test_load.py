"""Load: 32 concurrent clients pipelining a mix of pings, LVM reads and changes (each
changing client owns one VG and creates and removes its own LVs) against a real daemon
on real LVM.

Asserted, because a user would notice: every request answered exactly once, on its own
connection, with the right result; no failed request and no error in the daemon's log;
LVM consistent afterwards; and once the clients have left, the daemon's open file
descriptors are exactly back to the baseline and its memory within a few MiB of it (no
leak). "Exactly once" includes after the last answer: each client then half-closes its
connection (shutdown SHUT_WR) and reads to EOF, and the daemon must send nothing more,
so a late duplicate answer would be seen. Throughput is printed, not asserted.

The in-suite run (``make test``) is 100,000 requests; ``LVMSUPER_SOAK=1`` (``make
soak``) runs 1,000,000, and ``LVMSUPER_SOAK=<n>`` (n > 1) runs n, in rounds of 100,000
with the fd check after each; over a soak the daemon's RSS must level off (its second
half may not grow it by 5 MiB), since a leak grows with the requests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import rig
from lvmsuper.client import Client

pytestmark = pytest.mark.system
MiB = 2**20

IN_SUITE = 100_000
MIN_FOR_LEAKS = 20_000  # below this a leak check proves little
_SOAK = os.environ.get("LVMSUPER_SOAK", "")
TOTAL = IN_SUITE if not _SOAK else 1_000_000 if _SOAK == "1" else int(_SOAK)
CLIENTS = 32
CHANGERS = 8          # clients 0..7 each own a VG and change it
CHANGE_EVERY = 16     # one change per this many requests of a changing client
READ_EVERY = 16       # one LVM read per this many requests (the rest are pings)
WINDOW = 16           # requests in flight per connection
LV_SIZE = 4 * MiB


@dataclass
class Peer:
    """One pipelining client on its own connection; checks every answer."""

    index: int
    path: str
    count: int
    vgs: list[str]
    loops: list[str]
    outstanding: dict[str, tuple[str, Callable[[Any], None]]] = field(default_factory=dict)
    answered: int = 0
    changes: int = 0
    half_closed: bool = False  # read to EOF after the last answer, and nothing came

    @property
    def vg(self) -> str | None:
        return self.vgs[self.index] if self.index < CHANGERS else None

    async def run(self) -> None:
        reader, writer = await asyncio.open_unix_connection(self.path, limit=2**24)
        window = asyncio.Semaphore(WINDOW)
        change_done = asyncio.Event()
        change_done.set()
        lvs_alive: list[str] = []
        names = itertools.count()

        async def receive() -> None:
            while self.outstanding or not sending.done():
                line = await reader.readline()
                assert line, f"client {self.index}: connection closed by the daemon"
                reply = json.loads(line)
                rid = reply.get("id")
                assert rid in self.outstanding, f"unexpected or repeated answer {reply!r:.300}"
                method, check = self.outstanding.pop(rid)
                assert "error" not in reply, (method, reply)
                check(reply["result"])
                self.answered += 1
                window.release()

        async def send_all() -> None:
            for i in range(self.count):
                await window.acquire()
                if self.changes_at(i):
                    await change_done.wait()  # a changer's own changes stay in order
                method, params, check = self.pick(i, lvs_alive, names)
                if method in ("lvcreate", "lvremove"):
                    change_done.clear()
                    check = self.then(check, change_done.set)
                    self.changes += 1
                rid = f"c{self.index}-{i}"
                self.outstanding[rid] = (method, check)
                writer.write(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                         "params": params}).encode() + b"\n")
                if i % WINDOW == WINDOW - 1:
                    await writer.drain()
            await writer.drain()

        sending = asyncio.ensure_future(send_all())
        try:
            await asyncio.gather(sending, receive())
            await change_done.wait()
            # leave no LV behind: remove what is still alive, one by one
            for full in list(lvs_alive):
                rid = f"c{self.index}-cleanup-{full}"
                writer.write(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "lvremove",
                                         "params": {"lv": full}}).encode() + b"\n")
                reply = json.loads(await reader.readline())
                assert reply == {"jsonrpc": "2.0", "id": rid, "result": {"removed": [full]}}
                lvs_alive.remove(full)
            # Every id has its answer; a duplicate (or any other line) sent late would
            # still be on its way. Half-close: the daemon must answer EOF with EOF only.
            assert writer.can_write_eof()
            writer.write_eof()
            rest = await asyncio.wait_for(reader.read(), timeout=60)
            assert rest == b"", f"client {self.index}: more after the last answer: {rest!r:.300}"
            self.half_closed = True
        finally:
            writer.close()
            await writer.wait_closed()

    @staticmethod
    def then(check: Callable[[Any], None], after: Callable[[], None]) -> Callable[[Any], None]:
        def both(result: Any) -> None:
            try:
                check(result)
            finally:
                after()
        return both

    def changes_at(self, i: int) -> bool:
        return self.vg is not None and i % CHANGE_EVERY == CHANGE_EVERY // 2

    def pick(self, i: int, alive: list[str], names: Iterator[int]
             ) -> tuple[str, dict[str, Any], Callable[[Any], None]]:
        vg = self.vg
        if vg is not None and self.changes_at(i):
            if len(alive) < 2:
                name = f"lv{next(names)}"
                full = f"{vg}/{name}"

                def created(result: Any) -> None:
                    assert result["full_name"] == full and result["size"] == LV_SIZE, result
                    alive.append(full)
                return "lvcreate", {"vg": vg, "name": name, "size": LV_SIZE}, created
            full = alive.pop(0)

            def removed(result: Any) -> None:
                assert result == {"removed": [full]}, result
            return "lvremove", {"lv": full}, removed
        if i % READ_EVERY == READ_EVERY - 1:
            return self.read(i // READ_EVERY)
        return "ping", {}, lambda result: _equal(result, {})

    def read(self, n: int) -> tuple[str, dict[str, Any], Callable[[Any], None]]:
        kind = n % 4
        if kind == 0:
            def pvs(result: Any) -> None:
                assert sorted((p["name"], p["vg"]) for p in result) == sorted(
                    zip(self.loops, self.vgs)), result
            return "pvs", {}, pvs
        if kind == 1:
            def vgs(result: Any) -> None:
                assert sorted(g["name"] for g in result) == sorted(self.vgs), result
            return "vgs", {}, vgs
        vg = self.vg or self.vgs[self.index % CHANGERS]
        if kind == 2:
            def lvs(result: Any) -> None:
                assert all(lv["vg"] == vg and lv["size"] == LV_SIZE for lv in result), result
                assert len(result) <= 2, result
            return "lvs", {"vg": vg}, lvs

        def report(result: Any) -> None:
            assert [g["name"] for g in result["vgs"]] == [vg], result
            assert all(lv["vg"] == vg for lv in result["lvs"]), result
        return "report", {"vg": vg}, report


def _equal(result: Any, expected: Any) -> None:
    assert result == expected, result


def run_load(path: str, total: int, vgs: list[str], loops: list[str]) -> list[Peer]:
    peers = [Peer(i, path, total // CLIENTS, vgs, loops) for i in range(CLIENTS)]

    async def everyone() -> None:
        await asyncio.gather(*(p.run() for p in peers))
    asyncio.run(everyone())
    for p in peers:
        assert p.answered == p.count and not p.outstanding, (p.index, p.answered)
        assert p.half_closed, p.index
    return peers


def changes_expected(count: int) -> int:
    """The changes a changing client sends in ``count`` requests (one per change slot)."""
    return sum(1 for i in range(count) if i % CHANGE_EVERY == CHANGE_EVERY // 2)


def fds(pid: int) -> list[str]:
    return sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def settled(d: rig.Daemon) -> dict[str, Any]:
    """Waits until only the asking connection is left and nothing runs; its status."""
    status: dict[str, Any] = {}
    for _ in range(200):
        with Client(d.socket) as c:
            status = c.status()
        if status["clients"] == 1 and status["jobs"] == 0 \
                and status["requests"]["in_flight"] == 1:
            break
        time.sleep(0.05)
    time.sleep(0.2)  # the status connection's own close
    return status


@pytest.fixture(scope="module")
def farm(users: object) -> Iterator[rig.Sandbox]:
    """A sandbox of its own: one PV and one VG per changing client."""
    rig.system_ready()
    box = rig.Sandbox(count=CHANGERS, size_mib=32)
    try:
        for i, loop in enumerate(box.loops):
            box.lvm("pvcreate", loop)
            box.lvm("vgcreate", f"vgload{i}", loop)
        yield box
    finally:
        box.destroy()


def rounds(total: int) -> list[int]:
    """``total`` in rounds of IN_SUITE requests (the last takes the remainder): the
    in-suite run is one round, a soak several, with a leak check after each."""
    n = max(1, total // IN_SUITE)
    return [IN_SUITE] * (n - 1) + [total - IN_SUITE * (n - 1)]


def test_32_pipelining_clients_mixed_load(farm: rig.Sandbox) -> None:
    vgs = [f"vgload{i}" for i in range(CHANGERS)]
    # Finished jobs are kept by design for [jobs] keep seconds (an hour by default);
    # a short keep lets the memory check see leaks rather than that cache.
    d = rig.Daemon(farm, "load", jobs={"keep": 5}).start()
    try:
        assert d.proc is not None
        pid = d.proc.pid
        run_load(d.socket, CLIENTS * 50, vgs, farm.loops)  # warm-up: caches, pools, jobs
        settled(d)
        fds_before, rss_before = fds(pid), rss(pid)

        sizes = rounds(TOTAL)
        answered = changes = 0
        rss_after: list[int] = []  # after each round
        started = time.monotonic()
        for size in sizes:
            peers = run_load(d.socket, size, vgs, farm.loops)
            answered += sum(p.answered for p in peers)
            changes += sum(p.changes for p in peers)
            status = settled(d)
            for _ in range(50):  # connections are closed asynchronously; give them a moment
                if fds(pid) == fds_before:
                    break
                time.sleep(0.1)
            assert fds(pid) == fds_before, (len(rss_after), fds_before, fds(pid))
            rss_after.append(rss(pid))
        elapsed = time.monotonic() - started

        print(f"\nload: {answered} requests ({changes} changes) from {CLIENTS} clients in "
              f"{elapsed:.1f} s = {answered / elapsed:.0f} req/s; daemon p50/p99 "
              f"{status['latency_ms']['p50']}/{status['latency_ms']['p99']} ms; "
              f"RSS {rss_before / MiB:.1f} -> "
              + " -> ".join(f"{r / MiB:.1f}" for r in rss_after)
              + f" MiB (after each {IN_SUITE:,}); fds {len(fds_before)} -> {len(fds(pid))}")
        assert sum(sizes) == TOTAL >= MIN_FOR_LEAKS
        assert answered == sum(CLIENTS * (size // CLIENTS) for size in sizes)
        assert changes == sum(CHANGERS * changes_expected(size // CLIENTS) for size in sizes)
        assert status["requests"]["failed"] == 0, status["last_errors"]
        # No leak: back within a few MiB of the baseline after the first round (what
        # the allocator keeps as its high-water mark) ...
        assert rss_after[0] - rss_before < 10 * MiB, (rss_before, rss_after)
        if len(rss_after) >= 4:
            # ... and over a soak, that mark levels off: a leak grows with the requests.
            # Observed over 1,000,000: +4 MiB in the first 100,000, +2.2 MiB over the
            # last 500,000, while the daemon's Python objects and allocated blocks
            # stayed flat from the first round on (gc and sys.getallocatedblocks()).
            half = rss_after[len(rss_after) // 2 - 1]
            assert rss_after[-1] - half < 5 * MiB, (rss_before, rss_after)
    finally:
        d.stop()
    text = d.log()
    for bad in ("Traceback", "Internal", "ERROR"):
        assert bad not in text, text[-3000:]
    assert farm.report("lv", "lv_full_name") == []  # every client removed its LVs
    assert farm.lvm("vgck", *vgs).returncode == 0
