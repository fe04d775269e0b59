"""`systemctl restart` under load (issue 13, point 8): 16 clients reading in a loop see
only results, or ConnectionFailed followed by a retry that succeeds."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path


from sysrig import MEMBER, ctl, prop, run, wait_for

CLIENTS = 16
STOP = Path("/tmp/lvmsuper-test-load.stop")
LOAD = textwrap.dedent("""\
    import json, os, sys, threading, time
    from lvmsuper.client import Client, ConnectionFailed, LvmSuperError
    stop, n = sys.argv[1], int(sys.argv[2])
    seen = [dict(ok=0, failed_then_ok=0, pids=set(), bad=[]) for _ in range(n)]
    ready = threading.Barrier(n + 1)

    def reader(me):
        s = seen[me]
        first = True
        while not os.path.exists(stop):
            try:
                with Client(timeout=120) as c:
                    s["pids"].add(c.status()["pid"])
                    if first:
                        first = False
                        ready.wait()
                    for _ in range(5):
                        c.vgs()
                        s["ok"] += 1
            except ConnectionFailed:
                try:  # the one retry the caller makes
                    with Client(timeout=120) as c:
                        c.vgs()
                    s["failed_then_ok"] += 1
                except LvmSuperError as exc:
                    s["bad"].append(f"retry: {type(exc).__name__}: {exc}")
            except LvmSuperError as exc:
                s["bad"].append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    print("ready", flush=True)
    for t in threads:
        t.join()
    print(json.dumps([dict(s, pids=sorted(s["pids"])) for s in seen]))
    """)


# During a restart the stopping daemon answers what it had read, then ends each
# connection without reading more (transports/unix.py); the client retries a read once
# on a new connection, which systemd's socket holds for the new daemon.
def test_restart_under_load_loses_no_answer() -> None:
    STOP.unlink(missing_ok=True)
    ctl(MEMBER, "ping")
    old = int(prop("lvmsuper.service", "MainPID"))
    load = subprocess.Popen(["runuser", "-u", MEMBER, "--", "/usr/bin/python3", "-c", LOAD,
                             str(STOP), str(CLIENTS)], stdout=subprocess.PIPE, text=True)
    try:
        assert load.stdout is not None
        assert load.stdout.readline().strip() == "ready"
        run("systemctl", "restart", "lvmsuper.service", timeout=300)
        new = int(prop("lvmsuper.service", "MainPID"))
        assert new not in (0, old)
        time.sleep(5)  # every client keeps reading from the new daemon
        STOP.touch()
        out, _ = load.communicate(timeout=300)
    finally:
        STOP.touch()
        if load.poll() is None:
            load.kill()
            load.communicate()
    seen = json.loads(out.splitlines()[-1])
    assert load.returncode == 0
    assert all(not s["bad"] for s in seen), [s["bad"] for s in seen if s["bad"]]
    assert all(s["ok"] > 0 for s in seen), seen
    assert any(new in s["pids"] for s in seen), seen  # clients reached the new daemon
    wait_for("the daemon still active", lambda: prop("lvmsuper.service", "ActiveState")
             == "active", timeout=10)
