"""`make bench` part two: what watching for changes costs and how fast it tells.

On a throwaway loop-device sandbox with 1,000 LVs (tests/rig.py's sandbox: LVM sees only
its own loops): the daemon's CPU share (itself and its LVM children, as a share of one
core) over a minute of idleness, with one subscriber and with none, at the default
``[events] poll_interval`` of 10 s; then the latency from an external change (``lvm
lvchange --addtag`` run by root beside the daemon) to its ``changed`` notification with
polling every second (no udevd here: the device-mapper tier measures udev's), and from
a change made through lvmsuper to its notification. Prints a table; writes
benchmarks/results/events.json. Root only; removes everything it made.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import rig  # noqa: E402

from lvmsuper.client import Client  # noqa: E402

VG = "vgevents"
LVS = int(os.environ.get("BENCH_EVENT_LVS", "1000"))
IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
CHANGES = int(os.environ.get("BENCH_EVENT_CHANGES", "30"))
RESULTS = HERE / "results"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its living descendants (its persistent LVM shells)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + int(fields[13])
                      + int(fields[14])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def idle_share(d: rig.Daemon, subscribed: bool) -> float:
    assert d.proc is not None
    watcher = Client(d.socket) if subscribed else None
    try:
        if watcher is not None:
            watcher.subscribe()
            time.sleep(2)  # its first look (reads all LVs once) is not idleness
        before, started = cpu_seconds(d.proc.pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        return (cpu_seconds(d.proc.pid) - before) / (time.monotonic() - started)
    finally:
        if watcher is not None:
            watcher.close()


def latencies(d: rig.Daemon, box: rig.Sandbox, external: bool) -> list[float]:
    """Seconds from a change (its command or call returning) to its notification."""
    out: list[float] = []
    with Client(d.socket) as watcher, Client(d.socket) as admin:
        watcher.subscribe()
        time.sleep(2)
        for i in range(CHANGES):
            name = f"{VG}/s{i:04d}"
            if external:
                box.lvm("lvchange", "--addtag", f"e{i}", name)
            else:
                admin.lvchange(name, add_tags=[f"o{i}"])
            done = time.monotonic()
            while True:
                params = watcher.next_notification(timeout=30)
                if {"type": "lv", "name": name} in rig.named(params.get("objects", [])):
                    out.append(time.monotonic() - done)
                    break
            time.sleep(0.137 * (i % 7))  # changes land anywhere in the poll interval
    return out


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": statistics.median(ordered),
            "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
            "n": len(ordered)}


def main() -> int:
    rig.system_ready()
    res: dict[str, Any] = {"lvs": LVS, "idle_seconds": IDLE_SECONDS}
    with rig.users_for_tests():
        box = rig.Sandbox(count=3, size_mib=1024)
        try:
            for dev in box.loops:
                box.lvm("pvcreate", "--metadatasize", "8m", dev)
            box.lvm("vgcreate", "--physicalextentsize", "1m", VG, *box.loops)
            lines = "".join(f"lvcreate --config 'backup {{ backup=0 archive=0 }}' --yes "
                            f"--activate n --zero n --wipesignatures n --name s{i:04d} "
                            f"--size 1m {VG}\n" for i in range(LVS))
            subprocess.run([rig.LVM], input=lines, text=True, env=box.env,
                           capture_output=True, cwd="/", check=True)
            say(f"{LVS} LVs made; measuring idle CPU for {IDLE_SECONDS:g} s twice")
            d = rig.Daemon(box, "idle").start()
            try:
                res["idle_share_subscribed"] = idle_share(d, True)
                res["idle_share_nobody"] = idle_share(d, False)
            finally:
                d.stop()
            say(f"latency of {CHANGES} external and {CHANGES} own changes, polling 1 s")
            d = rig.Daemon(box, "latency", events={"poll_interval": 1.0}).start()
            try:
                res["external_polled"] = summary(latencies(d, box, True))
                res["own"] = summary(latencies(d, box, False))
            finally:
                d.stop()
        finally:
            box.destroy()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "events.json").write_text(json.dumps(res, indent=2))
    print(render(res))
    return 0


def render(res: dict[str, Any]) -> str:
    def ms(row: dict[str, float]) -> str:
        return f"{row['p50'] * 1000:.0f} ms | {row['p99'] * 1000:.0f} ms | {row['n']:.0f}"
    share_ok = res["idle_share_subscribed"] <= 0.01
    return "\n".join([
        f"### Watching for changes ({res['lvs']} LVs)", "",
        "| what | p50 | p99 | n |", "| --- | ---: | ---: | ---: |",
        f"| external change → notification, polling every 1 s | {ms(res['external_polled'])} |",
        f"| change through lvmsuper → its notification | {ms(res['own'])} |", "",
        "| idle, default poll_interval (10 s) | share of one core |", "| --- | ---: |",
        f"| one subscriber | {res['idle_share_subscribed'] * 100:.2f} % "
        f"({'pass' if share_ok else 'MISS'}: target ≤ 1 %) |",
        f"| nobody subscribed (no poll at all) | {res['idle_share_nobody'] * 100:.2f} % |",
        ""])


if __name__ == "__main__":
    sys.exit(main())
