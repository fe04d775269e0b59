"""The shell runner ([lvm] runner = "shell"): real LVM reads through persistent shells.

Reads must give what the exec runner gives; changes never run in a shell (always by
exec); a shell that misbehaves is replaced and the read retried by exec; what the
shell's line splitter cannot carry runs by exec. A fake ``lvm`` is used only for the
faults (a filter in front of the real LVM shell); every change happens in real LVM.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rig
from lvmsuper.client import Client, LvmFailed, LvmSuperError
from lvmsuper.supervisor.lvm import argv as lvmcmd
from lvmsuper.supervisor.lvm.calls import Lvm
from lvmsuper.supervisor.lvm.runner import ExecRunner
from lvmsuper.supervisor.lvm.shell import (PROFILE, ShellRunner, shell_config,
                                              shell_line, shell_word)

MiB = 2**20
T = TypeVar("T")
PINS = lvmcmd.pinned_config(None)


# ---- what the shell can carry (no LVM needed) --------------------------------------

def lvm_split(line: str) -> list[str]:
    """LVM 2.03's lvm_split() (tools/lvmcmdline.c), the shell's tokenizer, in Python."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i].isspace():
            i += 1
        if i >= n or line[i] == "#":
            break
        quote = ""
        if line[i] in "'\"":
            quote = line[i]
            i += 1
        j = i
        while j < n and (line[j] != quote if quote else not line[j].isspace()):
            j += 1
        words.append(line[i:j])
        i = j + 1
    return words


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)),
                min_size=1, max_size=12))
def test_every_line_built_splits_back_into_the_same_words(words: list[str]) -> None:
    line = shell_line(words)
    if line is not None:
        assert "\n" not in line
        assert lvm_split(line) == words


@pytest.mark.parametrize("word", [
    "lv_name=\"a b\" || lv_name='c d'",  # both quotes and a blank: no quoting works
    "a\nb", "a\tb", "a\rb", "caf\u00e9", "\x00",
])
def test_what_the_shell_cannot_carry_is_refused(word: str) -> None:
    assert shell_word(word) is None
    assert shell_line(["lvs", "--select", word]) is None


def test_quoting_for_the_shell() -> None:
    assert shell_word("vg0/lv") == "vg0/lv"
    assert shell_word("") == "''"
    assert shell_word("#tag") == "'#tag'"  # a bare # would comment out the rest
    assert shell_word("a b") == "'a b'"
    assert shell_word("it's x") == "\"it's x\""
    assert shell_line(["lvs"] * 61) is None  # LVM's shell takes fewer than 64 words


def test_shell_config_drops_only_what_the_shell_refuses() -> None:
    shell = shell_config(lvmcmd.pinned_config('devices { scan = "/dev" }'))
    assert "report_command_log" not in shell and "command_log_selection" not in shell
    assert shell.startswith('devices { scan = "/dev" }')
    for pin in ('prefix=""', "command_names=0", "compact_output=0",
                'list_item_separator=","', "mark_hidden_devices=0",
                "binary_values_as_numeric=0"):
        assert pin in shell


# ---- real LVM --------------------------------------------------------------------

@pytest.fixture(scope="module")
def shell_box(sandbox: rig.Sandbox) -> rig.Sandbox:
    """The sandbox, which has LVM's lvmdbusd profile in its profile directory, where the
    shell finds it (on a host, lvm2 ships it in /etc/lvm/profile)."""
    rig.need_system(rig.PROFILE.exists(), f"needs {rig.PROFILE} (Debian's lvm2 ships it)")
    assert (sandbox.system_dir / "profile" / f"{PROFILE}.profile").exists()
    return sandbox


@pytest.fixture
def box(shell_box: rig.Sandbox, lvm: rig.Sandbox) -> rig.Sandbox:
    return lvm


def run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


