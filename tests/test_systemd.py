"""systemd integration without systemd as PID 1: the unit files pass ``systemd-analyze
verify`` and stay under the agreed ``security`` exposure; socket activation through the
real ``systemd-socket-activate``; sd_notify (READY, STATUS, WATCHDOG, STOPPING) over a
datagram socket read here; idle exit; prompt SIGTERM shutdown.

Every process is started here and stopped by its PID only."""

from __future__ import annotations

import contextlib
import json
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
    # With man pages checked (the default): a Documentation= man: page that does not
    # exist would be reported. The pages are the ones tools/manpages.py writes (what the
    # package installs), found through MANPATH.
    manpath = unit_copies / "man"
    pages = subprocess.run([str(rig.VENV_BIN / "python"), str(rig.REPO / "tools/manpages.py"),
                            str(manpath / "pages")], capture_output=True, text=True, timeout=60)
    assert pages.returncode == 0, pages.stderr
    for page in (manpath / "pages").iterdir():
        section = manpath / f"man{page.suffix[1:]}"
        section.mkdir(exist_ok=True)
        page.rename(section / page.name)
    out = subprocess.run([analyze, "verify",
                          str(unit_copies / "lvmsuper.socket"),
                          str(unit_copies / "lvmsuper.service")],
                         capture_output=True, text=True, timeout=60, cwd=unit_copies,
                         env={**os.environ, "MANPATH": str(manpath)})
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
    # The runtime directory is the socket unit's directory: same mode, never deleted on
    # stop (that would unlink the socket unit's listening socket).
    for line in ("RuntimeDirectory=lvmsuper", "RuntimeDirectoryMode=0755",
                 "RuntimeDirectoryPreserve=yes"):
        assert re.search(rf"^{re.escape(line)}$", service, re.M), line
    # Settings that would break LVM must never creep in; ProtectProc=ptraceable would
    # hide callers from the audit (see test_callers_stay_visible_in_the_units_proc).
    for bad in ("PrivateDevices=yes", "PrivateIPC=yes", "PrivateNetwork=yes",
                "ProcSubset=pid", "ProtectProc=ptraceable", "User=", "Group=",
                "DynamicUser=yes"):
        assert not re.search(rf"^{re.escape(bad)}", service, re.M), bad
    # Documentation= names the man page (tools/manpages.py writes it) and the README.
    for unit in (sock, service):
        docs = " ".join(re.findall(r"^Documentation=(.*)$", unit, re.M)).split()
        assert docs == ["man:lvmsuperd(8)", "file:/usr/share/doc/lvmsuper/README.md"], docs
    # Shared VGs: after lvmlockd and sanlock, but never pulling them in (hosts without
    # shared VGs run neither).
    after = " ".join(re.findall(r"^After=(.*)$", service, re.M)).split()
    assert {"lvmlockd.service", "sanlock.service"} <= set(after)
    pulls = " ".join(re.findall(r"^(?:Wants|Requires|BindsTo|Requisite)=(.*)$", service, re.M))
    assert "lvmlockd" not in pulls and "sanlock" not in pulls


def test_unit_starts_without_run_lvm() -> None:
    """Where /run/lvm and /run/lock/lvm do not exist yet (lvm2 installed after boot, no
    LVM command since), the unit makes them as lvm2's tmpfiles.d file declares them,
    outside its sandbox, and a path still missing does not fail the start."""
    service = (UNITS / "lvmsuper.service").read_text()
    assert re.search(r"^ExecStartPre=\+-/bin/systemd-tmpfiles --create lvm2\.conf$", service,
                     re.M)
    (paths,) = re.findall(r"^ReadWritePaths=(.*)$", service, re.M)
    assert {"-/run/lvm", "-/run/lock/lvm"} <= set(paths.split())
    tmpfiles = Path("/usr/lib/tmpfiles.d/lvm2.conf")
    rig.need_system(tmpfiles.exists(), "needs lvm2's tmpfiles.d file (package lvm2)")
    declared = {line.split()[1] for line in tmpfiles.read_text().splitlines()
                if line.startswith("d ")}
    assert {"/run/lvm", "/run/lock/lvm"} <= declared
    # what the ExecStartPre= does, in a throwaway root (where systemd-tmpfiles finds
    # lvm2.conf by its name, as on the host): both made, 0700
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "usr/lib/tmpfiles.d").mkdir(parents=True)
        shutil.copy(tmpfiles, Path(root) / "usr/lib/tmpfiles.d")
        out = subprocess.run([_tool("systemd-tmpfiles"), f"--root={root}", "--create",
                              "lvm2.conf"], capture_output=True, text=True, timeout=60)
        for path in ("run/lvm", "run/lock/lvm"):
            made = Path(root) / path
            assert made.is_dir() and made.stat().st_mode & 0o777 == 0o700, (path, out.stderr)


