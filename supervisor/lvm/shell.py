"""The shell runner: LVM reads through a small pool of persistent ``lvm`` shells.

Same contract as ``ExecRunner`` (it is one, for everything the shell does not carry),
minus a fork/exec and LVM's start-up per read. Rules:

- Only reads go to a shell: an allow-listed report command built for a JSON report with
  the daemon's pinned ``--config``, whose every argument LVM's line splitter gives back
  unchanged (``shell_word``). Anything else runs by exec.
- A read limited to some devices (``--devices``) runs by exec too: the shell keeps
  LVM's device cache from one command to the next, and a scan narrowed for one caller
  must never be what the next caller's read sees (nor the other way round).
- Changes never run in a shell. LVM 2.03.16 keeps state in a process from one command
  to the next that can change what a later change does: in a shell that had activated
  a thin LV, ``vgchange -ay`` of its VG refused to activate the thin pool's components
  while the same command in a fresh process succeeded (seen in the device-mapper
  tier). A change is rare next to the reads a manager polls with, and exec gives each
  one a fresh LVM; so a shell only ever runs reads, which change nothing in it.
- The shell runs with LVM's own ``lvmdbusd`` command profile (JSON reports, the command
  log) and writes each command's report to a pipe (``LVM_REPORT_FD``). A read is
  followed by ``lastlog`` (its whole log, for a failure) and an end marker: an unknown
  command named by a fresh nonce, whose log entry proves everything before it is
  complete. The shell's status entry gives the exit code.
- A read in a shell has the caller's deadline (a shell's start within it). A shell
  that misbehaves (deadline, junk, EOF, exit) is killed with its process group and
  replaced, and the read runs again, once, by exec, with a deadline of its own: a read
  whose shell hung can take up to twice ``[lvm] timeout`` before ``Timeout``. A read
  never prompts; if one did, the deadline would catch it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lvmsuper.client.errors import LvmOutputInvalid

from .report import parse_document
from .runner import MAX_OUTPUT, ExecRunner, RunResult

__all__ = ["ShellRunner", "shell_word", "shell_line", "shell_config", "PROFILE"]

log = logging.getLogger("lvmsuperd.shell")
T = TypeVar("T")

PROFILE = "lvmdbusd"  # shipped with lvm2 in <LVM_SYSTEM_DIR>/profile
READS = frozenset({"pvs", "vgs", "lvs", "fullreport"})
MAX_WORDS = 60          # LVM's shell refuses a line of 64 words (MAX_ARGS) or more
MAX_LINE = 16 * 1024    # far below the 64 KiB pipe buffer: a write never blocks
MAX_STDERR = 256 * 1024
START_TIMEOUT = 10.0
RESPAWN_PAUSE = 30.0    # after a shell fails to start, exec only for this long,
MAX_RESPAWN_PAUSE = 3600.0  # doubled after each failure in a row, up to this
MAX_COMMANDS = 1000     # a shell is retired (and replaced) after this many commands
IDLE_RETIRE = 60.0      # idle shells beyond the first are retired after this long

# Settings LVM refuses per command inside its shell ("not allowed here"). The profile
# sets the command log; our selection applies to the lastlog that reads a failure's log.
_INTERACTIVE_ONLY = re.compile(r'\s*\b(?:report_command_log=\d+|command_log_selection="[^"]*")')
_SELECTION = re.compile(r'\bcommand_log_selection="([^"]*)"')
_MARKER_HEAD = re.compile(rb'\{\s*"log"\s*:\s*\[\s*\{[^{}]*\Z')
_LOG_KEY_TAIL = re.compile(rb'\s*:\s*\[')
_LAST_ENTRY = re.compile(r'(\{[^{}]*\})\s*,?\s*\]\s*\}\s*\Z')


def shell_word(arg: str) -> str | None:
    """``arg`` as one word of LVM's shell line, or None when the shell cannot carry it.

    LVM splits a line at blanks; a word that starts with ``'`` or ``"`` runs to the next
    same quote (no escapes); ``#`` at a word's start comments out the rest. So: printable
    ASCII only, quoted when it has a blank or starts with a quote or ``#``.
    """
    if not arg:
        return "''"
    if any(not " " <= ch <= "~" for ch in arg):
        return None  # newline, tab, control or non-ASCII: LVM would split or mangle it
    if " " not in arg and arg[0] not in "'\"#":
        return arg
    for quote in ("'", '"'):
        if quote not in arg:
            return f"{quote}{arg}{quote}"
    return None


def shell_line(words: Sequence[str]) -> str | None:
    quoted = [shell_word(w) for w in words]
    if len(quoted) > MAX_WORDS or any(q is None for q in quoted):
        return None
    line = " ".join(q for q in quoted if q is not None)
    return line if len(line) <= MAX_LINE else None


def shell_config(value: str) -> str:
    """The daemon's ``--config`` value without what LVM refuses inside its shell."""
    return _INTERACTIVE_ONLY.sub("", value)