def setup_vg(box: rig.Sandbox) -> None:
    box.lvm("pvcreate", box.loops[0], box.loops[1])
    box.lvm("vgcreate", "--addtag", "site=a", "vgs1", box.loops[0], box.loops[1])
    for name in ("one", "two"):
        box.lvm("lvcreate", "--yes", "--name", name, "--size", "8m", "--addtag",
                f"owner={name}", "vgs1")


def lvm_pair(box: rig.Sandbox, binary: str = rig.LVM) -> tuple[ShellRunner, Lvm, Lvm]:
    shell = ShellRunner(binary, system_dir=str(box.system_dir), size=2)
    exec_ = ExecRunner(rig.LVM, system_dir=str(box.system_dir))
    return (shell, Lvm(shell, timeout=30, extra_config=None),
            Lvm(exec_, timeout=30, extra_config=None))


def lvcreate_args(vg: str, name: str) -> list[str]:
    return ["--yes", "--name", name, "--size", "8192s", "--addtag", "made=shell", vg]


@pytest.mark.system
def test_reads_and_changes_match_the_exec_runner(box: rig.Sandbox) -> None:
    setup_vg(box)

    async def scenario() -> None:
        runner, shell, exec_ = lvm_pair(box)
        try:
            for read in ("pvs", "vgs", "lvs", "fullreport"):
                assert await getattr(shell, read)() == await getattr(exec_, read)(), read
            select = 'lv_tags="owner=one" || lv_name=~"^t[w]"'  # blanks and quotes
            assert [lv.name for lv in await shell.lvs(select=select)] == ["one", "two"]
            assert await shell.lvs(select=select) == await exec_.lvs(select=select)
            both = 'vg_tags="site=a" && vg_name!="x y"'
            assert await shell.vgs(select=both) == await exec_.vgs()
            assert runner.pids, "the reads ran in a shell"
            await shell.change("lvcreate", lvcreate_args("vgs1", "three"))
            assert (await exec_.lvs(["vgs1/three"]))[0].tags == ["made=shell"]
            errors = []
            for lvm in (shell, exec_):  # the same failure, with LVM's log, both ways
                with pytest.raises(LvmFailed) as err:
                    await lvm.change("lvcreate", lvcreate_args("vgs1", "three"))
                with pytest.raises(LvmFailed) as missing:
                    await lvm.lvs(["vgs1/nothere"])
                errors.append([(e.value.message, e.value.data["rc"], e.value.data["log"])
                               for e in (err, missing)])
            assert errors[0] == errors[1]
            assert "already exists" in errors[0][0][0]
            await shell.change("lvremove", ["--yes", "vgs1/three"])
            assert [lv.name for lv in await exec_.lvs()] == ["one", "two"]
            assert len(runner.pids) >= 1
        finally:
            await runner.aclose()
    run(scenario)


# ---- faults: a filter in front of the real LVM shell ------------------------------

FAKE = '''#!/usr/bin/python3
"""A fake lvm. With arguments: logs "exec CMD" and becomes the real LVM. Without (the
shell): the real LVM shell behind a filter that applies the faults listed, one per
line as "COMMAND FAULT", in {faults}: each fires once."""
import os, subprocess, sys, threading, time
REAL, FAULTS, CALLS, PIDS = {real!r}, {faults!r}, {calls!r}, {pids!r}

def note(text):
    with open(CALLS, "a") as fh:
        fh.write(text + "\\n")

if len(sys.argv) > 1:
    note("exec " + sys.argv[1])
    os.execv(REAL, [REAL] + sys.argv[1:])

def take(word):
    try:
        lines = open(FAULTS).read().splitlines()
    except FileNotFoundError:
        return None
    for i, line in enumerate(lines):
        if line.split()[0] == word:
            open(FAULTS, "w").write("".join(l + "\\n" for l in lines[:i] + lines[i + 1:]))
            return line.split()[1]
    return None

report = int(os.environ["LVM_REPORT_FD"])
relay_r, relay_w = os.pipe()
env = dict(os.environ, LVM_REPORT_FD=str(relay_w))
child = subprocess.Popen([REAL], stdin=subprocess.PIPE, pass_fds=(relay_w,), env=env,
                         restore_signals=False)
os.close(relay_w)
mute = threading.Event()

def relay():
    while data := os.read(relay_r, 65536):
        if not mute.is_set():
            try:
                os.write(report, data)
            except OSError:  # the daemon is gone: keep draining, LVM must not block
                mute.set()

threading.Thread(target=relay, daemon=True).start()
note("shell %d" % os.getpid())
for line in sys.stdin.buffer:
    word = line.split(b" ", 1)[0].decode()
    fault = take(word)
    if fault == "junk":
        os.write(report, b"Last login: Fri Dec 28 21:41:33 EST 2018\\n")
    elif fault == "huge":  # 50 MiB where a report belongs
        for _ in range(800):
            os.write(report, b"x" * 65536)
    elif fault == "cut":  # half a report, then the shell is gone
        os.write(report, b'{{\\n  "report": [\\n    {{\\n      "lv": [\\n')
        os._exit(0)
    elif fault == "hang":
        open(PIDS, "w").write("%d %d" % (os.getpid(), child.pid))
        time.sleep(3600)
    elif fault == "exit":
        os._exit(3)
    child.stdin.write(line)
    child.stdin.flush()
child.stdin.close()
child.wait()
'''