# Device-mapper targets LVM's target_present() would modprobe (and fail without, as the
# sandbox forbids module loading): linear/striped/error are in dm_mod; snapshot and
# snapshot-origin, thin-pool and thin, and pvmove's mirror need their modules.
DM_MODULES = ("dm_mod", "dm_snapshot", "dm_thin_pool", "dm_mirror")


def test_dm_modules_are_loaded_outside_the_sandbox() -> None:
    service = (UNITS / "lvmsuper.service").read_text()
    assert re.search(r"^ProtectKernelModules=yes$", service, re.M)
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", service, re.M)
    assert caps and "CAP_SYS_MODULE" not in caps.group(1)
    wants = " ".join(re.findall(r"^Wants=(.*)$", service, re.M)).split()
    after = " ".join(re.findall(r"^After=(.*)$", service, re.M)).split()
    for module in DM_MODULES:
        unit = f"modprobe@{module}.service"
        assert unit in wants and unit in after, unit
    # Wants=, never Requires=: a module that cannot load must not stop the daemon.
    assert "modprobe@" not in " ".join(re.findall(r"^(?:Requires|BindsTo|Requisite)=.*$",
                                                  service, re.M))
    # systemd's own template loads them, with full privileges and failures ignored.
    template = Path("/lib/systemd/system/modprobe@.service")
    rig.need_system(template.exists(), "needs systemd's modprobe@.service")
    assert re.search(r"^ExecStart=-/sbin/modprobe -abq %i$", template.read_text(), re.M)
    # No typo in a module name: each is in every installed kernel's module tree (built
    # in or a module). This host's own kernel may have none (no device-mapper at all);
    # Debian's kernel is there once the device-mapper tier was installed.
    for tree in Path("/lib/modules").glob("*/modules.dep"):
        known = tree.read_text()
        builtin = tree.with_name("modules.builtin")
        if builtin.exists():
            known += builtin.read_text()
        known = known.replace("-", "_")
        for module in DM_MODULES:
            assert re.search(rf"/{module}\.ko", known), (tree, module)


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


# procfs hidepid= mode per ProtectProc= value; "default" mounts no hidepid at all.
HIDEPID = {"default": None, "noaccess": "noaccess", "invisible": "invisible",
           "ptraceable": "ptraceable"}
COMM_AS_THE_UNIT_SEES_IT = """\
import sys
from lvmsuper.supervisor.core.auth import process_name
print(process_name(int(sys.argv[1])))
"""


