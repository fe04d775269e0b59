"""Faults real LVM will not produce on demand, injected with a fake ``lvm`` (config
``[lvm] binary``): cut, foreign, empty and runaway output, a crashing LVM, a vanished or
non-executable binary, a slow change, and the daemon itself killed mid-change.

Each fault must reach the caller as a typed error (never a hang, a traceback or a
silent success), leave a clear line in the daemon's log where an admin needs one, keep
the daemon's memory bounded, and leave the daemon serving real LVM afterwards.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rig
from lvmsuper.client import (Client, ConnectionFailed, JobRef, LvmFailed, LvmOutputInvalid,
                             LvmSuperError)

pytestmark = pytest.mark.system
MiB = 2**20
HUGE = 50 * MiB

# The fake misbehaves for `pvs` only, in the mode named by a file the test writes; every
# other command (and pvs in mode "") is the real LVM.
_MODES = """
mode=$(cat {mode} 2>/dev/null)
if [ "$1" = pvs ]; then
  case "$mode" in
    truncated) out=$({lvm} "$@"); n=$(printf '%s' "$out" | wc -c)
               printf '%s' "$out" | head -c $((n / 2)); exit 0;;
    notjson)   echo 'pvs: this is not JSON at all'; exit 0;;
    array)     echo '['; echo '  {{"report": []}}'; echo ']'; exit 0;;
    badshape)  echo '{{'; echo '  "report": "all fine"'; echo '}}'; exit 0;;
    badfield)  {lvm} "$@" | sed 's/"pv_size":"[0-9]*"/"pv_size":"lots"/'; exit 0;;
    empty)     exit 0;;
    hugejunk)  head -c {huge} /dev/zero | tr '\\0' x; exit 0;;
    hugejson)  printf '{{\\n  "report": [\\n    {{\\n      "pv": [\\n'
               yes '        {{"pv_name":"/dev/loop0", "pv_uuid":"0123456789abcdef"}},' \\
                 | head -c {huge}; exit 0;;
    killed)    kill -KILL $$;;
    introspect) d={introspect}; tr '\\0' '\\n' < /proc/$$/environ > $d.env
               # listed by a child: dash would apply a redirection in the shell itself
               sh -c "ls -l /proc/$$/fd > $d.fd"; readlink /proc/$$/cwd > $d.cwd
               cat /proc/$$/stat > $d.stat; grep SigIgn /proc/$$/status > $d.sig;;
  esac