class Fake:
    def __init__(self, box: rig.Sandbox, name: str) -> None:
        self.faults = box.dir / f"{name}.faults"
        self.calls_path = box.dir / f"{name}.calls"
        self.pids_path = box.dir / f"{name}.pids"
        for path in (self.faults, self.calls_path, self.pids_path):
            path.unlink(missing_ok=True)
        self.path = box.dir / f"{name}-lvm"
        self.path.write_text(FAKE.format(real=rig.LVM, faults=str(self.faults),
                                         calls=str(self.calls_path),
                                         pids=str(self.pids_path)))
        self.path.chmod(0o755)

    def arm(self, *faults: str) -> None:
        self.faults.write_text("".join(f + "\n" for f in faults))

    def calls(self) -> list[str]:
        return self.calls_path.read_text().splitlines() if self.calls_path.exists() else []


@pytest.mark.system
@pytest.mark.parametrize("fault", ["junk", "huge", "cut"])
def test_bad_output_from_the_shell_replaces_it_and_the_read_is_retried_by_exec(
        box: rig.Sandbox, fault: str) -> None:
    """The seed's junk line, 50 MiB of garbage, half a report: each read still gets
    LVM's clean answer (by exec, once), and a new shell takes over."""
    setup_vg(box)
    fake = Fake(box, fault)

    async def scenario() -> None:
        runner, shell, exec_ = lvm_pair(box, str(fake.path))
        try:
            expected = await exec_.lvs()
            assert await shell.lvs() == expected
            first = runner.pids
            fake.arm(f"lvs {fault}")
            assert await shell.lvs() == expected  # clean, although the shell failed
            assert fake.calls().count("exec lvs") == 1
            assert await shell.lvs() == expected
            assert runner.pids and runner.pids != first  # a new shell took over
            assert await wait_gone(first[0])
        finally:
            await runner.aclose()
    run(scenario)


@pytest.mark.system
def test_a_hung_shell_is_killed_with_its_group_and_the_read_retried(
        box: rig.Sandbox) -> None:
    setup_vg(box)
    fake = Fake(box, "hang")

    async def scenario() -> None:
        runner = ShellRunner(str(fake.path), system_dir=str(box.system_dir), size=1)
        shell = Lvm(runner, timeout=1, extra_config=None)
        try:
            await shell.vgs()
            fake.arm("vgs hang")
            started = time.monotonic()
            assert [vg.name for vg in await shell.vgs()] == ["vgs1"]
            assert time.monotonic() - started < 10
            assert "exec vgs" in fake.calls()
            for pid in (int(p) for p in fake.pids_path.read_text().split()):
                assert await wait_gone(pid), f"process {pid} survived"
            assert [vg.name for vg in await shell.vgs()] == ["vgs1"]
        finally:
            await runner.aclose()
    run(scenario)


