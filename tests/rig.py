"""The system-test rig: loop-device sandboxes, throwaway users, a running lvmsuperd.

Safety rules kept here, once: LVM only ever sees the loop devices a sandbox created
(its lvm.conf filter admits exactly those); only those loops are detached; only
processes started here are stopped, by PID; every file under /etc that is touched is
restored byte for byte, also when a test fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
LVM = shutil.which("lvm", path="/usr/sbin:/sbin:/usr/bin:/bin") or "/usr/sbin/lvm"
PROFILE = Path("/etc/lvm/profile/lvmdbusd.profile")

# Test users and groups: in-group (all roles), query-only, manage (no destroy), none.
GROUP_ALL, GROUP_QUERY, GROUP_MANAGE = "lvmsupert", "lvmsupertq", "lvmsupertm"
USERS = {"lvmst-admin": [GROUP_ALL], "lvmst-query": [GROUP_QUERY],
         "lvmst-manage": [GROUP_QUERY, GROUP_MANAGE], "lvmst-out": []}
ETC_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


def need_system(ok: bool, reason: str) -> None:
    """Skip when run by hand without the system; fail under CI (never green by skipping)."""
    if ok:
        return
    if os.environ.get("LVMSUPER_REQUIRE_SYSTEM") == "1":
        pytest.fail(f"system test cannot run: {reason}")
    pytest.skip(reason)


def system_ready() -> None:
    need_system(os.geteuid() == 0, "needs root")
    need_system(os.path.exists(LVM), "needs lvm2")
    need_system(os.path.exists("/dev/loop-control"), "needs loop devices")


# ---- /etc ---------------------------------------------------------------------------

@contextlib.contextmanager
def etc_restored(*paths: str) -> Iterator[None]:
    """Restores each file byte for byte (or removes it if it did not exist)."""
    saved = {p: Path(p).read_bytes() if os.path.exists(p) else None for p in paths}
    modes = {p: os.stat(p) for p in paths if os.path.exists(p)}
    try:
        yield
    finally:
        for path, data in saved.items():
            if data is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            Path(path).write_bytes(data)
            st = modes[path]
            os.chmod(path, st.st_mode & 0o7777)
            os.chown(path, st.st_uid, st.st_gid)


def create_users() -> None:
    """Creates the test groups and users (left over ones from a killed run are reused)."""
    for group in (GROUP_ALL, GROUP_QUERY, GROUP_MANAGE):
        with contextlib.suppress(KeyError):
            grp.getgrnam(group)
            continue
        subprocess.run(["groupadd", "--system", group], check=True)
    for user, groups in USERS.items():
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            continue
        argv = ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", user]
        if groups:
            argv[1:1] = ["--groups", ",".join(groups)]
        subprocess.run(argv, check=True)


USERS_LOCK = "/tmp/lvmsuper-tests-users.lock"


@contextlib.contextmanager
def users_for_tests() -> Iterator[None]:
    """The test users and groups for the duration, then /etc as it was. One holder at a
    time, across processes (test sessions, the benchmark): two of them saving and
    restoring /etc/passwd around each other would remove each other's users."""
    with open(USERS_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with etc_restored(*ETC_FILES):
            create_users()
            yield


def as_user(user: str) -> dict[str, Any]:
    """subprocess kwargs to run as ``user`` with exactly its groups (not root's)."""
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid,
            "extra_groups": os.getgrouplist(user, pw.pw_gid), "cwd": "/"}


