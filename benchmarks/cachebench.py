"""The read cache's measurements (`make bench`; `make bench BENCH_ARGS=--cache` alone).

On a sandbox of its own (3 loop PVs, one VG): two daemons, shell runner, one with
``[lvm] cache`` on (the default) and one with it off (today's shell runner), root
clients (no sudo or test users needed). In interleaved rounds:

- pvs, vgs, lvs with 3 PVs, unchanged: direct exec of the daemon's argv vs the cached
  daemon (raw line protocol and Client); target <= 0.1x direct.
- lvs of 1,000 LVs, unchanged: raw line <= 0.15x direct, Client.lvs() <= 0.3x.
- a read right after an external change (a tag toggled by a direct LVM run, not
  timed): cached daemon vs the daemon without cache; target <= 1.05x.
- RSS of the cached daemon after the 1,000-LV reads: <= 50 MB.
Hit rates come from the daemon's own ``status``.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import rig
import lvmdbusd
from worker import Raw

from lvmsuper.client import Client
from lvmsuper.supervisor.lvm import argv as lvmcmd
from lvmsuper.supervisor.lvm.runner import lvm_environment

__all__ = ["cache_phase", "render_cache", "cache_targets"]

VG = "vgcache"
MiB = 2**20
ROOT_ONLY = {"query": ["root"], "manage": ["root"], "destroy": ["root"]}


def _grow(box: rig.Sandbox, total: int) -> None:
    have = len(box.report("lv", "lv_name"))
    lines = "".join(
        "lvcreate --config 'backup { backup=0 archive=0 }' --yes --activate n --zero n "
        f"--wipesignatures n --name s{i:04d} --size 1m {VG}\n" for i in range(have, total))
    subprocess.run([rig.LVM], input=lines, text=True, env=box.env, capture_output=True,
                   cwd="/", check=False)
    count = len(box.report("lv", "lv_name"))
    if count != total:
        raise RuntimeError(f"wanted {total} LVs, have {count}")


def cache_phase(stats: Callable[[list[float]], dict[str, float]],
                interleave: Callable[..., dict[str, list[float]]],
                rss_kib: Callable[[int], int], say: Callable[[str], None]) -> dict[str, Any]:
    rounds = int(os.environ.get("BENCH_CACHE_ROUNDS", "10"))
    per = int(os.environ.get("BENCH_CACHE_PER_ROUND", "20"))
    box = rig.Sandbox(count=3, size_mib=1024)
    daemons: dict[str, rig.Daemon] = {}
    res: dict[str, Any] = {"rows": {}, "notes": []}
    try:
        for dev in box.loops:
            box.lvm("pvcreate", "-q", "--metadatasize", "8m", dev)
        box.lvm("vgcreate", "-q", "--physicalextentsize", "1m", VG, *box.loops)
        for i in range(10):
            box.lvm("lvcreate", "-q", "--activate", "n", "--zero", "n", "-n", f"base{i}",
                    "-L", "4m", VG)
        for name, cache in (("cache", True), ("nocache", False)):
            daemons[name] = rig.Daemon(
                box, f"c-{name}", lvm={"runner": "shell", "cache": cache},
                server={"socket_group": "root", "socket_mode": "0660"},
                access=ROOT_ONLY).start()
        raws = {n: rig.Raw(d.socket) for n, d in daemons.items()}  # status, checks
        lines = {n: Raw(d.socket) for n, d in daemons.items()}  # timed: no decoding
        clients = {n: Client(d.socket) for n, d in daemons.items()}
        env = lvm_environment(str(box.system_dir))

        def direct(argv: list[str]) -> Callable[[int], list[float]]:
            def go(n: int) -> list[float]:
                out = []
                for _ in range(n):
                    t = time.perf_counter()
                    subprocess.run([rig.LVM, *argv], env=env, capture_output=True,
                                   check=True, stdin=subprocess.DEVNULL)
                    out.append(time.perf_counter() - t)
                return out
            return go

        def raw(daemon: str, method: str) -> Callable[[int], list[float]]:
            def go(n: int) -> list[float]:
                out = []
                for _ in range(n):
                    t = time.perf_counter()
                    lines[daemon].call(method)  # raises unless a result came
                    out.append(time.perf_counter() - t)
                return out
            return go

        def client(daemon: str, method: str) -> Callable[[int], list[float]]:
            def go(n: int) -> list[float]:
                out = []
                for _ in range(n):
                    t = time.perf_counter()
                    getattr(clients[daemon], method)()
                    out.append(time.perf_counter() - t)
                return out
            return go

        def section(label: str, paths: dict[str, Callable[[int], list[float]]],
                    r: int = rounds, p: int = per) -> None:
            say(f"cache: {label} ...")
            res["rows"][label] = {k: stats(v) for k, v in interleave(paths, r, p).items()}

        for kind in ("pvs", "vgs", "lvs"):
            section(f"{kind}, 3 PVs, unchanged", {
                "direct exec (same command)": direct(lvmcmd.report_argv(kind[:2])),
                "lvmsuper cache: raw line": raw("cache", kind),
                "lvmsuper cache: Client": client("cache", kind),
                "lvmsuper shell, no cache: raw line": raw("nocache", kind)})

        res["notes"].append(_against_lvmdbusd(box, section, raw, client))

        # a read right after a change made outside (the change itself not timed)
        toggle = [False]

        def after_change(daemon: str) -> Callable[[int], list[float]]:
            def go(n: int) -> list[float]:
                out = []
                for _ in range(n):
                    toggle[0] = not toggle[0]
                    box.lvm("vgchange", "-q", "--addtag" if toggle[0] else "--deltag",
                            "bench", VG)
                    t = time.perf_counter()
                    lines[daemon].call("lvs")
                    out.append(time.perf_counter() - t)
                return out
            return go

        before = raws["cache"].request("status")["result"]["cache"]
        section("lvs right after an external change", {
            "lvmsuper shell, no cache: raw line": after_change("nocache"),
            "lvmsuper cache: raw line": after_change("cache")}, max(4, rounds // 2), 10)
        after = raws["cache"].request("status")["result"]["cache"]
        res["after_change_hits"] = after["hits"] - before["hits"]

        say("cache: growing the VG to 1,000 LVs ...")
        _grow(box, 1000)
        section("lvs, 1,000 LVs, unchanged", {
            "direct exec (same command)": direct(lvmcmd.report_argv("lv")),
            "lvmsuper cache: raw line": raw("cache", "lvs"),
            "lvmsuper cache: Client": client("cache", "lvs"),
            "lvmsuper shell, no cache: raw line": raw("nocache", "lvs")},
            max(3, rounds // 2), max(3, per // 4))
        pid = daemons["cache"].proc.pid  # type: ignore[union-attr]
        res["rss_mib"] = rss_kib(pid) / 1024
        res["cache_status"] = raws["cache"].request("status")["result"]["cache"]
        for c in clients.values():
            c.close()
        for r in raws.values():
            r.close()
        for line in lines.values():
            line.close()
        return res
    finally:
        for d in daemons.values():
            d.stop()
        box.destroy()


EVERYTHING = "everything (3 PVs, 1 VG, 10 LVs), unchanged"
DBUSD_CACHED = "lvmdbusd: GetManagedObjects (from its cache)"


def _against_lvmdbusd(box: rig.Sandbox, section: Callable[..., None],
                      raw: Callable[[str, str], Callable[[int], list[float]]],
                      client: Callable[[str, str], Callable[[int], list[float]]]) -> str:
    """Everything the host has, unchanged: lvmsuper's cached ``report`` (every PV, VG and
    LV, proven fresh) against lvmdbusd's GetManagedObjects (every object with all its
    properties, from a cache that is not), lvmdbusd on a private bus of its own seeing
    exactly this sandbox. A note of what was done."""
    problem = lvmdbusd.missing()
    if problem:
        return problem
    bus = lvmdbusd.private_bus()
    d = lvmdbusd.Lvmdbusd(box, str(bus.address), "fork/exec", VG)
    try:
        d.start()
        if d.note:
            return d.note
        section(EVERYTHING, {
            DBUSD_CACHED: functools.partial(d.timed, once=d.managed_objects),
            "lvmsuper cache: raw line report": raw("cache", "report"),
            "lvmsuper cache: Client.report()": client("cache", "report")})
        return d.note or (f"lvmdbusd (Debian's lvm2-dbusd, fork/exec mode, PID {d.pid}) ran on "
                          "a private bus for the 'everything' rows only, then stopped")
    finally:
        d.stop()
        bus.stop()


def _ratio(rows: dict[str, Any], section: str, name: str, base: str) -> float | None:
    s = rows.get(section, {})
    if name in s and base in s and s[base]["median_ms"]:
        return float(s[name]["median_ms"] / s[base]["median_ms"])
    return None


def cache_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = res["rows"]
    out: list[dict[str, Any]] = []
    d = "direct exec (same command)"
    for kind in ("pvs", "vgs", "lvs"):
        sec = f"{kind}, 3 PVs, unchanged"
        out.append({"target": f"{kind}, 3 PVs, cached raw line <= 0.1x direct exec",
                    "value": _ratio(rows, sec, "lvmsuper cache: raw line", d), "limit": 0.1})
        out.append({"target": f"{kind}, 3 PVs, cached Client <= 0.1x direct exec",
                    "value": _ratio(rows, sec, "lvmsuper cache: Client", d), "limit": 0.1})
    sec = "lvs, 1,000 LVs, unchanged"
    out.append({"target": "lvs 1,000 LVs, cached raw line <= 0.15x direct exec",
                "value": _ratio(rows, sec, "lvmsuper cache: raw line", d), "limit": 0.15})
    out.append({"target": "lvs 1,000 LVs, cached Client.lvs() <= 0.3x direct exec",
                "value": _ratio(rows, sec, "lvmsuper cache: Client", d), "limit": 0.3})
    out.append({"target": "read right after an external change <= 1.05x the shell runner "
                          "without cache",
                "value": _ratio(rows, "lvs right after an external change",
                                "lvmsuper cache: raw line",
                                "lvmsuper shell, no cache: raw line"), "limit": 1.05})
    for name in ("lvmsuper cache: raw line report", "lvmsuper cache: Client.report()"):
        out.append({"target": f"everything, {name.split(': ')[1]} <= 0.5x lvmdbusd's cached "
                              "GetManagedObjects",
                    "value": _ratio(rows, EVERYTHING, name, DBUSD_CACHED), "limit": 0.5})
    out.append({"target": "RSS with 1,000 LVs cached <= 50 MB (MiB)",
                "value": res.get("rss_mib"), "limit": 50.0})
    for t in out:
        t["pass"] = None if t["value"] is None else t["value"] <= t["limit"]
    return out


def render_cache(res: dict[str, Any]) -> str:
    lines = ["### the read cache (answers proven fresh)", ""]
    for section, rows in res["rows"].items():
        base = rows.get("direct exec (same command)",
                        rows.get("lvmsuper shell, no cache: raw line", rows.get(DBUSD_CACHED)))
        lines += [f"#### {section}", "", "| path | median ms | p99 ms | ratio | n |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for name, row in rows.items():
            ratio = row["median_ms"] / base["median_ms"] if base else 0
            lines.append(f"| {name} | {row['median_ms']:.3f} | {row['p99_ms']:.3f} | "
                         f"{ratio:.3f} | {row['n']} |")
        lines.append("")
    st = res.get("cache_status", {})
    total = st.get("hits", 0) + st.get("misses", 0)
    lines.append(f"cache status at the end: {st.get('hits')} hits, {st.get('misses')} misses "
                 f"(hit rate {st.get('hits', 0) / max(1, total):.3f}), last miss: "
                 f"{st.get('last_miss')}; reads right after an external change answered "
                 f"from memory: {res.get('after_change_hits')} (must be 0)")
    lines.append(f"RSS of the cached daemon after the 1,000-LV reads: {res.get('rss_mib', 0):.1f} MiB")
    for note in res.get("notes", []):
        lines.append(f"- {note}")
    lines += ["", "| target | measured | result |", "| --- | ---: | --- |"]
    for t in cache_targets(res):
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        verdict = "not measured" if t["pass"] is None else "pass" if t["pass"] else "MISS"
        lines.append(f"| {t['target']} | {value} | {verdict} |")
    return "\n".join(lines) + "\n"