@pytest.mark.system
def test_a_cancelled_read_kills_its_shell(box: rig.Sandbox) -> None:
    setup_vg(box)
    fake = Fake(box, "cancel")

    async def scenario() -> None:
        runner, shell, exec_ = lvm_pair(box, str(fake.path))
        try:
            await shell.vgs()
            fake.arm("vgs hang")
            read = asyncio.ensure_future(shell.vgs())
            while not fake.pids_path.exists():
                await asyncio.sleep(0.02)
            read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read
            for pid in (int(p) for p in fake.pids_path.read_text().split()):
                assert await wait_gone(pid), f"process {pid} of a cancelled read survived"
            assert [vg.name for vg in await shell.vgs()] == ["vgs1"]  # the pool serves on
            assert await exec_.vgs() == await shell.vgs()
        finally:
            await runner.aclose()
    run(scenario)


@pytest.mark.system
def test_a_shell_that_exits_is_replaced(box: rig.Sandbox) -> None:
    setup_vg(box)
    fake = Fake(box, "exit")

    async def scenario() -> None:
        runner, shell, exec_ = lvm_pair(box, str(fake.path))
        try:
            await shell.pvs()
            fake.arm("pvs exit")
            assert await shell.pvs() == await exec_.pvs()
            assert fake.calls().count("exec pvs") == 1
            assert fake.calls().count("exec pvs") == 1  # the replacement shell serves
        finally:
            await runner.aclose()
    run(scenario)


@pytest.mark.system
def test_changes_never_run_in_a_shell(box: rig.Sandbox) -> None:
    """Every change gets a fresh LVM by exec (LVM keeps state in a process between
    commands that can change what a later change does); reads stay in the shell."""
    setup_vg(box)
    fake = Fake(box, "changes")

    async def scenario() -> None:
        runner, shell, exec_ = lvm_pair(box, str(fake.path))
        try:
            await shell.lvs()
            pids = runner.pids
            await shell.change("lvcreate", lvcreate_args("vgs1", "fresh"))
            await shell.change("lvchange", ["--addtag", "t", "vgs1/fresh"])
            await shell.change("lvremove", ["--yes", "vgs1/fresh"])
            assert [c for c in fake.calls() if c.startswith("exec ")] == [
                "exec lvcreate", "exec lvchange", "exec lvremove"]
            assert await shell.lvs() == await exec_.lvs()
            assert runner.pids == pids  # the same shell, which ran reads only
            assert fake.calls().count("exec lvs") == 0
        finally:
            await runner.aclose()
    run(scenario)


@pytest.mark.system
def test_what_the_shell_cannot_carry_runs_by_exec(box: rig.Sandbox) -> None:
    setup_vg(box)
    fake = Fake(box, "carry")

    async def scenario() -> None:
        runner, shell, exec_ = lvm_pair(box, str(fake.path))
        try:
            await shell.vgs()
            both = "lv_name=\"one\" || lv_tags='owner=two'"  # both quotes and blanks
            assert [lv.name for lv in await shell.lvs(select=both)] == ["one", "two"]
            assert fake.calls().count("exec lvs") == 1
            try:  # a newline reaches LVM intact, by exec
                await shell.lvs(select="lv_name=one\nlv_name=two")
            except LvmFailed:
                pass
            assert fake.calls().count("exec lvs") == 2
            await shell.lvs(select="lv_name=one")
            assert fake.calls().count("exec lvs") == 2  # this one the shell carried
            assert (await runner.run(["version"], timeout=10)).rc == 0
            assert "exec version" in fake.calls()
            # a change built without a JSON log (lvcreate --snapshot/--type thin) too
            plain = lvmcmd.change_argv("lvcreate", lvcreate_args("vgs1", "plain"),
                                       json_log=False)
            assert (await runner.run(plain, timeout=None)).rc == 0
            assert "exec lvcreate" in fake.calls()
        finally:
            await runner.aclose()
    run(scenario)


