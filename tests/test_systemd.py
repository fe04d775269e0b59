"""systemd integration without systemd as PID 1: the unit files pass ``systemd-analyze
verify`` and stay under the agreed ``security`` exposure; socket activation through the
real ``systemd-socket-activate``; sd_notify (READY, STATUS, WATCHDOG, STOPPING) over a
datagram socket read here; idle exit; prompt SIGTERM shutdown.

Every process is started here and stopped by its PID only."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rig

pytestmark = pytest.mark.system

UNITS = rig.REPO / "systemd"
LVMSUPERD = rig.VENV_BIN / "lvmsuperd"
MAX_EXPOSURE = 3.0
BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def _tool(name: str) -> str:
    found = shutil.which(name, path="/usr/bin:/bin:/usr/lib/systemd:/lib/systemd")
    rig.need_system(found is not None, f"needs {name} (package systemd)")
    assert found is not None
    return found


# ---- unit files ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def unit_copies() -> Iterator[Path]:
    """Copies of both units whose ExecStart names this checkout's lvmsuperd, so
    ``verify`` (which insists the binary exists) works wherever the tests run."""
    rig.need_system(LVMSUPERD.exists(), f"needs {LVMSUPERD} (make install)")
    tmp = Path(tempfile.mkdtemp(prefix="lvmsuper-units-"))
    try:
        shutil.copy(UNITS / "lvmsuper.socket", tmp)
        service = (UNITS / "lvmsuper.service").read_text()
        assert re.search(r"^ExecStart=/usr/bin/lvmsuperd$", service, re.M), service
        (tmp / "lvmsuper.service").write_text(
            re.sub(r"^ExecStart=.*$", f"ExecStart={LVMSUPERD}", service, flags=re.M))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_units_verify(unit_copies: Path) -> None:
    analyze = _tool("systemd-analyze")
    out = subprocess.run([analyze, "verify", "--man=no",
                          str(unit_copies / "lvmsuper.socket"),
                          str(unit_copies / "lvmsuper.service")],
                         capture_output=True, text=True, timeout=60, cwd=unit_copies)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lvmsuper" not in out.stderr, out.stderr  # no warnings about our units


def test_unit_contract() -> None:
    sock = (UNITS / "lvmsuper.socket").read_text()
    for line in ("ListenStream=/run/lvmsuper/lvmsuper.sock", "SocketMode=0660",
                 "SocketGroup=lvmsuper", "DirectoryMode=0755"):
        assert re.search(rf"^{re.escape(line)}$", sock, re.M), line
    service = (UNITS / "lvmsuper.service").read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=on-failure",
                 "Requires=lvmsuper.socket"):
        assert re.search(rf"^{re.escape(line)}$", service, re.M), line
    assert re.search(r"^After=.*\blvmsuper\.socket\b", service, re.M)
    # Settings that would break LVM must never creep in.
    for bad in ("PrivateDevices=yes", "PrivateIPC=yes", "PrivateNetwork=yes",
                "ProcSubset=pid", "RuntimeDirectory="):
        assert not re.search(rf"^{re.escape(bad)}", service, re.M), bad


def test_security_exposure(unit_copies: Path) -> None:
    analyze = _tool("systemd-analyze")
    out = subprocess.run([analyze, "security", "--offline=yes", "--no-pager",
                          str(unit_copies / "lvmsuper.service")],
                         capture_output=True, text=True, timeout=60, cwd=unit_copies)
    match = re.search(r"Overall exposure level for lvmsuper\.service: ([0-9.]+)",
                      out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    score = float(match.group(1))
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}:\n{out.stdout}"
    print(f"lvmsuper.service exposure: {score}")


# ---- running daemons ----------------------------------------------------------------

class Proc:
    """A process started here, logged to a file, stopped by its PID."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log_path = log
        with open(log, "ab") as fh:
            self.popen = subprocess.Popen(argv, stdout=fh, stderr=fh,
                                          stdin=subprocess.DEVNULL, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> float:
        """SIGTERM; returns the seconds until it exited."""
        start = time.monotonic()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            pytest.fail("did not exit within 10 s of SIGTERM:\n" + self.log())
        return time.monotonic() - start

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


@pytest.fixture
def workdir(sandbox: rig.Sandbox) -> Iterator[Path]:
    """A fresh 0755 directory inside the sandbox for sockets, configs and logs."""
    path = Path(tempfile.mkdtemp(prefix="sd-", dir=sandbox.dir))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def config(sandbox: rig.Sandbox, workdir: Path, **server: Any) -> tuple[Path, str]:
    """A config (written by the rig) whose [server] socket lives in workdir."""
    own = str(workdir / "configured.sock")
    d = rig.Daemon(sandbox, name=workdir.name, server={"socket": own, **server})
    target = workdir / "lvmsuper.toml"
    d.config_path.rename(target)
    return target, own


def ping(path: str, timeout: float = 5) -> dict[str, Any]:
    conn = rig.Raw(path)
    try:
        conn.sock.settimeout(timeout)
        return conn.request("ping")
    finally:
        conn.close()


def wait_ping(path: str, proc: Proc, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        if proc.popen.poll() is not None:
            pytest.fail(f"exited with {proc.popen.returncode}:\n{proc.log()}")
        try:
            return ping(path)
        except (OSError, EOFError):
            if time.monotonic() > deadline:
                pytest.fail("never answered ping:\n" + proc.log())
            time.sleep(0.05)


def activate(sandbox: rig.Sandbox, workdir: Path, procs: list[Proc],
             **server: Any) -> tuple[Proc, str, str]:
    """lvmsuperd behind the real systemd-socket-activate (which execs it on the first
    connection, keeping its PID). Returns the process, the activated socket path and the
    different path the config names."""
    tool = _tool("systemd-socket-activate")
    cfg, own = config(sandbox, workdir, **server)
    listen = str(workdir / "activated.sock")
    argv = [tool, "-l", listen]
    argv += [f"-E{k}={v}" for k, v in BASE_ENV.items()]
    argv += [str(LVMSUPERD), "--config", str(cfg)]
    proc = Proc(argv, workdir / "activate.log", dict(BASE_ENV))
    procs.append(proc)
    deadline = time.monotonic() + 10
    while not os.path.exists(listen):
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            pytest.fail("systemd-socket-activate did not listen:\n" + proc.log())
        time.sleep(0.02)
    return proc, listen, own


def test_socket_activation_uses_passed_fd(sandbox: rig.Sandbox, users: object,
                                          workdir: Path, procs: list[Proc]) -> None:
    proc, listen, own = activate(sandbox, workdir, procs)
    assert wait_ping(listen, proc)["result"] is not None
    assert ping(listen)["result"] is not None  # still serving, same listening fd
    assert not os.path.exists(own), "daemon bound its own socket despite activation"
    assert "socket-activated" in proc.log()
    assert proc.terminate() < 5
    assert proc.popen.returncode == 0, proc.log()
    assert not os.path.exists(own)


def test_idle_exit_when_activated(sandbox: rig.Sandbox, users: object, workdir: Path,
                                  procs: list[Proc]) -> None:
    proc, listen, _ = activate(sandbox, workdir, procs, idle_timeout=1)
    wait_ping(listen, proc)  # the first connection starts the daemon; now it is idle
    idle_from = time.monotonic()
    try:
        proc.popen.wait(timeout=6)
    except subprocess.TimeoutExpired:
        pytest.fail("still running 6 s after the last client left:\n" + proc.log())
    took = time.monotonic() - idle_from
    assert proc.popen.returncode == 0, proc.log()
    assert 0.9 <= took <= 5.0, f"idle exit after {took:.1f} s"
    assert "idle for" in proc.log()


def test_sigterm_when_idle_is_prompt(sandbox: rig.Sandbox, users: object, workdir: Path,
                                     procs: list[Proc]) -> None:
    proc, listen, _ = activate(sandbox, workdir, procs)
    wait_ping(listen, proc)
    time.sleep(0.3)
    took = proc.terminate()
    assert proc.popen.returncode == 0, proc.log()
    assert took < 1.0, f"SIGTERM took {took:.2f} s"


# ---- sd_notify ----------------------------------------------------------------------

class NotifyListener:
    """The manager's end of NOTIFY_SOCKET: a datagram socket read here."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def wait_for(self, predicate: Any, timeout: float) -> str:
        """Reads datagrams until one satisfies ``predicate``; returns it."""
        deadline = time.monotonic() + timeout
        for msg in self.messages:
            if predicate(msg):
                return msg
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no matching notification in {timeout} s; got {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.messages.append(data)
            if predicate(data):
                return data

    def close(self) -> None:
        self.sock.close()


def lines(msg: str) -> list[str]:
    return msg.splitlines()


def test_notify_ready_status_watchdog_stopping(sandbox: rig.Sandbox, users: object,
                                               workdir: Path, procs: list[Proc]) -> None:
    listener = NotifyListener(workdir / "notify.sock")
    try:
        cfg, own = config(sandbox, workdir)
        env = {**BASE_ENV, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "1000000"}
        proc = Proc([str(LVMSUPERD), "--config", str(cfg)], workdir / "notify.log", env)
        procs.append(proc)
        ready = listener.wait_for(lambda m: "READY=1" in lines(m), 10)
        # READY=1 is sent only once the socket serves.
        assert ping(own)["result"] is not None
        assert any(line.startswith("STATUS=") for line in lines(ready)), ready
        start = time.monotonic()
        listener.wait_for(lambda m: "WATCHDOG=1" in lines(m), 3)
        assert time.monotonic() - start < 3
        # Half the watchdog interval: several pings within 2 s.
        seen = sum("WATCHDOG=1" in lines(m) for m in listener.messages)
        listener.messages.clear()
        time.sleep(1.6)
        listener.sock.settimeout(0.01)
        with contextlib.suppress(socket.timeout, BlockingIOError):
            while True:
                listener.messages.append(listener.sock.recv(4096).decode())
        assert seen + sum("WATCHDOG=1" in lines(m) for m in listener.messages) >= 3, \
            listener.messages
        proc.popen.send_signal(signal.SIGTERM)
        listener.wait_for(lambda m: "STOPPING=1" in lines(m), 5)
        assert proc.terminate() < 5
        assert proc.popen.returncode == 0, proc.log()
        assert not os.path.exists(own), "own socket left behind"
    finally:
        listener.close()


def test_broken_notify_socket_is_not_fatal(sandbox: rig.Sandbox, users: object,
                                           workdir: Path, procs: list[Proc]) -> None:
    cfg, own = config(sandbox, workdir)
    env = {**BASE_ENV, "NOTIFY_SOCKET": str(workdir / "missing" / "notify.sock"),
           "WATCHDOG_USEC": "1000000"}
    proc = Proc([str(LVMSUPERD), "--config", str(cfg)], workdir / "broken.log", env)
    procs.append(proc)
    assert wait_ping(own, proc)["result"] is not None
    time.sleep(1.2)  # a few watchdog rounds against the missing socket
    assert ping(own)["result"] is not None
    assert proc.terminate() < 5
    assert proc.popen.returncode == 0, proc.log()


def test_watchdog_for_another_pid_is_ignored(sandbox: rig.Sandbox, users: object,
                                             workdir: Path, procs: list[Proc]) -> None:
    """Like sd_watchdog_enabled(): WATCHDOG_PID naming another process means the
    watchdog variables were inherited, not meant for this daemon."""
    listener = NotifyListener(workdir / "notify.sock")
    try:
        cfg, own = config(sandbox, workdir)
        env = {**BASE_ENV, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "200000",
               "WATCHDOG_PID": "1"}
        proc = Proc([str(LVMSUPERD), "--config", str(cfg)], workdir / "wd.log", env)
        procs.append(proc)
        listener.wait_for(lambda m: "READY=1" in lines(m), 10)
        time.sleep(0.6)  # three watchdog intervals, had it been enabled
        listener.sock.settimeout(0.01)
        with contextlib.suppress(socket.timeout, BlockingIOError):
            while True:
                listener.messages.append(listener.sock.recv(4096).decode())
        assert not any("WATCHDOG=1" in lines(m) for m in listener.messages), \
            listener.messages
        assert proc.terminate() < 5
        assert proc.popen.returncode == 0, proc.log()
    finally:
        listener.close()
