"""What tools/dm-guest and tools/system-guest share: run one QEMU guest per attempt,
its command's output to stdout and its console to a log, boot it once more only when
the command never started, and never leave it running.

A guest reports on its output stream (the host process's stdout) with two marker lines:
`MARKER started` when the command starts and `MARKER exit N` when it ended; everything
else on that stream is the command's output. The process's stderr is the guest's
console. Used only by those two scripts (python3 standard library).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import glob
import os
import re
import secrets
import selectors
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

EXIT_TIMEOUT = 124
EXIT_NO_GUEST = 125
ATTEMPTS = 2           # boots; a second one only when the first never reached CMD
TAIL_LINES = 20        # console lines shown on stderr when something fails
SHUTDOWN_GRACE = 60.0  # seconds the guest gets to power off after CMD ended


class Tool:
    """The calling script's name on its messages, and how to install what it lacks."""

    def __init__(self, prog: str, install: str) -> None:
        self.prog = prog
        self.install = install

    def warn(self, message: str) -> None:
        print(f"{self.prog}: {message}", file=sys.stderr, flush=True)

    def die(self, message: str, status: int = EXIT_NO_GUEST) -> NoReturn:
        self.warn(message)
        sys.exit(status)


def find_kernel(tool: Tool) -> str:
    """The newest /boot/vmlinuz-6.1.* (Debian's linux-image-amd64) with its modules."""
    def version(path: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", Path(path).name)]

    kernels = sorted(glob.glob("/boot/vmlinuz-6.1.*"), key=version)
    if not kernels:
        tool.die(f"the guest cannot start: no /boot/vmlinuz-6.1.* (run `{tool.install}`)")
    kernel = kernels[-1]
    release = Path(kernel).name.removeprefix("vmlinuz-")
    if not Path("/lib/modules", release, "kernel").is_dir():
        tool.die(f"the guest cannot start: no modules for {release} in /lib/modules")
    return kernel


def kvm_usable(cpuinfo: str = "/proc/cpuinfo", kvm: str = "/dev/kvm") -> bool:
    """Nested KVM without vmx/svm hangs a stock kernel silently: use TCG then."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = re.search(r"^flags\s*:.*\b(vmx|svm)\b", text, re.M)
    return bool(flags) and os.access(kvm, os.R_OK | os.W_OK)


class Console:
    """The guest's console stream: appended to a log file, last lines kept for stderr."""

    def __init__(self, tool: Tool, path: str | None) -> None:
        self.tool = tool
        self.path = path
        self.file: IO[str] | None = None
        if path:
            try:
                self.file = open(path, "a", encoding="utf-8", errors="replace")
            except OSError as exc:
                tool.die(f"--console-log {path}: {exc.strerror or exc}", EXIT_NO_GUEST)
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def line(self, text: str) -> None:
        self.tail.append(text)
        if self.file:
            self.file.write(text + "\n")
            self.file.flush()

    def note(self, text: str) -> None:
        """A line of this script's own in the log (not in the tail)."""
        if self.file:
            self.file.write(f"{self.tool.prog}: {text}\n")
            self.file.flush()

    def show_tail(self) -> None:
        where = f" (whole console in {self.path})" if self.path else ""
        if not self.tail:
            self.tool.warn(f"the guest's console was empty{where}")
            return
        lines = "".join(f"  | {t}\n" for t in self.tail)
        sys.stderr.write(f"{self.tool.prog}: last {len(self.tail)} console lines{where}:\n"
                         f"{lines}")
        sys.stderr.flush()


def become_subreaper() -> None:
    """Orphaned descendants (qemu, when vng dies first) are reparented to this process,
    so that reap_orphans() can collect them; PID 1 may not."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def reap_orphans(wait: float = 10.0) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End the process group this script started (the guest's process), by its id."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # what outlived the leader in its group
    reap_orphans()


@dataclass
class Attempt:
    booted: float | None = None  # seconds from start to CMD start; None: never started
    status: int | None = None    # CMD's exit status, once its end was seen
    timed_out: bool = False
    rc: int | None = None        # the guest process's own exit status


def boot_once(tool: Tool, argv: list[str], env: dict[str, str], marker: str,
              console: Console, timeout: float, boot_timeout: float) -> Attempt:
    """One guest: CMD's output to stdout, the console to ``console``; never left running."""
    result = Attempt()
    started_at = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
    except OSError as exc:
        console.line(f"{tool.prog}: cannot run {argv[0]}: {exc.strerror or exc}")
        return result
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "console")
    pending = {"out": b"", "console": b""}
    out = sys.stdout.buffer
    done_at: float | None = None  # when CMD's end was seen

    def take(stream: str, raw: bytes) -> None:
        raw = raw.rstrip(b"\r")  # a guest tty sends CR LF
        line = raw.decode(errors="replace")
        if stream == "console":
            console.line(line)
        elif line == f"{marker} started":
            result.booted = time.monotonic() - started_at
            tool.warn(f"guest up after {result.booted:.1f} s")
        elif line.startswith(f"{marker} exit "):
            result.status = int(line.rsplit(" ", 1)[1])
        else:
            out.write(raw + b"\n")

    try:
        while sel.get_map():
            now = time.monotonic()
            if result.status is not None:
                done_at = done_at or now
                limit = done_at + SHUTDOWN_GRACE  # CMD ended: give the guest time to stop
            elif result.booted is None:
                limit = started_at + min(timeout, boot_timeout)
            else:
                limit = started_at + timeout
            if now >= limit:
                result.timed_out = result.status is None
                if not result.timed_out:
                    tool.warn(f"the guest did not power off {SHUTDOWN_GRACE:.0f} s after "
                              "the command ended; killed")
                kill_group(proc)
                break
            for key, _ in sel.select(timeout=min(1.0, limit - now)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                data = pending[key.data] + chunk
                *lines, pending[key.data] = data.split(b"\n")
                for raw in lines:
                    take(key.data, raw)
            out.flush()
    except BaseException:  # Ctrl-C, SIGTERM: never leave the guest running
        kill_group(proc)
        raise
    finally:
        sel.close()
        for stream, rest in pending.items():
            if rest:
                take(stream, rest)
        out.flush()
        proc.stdout.close()
        proc.stderr.close()
    result.rc = proc.wait()
    reap_orphans(wait=2.0)
    return result


def run_guest(tool: Tool, guest: str, make_argv: Callable[[str], list[str]],
              env: dict[str, str], console: Console, timeout: float,
              boot_timeout: float) -> int:
    """Boot (at most twice, until CMD starts) and return CMD's exit status; exits with
    124 or 125 when there is none. ``make_argv(marker)`` gives one attempt's argv;
    ``guest`` names that program in messages."""
    become_subreaper()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    started_at = time.monotonic()
    for n in range(1, ATTEMPTS + 1):
        marker = f"{tool.prog.upper()}-{secrets.token_hex(8)}"
        argv = make_argv(marker)
        console.note(f"attempt {n} of {ATTEMPTS}: {shlex.join(argv)}")
        console.tail.clear()  # the tail shown is this attempt's
        attempt = boot_once(tool, argv, env, marker, console, timeout, boot_timeout)
        console.note(f"attempt {n} ended: {guest} exit {attempt.rc}, "
                     f"CMD {'started' if attempt.booted is not None else 'never started'}")
        if attempt.booted is not None:
            break
        if attempt.timed_out:
            why = f"did not start within {min(timeout, boot_timeout):.0f} s"
        else:
            why = f"ended before the command started ({guest} exit {attempt.rc})"
        tool.warn(f"the guest {why} (attempt {n} of {ATTEMPTS})")
        console.show_tail()
        if n < ATTEMPTS:
            tool.warn("the command has not run: booting the guest once more")
            continue
        tool.die(f"no guest after {ATTEMPTS} attempts; giving up")
    total = time.monotonic() - started_at
    if attempt.status is None:
        if attempt.timed_out:
            tool.warn(f"timed out after {timeout:.0f} s; guest killed")
        else:
            tool.warn(f"the guest ended before the command finished ({guest} exit "
                      f"{attempt.rc})")
        console.show_tail()
        sys.exit(EXIT_TIMEOUT if attempt.timed_out else EXIT_NO_GUEST)
    tool.warn(f"command exited {attempt.status}; {total:.1f} s in all")
    return attempt.status
