"""lvmdbusd (Debian's lvm2-dbusd) on the benchmark's private bus, for bench.py's rows.

lvmdbusd runs as root, started here and stopped by PID, on the private system-like bus
(tests/test_dbus.py's, with lvmdbusd's own bus policy included as the real system bus
includes /etc/dbus-1/system.d), with LVM_SYSTEM_DIR pointing at the sandbox so it only
ever sees the sandbox's loop devices: that is checked through its own objects before
anything is measured. Its bus policy lets only root talk to it, so the caller here is
root (bench.py's own process, over dbus-next). Every problem becomes a note saying
why there is no row; nothing is ever estimated.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rig

PACKAGE = "lvm2-dbusd"
BINARY = "/sbin/lvmdbusd"
POLICY = "/etc/dbus-1/system.d/com.redhat.lvmdbus1.conf"
NAME = "com.redhat.lvmdbus1"       # its well-known name (LVM_DBUS_NAME overrides it)
ROOT = "/com/redhat/lvmdbus1"      # its ObjectManager
MANAGER = f"{ROOT}/Manager"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
# lvmdbusd's modes: its default forks and execs lvm per command; --lvmshell feeds one
# persistent `lvm` shell (a second instance, under a name its policy also allows).
MODES: dict[str, tuple[list[str], str]] = {
    "fork/exec": ([], NAME),
    "lvmshell": (["--lvmshell"], f"{NAME}.benchshell"),
}
CALL_TIMEOUT = 120.0  # s; lvmdbusd is known for hangs: a stuck call fails the row


def missing() -> str | None:
    """Why lvmdbusd cannot be measured on this machine at all, or None."""
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE],
                          capture_output=True, text=True)
    if "install ok installed" not in proc.stdout:
        return f"no lvmdbusd rows: the Debian package {PACKAGE} is not installed"
    for path in (BINARY, POLICY):
        if not os.path.exists(path):
            return f"no lvmdbusd rows: {PACKAGE} is installed but {path} is missing"
    return None


# lvmdbusd's policy lets root own any name under com.redhat.lvmdbus1 but send only to
# that exact name: the same rule for the second instance's name, written into the bus
# config next to the include of lvmdbusd's own file.
SECOND_NAME_POLICY = f"""  <policy user="root">
    <allow send_destination="{MODES['lvmshell'][1]}"/>
  </policy>
  <policy context="default">
    <deny send_destination="{MODES['lvmshell'][1]}"/>
  </policy>
