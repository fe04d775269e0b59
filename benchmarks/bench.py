"""`make bench`: lvmsuper against the paths it replaces, in one run on one machine.

On a throwaway loop-device sandbox (tests/rig.py's: an lvm.conf that sees only its own
loops, so LVM never scans the host's disks) the same LVM work is done by each path:
direct exec of the very command the daemon runs (and, for reference, a bare
`lvm pvs`), `sudo -n lvm` as an unprivileged user through the normal PAM stack,
lvmsuper over its socket (sync client and raw line protocol) with the exec and with the
shell runner, D-Bus when the daemon serves it, lvmdbusd when installed. Plus the ping
round trip, throughput with concurrent clients, `lvs` as the VG grows to 1,000 LVs
(with the parse cost on its own), the daemon's RSS, start-up and SIGTERM times. These
daemons run with `[lvm] cache = false`, so that every read is LVM's work through the
runner, as the paths it replaces do; the read cache (the default) is measured in its
own phase (benchmarks/cachebench.py), against the same shell runner without it.

Paths are measured in interleaved rounds, so load from elsewhere on the machine hits
them alike; medians and p99 per path, ratios of medians. Prints a table and pass/miss
per target, writes benchmarks/results/latest.json (and latest.md). Root only: it
creates loop devices, a throwaway user and sudoers entry, and restores every file it
touched under /etc byte for byte, also when it fails.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import rig  # noqa: E402  (the tests' sandbox, users and daemon launcher)
from worker import timed  # noqa: E402  (the same clock as the unprivileged side's)
import lvmdbusd  # noqa: E402  (benchmarks/lvmdbusd.py: the lvmdbusd rows)
import cachebench  # noqa: E402  (benchmarks/cachebench.py: the read cache's rows)

from lvmsuper.supervisor.lvm import argv as lvmcmd  # noqa: E402
from lvmsuper.supervisor.lvm.report import lvs_from, parse_document  # noqa: E402
from lvmsuper.supervisor.lvm.runner import lvm_environment  # noqa: E402

USER = "lvmst-admin"  # a rig test user: in the daemon's access group, nothing else
SUDOERS = "/etc/sudoers.d/zz-lvmsuper-bench"
POLKIT_FILES = ("/usr/share/polkit-1/actions/org.lvmsuper.policy",
                "/etc/polkit-1/rules.d/10-lvmsuper-bench.rules")
ETC = (*rig.ETC_FILES, "/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-",
       "/etc/subuid", "/etc/subgid", SUDOERS, *POLKIT_FILES)
PROFILE = Path("/etc/lvm/profile/lvmdbusd.profile")
VG = "vgbench"
MiB = 2**20
RESULTS = HERE / "results"

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))   # interleaved rounds per comparison
PER_ROUND = int(os.environ.get("BENCH_PER_ROUND", "20"))
LOAD_SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "2.5"))
SCALE = tuple(int(x) for x in os.environ.get("BENCH_SCALE", "10,100,1000").split(","))


def say(text: str) -> None:
    print(text, flush=True)


def stats(samples: list[float]) -> dict[str, float]:
    data = sorted(samples)
    p99 = data[min(len(data) - 1, int(round(0.99 * (len(data) - 1))))]
    return {"n": len(data), "median_ms": statistics.median(data) * 1000,
            "p99_ms": p99 * 1000, "min_ms": data[0] * 1000}



# ---- the machine -------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    lvm = subprocess.run([rig.LVM, "version"], capture_output=True, text=True).stdout
    version = next((ln.split(":", 1)[1].strip() for ln in lvm.splitlines()
                    if ln.strip().startswith("LVM version")), "?")
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "lvm": version, "python": platform.python_version(),
            "loadavg_start": os.getloadavg()[0]}


# ---- the unprivileged worker ---------------------------------------------------------

class Worker:
    """benchmarks/worker.py as USER, one JSON request/answer per line."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [str(rig.VENV_BIN / "python"), str(HERE / "worker.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
            **rig.as_user(USER))

    def __call__(self, op: str, **req: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **req}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline() or '{"error": "worker died"}')
        if "error" in answer:
            raise RuntimeError(f"worker {op}: {answer['error']}")
        return answer["ok"]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- the sandbox's LVM, run directly (the baseline) ----------------------------------

class Direct:
    """LVM run as root by fork/exec, the way a caller running lvm itself does."""

    def __init__(self, box: rig.Sandbox) -> None:
        self.env = lvm_environment(str(box.system_dir))

    def run(self, argv: list[str]) -> bytes:
        proc = subprocess.run([rig.LVM, *argv], env=self.env, stdin=subprocess.DEVNULL,
                              capture_output=True, cwd="/")
        if proc.returncode != 0:
            raise RuntimeError(f"lvm {argv[0]} failed: {proc.stderr[-300:]!r}")
        return proc.stdout


def prepare(box: rig.Sandbox) -> None:
    """Three PVs with room for 1,000 LVs' metadata, one VG, two LVs; the lvmdbusd
    profile where the shell runner's LVM looks for it."""
    for dev in box.loops:
        box.lvm("pvcreate", "--metadatasize", "8m", dev)
    box.lvm("vgcreate", "--physicalextentsize", "1m", VG, *box.loops)
    for name in ("base0", "base1"):
        box.lvm("lvcreate", "--yes", "--activate", "n", "--zero", "n", "--name", name,
                "--size", "4m", VG)
    (box.system_dir / "profile").mkdir(exist_ok=True)
    shutil.copy(PROFILE, box.system_dir / "profile")