def run_as(user: str | None, argv: Sequence[str], env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    kwargs = as_user(user) if user else {}
    full_env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
    full_env.update(env or {})
    return subprocess.run(list(argv), capture_output=True, text=True, env=full_env,
                          timeout=timeout, **kwargs)


# ---- loop-device sandbox ------------------------------------------------------------

def has_device_mapper() -> bool:
    """True when the kernel has device-mapper (a /dev/mapper/control node alone is not
    proof: this host has the node but no driver)."""
    with open("/proc/misc") as fh:
        return any(line.split()[1:] == ["device-mapper"] for line in fh)


def udev_running() -> bool:
    """udevd answers (its control socket outlives it, so the file alone says nothing).

    With udevd, LVM waits for udev to make /dev/VG/LV (udev_sync=1); without it LVM
    must make the nodes itself (udev_sync=0 udev_rules=0), or it waits for ever.
    """
    try:
        ping = subprocess.run(["udevadm", "control", "--ping", "--timeout=5"],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return ping.returncode == 0


class Sandbox:
    """Sparse files on loop devices and an LVM_SYSTEM_DIR that sees only them."""

    def __init__(self, count: int = 4, size_mib: int = 64) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lvmsuper-test-", dir="/tmp"))
        os.chmod(self.dir, 0o755)  # unprivileged users must reach sockets in here
        self.loops: list[str] = []
        try:
            for i in range(count):
                image = self.dir / f"disk{i}.img"
                with open(image, "wb") as fh:
                    fh.truncate(size_mib * 2**20)
                out = subprocess.run(["losetup", "--find", "--show", str(image)],
                                     check=True, capture_output=True, text=True)
                self.loops.append(out.stdout.strip())
            self.system_dir = self.dir / "lvm"
            self.system_dir.mkdir()
            self._write_lvm_conf()
            # LVM's lvmdbusd command profile, where a host keeps it (lvm2 ships it in
            # /etc/lvm/profile): the daemon's shell runner needs it.
            if PROFILE.exists():
                (self.system_dir / "profile").mkdir()
                shutil.copy(PROFILE, self.system_dir / "profile")
        except BaseException:
            self.destroy()
            raise

    def _write_lvm_conf(self) -> None:
        accept = ", ".join(f'"a|^{dev}$|"' for dev in self.loops)
        # With device-mapper (the guest tier, where udevd runs as on a host) LVM works
        # with udev as on a host: udev makes the /dev links and LVM waits for it. LVM
        # making them itself while udevd also handles dm events races (a late "remove"
        # event deleted a link LVM had just made again).
        activation = 1 if has_device_mapper() else 0
        udev = 1 if activation and udev_running() else 0
        (self.system_dir / "lvm.conf").write_text(
            "devices {\n"
            f'  filter = [ {accept}, "r|.*|" ]\n'
            f'  global_filter = [ {accept}, "r|.*|" ]\n'
            '  hints = "none"\n  use_devicesfile = 0\n  obtain_device_list_from_udev = 0\n'
            "}\n"
            f'global {{\n  activation = {activation}\n  use_aio = 0\n'
            f'  locking_dir = "{self.dir}/lock"\n}}\n'
            f'backup {{\n  backup_dir = "{self.dir}/backup"\n  archive_dir = "{self.dir}/archive"\n}}\n'
            f"activation {{\n  udev_sync = {udev}\n  udev_rules = {udev}\n"
            "  monitoring = 0\n}\n")

    @property
    def env(self) -> dict[str, str]:
        return {"LVM_SYSTEM_DIR": str(self.system_dir), "LVM_SUPPRESS_FD_WARNINGS": "1",
                "LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def lvm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """LVM run directly as root, against this sandbox only."""
        return subprocess.run([LVM, *args], capture_output=True, text=True, env=self.env,
                              check=check, stdin=subprocess.DEVNULL)

    def report(self, kind: str, fields: str, *names: str) -> list[dict[str, str]]:
        out = self.lvm(f"{kind}s", "--reportformat", "json", "--units", "b", "--nosuffix",
                       "-o", fields, *names).stdout
        return json.loads(out)["report"][0][kind]  # type: ignore[no-any-return]

    def state(self) -> dict[str, Any]:
        """Everything LVM knows here, for 'nothing changed' comparisons."""
        return {"pv": self.report("pv", "pv_name,pv_uuid,vg_name,pv_size,pv_tags"),
                "vg": self.report("vg", "vg_name,vg_uuid,vg_seqno,vg_tags"),
                "lv": self.report("lv", "lv_full_name,lv_uuid,lv_size,lv_tags")}

    @contextlib.contextmanager
    def hidden(self, dev: str) -> Iterator[None]:
        """LVM no longer sees ``dev`` (a missing PV): its filter entries leave lvm.conf,
        which is put back byte for byte afterwards, also when the test fails."""
        conf = self.system_dir / "lvm.conf"
        saved = conf.read_bytes()
        entry = f'"a|^{dev}$|", '
        assert saved.decode().count(entry) == 2, "filter and global_filter each admit it"
        try:
            conf.write_text(saved.decode().replace(entry, ""))
            yield
        finally:
            conf.write_bytes(saved)

    def wipe(self) -> None:
        for vg in self.report("vg", "vg_name"):
            self.lvm("vgremove", "--force", "--force", "--yes", vg["vg_name"], check=False)
        for pv in self.report("pv", "pv_name"):
            self.lvm("pvremove", "--force", "--force", "--yes", pv["pv_name"], check=False)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.wipe()
        for dev in self.loops:
            subprocess.run(["losetup", "--detach", dev], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- the daemon ---------------------------------------------------------------------

def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


class Daemon:
    """lvmsuperd started as a subprocess on a sandbox, stopped by its PID."""

    def __init__(self, sandbox: Sandbox, name: str = "d", *, args: Sequence[str] = (),
                 **sections: dict[str, Any]) -> None:
        self.sandbox = sandbox
        self.args = list(args)  # more lvmsuperd options
        self.socket = str(sandbox.dir / f"{name}.sock")
        self.config_path = sandbox.dir / f"{name}.toml"
        config: dict[str, dict[str, Any]] = {
            "server": {"socket": self.socket, "socket_group": GROUP_ALL,
                       "socket_mode": "0666"},
            "lvm": {"system_dir": str(sandbox.system_dir)},
            "access": {"query": [GROUP_ALL, GROUP_QUERY], "manage": [GROUP_ALL, GROUP_MANAGE],
                       "destroy": [GROUP_ALL], "open": [GROUP_ALL]},
            "policy": {"devices": list(sandbox.loops)},
            "dbus": {"enabled": False},
        }
        for section, values in sections.items():
            config.setdefault(section, {}).update(values)
        if "binary" in config["lvm"]:
            # A fake lvm (fake_lvm) acts per command line, so it runs by exec; the shell
            # runner's faults are injected in front of the real LVM shell instead
            # (tests/test_shell_runner.py).
            config["lvm"].setdefault("runner", "exec")
        self.runner = config["lvm"].get("runner", "shell")  # the daemon's default
        self.config_path.write_text("".join(
            f"[{section}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
            for section, values in config.items()))
        self.log_path = sandbox.dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> Daemon:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(VENV_BIN / "lvmsuperd"), "--config",
                                      str(self.config_path), *self.args], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, env=_daemon_env())
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lvmsuperd exited with {self.proc.returncode}:\n"
                                   + self.log())
            if _answers(self.socket):
                return self
            time.sleep(0.02)
        raise RuntimeError("lvmsuperd did not start serving:\n" + self.log())

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.runner == "shell":  # tests meant for the shell must not pass by exec
            for sign in SHELL_FELL_BACK:
                assert sign not in self.log(), f"the shell runner fell back: {sign}"
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def fd_count(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def steady_fd_count(self, timeout: float = 10) -> int:
        """A baseline for a leak check: the descriptor count once it reads the same twice
        0.2 s apart, so that no passing step of the daemon is in it (a read cache
        fingerprint holds each device open for a moment; a closed connection takes a
        moment to close here too)."""
        deadline = time.monotonic() + timeout
        count = self.fd_count()
        while True:
            time.sleep(0.2)
            again = self.fd_count()
            if again == count or time.monotonic() > deadline:
                return again
            count = again

    def settled_fd_count(self, expected: int, timeout: float = 5) -> int:
        """The descriptor count once it equals ``expected`` (or after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while (count := self.fd_count()) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return count


# What the shell runner logs when it runs LVM by exec instead (supervisor/lvm/shell.py).
SHELL_FELL_BACK = ("cannot start an LVM shell", "the LVM shell refuses the daemon's --config")


def _daemon_env() -> dict[str, str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
    return env


def _answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(path)
            s.sendall(b'{"jsonrpc":"2.0","id":0,"method":"ping"}\n')
            return b'"result"' in s.recv(4096)
    except OSError:
        return False


class Raw:
    """A raw line-protocol connection, for hostile-input tests."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(path)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, params: Any = None, rid: Any = 1) -> dict[str, Any]:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(json.dumps(msg).encode() + b"\n")
        return self.recv()

    def recv(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def python_as(user: str, code: str, socket_path: str) -> subprocess.CompletedProcess[str]:
    """Runs Python ``code`` with the project's venv as ``user``."""
    return run_as(user, [str(VENV_BIN / "python"), "-c", code],
                  env={"LVMSUPER_SOCKET": socket_path, "PYTHONDONTWRITEBYTECODE": "1"})


def ctl(user: str | None, socket_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_as(user, [str(VENV_BIN / "lvmsuperctl"), "--socket", socket_path, *args])


@contextlib.contextmanager
def running(sandbox: Sandbox, name: str, **sections: dict[str, Any]) -> Iterator[Daemon]:
    """A daemon of its own for one test (config ``sections`` as ``Daemon`` takes them)."""
    d = Daemon(sandbox, name, **sections).start(timeout=120 if has_device_mapper() else 10)
    try:
        yield d
    finally:
        d.stop()


def wait_for_change(client: Any, kind: str, name: str,
                    timeout: float) -> tuple[dict[str, Any], float]:
    """The first ``changed`` notification (params) that names (kind, name), and how
    many seconds it took; fails after ``timeout``."""
    started = time.monotonic()
    while True:
        left = started + timeout - time.monotonic()
        assert left > 0, f"no notification for {kind} {name} within {timeout} s"
        params = client.next_notification(timeout=left)
        if {"type": kind, "name": name} in named(params.get("objects", [])):
            return params, time.monotonic() - started


def named(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A notification's objects as type and name (without their seqno)."""
    return [{"type": o["type"], "name": o["name"]} for o in objects]


def gid_of(group: str) -> int:
    return grp.getgrnam(group).gr_gid


__all__ = ["Sandbox", "Daemon", "Raw", "need_system", "system_ready", "etc_restored",
           "create_users", "run_as", "python_as", "ctl", "USERS", "GROUP_ALL",
           "GROUP_QUERY", "GROUP_MANAGE", "ETC_FILES", "REPO", "VENV_BIN", "gid_of", "named",
           "running", "wait_for_change"]


# ---- faults real LVM will not produce on demand ------------------------------------------

def fake_lvm(sandbox: Sandbox, name: str, *, before: str = "", slow: dict[str, float] | None = None,
             exec_real: bool = True) -> str:
    """A shell-script ``lvm`` in the sandbox: logs "start CMD LASTARG" / "end CMD LASTARG"
    lines to ``<name>.calls``, runs ``before`` (shell), sleeps for the commands in
    ``slow``, then (``exec_real``) runs the real LVM with the same argv."""
    calls = sandbox.dir / f"{name}.calls"
    cases = "".join(f"  {cmd}) sleep {secs};;\n" for cmd, secs in (slow or {}).items())
    script = sandbox.dir / f"{name}-lvm"
    script.write_text(
        "#!/bin/sh\n"
        "for last; do :; done\n"
        f'echo "start $1 $last" >> {calls}\n'
        f"{before}\n"
        f'case "$1" in\n{cases}  *) ;;\nesac\n'
        + (f'{LVM} "$@"\nrc=$?\n' if exec_real else "rc=0\n")
        + f'echo "end $1 $last" >> {calls}\n'
        "exit $rc\n")
    script.chmod(0o755)
    return str(script)


def calls(sandbox: Sandbox, name: str) -> list[tuple[str, str, str]]:
    path = sandbox.dir / f"{name}.calls"
    if not path.exists():
        return []
    return [tuple(line.split(" ", 2)) for line in path.read_text().splitlines()  # type: ignore[misc]
            if line.count(" ") >= 2]


@contextlib.contextmanager
def journald() -> Iterator[None]:
    """A real systemd-journald for the duration; what it created in /run is removed."""
    binary = "/lib/systemd/systemd-journald"
    need_system(os.path.exists(binary), "needs systemd-journald")
    need_system(not os.path.exists("/run/systemd/journal/socket"),
                "a journald already runs here; the test needs its own")
    created = [p for p in ("/run/systemd/journal", "/run/log/journal", "/run/log")
               if not os.path.exists(p)]
    proc = subprocess.Popen([binary], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists("/run/systemd/journal/socket"):
            assert time.monotonic() < deadline, "journald did not start"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for path in created:
            shutil.rmtree(path, ignore_errors=True)


def connect_as(path: str, uid: int, gid: int, groups: list[int]) -> socket.socket:
    """A Unix socket connected to ``path`` by a child with exactly these credentials
    (the kernel records them at connect, for the life of the connection)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            sock.connect(path)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sock.close()
        raise AssertionError(f"cannot connect to {path} as uid {uid}")
    return sock


def client_as(user: str, socket_path: str) -> Any:
    """A Client whose connection was made by a child process running as ``user``: the
    kernel records the peer credentials at connect time, so the daemon sees ``user``
    for every call on it (no Python start-up per call, which matters in the slow
    device-mapper guest).

    The Client never reconnects: a new connection would be made by this (root)
    process, so every later call would silently run as root. Once the connection is
    gone (closed by the daemon, broken, or by ``close()``), every call raises
    ConnectionFailed instead."""
    from lvmsuper.client import Client
    from lvmsuper.client.errors import ConnectionFailed

    class BoundClient(Client):
        def connect(self) -> None:
            if self._sock is not None and not self._closed_by_daemon():
                return
            self.close()
            raise ConnectionFailed(
                f"the connection made as {user} is gone; this test client does not "
                "reconnect (it would connect as root)", socket=self.socket_path)

    kw = as_user(user)
    sock = connect_as(socket_path, kw["user"], kw["group"], kw["extra_groups"])
    client = BoundClient(socket_path)
    client._sock = sock
    return client