"""


def private_bus() -> Any:
    """tests/test_dbus.py's Bus, with lvmdbusd's bus policy included when installed."""
    import test_dbus  # imported late, like bench.py's D-Bus row: a failure is a note

    class PolicyBus(test_dbus.Bus):  # type: ignore[misc]
        # test_dbus.Bus.__init__ with one more <include> in the config (test_dbus.py
        # itself stays as it is)
        def __init__(self, extra: list[str]) -> None:
            self.dir = Path(tempfile.mkdtemp(prefix="lvmsuper-bus-", dir="/tmp"))
            os.chmod(self.dir, 0o755)
            self.path = str(self.dir / "system_bus_socket")
            self.address = f"unix:path={self.path}"
            includes = "".join(f"  <include>{p}</include>\n" for p in extra)
            if extra:
                includes += SECOND_NAME_POLICY
            config = self.dir / "bus.conf"
            config.write_text(test_dbus.bus_config(self.path).replace(
                "</busconfig>", includes + "</busconfig>"))
            self.proc = subprocess.Popen(
                ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().decode()  # printed once it listens
            if not line.startswith(self.address):
                test_dbus._stop(self.proc)
                raise RuntimeError(f"dbus-daemon did not start: {line!r}")

    return PolicyBus([POLICY] if os.path.exists(POLICY) else [])


class Session:
    """A root connection to the bus; blocking calls on a private event loop."""

    def __init__(self, address: str) -> None:
        from dbus_next.aio.message_bus import MessageBus
        from dbus_next.constants import BusType

        async def connect() -> Any:  # MessageBus binds to the loop running it
            return await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        self.loop = asyncio.new_event_loop()
        self.bus = self.loop.run_until_complete(connect())

    def call(self, dest: str, path: str, interface: str, member: str, signature: str = "",
             *body: Any) -> list[Any]:
        from dbus_next.constants import MessageType
        from dbus_next.message import Message
        msg = Message(destination=dest, path=path, interface=interface, member=member,
                      signature=signature, body=list(body))
        reply = self.loop.run_until_complete(
            asyncio.wait_for(self.bus.call(msg), CALL_TIMEOUT))
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{member}: {reply.error_name}: {reply.body}")
        return list(reply.body)

    def has_owner(self, name: str) -> bool:
        return bool(self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus", "NameHasOwner", "s", name)[0])

    def close(self) -> None:
        self.bus.disconnect()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (lvmdbusd's lvm and the shell around it)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except FileNotFoundError:
                continue
            out += kids
            todo += kids
    return out


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _started(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/PID/stat): with the PID, an identity
    that a reused PID does not share."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


class Lvmdbusd:
    """One lvmdbusd process in one mode; ``note`` says why it cannot be measured."""

    def __init__(self, box: rig.Sandbox, bus_address: str, mode: str, vg: str) -> None:
        self.box, self.address, self.mode, self.vg = box, bus_address, mode, vg
        self.args, self.name = MODES[mode]
        self.label = "lvmdbusd" + (" --lvmshell" if mode == "lvmshell" else "")
        self.log_path = box.dir / f"lvmdbusd-{mode.replace('/', '-')}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.session: Session | None = None
        self.vg_path = ""
        self.note: str | None = None
        self.counter = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Starts it, waits for its name, checks it sees exactly the sandbox."""
        home = self.box.dir / "lvmdbusd-home"  # where an lvm shell keeps its history
        home.mkdir(exist_ok=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": str(home),
               "LVM_SYSTEM_DIR": str(self.box.system_dir), "LVM_SUPPRESS_FD_WARNINGS": "1",
               "LVM_BINARY": rig.LVM, "LVM_DBUS_NAME": self.name,
               "DBUS_SYSTEM_BUS_ADDRESS": self.address, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([BINARY, *self.args], stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL, env=env, cwd="/")
            self.session = Session(self.address)
            deadline = time.monotonic() + 60
            while not self.session.has_owner(self.name):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"it exited ({self.proc.returncode}): {self.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not owned after 60 s: {self.log()}")
                time.sleep(0.05)
            self._check_sandbox()
            if self.mode == "lvmshell":
                self._check_shell()
        except Exception as exc:  # the rows are optional; the rest of the run is not
            self.note = f"no {self.label} rows: {exc}"
            self.stop()

    def _check_sandbox(self) -> None:
        """Its PV objects are exactly the sandbox's loops, its VGs exactly the bench VG."""
        objects = self.managed_objects()
        pvs = sorted(str(i[f"{NAME}.Pv"]["Name"].value) for i in objects.values()
                     if f"{NAME}.Pv" in i)
        vgs = {str(i[f"{NAME}.Vg"]["Name"].value): path for path, i in objects.items()
               if f"{NAME}.Vg" in i}
        if pvs != sorted(self.box.loops) or list(vgs) != [self.vg]:
            raise RuntimeError(f"it sees PVs {pvs} and VGs {sorted(vgs)}, not the sandbox's "
                               f"{sorted(self.box.loops)} and {self.vg}; not measured")
        self.vg_path = vgs[self.vg]

    def _check_shell(self) -> None:
        """--lvmshell falls back to fork/exec quietly when the shell fails to start."""
        assert self.proc is not None
        log = self.log()
        if "Unable to utilize lvm shell" not in log and any(
                os.path.basename(_exe(p)) == "lvm" for p in descendants(self.proc.pid)):
            return
        if "file descriptor 32" in log and "dash" in os.path.realpath("/bin/sh"):
            raise RuntimeError(
                "--lvmshell fell back to fork & exec at start (its log: 'Failed to open "
                "stream for file descriptor 32', 'Unable to utilize lvm shell, dropping "
                "back to fork & exec'): it starts the shell as /bin/sh -c 'lvm 32>FIFO' "
                "and /bin/sh is dash here, which takes no two-digit descriptor in a "
                "redirection (it passes '32' to lvm as an argument and redirects stdout), "
                "so LVM_REPORT_FD=32 is not open")
        raise RuntimeError(f"--lvmshell did not keep an lvm shell running: {log}")

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except FileNotFoundError:
            return "(no output)"
        return " | ".join(text.splitlines()[-6:])[-600:] or "(no output)"

    # ---- what is measured --------------------------------------------------------

    def timed(self, n: int, once: Callable[[], Any]) -> list[float]:
        """``n`` timings of ``once``; after a failure (a hang ends at CALL_TIMEOUT) none,
        and ``note`` says what failed: bench.py then drops this instance's rows."""
        out: list[float] = []
        for _ in range(0 if self.note else n):
            t = time.perf_counter()
            try:
                once()
            except Exception as exc:
                self.note = (f"no {self.label} rows: failed while measured "
                             f"({type(exc).__name__}: {exc}); its log: {self.log()}")
                return []
            out.append(time.perf_counter() - t)
        return out

    def managed_objects(self) -> dict[str, Any]:
        """ObjectManager.GetManagedObjects: every PV, VG and LV object with all its
        properties, as lvmdbusd has them cached (no LVM run)."""
        assert self.session is not None
        return dict(self.session.call(self.name, ROOT, OBJECT_MANAGER,
                                      "GetManagedObjects")[0])

    def refreshed_objects(self) -> dict[str, Any]:
        """Manager.Refresh (lvmdbusd runs LVM's full report and updates its objects),
        then GetManagedObjects: what a caller needing current state, as `pvs` gives,
        has to do."""
        assert self.session is not None
        self.session.call(self.name, MANAGER, f"{NAME}.Manager", "Refresh")
        return self.managed_objects()

    def create_remove(self, size: int) -> None:
        """Vg.LvCreateLinear (``size`` bytes, linear, no options, tmo -1: the call
        returns when the LV exists and lvmdbusd has its object), then Lv.Remove (tmo -1)."""
        assert self.session is not None
        self.counter += 1
        name = f"m{self.mode[0]}{self.counter}"
        lv, job = self.session.call(self.name, self.vg_path, f"{NAME}.Vg", "LvCreateLinear",
                                    "stbia{sv}", name, size, False, -1, {})[0]
        if lv == "/" or job != "/":
            raise RuntimeError(f"LvCreateLinear {name} answered ({lv}, {job})")
        self.session.call(self.name, lv, f"{NAME}.Lv", "Remove", "ia{sv}", -1, {})

    # ---- stopping --------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM, as systemd stops it (lvmdbusd leaves it at its default action, so it
        ends at once; its clean SIGINT exit waits up to 5 s for polling threads), SIGKILL
        after 10 s; then any of its children still there, by PID."""
        if self.session is not None:
            try:
                self.session.close()
            except Exception:
                pass
            self.session = None
        if self.proc is None:
            return
        children = {pid: _started(pid) for pid in descendants(self.proc.pid)}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid, started in children.items():  # the very processes it had, if left over
            if started is not None and _started(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None
