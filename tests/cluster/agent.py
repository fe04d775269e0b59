#!/usr/bin/python3
"""The cluster tier's agent: runs as root in each guest of `make test-cluster` (the
command tools/system-guest starts), sets up one host of a two-host lvmlockd + sanlock
cluster on the shared disk /dev/vda, installs lvmsuper from its Debian package, then
does what the host's tests ask through a shared directory, until told to quit.

Set-up (on the guest's throwaway overlay): LVM sees only the shared disk's two
partitions (/dev/vda1, /dev/vda2: one shared VG each) with
`use_lvmlockd = 1`, the host id in lvmlocal.conf (a: 1, b: 2), sanlock without a
watchdog (`use_watchdog = 0`; wdmd masked), lvmsuper's `[policy] devices` the shared
disk and `[events] poll_interval` 5 s; then `dpkg -i $LVMSUPER_DEB` (which starts
lvmsuper.socket) and `systemctl start sanlock lvmlockd`.

Protocol (files under $SHARE/<name>/, written whole and renamed into place):
`ready.json` when set up; the host writes `cmd-<n>.json` (`{"kind": ..., ...}`), the
agent answers `res-<n>.json`. Kinds: `call` (a method through lvmsuper's Python client,
as root: `{"result"}` or `{"error": the JSON-RPC error}`, plus `seconds`), `sh` (an argv:
`{"rc", "stdout", "stderr", "seconds"}`), `subscribe` (start listening to `changed`),
`wait_change` (the first notification naming `name` with `source` after this command,
within `timeout`), `fresh` (a read through lvmsuper and LVM's direct report of it
right after: `{"daemon", "lvm", "cache"}`), `quit`. Commands run in threads of their own (a wait_change may be
pending while calls go on). Uses only Debian's python3 and the installed package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

NAME = os.environ.get("LVMSUPER_GUEST_NAME", "")
HOST_ID = {"a": 1, "b": 2}
LVM_CONF = """devices {
    global_filter = [ "a|^/dev/vda[12]$|", "r|.*|" ]
    use_devicesfile = 0
}
global {
    use_lvmlockd = 1
    event_activation = 0
    use_lvmpolld = 0
}
activation {
    monitoring = 0
}
"""
LVMSUPER_CONF = """[policy]
devices = ["/dev/vda1", "/dev/vda2"]

[events]
poll_interval = 5
"""


def log(text: str) -> None:
    print(f"agent {NAME}: {text}", flush=True)


def run(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def must(*argv: str, timeout: float = 600) -> str:
    started = time.monotonic()
    proc = run(*argv, timeout=timeout)
    log(f"{' '.join(argv)}: exit {proc.returncode} in {time.monotonic() - started:.1f} s")
    if proc.returncode != 0:
        raise RuntimeError(f"{list(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def write(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value))
    tmp.rename(path)


def set_up() -> dict[str, Any]:
    started = time.monotonic()
    Path("/etc/lvm/lvm.conf").write_text(LVM_CONF)
    Path("/etc/lvm/lvmlocal.conf").write_text(f"local {{\n    host_id = {HOST_ID[NAME]}\n}}\n")
    Path("/etc/sanlock").mkdir(exist_ok=True)
    Path("/etc/sanlock/sanlock.conf").write_text("use_watchdog = 0\n")
    Path("/etc/lvmsuper").mkdir(exist_ok=True)
    Path("/etc/lvmsuper/lvmsuper.toml").write_text(LVMSUPER_CONF)
    # as tests/system: man-db's trigger costs minutes under emulation; a container
    # image's "start no service" switch would keep the postinst from starting the socket
    Path("/var/lib/man-db/auto-update").unlink(missing_ok=True)
    Path("/usr/sbin/policy-rc.d").unlink(missing_ok=True)
    # no watchdog (use_watchdog = 0): wdmd masked before anything loads it
    Path("/etc/systemd/system/wdmd.service").symlink_to("/dev/null")
    must("dpkg", "-i", os.environ["LVMSUPER_DEB"])
    must("systemctl", "start", "sanlock.service", "lvmlockd.service")
    must("systemctl", "start", "lvmsuper.socket")
    return {"host_id": HOST_ID[NAME], "setup_seconds": round(time.monotonic() - started, 1),
            "uname": os.uname().release}


class Listener:
    """lvmsuper's `changed` notifications, as they arrive (monotonic time, params)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._listen, daemon=True)
            self.thread.start()

    def _listen(self) -> None:
        from lvmsuper.client import Client
        while True:
            try:
                with Client(timeout=None) as client:
                    for params in client.changes():
                        with self.cond:
                            self.seen.append((time.monotonic(), params))
                            self.cond.notify_all()
            except Exception:
                log("listener: " + traceback.format_exc(limit=1))
                time.sleep(1)

    def wait(self, after: float, name: str, source: str, timeout: float) -> dict[str, Any]:
        deadline = after + timeout
        with self.cond:
            while True:
                for when, params in self.seen:
                    if when >= after and params.get("source") == source and any(
                            o.get("name") == name for o in params.get("objects", [])):
                        return {"params": params, "after": round(when - after, 3)}
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"timeout": timeout, "seen": [p for _, p in self.seen][-10:]}
                self.cond.wait(left)


