"""The one place that executes LVM: argv in, (rc, stdout, stderr) out.

Rules: an argv list, never a shell; the environment is built from scratch; stdin is
/dev/null; no descriptor but stdout/stderr reaches the child; the child leads its own
session (so it outlives the daemon) and ignores SIGPIPE (so it survives the loss of its
reader). A read-only command past its deadline is killed (TERM, then KILL, the
whole group); a mutating command is never killed, whatever happens to the caller.
Output beyond ``max_output`` is discarded (only its head is kept, for the error) while
the pipe is drained to EOF, so a runaway child costs at most ``max_output`` of memory
per stream and never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lvmsuper.client.errors import LvmFailed, Timeout

__all__ = ["RunResult", "ExecRunner", "CommandRecord", "lvm_environment"]

log = logging.getLogger("lvmsuperd.runner")

# A fullreport row costs ~550 bytes per LV (measured with vdsm-like tags), so 32 MiB is
# ~60,000 LVs: far beyond what one host's LVM metadata holds in practice.
MAX_OUTPUT = 32 * 1024 * 1024
KEPT_HEAD = 64 * 1024  # what is kept of an over-long output, for the error's excerpt
KILL_GRACE = 1.0
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class RunResult:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    duration: float
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """One line of the recent-command ring buffer, for diagnosis (SIGUSR1, status)."""

    argv: tuple[str, ...]
    rc: int | None
    duration: float
    stderr: str
    finished: float


def _signame(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


def lvm_environment(system_dir: str | None) -> dict[str, str]:
    """The child's whole environment: nothing inherited from the daemon."""
    env = {"PATH": SAFE_PATH, "LC_ALL": "C", "LVM_SUPPRESS_FD_WARNINGS": "1",
           "HOME": "/nonexistent"}
    if system_dir is not None:
        env["LVM_SYSTEM_DIR"] = system_dir
    return env


class ExecRunner:
    """Runs each LVM command as a fresh process."""

    def __init__(self, binary: str, *, system_dir: str | None = None,
                 max_output: int = MAX_OUTPUT, history: int = 64) -> None:
        self.binary = binary
        self.env = lvm_environment(system_dir)
        self.max_output = max_output
        self.recent: collections.deque[CommandRecord] = collections.deque(maxlen=history)

    async def run(self, args: Sequence[str], *, timeout: float | None,
                  on_line: Callable[[str], None] | None = None) -> RunResult:
        """Runs ``lvm ARGS``; ``timeout`` None means a change: never killed.
        ``on_line`` sees each stdout line as it arrives (pvmove's progress)."""
        argv = (self.binary, *args)
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self.env, close_fds=True,
                start_new_session=True, cwd="/",
                # SIGPIPE stays ignored in the child, as Python set it here: should the
                # daemon die mid-change, LVM's writes to the orphaned pipes then fail
                # with EPIPE instead of killing it at its first warning, half-way.
                restore_signals=False)
        except OSError as exc:
            log.error("cannot execute %s: %s", self.binary, exc.strerror)
            self._record(argv, None, started, str(exc))
            raise LvmFailed(f"cannot execute LVM ({self.binary}): {exc.strerror}",
                            argv=list(argv), rc=None, log=[], stderr=str(exc)) from exc
        assert proc.stdout is not None and proc.stderr is not None
        # The readers are never cancelled: they drain both pipes to EOF, so a killed
        # child always leaves closed pipes and a reaped pid behind.
        io = asyncio.gather(self._read(proc.stdout, on_line), self._read(proc.stderr),
                            proc.wait())
        try:
            # A change (timeout None) is shielded: a cancelled caller cannot stop it.
            (out, out_cut), (err, _), rc = await asyncio.wait_for(asyncio.shield(io), timeout)
        except asyncio.TimeoutError:
            await self._kill_group(proc, io)
            self._record(argv, None, started, "timed out")
            raise Timeout(f"LVM command timed out after {timeout:g} s and was killed",
                          argv=list(argv), timeout=timeout) from None
        except asyncio.CancelledError:
            if timeout is not None:
                await self._kill_group(proc, io)
            raise
        result = RunResult(argv, rc, out.decode("utf-8", "replace"),
                           err.decode("utf-8", "replace"), time.monotonic() - started,
                           truncated=out_cut)
        self._record(argv, rc, started, result.stderr)
        if rc < 0:
            log.error("LVM was killed by signal %d (%s): %s", -rc, _signame(-rc),
                      " ".join(argv[:2]))
        if out_cut:
            log.error("LVM wrote more than %d bytes to stdout; output discarded: %s",
                      self.max_output, " ".join(argv[:2]))
        return result

    async def _read(self, stream: asyncio.StreamReader,
                    on_line: Callable[[str], None] | None = None) -> tuple[bytearray, bool]:
        # One growing bytearray (realloc, no copy on join) and decode straight from it:
        # the peak is about the output's size, not three times it.
        buf = bytearray()
        cut = False
        read = stream.readline if on_line else lambda: stream.read(65536)
        while chunk := await read():
            if on_line:
                try:
                    on_line(chunk.decode("utf-8", "replace").strip())
                except Exception:
                    log.exception("output callback failed")
            if cut:
                continue  # keep draining so the child never blocks on a full pipe
            if len(buf) + len(chunk) > self.max_output:
                cut = True
                buf = buf[:KEPT_HEAD]  # a new small buffer: the big one is freed now
                continue
            buf += chunk
        return buf, cut

    @staticmethod
    async def _kill_group(proc: asyncio.subprocess.Process, io: "asyncio.Future[Any]") -> None:
        """TERM the child's process group, KILL what is left, and reap everything."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            if sig == signal.SIGTERM:
                await asyncio.wait([io], timeout=KILL_GRACE)
        try:
            await asyncio.wait_for(io, KILL_GRACE * 5)
        except asyncio.TimeoutError:
            log.error("LVM process %d did not exit after SIGKILL", proc.pid)

    async def aclose(self) -> None:
        """Nothing to release: each command's process is gone when its call returns."""

    def _record(self, argv: tuple[str, ...], rc: int | None, started: float,
                stderr: str) -> None:
        self.recent.append(CommandRecord(argv, rc, time.monotonic() - started,
                                         stderr[-500:], time.time()))