def _names_vg_columns(args: Sequence[str]) -> bool:
    """Whether a fullreport names its VG columns (``--configreport vg -o ...``): LVM
    applies a leading ``-o`` to no subreport, so the VGs' would come from the profile."""
    return any(a == "--configreport" and b == "vg" for a, b in zip(args, args[1:]))


@dataclass(frozen=True, slots=True)
class _Plan:
    line: str            # the command as the shell reads it
    config: str          # its --config value (probed once per runner)
    lastlog: str         # the line that reads its whole log


class _NoShell(Exception):
    """No shell to run in (the pool is busy or cannot start one): exec runs it."""


class _Broken(Exception):
    """The shell misbehaved: it goes, and the read runs again by exec."""

    def __init__(self, reason: str, stderr: str = "") -> None:
        super().__init__(reason)
        self.reason, self.stderr = reason, stderr


def _status(doc: str, command: str) -> int | None:
    """LVM's return code from the shell's status entry, the doc's last log entry."""
    m = _LAST_ENTRY.search(doc[-4096:])
    if m is None:
        return None
    try:
        entry = json.loads(m.group(1))
        if (entry.get("log_type") == "status" and entry.get("log_context") == "shell"
                and entry.get("log_object_name") == command):
            return int(entry["log_ret_code"])
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _split_log(data: bytes) -> tuple[str, str] | None:
    """(the command's report, lastlog's report): the last document is the log-only one
    that starts ``{ "log": [``. The key ``"log"`` cannot occur unescaped in a value, and
    only a key is followed by ``:``."""
    end = len(data)
    while (pos := data.rfind(b'"log"', 0, end)) >= 0:
        if _LOG_KEY_TAIL.match(data, pos + 5):
            head = data[:pos].rstrip()
            if not head.endswith(b"{"):
                return None
            cut = len(head) - 1
            return (data[:cut].decode("utf-8", "replace"),
                    data[cut:].decode("utf-8", "replace"))
        end = pos
    return None


def _as_exec_log(text: str, command: str) -> str:
    """lastlog's report as exec reports the same log: the shell names the command as
    every entry's object (type ``cmd``) where exec names none, and adds its own
    status entry."""
    try:
        entries = parse_document(text).log
    except LvmOutputInvalid:
        return text
    out = []
    for entry in entries:
        if entry.get("log_context") == "shell" and entry.get("log_type") == "status":
            continue
        if (entry.get("log_object_type"), entry.get("log_object_name")) == ("cmd", command):
            entry = {**entry, "log_object_type": "", "log_object_name": ""}
        out.append(entry)
    return json.dumps({"log": out}, indent=1)