def fresh(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One read through lvmsuper, then LVM's own report of it taken right after by a
    fresh lvm process (tests/lvmdirect.py), both in wire form, and the daemon's cache
    counters after the read."""
    tests = str(Path(__file__).resolve().parent.parent)
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import lvmdirect
    from lvmsuper.client import Client, LvmSuperError
    with Client() as client:
        try:
            daemon: Any = client.request(method, params)
        except LvmSuperError as exc:
            daemon = {"failed": type(exc).__name__}
        cache = client.request("status", {})["cache"]
    lvm = lvmdirect.report(lvmdirect.direct_lvm("/sbin/lvm", None), method, params)
    return {"daemon": daemon, "lvm": lvm, "cache": cache}


def handle(cmd: dict[str, Any], listener: Listener, received: float) -> dict[str, Any]:
    kind = cmd["kind"]
    started = time.monotonic()
    if kind == "call":
        from lvmsuper.client import Client, LvmSuperError
        from lvmsuper.client.models import to_wire
        try:
            with Client(timeout=cmd.get("timeout", 900)) as client:
                result = client.call(cmd["method"], **cmd.get("params", {}))
            job = getattr(result, "id", None) if type(result).__name__ == "JobRef" else None
            out: dict[str, Any] = {"result": {"job": job} if job else to_wire(result)}
        except LvmSuperError as exc:
            out = {"error": exc.to_wire()}
    elif kind == "fresh":
        out = fresh(cmd["method"], cmd.get("params", {}))
    elif kind == "sh":
        proc = run(*cmd["argv"], timeout=cmd.get("timeout", 600))
        out = {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
    elif kind == "subscribe":
        listener.start()
        time.sleep(1)  # the listener has subscribed
        out = {}
    elif kind == "wait_change":
        out = listener.wait(received, cmd["name"], cmd.get("source", "external"),
                            cmd.get("timeout", 30))
    else:
        out = {"unknown": kind}
    out["seconds"] = round(time.monotonic() - started, 3)
    return out


def main() -> int:
    if NAME not in HOST_ID:
        print(f"agent: LVMSUPER_GUEST_NAME must be one of {sorted(HOST_ID)}", file=sys.stderr)
        return 2
    share = Path(sys.argv[sys.argv.index("--share") + 1]) / NAME
    share.mkdir(parents=True, exist_ok=True)
    try:
        facts = set_up()
    except Exception as exc:
        write(share / "ready.json", {"error": str(exc)})
        log(f"set-up failed: {exc}")
        return 1
    write(share / "ready.json", facts)
    log(f"ready: {facts}")
    listener = Listener()
    taken: set[str] = set()
    quit_event = threading.Event()

    def serve(path: Path) -> None:
        received = time.monotonic()
        n = path.name[len("cmd-"):-len(".json")]
        try:
            cmd = json.loads(path.read_text())
            if cmd["kind"] == "quit":
                write(share / f"res-{n}.json", {"seconds": 0})
                quit_event.set()
                return
            out = handle(cmd, listener, received)
            json.dumps(out)
        except Exception:
            out = {"exception": traceback.format_exc()}
        write(share / f"res-{n}.json", out)

    while not quit_event.is_set():
        for path in sorted(share.glob("cmd-*.json")):
            if path.name not in taken:
                taken.add(path.name)
                threading.Thread(target=serve, args=(path,), daemon=True).start()
        quit_event.wait(0.1)
    run("journalctl", "--sync")
    return 0


if __name__ == "__main__":
    sys.exit(main())
