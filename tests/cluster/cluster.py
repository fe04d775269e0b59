"""The cluster tier's host side: two guests of the full-system kind (tools/system-guest,
1 vCPU and 1536 MiB each) attached to one raw image file, each running
tests/cluster/agent.py, driven through a shared directory.

Runs on the host, with the repository's venv python (nothing of lvmsuper is imported
here: the guests run the Debian package). What is measured (lockstart, failover, the
tier's run time) is written to $RESULTS/measurements.json and printed.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / "tools" / "system-guest"
AGENT = ROOT / "tests" / "cluster" / "agent.py"
DISK_SIZE = 1024 * 1024 * 1024  # sparse
CPUS, MEMORY = 1, 1536
BOOT_LIMIT = 600.0  # seconds for a guest to boot, install and start its daemons
GUEST_LIMIT = 1500.0  # a guest's whole life (the tier must end within 20 minutes)


PART1 = 448 * 2048  # sectors of the first partition (448 MiB)


def mbr(parts: list[tuple[int, int]]) -> bytes:
    """A DOS partition table: (first sector, sectors) each, type 8e (Linux LVM)."""
    table = b"".join(b"\x00\xfe\xff\xff\x8e\xfe\xff\xff" + start.to_bytes(4, "little")
                     + count.to_bytes(4, "little") for start, count in parts)
    return bytes(446) + table.ljust(64, b"\x00") + b"\x55\xaa"


class Failed(AssertionError):
    pass


class Host:
    """One guest: its system-guest process, and its agent's command directory."""

    def __init__(self, name: str, results: Path, disk: Path, deb: str) -> None:
        self.name = name
        self.results = results
        self.disk = disk
        self.deb = deb
        self.dir = results / "share" / name
        self.proc: subprocess.Popen[bytes] | None = None
        self.numbers = itertools.count(1)
        self.facts: dict[str, Any] = {}
        self.boots = 0

    def start(self) -> None:
        """Boots the guest (again, after a kill: a fresh overlay, a fresh install)."""
        if self.dir.exists():
            for old in self.dir.iterdir():
                old.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.boots += 1
        out = open(self.results / f"guest-{self.name}.log", "ab")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(GUEST), "--name", self.name, "--cpus", str(CPUS),
             "--memory", str(MEMORY), "--shared-disk", str(self.disk),
             "--timeout", str(GUEST_LIMIT), "--boot-timeout", "300",
             "--console-log", str(self.results / f"console-{self.name}.log"),
             "--results", str(self.results), "--",
             "env", f"LVMSUPER_DEB={self.deb}", "/usr/bin/python3", str(AGENT),
             "--share", str(self.results / "share")],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()

    def wait_ready(self, deadline: float) -> dict[str, Any]:
        ready = self.dir / "ready.json"
        while not ready.exists():
            if self.proc is not None and self.proc.poll() is not None:
                raise Failed(f"guest {self.name} ended (exit {self.proc.returncode}) before "
                             f"its agent was ready; see guest-{self.name}.log and "
                             f"console-{self.name}.log")
            if time.monotonic() > deadline:
                raise Failed(f"guest {self.name} not ready within {BOOT_LIMIT:.0f} s")
            time.sleep(0.5)
        self.facts = json.loads(ready.read_text())
        if "error" in self.facts:
            raise Failed(f"guest {self.name}: set-up failed: {self.facts['error']}")
        return self.facts

    def send(self, cmd: dict[str, Any]) -> Path:
        n = next(self.numbers)
        tmp = self.dir / f".cmd-{n:04d}.json.tmp"
        tmp.write_text(json.dumps(cmd))
        tmp.rename(self.dir / f"cmd-{n:04d}.json")
        return self.dir / f"res-{n:04d}.json"

    def collect(self, res: Path, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not res.exists():
            if self.proc is not None and self.proc.poll() is not None:
                raise Failed(f"guest {self.name} is gone (exit {self.proc.returncode})")
            if time.monotonic() > deadline:
                raise Failed(f"guest {self.name}: no answer to {res.name} in {timeout:.0f} s")
            time.sleep(0.1)
        answer: dict[str, Any] = json.loads(res.read_text())
        if "exception" in answer:
            raise Failed(f"guest {self.name}'s agent failed:\n{answer['exception']}")
        return answer

    def ask(self, cmd: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
        return self.collect(self.send(cmd), timeout)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """lvmsuper's answer: ``{"result": ...}`` or ``{"error": {...}}``, ``seconds``."""
        return self.ask({"kind": "call", "method": method, "params": params})

    def ok(self, method: str, **params: Any) -> Any:
        answer = self.call(method, **params)
        if "error" in answer:
            raise Failed(f"{self.name}: {method} {params} failed: {answer['error']}")
        return answer["result"]

    def sh(self, *argv: str, check: bool = True) -> dict[str, Any]:
        answer = self.ask({"kind": "sh", "argv": list(argv)})
        if check and answer["rc"] != 0:
            raise Failed(f"{self.name}: {list(argv)} exited {answer['rc']}: "
                         f"{answer['stderr'].strip()}")
        return answer

    def qemu_pid(self) -> int:
        """The guest's qemu: the child of its system-guest process."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        pids = [int(p) for p in children.split()]
        for pid in pids:
            if Path(f"/proc/{pid}/comm").read_text().strip().startswith("qemu"):
                return pid
        raise Failed(f"guest {self.name}: no qemu among {pids}")

    def kill(self) -> float:
        """Kills the guest's qemu by its pid (no shutdown at all); returns when."""
        pid = self.qemu_pid()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        assert self.proc is not None
        self.proc.wait(timeout=120)
        return killed

    def stop(self) -> None:
        """Asks the agent to quit (the guest then powers off); kills what is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.ask({"kind": "quit"}, timeout=30)
                self.proc.wait(timeout=180)
            except (Failed, subprocess.TimeoutExpired, OSError):
                pass
        if self.proc.poll() is None:  # system-guest kills its qemu on SIGTERM
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class Cluster:
    def __init__(self, results: Path, deb: str) -> None:
        self.results = results
        self.disk = results / "shared-disk.img"
        self.started = time.monotonic()
        self.measured: dict[str, Any] = {}
        with open(self.disk, "wb") as f:
            f.truncate(DISK_SIZE)
            # two partitions, one shared VG each (the second for the failover at the end)
            f.write(mbr([(2048, PART1), (2048 + PART1, DISK_SIZE // 512 - 2048 - PART1)]))
        self.a = Host("a", results, self.disk, deb)
        self.b = Host("b", results, self.disk, deb)

    def boot(self) -> None:
        for host in (self.a, self.b):
            host.start()
        deadline = time.monotonic() + BOOT_LIMIT
        for host in (self.a, self.b):
            host.wait_ready(deadline)
        self.measured["boot_and_setup_s"] = round(time.monotonic() - self.started, 1)

    def measure(self, key: str, value: Any) -> None:
        self.measured[key] = value
        print(f"\nMEASURED {key} = {value}", flush=True)

    def close(self) -> None:
        try:
            for host in (self.a, self.b):
                host.stop()
        finally:
            self.disk.unlink(missing_ok=True)
            self.measured["tier_s"] = round(time.monotonic() - self.started, 1)
            (self.results / "measurements.json").write_text(
                json.dumps(self.measured, indent=2) + "\n")
            print(f"\nmeasurements: {json.dumps(self.measured)}", flush=True)
