"""Type=notify, STATUS= and the watchdog (issue 13, point 5): `systemctl status` shows
the daemon's own status line, which agrees with `lvmsuperctl status`; a daemon that
stops answering (SIGSTOP) is killed and restarted by systemd's watchdog, and clients
simply reconnect."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path

import sysrig
from sysrig import MEMBER, active, ctl, prop, run, wait_for

DROPIN = Path("/run/systemd/system/lvmsuper.service.d/50-test-watchdog.conf")
WATCHDOG_SEC = 6
STATUS = re.compile(r"serving; (\d+) clients; (\d+) requests, (\d+) failed; (\d+) jobs running")


def test_status_line_agrees_with_lvmsuperctl_status() -> None:
    ctl(MEMBER, "ping")
    assert prop("lvmsuper.service", "Type") == "notify"
    status = json.loads(ctl(MEMBER, "status", "--json").stdout)
    assert status["pid"] == int(prop("lvmsuper.service", "MainPID"))

    def line() -> re.Match[str] | None:
        return STATUS.fullmatch(prop("lvmsuper.service", "StatusText"))

    # STATUS= is refreshed by the daemon's housekeeping loop: wait for the status call.
    wait_for("STATUS= counting the status request", lambda: bool(
        (m := line()) and int(m[2]) >= status["requests"]["total"]), timeout=60)
    m = line()
    assert m is not None
    assert int(m[2]) - status["requests"]["total"] in (0, 1)  # the status call itself
    assert int(m[3]) == status["requests"]["failed"] and int(m[4]) == status["jobs"]
    shown = run("systemctl", "status", "--no-pager", "lvmsuper.service", check=False).stdout
    assert f'Status: "{m[0]}"' in shown
    human = ctl(MEMBER, "status").stdout
    assert f"pid {status['pid']}" in human


def test_watchdog_restarts_a_stopped_daemon() -> None:
    DROPIN.parent.mkdir(parents=True, exist_ok=True)
    # A stopped process cannot act on the watchdog's SIGABRT: systemd's SIGKILL follows
    # after TimeoutAbortSec= (20 s in the unit; shorter here, for the test's time).
    DROPIN.write_text(f"[Service]\nWatchdogSec={WATCHDOG_SEC}\nTimeoutAbortSec=5\n")
    run("systemctl", "daemon-reload")
    sysrig.stop_daemon()
    pid = 0
    try:
        ctl(MEMBER, "ping")
        pid = int(prop("lvmsuper.service", "MainPID"))
        restarts = int(prop("lvmsuper.service", "NRestarts"))
        time.sleep(WATCHDOG_SEC)  # healthy: the watchdog is fed, nothing happens
        assert int(prop("lvmsuper.service", "MainPID")) == pid
        os.kill(pid, signal.SIGSTOP)
        took = wait_for("a new lvmsuperd after the watchdog fired", lambda: (
            prop("lvmsuper.service", "MainPID") not in ("0", str(pid))
            and active("lvmsuper.service") == "active"), timeout=WATCHDOG_SEC + 90)
        assert int(prop("lvmsuper.service", "NRestarts")) == restarts + 1
        journal = run("journalctl", "-u", "lvmsuper", "--no-pager", "-o", "cat").stdout
        assert "Watchdog timeout" in journal
        assert json.loads(ctl(MEMBER, "--json", "ping").stdout) == {}  # reconnects
        print(f"watchdog: restarted {took:.1f} s after SIGSTOP (WatchdogSec={WATCHDOG_SEC})")
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        DROPIN.unlink(missing_ok=True)
        run("systemctl", "daemon-reload")
        sysrig.stop_daemon()