class _Shell:
    """One ``lvm`` shell process and its three pipes, read by the event loop."""

    def __init__(self, proc: subprocess.Popen[bytes], fds: tuple[int, int, int],
                 max_output: int) -> None:
        self.proc, self.pid = proc, proc.pid
        self.report_fd, self.out_fd, self.err_fd = fds
        assert proc.stdin is not None
        self.stdin_fd: int | None = proc.stdin.fileno()
        os.set_blocking(self.stdin_fd, False)
        self.max_output = max_output
        self.buf = bytearray()
        self.err = bytearray()
        self.eof = False
        self.commands = 0
        self.last_used = time.monotonic()
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        for fd, callback in ((self.report_fd, self._on_report), (self.out_fd, self._on_out),
                             (self.err_fd, self._on_err)):
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, callback)

    @classmethod
    async def start(cls, binary: str, env: dict[str, str], max_output: int,
                    deadline: float, reap: Callable[[asyncio.Future[Any]], None]) -> _Shell:
        """A new shell, proven to answer by ``deadline``; one that fails is killed and
        its reaping handed to ``reap``."""
        rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [binary], stdin=subprocess.PIPE, stdout=out_w, stderr=err_w,
                pass_fds=(rep_w,), close_fds=True, start_new_session=True, cwd="/",
                env={**env, "LVM_REPORT_FD": str(rep_w), "LVM_COMMAND_PROFILE": PROFILE},
                # SIGPIPE stays ignored, as for exec (an orphaned shell then sees EPIPE
                # and EOF, and exits, instead of dying in the middle of a write).
                restore_signals=False)
        except OSError:
            for fd in (rep_r, rep_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        for fd in (rep_w, out_w, err_w):
            os.close(fd)
        shell = cls(proc, (rep_r, out_r, err_r), max_output)
        try:  # proves the profile works: JSON on the report pipe, shell log entries
            if (await shell.marked("", min(deadline, time.monotonic() + START_TIMEOUT))
                    ).strip():
                raise _Broken("a report before the first command")
        except BaseException:  # also a cancelled caller: no shell is left behind
            shell.kill()
            reap(asyncio.ensure_future(shell.reap()))  # never waited for in the loop
            raise
        return shell

    # ---- the pipes (event-loop callbacks) ----------------------------------------

    def _read(self, fd: int) -> bytes | None:
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def _on_report(self) -> None:
        data = self._read(self.report_fd)
        if data is None:
            return
        if not data:
            self.eof = True
            self._loop.remove_reader(self.report_fd)
        elif len(self.buf) <= self.max_output:
            self.buf += data
        self._wake()

    def _on_out(self) -> None:
        if self._read(self.out_fd) == b"":  # nothing is expected here: drain, discard
            self._loop.remove_reader(self.out_fd)

    def _on_err(self, drain: bool = False) -> None:
        while True:
            data = self._read(self.err_fd)
            if data is None:
                return
            if not data:
                self._loop.remove_reader(self.err_fd)
                return
            if len(self.err) < MAX_STDERR:
                self.err += data[:MAX_STDERR - len(self.err)]
            if not drain:
                return

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ---- waiting ----------------------------------------------------------------

    async def _until(self, ready: Callable[[], T | None], deadline: float) -> T:
        """Waits until ``ready()`` gives a value; raises ``_Broken`` on EOF, overflow or
        the deadline."""
        while True:
            value = ready()
            if value is not None:
                return value
            if len(self.buf) > self.max_output:
                raise self.broken(f"report larger than {self.max_output} bytes")
            if self.eof:
                raise self.broken(f"the LVM shell exited (status {self.proc.poll()})")
            if time.monotonic() >= deadline:
                raise self.broken("no answer before the deadline")
            self._waiter = self._loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiter = None

    def _begin(self) -> None:
        self.buf.clear()
        self.err.clear()
        self.commands += 1

    async def marked(self, lines: str, deadline: float) -> bytes:
        """Sends ``lines`` and the end marker; returns the reports before the marker."""
        self._begin()
        nonce = f"lvmsuper-end-{secrets.token_hex(8)}".encode()
        self.write(lines + nonce.decode() + "\n")
        searched, cut = 0, -1

        def ready() -> bytes | None:
            nonlocal searched, cut
            if cut < 0:
                found = self.buf.find(nonce, searched)
                searched = max(0, len(self.buf) - len(nonce))
                if found < 0:
                    return None
                head = _MARKER_HEAD.search(self.buf, max(0, found - 4096), found)
                if head is None:
                    raise self.broken("junk on the report pipe")
                cut = head.start()
            if not _whole(self.buf[cut:]):
                return None
            # LVM wrote this command's stderr before its report: what the event loop
            # has not read of it yet is in the pipe now; take it, so a read's warnings
            # are never reported with the next read
            self._on_err(drain=True)
            before = bytes(self.buf[:cut])
            self.buf.clear()
            return before

        return await self._until(ready, deadline)

    async def read(self, plan: _Plan, command: str, deadline: float) -> tuple[str, str]:
        """A read, its lastlog and the marker in one write: (report, log report)."""
        data = await self.marked(f"{plan.line}\n{plan.lastlog}\n", deadline)
        parts = _split_log(data)
        if (parts is None or not parts[0].lstrip().startswith("{")
                or _status(parts[0], command) is None):
            raise self.broken("junk on the report pipe, or a report not the command's")
        return parts

    # ---- writing, failing and ending ----------------------------------------------

    def write(self, text: str) -> None:
        if self.stdin_fd is None or self.proc.poll() is not None:
            raise _Broken("the LVM shell is not running")
        data = text.encode()
        try:
            written = os.write(self.stdin_fd, data)
        except OSError as exc:
            raise _Broken(f"cannot write to the LVM shell: {exc.strerror}") from None
        if written != len(data):  # a line never fills the pipe of an idle shell
            self.kill()
            raise _Broken("the LVM shell's stdin is full")

    def broken(self, reason: str) -> _Broken:
        return _Broken(reason, stderr=self.stderr())

    def stderr(self) -> str:
        return self.err.decode("utf-8", "replace")

    def usable(self) -> bool:
        """Alive, idle and quiet: nothing arrived on the report pipe since the marker."""
        return (self.proc.poll() is None and not self.eof and self.stdin_fd is not None
                and not self.buf.strip() and self.commands < MAX_COMMANDS)

    def close_stdin(self) -> None:
        if self.stdin_fd is not None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.stdin_fd = None

    def kill(self) -> None:
        """SIGKILL to the shell's process group (it only ever runs reads). Only while
        not reaped, so the group id cannot be another process's by now."""
        self.close_stdin()
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _close_pipes(self) -> None:
        for fd in (self.report_fd, self.out_fd, self.err_fd):
            self._loop.remove_reader(fd)
            try:
                os.close(fd)
            except OSError:
                pass

    async def reap(self) -> None:
        """Waits for the shell to exit (killed, or idle and given EOF), then closes its
        pipes."""
        self.close_stdin()
        started, pause, warned = time.monotonic(), 0.002, 0.0
        while self.proc.poll() is None:
            if time.monotonic() - started - warned > 60:
                warned = time.monotonic() - started
                log.warning("LVM shell %d has not exited after %.0f s", self.pid, warned)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
        self._close_pipes()


def _whole(data: bytearray) -> bool:
    """Whether the marker's document (a few hundred bytes) is complete."""
    text = bytes(data).strip()
    if not text.endswith(b"}"):
        return False
    try:
        json.loads(re.sub(rb",(\s*[\]}])", rb"\1", text))
    except ValueError:
        return False
    return True


class ShellRunner(ExecRunner):
    """Runs LVM reads in a pool of up to ``size`` persistent shells; the rest by exec."""

    def __init__(self, binary: str, *, system_dir: str | None = None,
                 max_output: int = MAX_OUTPUT, history: int = 64, size: int = 4) -> None:
        super().__init__(binary, system_dir=system_dir, max_output=max_output,
                         history=history)
        self.size = size
        self._idle: list[_Shell] = []
        self._live = 0
        self._paused_until = 0.0
        self._start_failures = 0  # in a row
        self._config_ok: dict[str, bool] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    @property
    def pids(self) -> list[int]:
        """The idle shells' process ids (diagnosis and tests)."""
        return [shell.pid for shell in self._idle]

    async def run(self, args: Sequence[str], *, timeout: float | None,
                  on_line: Callable[[str], None] | None = None) -> RunResult:
        # timeout None is a change: always by exec (see the module's rules)
        if timeout is None or on_line is not None or (plan := self._plan(args)) is None:
            return await super().run(args, timeout=timeout, on_line=on_line)
        try:
            return await self._in_shell(plan, list(args), timeout)
        except (_NoShell, _Broken):
            return await super().run(args, timeout=timeout)  # once, by exec

    def _plan(self, args: Sequence[str]) -> _Plan | None:
        if not args or args[0] not in READS:
            return None
        if len(args) < 3 or args[1] != "--config" or "--reportformat" not in args:
            return None  # only what was built for a JSON report
        if "--devices" in args:
            return None  # a narrowed scan gets a fresh LVM (see the module's rules)
        if args[0] == "fullreport" and not _names_vg_columns(args):
            return None  # the profile sets vgs_cols_full, which -o alone does not override
        config = shell_config(args[2])
        if self._config_ok.get(config) is False:
            return None
        line = shell_line([args[0], "--config", config, *args[3:]])
        selection = _SELECTION.findall(args[2])
        lastlog = shell_line(["lastlog", "--select", selection[-1]] if selection
                             else ["lastlog"])
        if line is None or lastlog is None:
            return None
        return _Plan(line, config, lastlog)

    async def _in_shell(self, plan: _Plan, args: list[str], timeout: float) -> RunResult:
        """One read in a shell from the pool, which this returns or discards."""
        started = time.monotonic()
        deadline = started + timeout
        argv = (self.binary, *args)
        shell = await self._acquire(deadline)
        if shell is None:
            raise _NoShell()
        ok = False
        try:
            if plan.config not in self._config_ok:
                await self._probe(shell, plan.config, deadline)
            if not self._config_ok[plan.config]:
                ok = True  # the shell is fine; this command is not for it
                raise _NoShell()
            doc, logs = await shell.read(plan, args[0], deadline)
            ok = True
            ret = _status(doc, args[0])
            assert ret is not None  # read() made sure
            stderr = shell.stderr()
            # A failure's stdout is its whole log, as exec's JSON would carry it.
            out = doc if ret == 1 or not logs.strip() else _as_exec_log(logs, args[0])
            result = RunResult(argv, 0 if ret == 1 else ret, out, stderr,
                               time.monotonic() - started)
            self._record(argv, result.rc, started, stderr)
            return result
        except _Broken as exc:
            self._record(argv, None, started, f"LVM shell: {exc.reason}")
            log.warning("LVM shell %d: %s (%s); the read runs again by exec", shell.pid,
                        exc.reason, args[0])
            raise
        except asyncio.CancelledError:
            self._record(argv, None, started, "cancelled")
            raise
        finally:
            self._release(shell, ok=ok)  # not ok: killed (it only ever runs reads)

    async def _probe(self, shell: _Shell, config: str, deadline: float) -> None:
        """Whether the shell takes this --config (LVM refuses some settings there)."""
        line = shell_line(["version", "--config", config])
        accepted = False
        if line is not None:
            doc = await shell.marked(line + "\n",
                                     min(deadline, time.monotonic() + START_TIMEOUT))
            accepted = _status(doc.decode("utf-8", "replace"), "version") == 1
        self._config_ok[config] = accepted
        if not accepted:
            log.warning("the LVM shell refuses the daemon's --config (%s); those "
                        "commands run by exec", config[:200])

    # ---- the pool -----------------------------------------------------------------

    async def _acquire(self, deadline: float) -> _Shell | None:
        """An idle shell, a new one while the pool has room, else None (exec)."""
        while self._idle:
            shell = self._idle.pop()
            if shell.usable():
                return shell
            self._discard(shell, kill=True)  # idle: nothing runs in it
        if self._live >= self.size or time.monotonic() < self._paused_until:
            return None
        self._live += 1
        try:
            shell = await _Shell.start(self.binary, self.env, self.max_output, deadline,
                                       self._keep)
        except (OSError, _Broken) as exc:
            self._live -= 1
            pause = min(RESPAWN_PAUSE * 2 ** self._start_failures, MAX_RESPAWN_PAUSE)
            self._start_failures += 1
            self._paused_until = time.monotonic() + pause
            reason = exc.reason if isinstance(exc, _Broken) else exc.strerror
            # Said once as a warning; a host that cannot run the shell at all (no
            # profile) must not get the same line every half minute.
            log.log(logging.WARNING if self._start_failures == 1 else logging.INFO,
                    "cannot start an LVM shell (%s); running LVM by exec for %g s "
                    "(the shell needs LVM's %s profile in its profile directory)",
                    reason, pause, PROFILE)
            return None
        except BaseException:
            self._live -= 1
            raise
        if self._start_failures:
            log.info("LVM shells start again after %d failed start(s)",
                     self._start_failures)
            self._start_failures = 0
        return shell

    def _release(self, shell: _Shell, *, ok: bool) -> None:
        now = shell.last_used = time.monotonic()
        if ok and shell.usable():
            self._idle.append(shell)
        else:
            self._discard(shell, kill=True)  # a read: nothing is lost
        # Shells beyond the first give their memory back once a burst is over (the
        # idle list is in order of use: the stalest come first).
        while len(self._idle) > 1 and now - self._idle[0].last_used > IDLE_RETIRE:
            self._discard(self._idle.pop(0), kill=False)

    def _discard(self, shell: _Shell, *, kill: bool) -> None:
        self._live -= 1
        if kill:
            shell.kill()
        self._keep(asyncio.ensure_future(shell.reap()))

    def _keep(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: nobody awaits a reaping

    async def aclose(self, timeout: float = 2.0) -> None:
        """Retires every idle shell (stdin closed) and waits a while for all to exit."""
        while self._idle:
            self._discard(self._idle.pop(), kill=False)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