fi
if [ "$1" = lvcreate ] && [ "$mode" = slowchange ]; then sleep 2; fi
"""


class Faulty:
    def __init__(self, sandbox: rig.Sandbox) -> None:
        self.mode_file = sandbox.dir / "fault.mode"
        self.mode_file.write_text("")
        self.introspect = sandbox.dir / "child"
        fake = rig.fake_lvm(sandbox, "fault", before=_MODES.format(
            mode=self.mode_file, lvm=rig.LVM, huge=HUGE, introspect=self.introspect))
        self.fake = fake
        # lvm.timeout 1 s: a change that runs longer must still never be killed. The
        # read cache is off: these faults change what LVM answers while the devices do
        # not change, and every read here must reach the (faulty) LVM
        self.daemon = rig.Daemon(sandbox, "fault", lvm={"binary": fake, "timeout": 1,
                                                        "cache": False},
                                 jobs={"keep": 60}).start()

    def mode(self, name: str) -> None:
        self.mode_file.write_text(name)

    def log(self) -> str:
        return self.daemon.log()

    def serving(self) -> None:
        """The daemon still answers, and real LVM still works through it."""
        self.mode("")
        with Client(self.daemon.socket) as c:
            assert c.ping() == {}
            assert {pv.name for pv in c.pvs()} == {
                r["pv_name"] for r in self.daemon.sandbox.report("pv", "pv_name")}


@pytest.fixture(scope="module")
def faulty(sandbox: rig.Sandbox, users: object) -> Iterator[Faulty]:
    f = Faulty(sandbox)
    try:
        yield f
    finally:
        assert f.daemon.stop() == 0
        text = f.log()
        assert "Traceback" not in text and "Internal" not in text, text[-3000:]


@pytest.fixture
def pv(lvm: rig.Sandbox) -> rig.Sandbox:
    lvm.lvm("pvcreate", lvm.loops[0])
    return lvm


def pvs_error(faulty: Faulty, mode: str) -> LvmSuperError:
    faulty.mode(mode)
    with Client(faulty.daemon.socket, timeout=60) as c:
        with pytest.raises(LvmSuperError) as err:
            c.pvs()
        assert c.ping() == {}  # the same connection keeps working
    return err.value


@pytest.mark.parametrize("mode, reason, line", [
    ("notjson", "unexpected line before the JSON report", "pvs: this is not JSON at all"),
    ("array", "unexpected line before the JSON report", "["),
    ("badshape", '"report" is not a list of objects', '"all fine"'),
    ("empty", "empty output", ""),
])
def test_foreign_output_is_typed_and_quoted(faulty: Faulty, pv: rig.Sandbox, mode: str,
                                            reason: str, line: str) -> None:
    error = pvs_error(faulty, mode)
    assert isinstance(error, LvmOutputInvalid), error
    assert reason in error.message
    assert error.data["line"] == line and error.data["rc"] == 0
    assert error.data["argv"][1] == "pvs"
    faulty.serving()


def test_truncated_json_is_typed(faulty: Faulty, pv: rig.Sandbox) -> None:
    """Real LVM output cut in half: the parser names where the document broke."""
    error = pvs_error(faulty, "truncated")
    assert isinstance(error, LvmOutputInvalid), error
    assert "LVM output could not be parsed" in error.message
    assert error.data["stdout"].startswith("{") and error.data["rc"] == 0
    assert '"pv_name":' in error.data["stdout"]  # real LVM output...
    assert not error.data["stdout"].rstrip().endswith("}")  # ...cut off mid-document
    faulty.serving()


def test_a_field_of_the_wrong_type_is_typed(faulty: Faulty, pv: rig.Sandbox) -> None:
    error = pvs_error(faulty, "badfield")
    assert isinstance(error, LvmOutputInvalid), error
    assert "pv_size" in error.message and '"pv_size": "lots"' in error.data["line"]
    # the run it came from, as for a document that does not parse
    assert error.data["argv"][1] == "pvs" and error.data["rc"] == 0
    assert '"pv_size":"lots"' in error.data["stdout"].replace(" ", "")
    faulty.serving()


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid``, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


@pytest.mark.parametrize("mode", ["hugejunk", "hugejson"])
def test_runaway_output_is_typed_and_memory_stays_bounded(faulty: Faulty, pv: rig.Sandbox,
                                                          mode: str) -> None:
    """50 MiB on stdout: a typed error, and the daemon's peak memory grows by about the
    runner's cap (32 MiB), not by the output's size; afterwards it is given back."""
    assert faulty.daemon.proc is not None
    pid = faulty.daemon.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    before = memory(pid)
    started = time.monotonic()
    error = pvs_error(faulty, mode)
    elapsed = time.monotonic() - started
    after = memory(pid)
    assert isinstance(error, LvmOutputInvalid), error
    assert "exceeded the daemon's limit" in error.message
    assert error.data["argv"][1] == "pvs"
    peak_growth = after["VmHWM"] - before["VmHWM"]
    assert peak_growth < 40 * MiB, (mode, before, after)  # < the 50 MiB written
    assert after["VmRSS"] - before["VmRSS"] < 8 * MiB, (mode, before, after)
    assert "wrote more than 33554432 bytes to stdout" in faulty.log()
    assert elapsed < 30
    faulty.serving()


def test_lvm_killed_by_a_signal(faulty: Faulty, pv: rig.Sandbox) -> None:
    error = pvs_error(faulty, "killed")
    assert isinstance(error, LvmFailed), error
    assert error.message == "LVM was killed by signal 9"
    assert error.data["rc"] == -9 and error.data["argv"][1] == "pvs"
    assert "LVM was killed by signal 9 (SIGKILL): " in faulty.log()
    faulty.serving()


def test_a_slow_change_is_never_killed_and_ends_in_its_job(faulty: Faulty,
                                                           lvm: rig.Sandbox) -> None:
    """lvcreate runs 2 s under a 1 s read timeout: with wait=0.2 the caller gets a job at
    once, without wait it blocks; both changes complete and are reported correctly."""
    lvm.lvm("pvcreate", lvm.loops[0], lvm.loops[1])
    lvm.lvm("vgcreate", "vgslow", lvm.loops[0])
    lvm.lvm("vgcreate", "vgslow2", lvm.loops[1])
    faulty.mode("slowchange")
    with Client(faulty.daemon.socket) as c, Client(faulty.daemon.socket) as blocking:
        started = time.monotonic()
        ref = c.lvcreate("vgslow", "jobbed", size=4 * MiB, wait=0.2)
        assert isinstance(ref, JobRef) and time.monotonic() - started < 1.5
        assert c.call("job_status", job=ref.id).state == "running"
        started = time.monotonic()
        lv = blocking.lvcreate("vgslow2", "waited", size=4 * MiB)
        assert time.monotonic() - started > 1.5  # longer than the read timeout
        assert not isinstance(lv, JobRef)
        assert lv.full_name == "vgslow2/waited" and lv.size == 4 * MiB
        for _ in range(100):
            job = c.call("job_status", job=ref.id)
            if job.state != "running":
                break
            time.sleep(0.05)
        assert job.state == "succeeded", job
        assert job.result["full_name"] == "vgslow/jobbed" and job.result["size"] == 4 * MiB
    ends = [c for c in rig.calls(lvm, "fault") if c[:2] == ("end", "lvcreate")]
    assert len(ends) == 2  # neither was killed half-way
    assert [r["lv_full_name"] for r in lvm.report("lv", "lv_full_name")] == [
        "vgslow/jobbed", "vgslow2/waited"]
    assert lvm.lvm("vgck", "vgslow", "vgslow2").returncode == 0
    faulty.serving()


def test_the_lvm_child_gets_a_clean_environment(faulty: Faulty, pv: rig.Sandbox) -> None:
    """What LVM runs with: an environment built from scratch, stdin /dev/null, no
    inherited descriptor, cwd /, its own session, SIGPIPE ignored."""
    faulty.mode("introspect")
    with Client(faulty.daemon.socket) as c:
        assert [p.name for p in c.pvs()] == [pv.loops[0]]  # and the real pvs still ran
    base = faulty.introspect
    env = dict(line.split("=", 1) for line in
               Path(f"{base}.env").read_text().splitlines() if line)
    assert env == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
                   "LVM_SUPPRESS_FD_WARNINGS": "1", "HOME": "/nonexistent",
                   "LVM_SYSTEM_DIR": str(pv.system_dir)}
    fds = {}
    for line in Path(f"{base}.fd").read_text().splitlines():
        if " -> " in line:
            fds[int(line.split(" -> ")[0].split()[-1])] = line.split(" -> ")[1]
    assert fds[0] == "/dev/null"
    assert fds[1].startswith("pipe:") and fds[2].startswith("pipe:")
    extra = {fd: target for fd, target in fds.items() if fd > 2}
    assert set(extra.values()) <= {faulty.fake}, extra  # only the script the shell reads
    assert Path(f"{base}.cwd").read_text().strip() == "/"
    stat = Path(f"{base}.stat").read_text().rsplit(")", 1)[1].split()
    pid = int(Path(f"{base}.stat").read_text().split()[0])
    assert int(stat[3]) == pid  # session id: the child leads its own session
    ignored = int(Path(f"{base}.sig").read_text().split()[1], 16)
    assert ignored & (1 << (signal.SIGPIPE - 1))  # survives the loss of its reader
    faulty.serving()


def test_missing_or_non_executable_binary(sandbox: rig.Sandbox, users: object,
                                          lvm: rig.Sandbox) -> None:
    """The configured lvm vanishes, then loses its x bit, after start-up: typed errors
    and a clear log line each time; the daemon recovers once the binary is back."""
    binary = sandbox.dir / "vanishing-lvm"
    binary.write_text(f'#!/bin/sh\nexec {rig.LVM} "$@"\n')
    binary.chmod(0o755)
    # cache off: an unchanged state would be answered from memory, without the binary
    d = rig.Daemon(sandbox, "vanish", lvm={"binary": str(binary), "cache": False}).start()
    try:
        with Client(d.socket) as c:
            assert c.pvs() == []
            saved = binary.read_bytes()
            binary.unlink()
            with pytest.raises(LvmFailed) as err:
                c.pvs()
            assert err.value.message == (f"cannot execute LVM ({binary}): "
                                         "No such file or directory")
            assert err.value.data["argv"][0] == str(binary)
            assert f"cannot execute {binary}: No such file or directory" in d.log()
            assert c.ping() == {}

            binary.write_bytes(saved)
            binary.chmod(0o644)
            with pytest.raises(LvmFailed) as err:
                c.vgs()
            assert err.value.message == f"cannot execute LVM ({binary}): Permission denied"
            assert f"cannot execute {binary}: Permission denied" in d.log()

            binary.chmod(0o755)
            assert c.pvs() == [] and c.vgs() == []  # no restart needed
    finally:
        d.stop()
    assert "Traceback" not in d.log()


def test_daemon_killed_mid_change_then_restarted(sandbox: rig.Sandbox, users: object,
                                                 lvm: rig.Sandbox) -> None:
    """SIGKILL of the daemon while lvcreate runs: the LVM child lives in its own session
    and completes on its own, so LVM stays consistent (the LV is whole, vgck passes);
    the waiting client is told the outcome is unknown, never a silent success; the
    daemon restarts on the same (now stale) socket path and the same Client object's
    next read reconnects."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgcrash", lvm.loops[0])
    fake = rig.fake_lvm(sandbox, "crash", slow={"lvcreate": 1.5})
    d = rig.Daemon(sandbox, "crash", lvm={"binary": fake}).start()
    client = Client(d.socket)
    assert client.vgs()[0].name == "vgcrash"
    outcome: dict[str, Any] = {}

    def change() -> None:
        try:
            outcome["result"] = client.lvcreate("vgcrash", "midair", size=8 * MiB)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=change)
    thread.start()
    try:
        for _ in range(200):
            if ("start", "lvcreate", "vgcrash") in rig.calls(sandbox, "crash"):
                break
            time.sleep(0.01)
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        assert d.proc.wait(timeout=10) == -signal.SIGKILL
        thread.join(timeout=10)
        assert not thread.is_alive()
        error = outcome.get("error")
        assert "result" not in outcome, "a change cut off by a crash was reported as done"
        assert isinstance(error, ConnectionFailed), outcome
        assert "may or may not have happened" in error.message

        # The LVM child outlives the daemon and finishes the change on its own.
        for _ in range(500):
            if ("end", "lvcreate", "vgcrash") in rig.calls(sandbox, "crash"):
                break
            time.sleep(0.01)
        assert ("end", "lvcreate", "vgcrash") in rig.calls(sandbox, "crash")
        (row,) = lvm.report("lv", "lv_full_name,lv_size", "vgcrash")
        assert row == {"lv_full_name": "vgcrash/midair", "lv_size": str(8 * MiB)}
        assert lvm.lvm("vgck", "vgcrash", check=False).returncode == 0

        assert os.path.exists(d.socket)  # the dead daemon's socket file is left behind
        d.start()  # replaces the stale socket
        lvs = client.lvs(vg="vgcrash")  # the same Client object reconnects
        assert [(lv.full_name, lv.size) for lv in lvs] == [("vgcrash/midair", 8 * MiB)]
        assert client.ping() == {}
    finally:
        client.close()
        d.stop()
    assert "Traceback" not in d.log()


def test_lvm_binary_not_found_at_start_up_is_clear(sandbox: rig.Sandbox, users: object) -> None:
    """Configured to a path that does not exist: start-up still serves (reads then fail
    typed) but the log says at once that LVM cannot run."""
    missing = sandbox.dir / "no-such-lvm"
    d = rig.Daemon(sandbox, "nolvm", lvm={"binary": str(missing)}).start()
    try:
        assert f"cannot execute {missing}: No such file or directory" in d.log()
        with Client(d.socket) as c:
            with pytest.raises(LvmFailed, match="cannot execute LVM"):
                c.vgs()
            assert c.ping() == {}
    finally:
        d.stop()