def comm_under_unit(pid: int, protect_proc: str, caps: list[str]) -> str:
    """process_name(pid) as lvmsuperd runs it under the unit: in its own mount namespace
    with a new procfs mounted as systemd mounts it for ProtectProc= (hidepid=, never
    gid=), as root:root with only the unit's capability bounding set."""
    hidepid = HIDEPID[protect_proc]
    options = f"-o hidepid={hidepid} " if hidepid else ""
    bounding = "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    script = (f"mount -t proc {options}proc /proc && exec setpriv --bounding-set {bounding} "
              f"--inh-caps -all {rig.VENV_BIN / 'python'} -c \"$0\" {pid}")
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                          script, COMM_AS_THE_UNIT_SEES_IT],
                         capture_output=True, text=True, timeout=60, env=BASE_ENV)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_callers_stay_visible_in_the_units_proc(users: object) -> None:
    """The audit's LVMSUPER_CALLER_COMM is read from /proc/<pid>/comm of the caller, who
    runs as another user. The unit's ProtectProc= must leave that readable for a root
    daemon without CAP_SYS_PTRACE; hidepid=ptraceable (the control) would hide it."""
    rig.need_system(shutil.which("unshare") is not None and shutil.which("setpriv") is not None,
                    "needs unshare and setpriv (util-linux)")
    service = (UNITS / "lvmsuper.service").read_text()
    match = re.search(r"^ProtectProc=(\w+)$", service, re.M)
    protect_proc = match.group(1) if match else "default"
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", service, re.M)
    assert caps is not None
    bounding = caps.group(1).split()
    assert "CAP_SYS_PTRACE" not in bounding
    caller = subprocess.Popen(["sleep", "60"], **rig.as_user("lvmst-out"),
                              stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while os.stat(f"/proc/{caller.pid}").st_uid == 0 or \
                Path(f"/proc/{caller.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert comm_under_unit(caller.pid, protect_proc, bounding) == "sleep", protect_proc
        # The emulation can see a caller vanish: ptraceable hides other uids from a root
        # process without CAP_SYS_PTRACE.
        assert comm_under_unit(caller.pid, "ptraceable", bounding) == "?"
    finally:
        caller.kill()
        caller.wait()


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

    def wait_exit(self, timeout: float) -> int:
        """Waits for the exit (no signal sent); returns the exit status."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {timeout} s:\n" + self.log())

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


def config(sandbox: rig.Sandbox, workdir: Path, sections: dict[str, dict[str, Any]] | None = None,
           **server: Any) -> tuple[Path, str]:
    """A config (written by the rig) whose [server] socket lives in workdir; ``sections``
    adds to or overrides other sections."""
    own = str(workdir / "configured.sock")
    d = rig.Daemon(sandbox, name=workdir.name, server={"socket": own, **server},
                   **(sections or {}))
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

    def fill(self) -> int:
        """Queues filler datagrams until the kernel refuses more: from then on every
        sender blocks until a datagram is read (AF_UNIX datagrams have no timeout in
        sd_notify). Returns how many fit."""
        count = 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            while True:
                try:
                    sender.sendto(f"{FILLER}{count}".encode(), socket.MSG_DONTWAIT, self.path)
                except BlockingIOError:
                    return count
                count += 1

    def drain(self) -> None:
        """Reads what is queued now into ``messages`` (fillers left out)."""
        self.sock.settimeout(0.01)
        with contextlib.suppress(socket.timeout, BlockingIOError):
            while True:
                data = self.sock.recv(4096).decode()
                if not data.startswith(FILLER):
                    self.messages.append(data)

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


FILLER = "X_LVMSUPER_TEST_FILLER="


def lines(msg: str) -> list[str]:
    return msg.splitlines()


def blocked_sending_datagram(pid: int) -> bool:
    """True while a thread of ``pid`` sleeps in the kernel waiting for room in a full
    AF_UNIX datagram queue (wchan unix_wait_for_peer)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "wchan").read_text().strip() == "unix_wait_for_peer":
                return True
    return False


def step_notifications(listener: NotifyListener, proc: Proc, check: Any,
                       first_timeout: float = 15, timeout: float = 5) -> list[tuple[str, Any]]:
    """Runs the daemon one notification at a time, until its READY=1 was read, and
    returns each notification it sent with what ``check()`` returned while the daemon
    was held at that notification's send.

    With the listener's queue full, sd_notify blocks in the kernel until one datagram is
    read; that read lets exactly the blocked datagram in and the queue is full again, so
    the daemon is held at each notification with everything before it done and nothing
    after it begun. Reads return the fillers first, then the daemon's notifications in
    order: the k-th notification read is the one the k-th hold was at. Stepping stops
    (and the rest is only read) when the daemon sends nothing for ``timeout`` s."""
    listener.fill()
    held: list[Any] = []
    sent: list[str] = []
    listener.sock.settimeout(10)
    while not any("READY=1" in lines(m) for m in sent):
        deadline = time.monotonic() + (timeout if held else first_timeout)
        while not blocked_sending_datagram(proc.popen.pid):
            if proc.popen.poll() is not None:
                pytest.fail(f"exited with {proc.popen.returncode}:\n{proc.log()}")
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        else:
            held.append(check())
            data = listener.sock.recv(4096).decode()
            if not data.startswith(FILLER):
                sent.append(data)
            continue
        if not held:
            pytest.fail("the daemon was never seen blocked sending a notification (no "
                        "thread's /proc wchan read unix_wait_for_peer):\n" + proc.log())
        seen = len(listener.messages)
        listener.drain()  # nothing held any more: the rest is read as it comes
        sent += listener.messages[seen:]
        break
    return list(zip(sent, held))


def status_counts(msg: str) -> dict[str, int] | None:
    """The numbers in a STATUS= line: clients, requests, failed, jobs."""
    status = next((line[len("STATUS="):] for line in lines(msg)
                   if line.startswith("STATUS=")), None)
    if status is None:
        return None
    counts = {}
    for key, pattern in (("clients", r"(\d+) clients?\b"), ("requests", r"(\d+) requests?\b"),
                         ("failed", r"(\d+) failed\b"), ("jobs", r"(\d+) jobs?\b")):
        match = re.search(pattern, status)
        assert match, f"no {key} in STATUS={status}"
        counts[key] = int(match.group(1))
    return counts


def test_notify_ready_status_watchdog_stopping(sandbox: rig.Sandbox, users: object,
                                               workdir: Path, procs: list[Proc]) -> None:
    listener = NotifyListener(workdir / "notify.sock")
    try:
        cfg, own = config(sandbox, workdir)
        env = {**BASE_ENV, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "1000000"}
        proc = Proc([str(LVMSUPERD), "--config", str(cfg)], workdir / "notify.log", env)
        procs.append(proc)
        ready = listener.wait_for(lambda m: "READY=1" in lines(m), 10)
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
        # One SIGTERM, as systemd sends: a second one could land after the daemon's
        # handlers are gone and end it with the signal instead of exit 0.
        assert proc.wait_exit(5) == 0, proc.log()
        assert not os.path.exists(own), "own socket left behind"
    finally:
        listener.close()


def test_watchdog_stays_armed_while_stop_waits_for_a_change(
        sandbox: rig.Sandbox, lvm: rig.Sandbox, users: object, workdir: Path,
        procs: list[Proc]) -> None:
    """A stop waits for running changes (a pvmove may take hours): WATCHDOG=1 goes on
    until the daemon exits, or systemd's watchdog would kill it mid-change (found in the
    full-system tier: SIGABRT to the daemon, SIGKILL to LVM)."""
    listener = NotifyListener(workdir / "notify.sock")
    slow = rig.fake_lvm(sandbox, "stopdog", slow={"pvcreate": 3})
    try:
        cfg, own = config(sandbox, workdir, sections={"lvm": {"binary": slow}})
        env = {**BASE_ENV, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "400000"}
        proc = Proc([str(LVMSUPERD), "--config", str(cfg)], workdir / "stopdog.log", env)
        procs.append(proc)
        listener.wait_for(lambda m: "READY=1" in lines(m), 10)
        conn = rig.Raw(own)
        job = conn.request("pvcreate", {"devices": [lvm.loops[0]], "wait": 0})
        assert set(job["result"]) == {"job"}, job
        conn.close()
        deadline = time.monotonic() + 10
        while not any(c[:2] == ("start", "pvcreate") for c in rig.calls(sandbox, "stopdog")):
            assert time.monotonic() < deadline, "pvcreate never started"
            time.sleep(0.05)
        proc.popen.send_signal(signal.SIGTERM)
        listener.wait_for(lambda m: "STOPPING=1" in lines(m), 5)
        listener.messages.clear()
        time.sleep(1.5)
        assert proc.popen.poll() is None, "the stop did not wait for the change"
        listener.sock.settimeout(0.01)
        with contextlib.suppress(socket.timeout, BlockingIOError):
            while True:
                listener.messages.append(listener.sock.recv(4096).decode())
        pings = sum("WATCHDOG=1" in lines(m) for m in listener.messages)
        assert pings >= 3, listener.messages  # every 0.2 s while the change runs
        assert proc.wait_exit(15) == 0, proc.log()
        assert lvm.report("pv", "pv_name") == [{"pv_name": lvm.loops[0]}]
    finally:
        listener.close()


def connect_or_none(path: str) -> socket.socket | None:
    """A connection to ``path`` if something listens there now (the kernel queues it
    even while the daemon is held), else None."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def ready_state(stepped: list[tuple[str, Any]]) -> Any:
    """What the check saw while the daemon was held at its READY=1."""
    for msg, state in stepped:
        if "READY=1" in lines(msg):
            return state
    pytest.fail(f"READY=1 was not sent while the daemon was held: {stepped}")


def test_ready_only_once_the_socket_serves(sandbox: rig.Sandbox, users: object,
                                           workdir: Path, procs: list[Proc]) -> None:
    """Held at its READY=1, the daemon already listens: a connection made then is
    queued by the kernel and answered once it runs on."""
    listener = NotifyListener(workdir / "notify.sock")
    connections: list[socket.socket] = []
    try:
        cfg, own = config(sandbox, workdir)
        env = {**BASE_ENV, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "200000"}
        proc = Proc([str(LVMSUPERD), "--config", str(cfg)], workdir / "ready.log", env)
        procs.append(proc)

        def check() -> socket.socket | None:
            sock = connect_or_none(own)
            if sock is not None:
                connections.append(sock)
            return sock

        stepped = step_notifications(listener, proc, check)
        conn = ready_state(stepped)
        assert conn is not None, f"not listening when READY=1 was sent: {stepped}"
        listener.close()  # from here on the daemon's notifications fail (not fatal)
        conn.sendall(b'{"jsonrpc": "2.0", "id": 7, "method": "ping"}\n')
        conn.settimeout(10)
        assert json.loads(conn.recv(4096)) == {"jsonrpc": "2.0", "id": 7, "result": {}}
        assert proc.terminate() < 5
        assert proc.popen.returncode == 0, proc.log()
    finally:
        for sock in connections:
            sock.close()
        listener.close()


def test_ready_waits_for_the_bus_name(sandbox: rig.Sandbox, users: object, workdir: Path,
                                      procs: list[Proc]) -> None:
    """With D-Bus enabled (a private bus), the daemon is held at its READY=1 only after
    it owns org.lvmsuper.Supervisor1 and its socket listens."""
    rig.need_system(shutil.which("dbus-daemon") is not None, "needs dbus-daemon (dbus)")
    rig.need_system(shutil.which("busctl") is not None, "needs busctl (systemd)")
    from lvmsuper.client.dbus import BUS_NAME
    from test_dbus import Bus
    bus = Bus()
    listener = NotifyListener(workdir / "notify.sock")
    connections: list[socket.socket] = []
    try:
        cfg, own = config(sandbox, workdir,
                          sections={"dbus": {"enabled": True, "bus": bus.address}})
        env = {**BASE_ENV, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "200000"}
        proc = Proc([str(LVMSUPERD), "--config", str(cfg)], workdir / "ready-bus.log", env)
        procs.append(proc)

        def check() -> tuple[bool, bool]:
            sock = connect_or_none(own)
            if sock is not None:
                connections.append(sock)
            return sock is not None, bus.has_owner(BUS_NAME)  # the bus daemon answers this

        stepped = step_notifications(listener, proc, check)
        assert ready_state(stepped) == (True, True), stepped
        listener.close()
        assert proc.terminate() < 5
        assert proc.popen.returncode == 0, proc.log()
        bus.wait_for_owner(BUS_NAME, present=False)
    finally:
        for sock in connections:
            sock.close()
        listener.close()
        bus.stop()


def test_status_follows_clients_requests_failures_and_jobs(
        sandbox: rig.Sandbox, lvm: rig.Sandbox, users: object, workdir: Path,
        procs: list[Proc]) -> None:
    listener = NotifyListener(workdir / "notify.sock")
    slow = rig.fake_lvm(sandbox, "status", slow={"pvcreate": 2})
    try:
        cfg, own = config(sandbox, workdir, sections={"lvm": {"binary": slow}})
        env = {**BASE_ENV, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "400000"}
        proc = Proc([str(LVMSUPERD), "--config", str(cfg)], workdir / "status.log", env)
        procs.append(proc)
        ready = listener.wait_for(lambda m: "READY=1" in lines(m), 10)
        base = status_counts(ready)
        assert base is not None and base["clients"] == base["jobs"] == 0, ready

        def next_status(want: Any) -> dict[str, int]:
            """The first STATUS= from now on whose counts satisfy ``want``."""
            listener.messages.clear()
            msg = listener.wait_for(lambda m: (c := status_counts(m)) is not None and want(c),
                                    10)
            counts = status_counts(msg)
            assert counts is not None
            return counts

        conn = rig.Raw(own)
        for _ in range(3):
            assert conn.request("ping")["result"] == {}
        now = next_status(lambda c: c["clients"] == 1 and c["requests"] >= base["requests"] + 3)
        assert now["failed"] == base["failed"] and now["jobs"] == 0, now
        assert "error" in conn.request("no_such_method")
        now = next_status(lambda c: c["failed"] == base["failed"] + 1)
        assert now["clients"] == 1 and now["jobs"] == 0, now
        job = conn.request("pvcreate", {"devices": [lvm.loops[0]], "wait": 0})
        assert set(job["result"]) == {"job"}, job
        assert next_status(lambda c: c["jobs"] == 1)["failed"] == base["failed"] + 1
        assert next_status(lambda c: c["jobs"] == 0)["failed"] == base["failed"] + 1
        assert lvm.report("pv", "pv_name") == [{"pv_name": lvm.loops[0]}]
        conn.close()
        assert next_status(lambda c: c["clients"] == 0)["jobs"] == 0
        assert proc.terminate() < 5
        assert proc.popen.returncode == 0, proc.log()
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