def grow(box: rig.Sandbox, total: int) -> float:
    """LVs up to ``total`` in VG, created by one direct `lvm` shell (no backups kept)."""
    have = len(box.report("lv", "lv_name"))
    lines = "".join(
        "lvcreate --config 'backup { backup=0 archive=0 }' --yes --activate n --zero n "
        f"--wipesignatures n --name s{i:04d} --size 1m {VG}\n" for i in range(have, total))
    started = time.monotonic()
    proc = subprocess.run([rig.LVM], input=lines, text=True, env=box.env,
                          capture_output=True, cwd="/")
    elapsed = time.monotonic() - started
    count = len(box.report("lv", "lv_name"))
    if count != total:
        raise RuntimeError(f"wanted {total} LVs, have {count}: {proc.stderr[-500:]}")
    return elapsed


# ---- daemons -------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children_rss_kib(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += rss_kib(int(child))
            except FileNotFoundError:
                pass
    return total


def start_stop(box: rig.Sandbox, runner: str, times: int) -> dict[str, list[float]]:
    """Start -> READY=1 (sd_notify, as systemd sees it) and SIGTERM when idle -> exit."""
    ready, stop = [], []
    for i in range(times):
        d = rig.Daemon(box, f"ss{runner}{i}", lvm={"runner": runner})
        note_path = str(box.dir / f"notify-{runner}{i}")
        note = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        note.bind(note_path)
        note.settimeout(10)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
               "NOTIFY_SOCKET": note_path}
        with open(d.log_path, "ab") as log:
            t0 = time.perf_counter()
            proc = subprocess.Popen([str(rig.VENV_BIN / "lvmsuperd"), "--config",
                                     str(d.config_path)], stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL, env=env)
        try:
            while b"READY=1" not in note.recv(4096):
                pass
            ready.append(time.perf_counter() - t0)
            time.sleep(0.3)  # idle
            t1 = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            stop.append(time.perf_counter() - t1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            note.close()
    return {"ready": ready, "stop": stop}


# ---- phases --------------------------------------------------------------------------

def interleave(paths: dict[str, Callable[[int], list[float]]], rounds: int,
               per_round: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name] += paths[name](per_round)
    return samples


def reads_phase(box: rig.Sandbox, direct: Direct, worker: Worker, socks: dict[str, str],
                sudo_ok: bool, bus_address: str | None,
                dbusd: list[lvmdbusd.Lvmdbusd]) -> dict[str, Any]:
    argv = lvmcmd.report_argv("pv")
    sudo_env = {"PATH": "/usr/bin:/bin", "LVM_SYSTEM_DIR": str(box.system_dir),
                "LVM_SUPPRESS_FD_WARNINGS": "1", "LC_ALL": "C"}
    paths: dict[str, Callable[[int], list[float]]] = {
        "direct exec (same command)": lambda n: timed(n, lambda: direct.run(argv)),
        "lvm pvs (bare, reference)": lambda n: timed(n, lambda: direct.run(["pvs"])),
    }
    if sudo_ok:
        paths["sudo -n lvm (same command)"] = lambda n: worker(
            "sudo", argv=[rig.LVM, *argv], env=sudo_env, n=n)
        paths["sudo -n lvm pvs (bare)"] = lambda n: worker(
            "sudo", argv=[rig.LVM, "pvs"], env=sudo_env, n=n)
    for runner, path in socks.items():
        paths[f"lvmsuper {runner}: Client.pvs()"] = (
            lambda n, p=path: worker("client", socket=p, method="pvs", n=n))
        paths[f"lvmsuper {runner}: raw line"] = (
            lambda n, p=path: worker("raw", socket=p, method="pvs", n=n))
    if bus_address:
        paths["lvmsuper exec over D-Bus: Client.pvs()"] = lambda n: worker(
            "dbus", bus=bus_address, method="pvs", n=n)
    dbusd_rows: dict[str, lvmdbusd.Lvmdbusd] = {}
    for d in dbusd:  # root, in this process (lvmdbusd's bus policy admits only root)
        if d.mode == "fork/exec":  # its cache is the same in either mode
            dbusd_rows[f"{d.label}: GetManagedObjects (from its cache)"] = d
            paths[f"{d.label}: GetManagedObjects (from its cache)"] = functools.partial(
                d.timed, once=d.managed_objects)
        dbusd_rows[f"{d.label}: Manager.Refresh + GetManagedObjects (fresh)"] = d
        paths[f"{d.label}: Manager.Refresh + GetManagedObjects (fresh)"] = functools.partial(
            d.timed, once=d.refreshed_objects)
    # ping rides along: spread over the whole phase, no burst of load elsewhere decides it
    paths[PING] = lambda n: worker("raw", socket=socks["exec"], method="ping", n=n * 8)
    for name in paths:  # warm-up: caches, the shell runner's shells, connections
        paths[name](3)
    return {name: stats(s) for name, s in interleave(paths, ROUNDS, PER_ROUND).items()
            if not (name in dbusd_rows and dbusd_rows[name].note)}  # failed: a note


PING = "ping (raw line, exec daemon's socket)"


def changes_phase(direct: Direct, worker: Worker, socks: dict[str, str],
                  dbusd: list[lvmdbusd.Lvmdbusd]) -> dict[str, Any]:
    size = 4 * MiB
    counter = iter(range(10**6))

    def direct_pair(n: int) -> list[float]:
        out = []
        for _ in range(n):
            name = f"d{next(counter)}"
            t = time.perf_counter()
            direct.run(lvmcmd.change_argv("lvcreate", ["--yes", "--name", name, "--size",
                                                       lvmcmd.size_arg(size), VG]))
            direct.run(lvmcmd.change_argv("lvremove", ["--yes", f"{VG}/{name}"]))
            out.append(time.perf_counter() - t)
        return out

    paths: dict[str, Callable[[int], list[float]]] = {
        "direct lvcreate + lvremove (same commands)": direct_pair}
    for runner, path in socks.items():
        paths[f"lvmsuper {runner}: lvcreate (returns the LV) + lvremove"] = (
            lambda n, p=path, r=runner: worker("change", socket=p, vg=VG, size=size, n=n,
                                               prefix=f"{r[0]}{next(counter)}x"))
    dbusd_rows = {f"{d.label}: Vg.LvCreateLinear + Lv.Remove": d for d in dbusd}
    for name, d in dbusd_rows.items():
        paths[name] = functools.partial(d.timed, once=functools.partial(d.create_remove, size))
    for name in paths:
        paths[name](1)
    rounds = max(3, ROUNDS // 2)
    return {name: stats(s) for name, s in interleave(paths, rounds, 6).items()
            if not (name in dbusd_rows and dbusd_rows[name].note)}  # failed: a note


def load_phase(worker: Worker, socks: dict[str, str]) -> dict[str, Any]:
    """Each level for each runner in turn, twice (interleaved: load from elsewhere on
    the machine hits both runners alike); requests/s over both halves."""
    acc: dict[str, dict[str, Any]] = {}
    for path in socks.values():
        worker("load", socket=path, method="pvs", clients=4, seconds=0.5)  # warm-up
    for _ in range(2):
        for clients in (1, 4, 16, 64):
            for runner, path in socks.items():
                r = worker("load", socket=path, method="pvs", clients=clients,
                           seconds=LOAD_SECONDS / 2)
                a = acc.setdefault(f"{runner}/{clients}", {
                    "runner": runner, "clients": clients, "done": 0, "failed": 0,
                    "elapsed": 0.0, "latencies": []})
                a["done"] += r["done"]
                a["failed"] += r["failed"]
                a["elapsed"] += r["elapsed"]
                a["latencies"] += r["latencies"]
    out: dict[str, Any] = {}
    for key, a in sorted(acc.items(), key=lambda kv: (kv[1]["runner"], kv[1]["clients"])):
        lat = stats(a["latencies"]) if a["latencies"] else {}
        out[key] = {"runner": a["runner"], "clients": a["clients"], "failed": a["failed"],
                    "throughput": a["done"] / a["elapsed"],
                    "p50_ms": lat.get("median_ms"), "p99_ms": lat.get("p99_ms")}
    return out


def scale_phase(box: rig.Sandbox, direct: Direct, worker: Worker, socks: dict[str, str],
                daemons: dict[str, rig.Daemon]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    argv = lvmcmd.report_argv("lv")
    for total in SCALE:
        made = grow(box, total)
        say(f"  {total} LVs in {VG} (created the new ones in {made:.1f} s)")
        captured = direct.run(argv)
        try:
            json.loads(captured)
            plain = True
        except ValueError:  # LVM 2.03.16's trailing comma: parse_document's slow path
            plain = False
        paths: dict[str, Callable[[int], list[float]]] = {
            "direct exec (same command)": lambda n: timed(n, lambda: direct.run(argv)),
            "parse only (parse_document + lvs_from)": lambda n: timed(
                n, lambda: lvs_from(parse_document(captured.decode()).reports["lv"])),
        }
        for runner, path in socks.items():
            paths[f"lvmsuper {runner}: Client.lvs()"] = (
                lambda n, p=path: worker("client", socket=p, method="lvs", n=n))
            paths[f"lvmsuper {runner}: raw line"] = (
                lambda n, p=path: worker("raw", socket=p, method="lvs", n=n))
        for name in paths:
            paths[name](2)
        per_round = 10 if total <= 10 else 6 if total <= 100 else 3
        samples = interleave(paths, ROUNDS if total < 1000 else max(4, ROUNDS // 2),
                             per_round)
        out[str(total)] = {name: stats(s) for name, s in samples.items()}
        out[str(total)]["bytes"] = len(captured)
        out[str(total)]["plain_json"] = plain
    # RSS stays flat: the same big reads again
    before = {r: rss_kib(d.proc.pid) for r, d in daemons.items() if d.proc}
    for path in socks.values():
        worker("client", socket=path, method="lvs", n=10)
    after = {r: rss_kib(d.proc.pid) for r, d in daemons.items() if d.proc}
    out["rss_repeat_kib"] = {"before": before, "after": after}
    return out


# ---- optional rows -----------------------------------------------------------------

POLKIT_ACTIONS = "/usr/share/polkit-1/actions/org.lvmsuper.policy"
POLKIT_RULES = "/etc/polkit-1/rules.d/10-lvmsuper-bench.rules"
POLKIT_RULE = """polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.lvmsuper.") == 0 && subject.isInGroup("%s"))
        return polkit.Result.YES;
    return polkit.Result.NOT_HANDLED;
});
""" % rig.GROUP_ALL


class DbusSetup:
    """A private system-like bus and the real polkitd on it (the tests' helpers), with
    lvmsuper's polkit actions and a rule for the bench user's group; or a note why not."""

    def __init__(self) -> None:
        self.bus: Any = None
        self.polkitd: Any = None
        self.note: str | None = None
        daemon = (HERE.parent / "supervisor" / "daemon.py").read_text()
        if not (HERE.parent / "supervisor" / "transports" / "dbus.py").exists():
            self.note = "no D-Bus row: supervisor/transports/dbus.py does not exist yet"
        elif "start_dbus" not in daemon:
            self.note = "no D-Bus row: lvmsuperd does not serve D-Bus yet"
        elif not shutil.which("dbus-daemon") or not os.access(
                "/usr/lib/polkit-1/polkitd", os.X_OK):
            self.note = "no D-Bus row: needs dbus-daemon and polkitd"

    def start(self) -> None:
        if self.note:
            return
        try:
            import test_dbus  # the tests' private bus and polkitd
            shutil.copyfile(rig.REPO / "polkit" / "org.lvmsuper.policy", POLKIT_ACTIONS)
            Path(POLKIT_RULES).write_text(POLKIT_RULE)
            for path in (POLKIT_ACTIONS, POLKIT_RULES):
                os.chmod(path, 0o644)
            self.bus = lvmdbusd.private_bus()  # test_dbus.Bus + lvmdbusd's bus policy
            self.polkitd = test_dbus.Polkitd(self.bus)
            self.polkitd.start()
        except Exception as exc:  # the row is optional; the rest of the run is not
            self.note = f"no D-Bus row: cannot run a private bus with polkitd ({exc})"
            self.stop()

    def serving(self, worker: Worker) -> None:
        if self.note or self.bus is None:
            return
        try:
            self.bus.wait_for_owner("org.lvmsuper.Supervisor1")
            worker("dbus", bus=self.bus.address, method="ping", n=1)
        except Exception as exc:
            self.note = f"no D-Bus row: the daemon does not answer on the bus ({exc})"

    @property
    def address(self) -> str | None:
        return None if self.note or self.bus is None else str(self.bus.address)

    def stop(self) -> None:
        if self.polkitd is not None:
            try:
                self.polkitd.stop()
            except Exception:
                pass
            self.polkitd = None
        if self.bus is not None:
            self.bus.stop()
            self.bus = None


LVMDBUSD_ROWS = (
    "lvmdbusd rows: Debian's lvmdbusd as root on the same private bus, LVM_SYSTEM_DIR "
    "set to the sandbox (its PV objects checked to be exactly the sandbox's loops first), "
    "called by root from the benchmark's process (dbus-next; its bus policy admits only "
    "root). 'GetManagedObjects (from its cache)': ObjectManager.GetManagedObjects, every "
    "PV, VG and LV object with all properties, answered from lvmdbusd's cache without "
    "running LVM, so it can be stale (nothing here tells it about changes others make). "
    "'Manager.Refresh + GetManagedObjects (fresh)': what it takes to get current state, "
    "as pvs gives: Refresh runs LVM's fullreport and updates its objects. 'Vg.LvCreateLinear "
    "+ Lv.Remove': a 4 MiB linear LV, each call blocking until done (tmo -1).")


def lvmdbusd_start(box: rig.Sandbox, bus: DbusSetup, run: Run) -> list[str]:
    """lvmdbusd in each of its modes on the private bus; the ones that answer (and see
    exactly the sandbox) go into run.lvmdbusd; notes for the rest."""
    note = lvmdbusd.missing()
    if note:
        return [note]
    if bus.bus is None:
        return [f"no lvmdbusd rows: no private bus ({bus.note})"]
    notes = []
    for mode in lvmdbusd.MODES:
        d = lvmdbusd.Lvmdbusd(box, str(bus.bus.address), mode, VG)
        d.start()
        if d.note:
            notes.append(d.note)
        else:
            run.lvmdbusd.append(d)
            say(f"{d.label}: PID {d.pid}, sees exactly the sandbox's PVs and {VG}")
    return notes + ([LVMDBUSD_ROWS] if run.lvmdbusd else [])


# ---- report ----------------------------------------------------------------------------

def check_sudo(box: rig.Sandbox, worker: Worker) -> str | None:
    """Proves sudo's lvm sees only the sandbox (LVM_SYSTEM_DIR kept) before any report
    command runs through it; an error text when not."""
    env = {"PATH": "/usr/bin:/bin", "LVM_SYSTEM_DIR": str(box.system_dir),
           "LVM_SUPPRESS_FD_WARNINGS": "1", "LC_ALL": "C"}
    r = worker("check_sudo", argv=[rig.LVM, "config", "--typeconfig", "current",
                                   "devices/global_filter"], env=env)
    want = "".join(f'"a|^{dev}$|",' for dev in box.loops)
    if r["rc"] != 0 or want not in r["stdout"].replace(" ", ""):
        return (f"sudo's lvm does not see the sandbox's lvm.conf (rc {r['rc']}: "
                f"{(r['stdout'] + r['stderr']).strip()[:300]}); sudo rows skipped")
    return None


def ratio(rows: dict[str, Any], name: str, base: str) -> float | None:
    if name not in rows or base not in rows:
        return None
    return float(rows[name]["median_ms"] / rows[base]["median_ms"])


def verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else ("PASS" if ok else "MISS")


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    t: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, unit: str, less: bool = True,
            note: str = "") -> None:
        ok = None if value is None else (value <= limit if less else value >= limit)
        t.append({"target": name, "value": value, "limit": limit, "unit": unit,
                  "op": "<=" if less else ">=", "pass": ok, "note": note})

    reads, base = res["reads"], "direct exec (same command)"
    ping = res.get("ping")
    add("ping p50 on the socket", ping["median_ms"] * 1000 if ping else None, 100, "us")
    for runner, limit in (("exec", 1.05), ("shell", 0.6)):
        add(f"pvs via lvmsuper ({runner} runner, Client) / direct exec",
            ratio(reads, f"lvmsuper {runner}: Client.pvs()", base), limit, "x")
        add(f"pvs via lvmsuper ({runner} runner, raw line) / direct exec",
            ratio(reads, f"lvmsuper {runner}: raw line", base), limit, "x")
    for runner in ("exec", "shell"):
        add(f"pvs via lvmsuper ({runner} runner, Client) / sudo -n lvm",
            ratio(reads, f"lvmsuper {runner}: Client.pvs()", "sudo -n lvm (same command)"),
            0.5, "x")
    ch, cbase = res["changes"], "direct lvcreate + lvremove (same commands)"
    for runner, limit in (("exec", 1.6), ("shell", 1.1)):
        add(f"lvcreate+lvremove via lvmsuper ({runner} runner) / direct",
            ratio(ch, f"lvmsuper {runner}: lvcreate (returns the LV) + lvremove", cbase),
            limit, "x")
    for runner in ("exec", "shell"):
        one, many = res["load"].get(f"{runner}/1"), res["load"].get(f"{runner}/16")
        add(f"throughput, 16 clients / 1 client ({runner} runner)",
            many["throughput"] / one["throughput"] if one and many else None, 4, "x",
            less=False)
    big = res["scale"].get(str(SCALE[-1]), {})
    for runner in ("exec", "shell"):
        add(f"lvs with {SCALE[-1]:,} LVs via lvmsuper ({runner}, Client) / direct",
            ratio(big, f"lvmsuper {runner}: Client.lvs()", "direct exec (same command)"),
            1.1, "x")
        add(f"lvs with {SCALE[-1]:,} LVs via lvmsuper ({runner}, raw line) / direct",
            ratio(big, f"lvmsuper {runner}: raw line", "direct exec (same command)"),
            1.1, "x")
    for runner, series in res["rss_kib"].items():
        add(f"daemon RSS, highest seen ({runner} runner)", max(series.values()) / 1024, 50,
            "MB")
        rep = res["scale"]["rss_repeat_kib"]
        grew = (rep["after"][runner] - rep["before"][runner]) / 1024
        add(f"daemon RSS growth over a repeat of the {SCALE[-1]:,}-LV reads ({runner})", grew, 1.0,
            "MB", note="flat: within 1 MB")
    ss = res["start_stop"]
    add("start -> READY=1 (median)", statistics.median(ss["ready"]) * 1000, 150, "ms")
    add("SIGTERM when idle -> exit (max)", max(ss["stop"]) * 1000, 500, "ms")
    return t


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"machine: {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, "
             f"LVM {m['lvm']}, Python {m['python']}, load average {m['loadavg_start']:.2f} "
             f"at start, {m.get('loadavg_end', 0):.2f} at end", ""]

    def table(title: str, rows: dict[str, Any], base: str | None) -> None:
        lines.append(f"### {title}")
        lines.append("")
        lines.append("| path | median ms | p99 ms | ratio to direct | n |")
        lines.append("| --- | ---: | ---: | ---: | ---: |")
        for name, row in rows.items():
            if not isinstance(row, dict) or "median_ms" not in row:
                continue
            r = ratio(rows, name, base) if base else None
            lines.append(f"| {name} | {row['median_ms']:.3f} | {row['p99_ms']:.3f} | "
                         f"{'' if r is None else f'{r:.2f}'} | {row['n']} |")
        lines.append("")

    table("pvs, 3 PVs (one read, same work)", res["reads"], "direct exec (same command)")
    for note in res["notes"]:
        lines.append(f"- {note}")
    lines.append("")
    if res.get("ping"):
        p = res["ping"]
        lines.append(f"ping round trip (raw line, socket): median {p['median_ms'] * 1000:.0f}"
                     f" us, p99 {p['p99_ms'] * 1000:.0f} us, n {p['n']}")
        lines.append("")
    table("a change: lvcreate (answering with the new LV) then lvremove", res["changes"],
          "direct lvcreate + lvremove (same commands)")
    lines.append("### throughput: concurrent clients reading pvs (raw line protocol)")
    lines.append("")
    lines.append("| runner | clients | requests/s | p50 ms | p99 ms | failed |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in res["load"].values():
        lines.append(f"| {row['runner']} | {row['clients']} | {row['throughput']:.0f} | "
                     f"{row['p50_ms'] or 0:.2f} | {row['p99_ms'] or 0:.2f} | {row['failed']} |")
    lines.append("")
    for total in SCALE:
        rows = res["scale"].get(str(total))
        if rows:
            table(f"lvs with {total} LVs ({rows['bytes'] // 1024} KiB of LVM JSON)", rows,
                  "direct exec (same command)")
    lines.append("### daemon memory (VmRSS, MB)")
    lines.append("")
    for runner, series in res["rss_kib"].items():
        lines.append(f"- {runner} runner: " + ", ".join(
            f"{k} {v / 1024:.1f}" for k, v in series.items()))
    for mode, kib in res.get("lvmdbusd_rss_kib", {}).items():
        lines.append(f"- lvmdbusd ({mode}), for comparison: {kib / 1024:.1f} MB after its "
                     "reads and changes")
    if "shell_rss_kib" in res:
        lines.append(f"- the shell runner's LVM shells (separate processes): "
                     f"{res['shell_rss_kib'] / 1024:.1f} MB together")
    ss = res["start_stop"]
    lines.append("")
    lines.append("start -> READY=1: " + ", ".join(f"{x * 1000:.0f}" for x in ss["ready"])
                 + " ms; SIGTERM (idle) -> exit: "
                 + ", ".join(f"{x * 1000:.0f}" for x in ss["stop"]) + " ms")
    lines.append("")
    lines.append("### targets")
    lines.append("")
    lines.append("| target | measured | limit | |")
    lines.append("| --- | ---: | ---: | --- |")
    for t in res["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3g} {t['unit']}"
        lines.append(f"| {t['target']} | {value} | {t['op']} {t['limit']:g} {t['unit']} | "
                     f"{verdict(t['pass'])} |")
    return "\n".join(lines) + "\n"


# ---- main ------------------------------------------------------------------------------

class Run:
    """What one run started, so that it is stopped whatever happens."""

    def __init__(self) -> None:
        self.daemons: dict[str, rig.Daemon] = {}
        self.worker: Worker | None = None
        self.bus = DbusSetup()
        self.lvmdbusd: list[lvmdbusd.Lvmdbusd] = []

    def stop_lvmdbusd(self) -> None:
        for d in self.lvmdbusd:
            d.stop()
        self.lvmdbusd = []

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        for d in self.daemons.values():
            d.stop()
        self.stop_lvmdbusd()
        self.bus.stop()  # before the polkit files go back


def measure(box: rig.Sandbox, res: dict[str, Any], run: Run) -> None:
    Path(SUDOERS).write_text(
        f'Defaults:{USER} env_keep += "LVM_SYSTEM_DIR LVM_SUPPRESS_FD_WARNINGS"\n'
        f"{USER} ALL=(root) NOPASSWD: {rig.LVM}\n")
    os.chmod(SUDOERS, 0o440)
    subprocess.run(["visudo", "-cqf", SUDOERS], check=True)
    prepare(box)
    say(f"sandbox: {' '.join(box.loops)} (LVM_SYSTEM_DIR={box.system_dir})")
    bus, daemons = run.bus, run.daemons
    bus.start()
    for runner in ("exec", "shell"):
        serve_dbus = runner == "exec" and bus.address is not None
        daemons[runner] = rig.Daemon(  # the runners' own cost: the cache phase has its own
            box, runner, lvm={"runner": runner, "cache": False},
            dbus={"enabled": True, "bus": bus.address} if serve_dbus else {}).start()
    socks = {runner: d.socket for runner, d in daemons.items()}
    pids = {r: d.proc.pid for r, d in daemons.items() if d.proc}
    res["rss_kib"] = {r: {"start": rss_kib(pid)} for r, pid in pids.items()}
    worker = run.worker = Worker()
    direct = Direct(box)
    sudo_problem = check_sudo(box, worker)
    if sudo_problem:
        res["notes"].append(sudo_problem)
    bus.serving(worker)
    for note in ([bus.note] if bus.note else []) + lvmdbusd_start(box, bus, run):
        res["notes"].append(note)
        say(f"note: {note}")

    say("reads: pvs by every path (and ping), interleaved rounds ...")
    res["reads"] = reads_phase(box, direct, worker, socks, sudo_problem is None,
                               bus.address, run.lvmdbusd)
    res["ping"] = res["reads"].pop(PING)
    say("changes: lvcreate + lvremove ...")
    res["changes"] = changes_phase(direct, worker, socks, run.lvmdbusd)
    for d in run.lvmdbusd:
        if d.note:  # failed while measured: its rows are left out
            res["notes"].append(d.note)
            say(f"note: {d.note}")
        elif d.proc is not None and d.proc.poll() is None:
            res.setdefault("lvmdbusd_rss_kib", {})[d.mode] = rss_kib(d.pid)
    run.stop_lvmdbusd()  # not part of the phases below
    for r, pid in pids.items():
        res["rss_kib"][r]["after reads and changes"] = rss_kib(pid)
    say("throughput: 1, 4, 16, 64 concurrent clients ...")
    res["load"] = load_phase(worker, socks)
    for r, pid in pids.items():
        res["rss_kib"][r]["after load"] = rss_kib(pid)
    say("scaling: lvs as the VG grows ...")
    res["scale"] = scale_phase(box, direct, worker, socks, daemons)
    for r, pid in pids.items():
        res["rss_kib"][r][f"after {SCALE[-1]:,}-LV reads"] = rss_kib(pid)
    if "shell" in pids:
        res["shell_rss_kib"] = children_rss_kib(pids["shell"])
    run.stop()
    say("start -> ready, SIGTERM -> exit ...")
    box.wipe()  # an empty sandbox: start-up is not about LVM's speed
    res["start_stop"] = start_stop(box, "exec", 5)


# ---- scan_devices: a read limited to the VG's own PVs, with 50 other devices present --------

SCAN_EXTRA = int(os.environ.get("BENCH_SCAN_EXTRA", "50"))
SCAN_VG = "vgscan"


def scan_phase() -> dict[str, Any]:
    """A VG on 2 loop devices, and ``SCAN_EXTRA`` more (orphan PVs, as other LUNs on a
    hypervisor are) that LVM scans on every command unless told ``--devices``. The same
    ``lvs <vg>`` read with and without ``scan_devices``, through the daemon (exec and
    shell runners) and directly, in interleaved rounds. Its own sandbox, removed after."""
    from lvmsuper.client import Client

    box = rig.Sandbox(count=2 + SCAN_EXTRA, size_mib=64)
    daemons: list[rig.Daemon] = []
    try:
        own, extra = box.loops[:2], box.loops[2:]
        box.lvm("pvcreate", *box.loops)
        box.lvm("vgcreate", SCAN_VG, *own)
        for i in range(10):
            box.lvm("lvcreate", "-n", f"lv{i}", "-L", "4m", SCAN_VG)
        say(f"scan_devices: {SCAN_VG} on {' '.join(own)}; {len(extra)} other PVs present")
        clients: dict[str, Client] = {}
        # root calls, so the daemon needs none of the test users (their lock is shared
        # with other test sessions): its socket and roles are root's group
        root_only = {"query": ["root"], "manage": ["root"], "destroy": ["root"]}
        for runner in ("exec", "shell"):
            d = rig.Daemon(box, f"scan-{runner}", lvm={"runner": runner, "cache": False},
                           server={"socket_group": "root", "socket_mode": "0660"},
                           access=root_only).start()
            daemons.append(d)
            clients[runner] = Client(d.socket)
        env = lvm_environment(str(box.system_dir))
        lvs = lvmcmd.report_argv("lv", names=[SCAN_VG])
        lvs_scan = lvmcmd.report_argv("lv", names=[SCAN_VG], scan=own)

        def direct(argv: list[str]) -> Callable[[int], list[float]]:
            def go(n: int) -> list[float]:
                out = []
                for _ in range(n):
                    t = time.perf_counter()
                    subprocess.run([rig.LVM, *argv], env=env, capture_output=True, check=True,
                                   stdin=subprocess.DEVNULL)
                    out.append(time.perf_counter() - t)
                return out
            return go

        def daemon(runner: str, scan: list[str] | None) -> Callable[[int], list[float]]:
            def go(n: int) -> list[float]:
                out = []
                for _ in range(n):
                    t = time.perf_counter()
                    got = clients[runner].lvs(vg=SCAN_VG, scan_devices=scan)
                    out.append(time.perf_counter() - t)
                    assert len(got) == 10, got
                return out
            return go

        paths = {"lvmsuper exec, all devices": daemon("exec", None),
                 "lvmsuper exec, scan_devices": daemon("exec", own),
                 "lvmsuper shell, all devices": daemon("shell", None),
                 "lvmsuper shell, scan_devices": daemon("shell", own),
                 "direct lvm lvs": direct(lvs),
                 "direct lvm lvs --devices": direct(lvs_scan)}
        rounds = int(os.environ.get("BENCH_SCAN_ROUNDS", "6"))
        rows = {name: stats(samples) for name, samples in interleave(
            paths, rounds, int(os.environ.get("BENCH_SCAN_PER_ROUND", "5"))).items()}
        for c in clients.values():
            c.close()
        return {"extra_devices": len(extra), "rows": rows,
                "ratios": {f"{a} / {b}": ratio(rows, a, b) for a, b in (
                    ("lvmsuper exec, all devices", "lvmsuper exec, scan_devices"),
                    ("lvmsuper shell, all devices", "lvmsuper shell, scan_devices"),
                    ("direct lvm lvs", "direct lvm lvs --devices"))}}
    finally:
        for d in daemons:
            d.stop()
        box.destroy()


def render_scan(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"### scan_devices: `lvs <vg>` with {res['scan']['extra_devices']} other PVs "
             "present", "", f"{m['nproc']} CPUs, LVM {m['lvm']}, load average "
             f"{m['loadavg_start']:.1f} at start", "",
             "| path | median ms | p99 ms |", "|---|---:|---:|"]
    for name, row in res["scan"]["rows"].items():
        lines.append(f"| {name} | {row['median_ms']:.1f} | {row['p99_ms']:.1f} |")
    lines += ["", "| ratio of medians (all devices / scan_devices) | |", "|---|---:|"]
    for name, value in res["scan"]["ratios"].items():
        lines.append(f"| {name} | {value:.2f}x |" if value else f"| {name} | - |")
    return "\n".join(lines) + "\n"


def write_part(name: str, res: dict[str, Any], text: str) -> int:
    """A single-part run's result: printed, and kept as ``name``.json and .md."""
    say("")
    say(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(text)
    say(f"wrote {RESULTS / (name + '.json')} and {name}.md")
    return 0


def main_scan() -> int:
    res: dict[str, Any] = {"machine": machine()}
    res["scan"] = scan_phase()
    text = render_scan(res)
    return write_part("scan", res, text)


# ---- scoped reads: a caller limited by [[access.scope]] against an unscoped one ---------------

SCOPE_VGS = ("sd-0", "sd-1", "other-tagged", "other")  # the first three are in scope
SCOPE_LVS = int(os.environ.get("BENCH_SCOPE_LVS", "50"))   # per VG


def _group_gid(*names: str) -> tuple[str, int]:
    import grp
    for name in names:
        try:
            return name, grp.getgrnam(name).gr_gid
        except KeyError:
            continue
    raise SystemExit(f"the scope benchmark needs one of the groups {names}")


def scope_phase() -> dict[str, Any]:
    """The same reads (pvs, vgs, lvs, report) by two unprivileged callers of one daemon:
    one unscoped (its group in the global [access] query list), one scoped (its group
    only in an [[access.scope]]: VGs "sd-*" or tagged "bench"), on 4 VGs of
    ``SCOPE_LVS`` LVs each, three of them in scope. Interleaved rounds; the ratio of
    medians is what the filtering costs (both run LVM once per read). Its own sandbox,
    removed after; callers connect with credentials of their own (no user database)."""
    from lvmsuper.client import Client

    box = rig.Sandbox(count=len(SCOPE_VGS), size_mib=256)
    daemons: list[rig.Daemon] = []
    clients: dict[str, Client] = {}
    try:
        box.lvm("pvcreate", *box.loops)
        for vg, dev in zip(SCOPE_VGS, box.loops):
            box.lvm("vgcreate", *(["--addtag", "bench"] if vg == "other-tagged" else []),
                    vg, dev)
            for i in range(SCOPE_LVS):
                box.lvm("lvcreate", "-an", "-Zn", "-n", f"lv{i}", "-L", "4m", vg)
        plain_group, plain_gid = _group_gid("daemon", "bin", "sys")
        scoped_group, scoped_gid = _group_gid("nogroup", "nobody")
        say(f"scoped reads: {len(SCOPE_VGS)} VGs of {SCOPE_LVS} LVs, 3 in scope; unscoped "
            f"group {plain_group}, scoped group {scoped_group}")
        d = rig.Daemon(box, "scopes", lvm={"cache": False},  # what scoping adds to LVM's work
                       server={"socket_group": "root", "socket_mode": "0666"},
                       access={"query": ["root", plain_group], "manage": ["root"],
                               "destroy": ["root"]})
        with open(d.config_path, "a") as fh:
            fh.write(f'\n[[access.scope]]\ngroup = "{scoped_group}"\nroles = ["query"]\n'
                     'vgs = ["sd-*"]\nvg_tags = ["bench"]\n')
        daemons.append(d.start())
        for name, gid in (("unscoped", plain_gid), ("scoped", scoped_gid)):
            c = Client(d.socket)
            c._sock = rig.connect_as(d.socket, 65534, gid, [gid])
            clients[name] = c
        want = {"unscoped": len(SCOPE_VGS), "scoped": 3}

        def read(who: str, method: str) -> Callable[[int], list[float]]:
            def go(n: int) -> list[float]:
                out = []
                for _ in range(n):
                    t = time.perf_counter()
                    got = clients[who].call(method)
                    out.append(time.perf_counter() - t)
                    vgs = got["vgs"] if method == "report" else got if method == "vgs" else None
                    if vgs is not None:
                        assert len(vgs) == want[who], (who, method, len(vgs))
                return out
            return go

        methods = ("pvs", "vgs", "lvs", "report")
        paths = {f"{m} {who}": read(who, m) for m in methods for who in ("unscoped", "scoped")}
        rounds = int(os.environ.get("BENCH_SCOPE_ROUNDS", "6"))
        rows = {name: stats(samples) for name, samples in interleave(
            paths, rounds, int(os.environ.get("BENCH_SCOPE_PER_ROUND", "5"))).items()}
        return {"vgs": len(SCOPE_VGS), "lvs_per_vg": SCOPE_LVS, "rows": rows,
                "ratios": {f"{m} scoped / unscoped": ratio(rows, f"{m} scoped",
                                                            f"{m} unscoped")
                           for m in methods}}
    finally:
        for c in clients.values():
            c.close()
        for d in daemons:
            d.stop()
        box.destroy()


def render_scopes(res: dict[str, Any]) -> str:
    m, sc = res["machine"], res["scopes"]
    lines = [f"### Scoped reads: {sc['vgs']} VGs of {sc['lvs_per_vg']} LVs, 3 in the "
             "caller's scope", "", f"{m['nproc']} CPUs, LVM {m['lvm']}, load average "
             f"{m['loadavg_start']:.1f} at start", "",
             "| path | median ms | p99 ms |", "|---|---:|---:|"]
    for name, row in sc["rows"].items():
        lines.append(f"| {name} | {row['median_ms']:.1f} | {row['p99_ms']:.1f} |")
    lines += ["", "| ratio of medians | |", "|---|---:|"]
    for name, value in sc["ratios"].items():
        lines.append(f"| {name} | {value:.2f}x |" if value else f"| {name} | - |")
    return "\n".join(lines) + "\n"


def main_scopes() -> int:
    res: dict[str, Any] = {"machine": machine()}
    res["scopes"] = scope_phase()
    text = render_scopes(res)
    return write_part("scopes", res, text)


def main_cache() -> int:
    res: dict[str, Any] = {"machine": machine()}
    res["cache"] = cachebench.cache_phase(stats, interleave, rss_kib, say)
    m = res["machine"]
    res["machine"]["loadavg_end"] = os.getloadavg()[0]
    text = (f"machine: {m['nproc']} CPUs, kernel {m['kernel']}, LVM {m['lvm']}, load average "
            f"{m['loadavg_start']:.2f} at start, {m['loadavg_end']:.2f} at end\n\n"
            + cachebench.render_cache(res["cache"]))
    return write_part("cache", res, text)


def main() -> int:
    if os.geteuid() != 0:
        say("make bench needs root (loop devices, a root daemon, a throwaway sudoers entry)")
        return 1
    for need in (rig.LVM, "/dev/loop-control", shutil.which("sudo") or "/nonexistent",
                 str(PROFILE)):
        if not os.path.exists(need):
            say(f"make bench needs {need}")
            return 1
    started = time.monotonic()
    res: dict[str, Any] = {"machine": machine(), "notes": []}
    say(f"lvmsuper benchmark on {res['machine']['nproc']} CPUs, kernel "
        f"{res['machine']['kernel']}, LVM {res['machine']['lvm']}")
    box = rig.Sandbox(count=3, size_mib=1024)
    try:
        with rig.users_for_tests(), rig.etc_restored(*ETC):
            run = Run()
            try:
                measure(box, res, run)
            finally:
                run.stop()
            say("scan_devices: a read limited to the VG's PVs, 50 other devices present ...")
            res["scan"] = scan_phase()
            say("scoped reads against unscoped ones ...")
            res["scopes"] = scope_phase()
            say("the read cache ...")
            res["cache"] = cachebench.cache_phase(stats, interleave, rss_kib, say)
    finally:
        box.destroy()
    res["machine"]["loadavg_end"] = os.getloadavg()[0]
    res["elapsed_s"] = time.monotonic() - started
    res["targets"] = targets(res)
    text = (render(res) + "\n" + render_scan(res) + "\n" + render_scopes(res) + "\n"
            + cachebench.render_cache(res["cache"]))
    say("")
    say(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / "latest.md").write_text(text)
    say(f"wrote {RESULTS / 'latest.json'} and latest.md ({res['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    # `make bench BENCH_ARGS=--scan-devices`: only the scan_devices measurement (the
    # whole benchmark takes long on a loaded machine); the full run includes it too
    if "--scan-devices" in sys.argv[1:]:
        sys.exit(main_scan() if os.geteuid() == 0 else 1)
    # `make bench BENCH_ARGS=--scopes`: only the scoped-reads measurement
    if "--scopes" in sys.argv[1:]:
        sys.exit(main_scopes() if os.geteuid() == 0 else 1)


    # `make bench BENCH_ARGS=--cache`: only the read cache's measurements
    if "--cache" in sys.argv[1:]:
        sys.exit(main_cache() if os.geteuid() == 0 else 1)
    sys.exit(main())