@pytest.mark.system
def test_without_the_profile_lvm_runs_by_exec(lvm: rig.Sandbox, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """No profile, no shell: LVM runs by exec, the admin is warned once, and the retries
    back off (30 s, then 60 s, ...) instead of repeating the warning."""
    shutil.copy(lvm.system_dir / "lvm.conf", tmp_path)  # the same LVM, no profile dir

    async def scenario() -> None:
        runner = ShellRunner(rig.LVM, system_dir=str(tmp_path))
        lvm_ = Lvm(runner, timeout=10, extra_config=None)
        try:
            assert await lvm_.pvs() == []
            assert runner.pids == []
            first = runner._paused_until - time.monotonic()
            assert 25 < first <= 30
            runner._paused_until = 0.0  # as if the pause were over: a second try
            assert await lvm_.pvs() == []
            assert 55 < runner._paused_until - time.monotonic() <= 60
        finally:
            await runner.aclose()
    with caplog.at_level("INFO", logger="lvmsuperd.shell"):
        run(scenario)
    tries = [r for r in caplog.records if "cannot start an LVM shell" in r.getMessage()]
    assert [r.levelname for r in tries] == ["WARNING", "INFO"], tries


@pytest.mark.system
def test_the_daemon_with_the_shell_runner(box: rig.Sandbox, users: object) -> None:
    d = rig.Daemon(box, "shellrun", lvm={"runner": "shell"}).start()
    try:
        with Client(d.socket) as c:
            c.pvcreate([box.loops[0]])
            c.vgcreate("vgd", [box.loops[0]])
            lv = c.lvcreate("vgd", "data", size=8 * MiB, tags=["a"])
            assert (lv.full_name, lv.size, lv.tags) == ("vgd/data", 8 * MiB, ["a"])
            assert [x.name for x in c.lvs(vg="vgd")] == ["data"]
            with pytest.raises(LvmSuperError):
                c.lvcreate("vgd", "data", size=8 * MiB)
            c.lvremove("vgd/data")
            assert c.lvs(vg="vgd") == []
        shells = children(d)
        assert shells, "lvmsuperd runs LVM shells"
        for pid in shells:
            check_shell_process(pid, box)
    finally:
        assert d.stop() == 0
    for pid in shells:
        assert alive_soon_gone(pid), f"LVM shell {pid} outlived the daemon"


# ---- helpers ------------------------------------------------------------------

def check_shell_process(pid: int, box: rig.Sandbox) -> None:
    """As exec's children: an environment built from scratch (plus the report pipe and
    the profile), no inherited descriptor, cwd /, its own session, SIGPIPE ignored."""
    proc = Path(f"/proc/{pid}")
    env = dict(item.split("=", 1) for item in
               (proc / "environ").read_bytes().decode().split("\0") if item)
    report = env.pop("LVM_REPORT_FD")
    assert env == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
                   "LVM_SUPPRESS_FD_WARNINGS": "1", "HOME": "/nonexistent",
                   "LVM_SYSTEM_DIR": str(box.system_dir), "LVM_COMMAND_PROFILE": PROFILE}
    fds = {int(fd.name): os.readlink(fd) for fd in (proc / "fd").iterdir()}
    assert set(fds) == {0, 1, 2, int(report)}, fds
    assert all(target.startswith("pipe:") for target in fds.values()), fds
    assert os.readlink(proc / "cwd") == "/"
    assert int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) == pid
    ignored = next(int(line.split()[1], 16) for line in
                   (proc / "status").read_text().splitlines() if line.startswith("SigIgn"))
    assert ignored & (1 << (signal.SIGPIPE - 1))


def children(d: rig.Daemon) -> list[int]:
    assert d.proc is not None
    task = Path(f"/proc/{d.proc.pid}/task")
    return [int(pid) for t in task.iterdir()
            for pid in (t / "children").read_text().split()]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def wait_gone(pid: int, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def alive_soon_gone(pid: int) -> bool:
    return asyncio.run(wait_gone(pid))

