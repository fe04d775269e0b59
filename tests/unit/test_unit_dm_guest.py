"""tools/dm-guest without a guest: a fake `vng` (--vng) plays the guest.

The fake prints a console (kernel-style lines) on stderr like `vng --verbose`, the
prelude's `MARKER started` line on stdout, runs CMD on the host, prints `MARKER exit N`;
per boot it can instead never start, crash before CMD, hang in CMD or die in CMD. Each
boot leaves a `boot-N` file (its pid and argv) in the state directory, so the tests can
count boots and check that no fake guest outlived dm-guest.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "dm-guest"

FAKE_VNG = textwrap.dedent('''\
    import json, os, shlex, subprocess, sys, time
    from pathlib import Path

    argv = sys.argv[1:]
    inner = shlex.split(argv[argv.index("--") + 1])
    marker = inner[inner.index("--in-guest") + 1]
    cmd = inner[inner.index("--", inner.index("--in-guest")) + 1:]
    state = Path(os.environ["FAKE_VNG_STATE"])
    boot = len(list(state.glob("boot-*"))) + 1
    (state / f"boot-{boot}").write_text(json.dumps({"pid": os.getpid(), "argv": argv}))
    modes = os.environ["FAKE_VNG_MODES"].split(",")
    mode = modes[min(boot, len(modes)) - 1]

    def console(text):
        print(text, file=sys.stderr, flush=True)

    console("SeaBIOS (version fake)")
    for i in range(30):
        console(f"[   {i:2d}.000000] fake kernel line {i} (boot {boot})")
    if mode == "noboot":
        time.sleep(3600)
    if mode == "crash":
        console("[   31.000000] Kernel panic - not syncing: fake, before the command")
        sys.exit(1)
    print(f"{marker} started", flush=True)
    if mode == "hang":
        time.sleep(3600)
    rc = subprocess.run(cmd, stderr=subprocess.STDOUT).returncode
    if mode == "die":
        console("[   40.000000] Kernel panic - not syncing: fake, during the command")
        sys.exit(1)
    print(f"{marker} exit {rc}", flush=True)
    console("[   41.000000] reboot: Power down")
    ''')

CMD = ["sh", "-c", "echo out-line; echo err-line >&2; exit 3"]


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, Path]:
    vng = tmp_path / "bin" / "vng"
    vng.parent.mkdir()
    vng.write_text(f"#!{sys.executable}\n{FAKE_VNG}")
    vng.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    return {"vng": vng, "state": state, "log": tmp_path / "console.log", "dir": tmp_path}


def dm_guest(fake: dict[str, Path], modes: str, *options: str,
             cmd: list[str] = CMD) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FAKE_VNG_STATE=str(fake["state"]), FAKE_VNG_MODES=modes)
    argv = [sys.executable, str(SCRIPT), "--vng", str(fake["vng"]),
            "--kernel", "/nonexistent/vmlinuz", "--console-log", str(fake["log"]),
            "--rwdir", str(fake["dir"]), *options, "--", *cmd]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def boots(fake: dict[str, Path]) -> list[dict[str, Any]]:
    found = sorted(fake["state"].glob("boot-*"), key=lambda p: int(p.name.split("-")[1]))
    return [json.loads(p.read_text()) for p in found]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_normal_run_passes_the_output_and_the_exit_status(fake: dict[str, Path]) -> None:
    proc = dm_guest(fake, "ok")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "out-line\nerr-line\n"  # CMD's output only: no marker, no kernel
    assert "guest up after" in proc.stderr and "command exited 3" in proc.stderr
    assert "fake kernel" not in proc.stderr  # the console is shown only on failure
    log = fake["log"].read_text()
    assert "[   29.000000] fake kernel line 29 (boot 1)" in log and "Power down" in log
    assert "out-line" not in log.splitlines()  # CMD's output is not console
    assert log.startswith("dm-guest: attempt 1 of 2: ")
    [boot] = boots(fake)
    assert "--verbose" in boot["argv"] and f"--rwdir={fake['dir']}" in boot["argv"]


def test_guest_that_never_boots_is_retried_once_then_125(fake: dict[str, Path]) -> None:
    started = time.monotonic()
    proc = dm_guest(fake, "noboot", "--boot-timeout", "1")
    assert proc.returncode == 125, proc.stderr
    assert time.monotonic() - started < 30
    assert len(boots(fake)) == 2 and all(gone(b["pid"]) for b in boots(fake))
    err = proc.stderr
    assert "did not start within 1 s (attempt 1 of 2)\n" in err
    assert "the command has not run: booting the guest once more" in err
    assert "did not start within 1 s (attempt 2 of 2)\n" in err
    assert err.rstrip().endswith("dm-guest: no guest after 2 attempts; giving up")
    assert f"last 20 console lines (whole console in {fake['log']})" in err
    assert "fake kernel line 29 (boot 1)" in err and "fake kernel line 29 (boot 2)" in err
    assert "fake kernel line 9 (boot 2)" not in err  # only the tail
    assert proc.stdout == ""
    assert fake["log"].read_text().count("dm-guest: attempt ") == 4  # start + end, twice


def test_guest_that_crashes_before_the_command_is_retried_once(fake: dict[str, Path]) -> None:
    proc = dm_guest(fake, "crash")
    assert proc.returncode == 125
    assert len(boots(fake)) == 2
    assert "ended before the command started (vng exit 1) (attempt 2 of 2)" in proc.stderr
    assert "Kernel panic - not syncing: fake, before the command" in proc.stderr


def test_a_retried_boot_runs_the_command_once(fake: dict[str, Path]) -> None:
    proc = dm_guest(fake, "noboot,ok", "--boot-timeout", "1")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "out-line\nerr-line\n"
    assert len(boots(fake)) == 2 and gone(boots(fake)[0]["pid"])
    assert "booting the guest once more" in proc.stderr


def test_hung_command_times_out_with_124_and_no_retry(fake: dict[str, Path]) -> None:
    proc = dm_guest(fake, "hang", "--timeout", "2")
    assert proc.returncode == 124, proc.stderr
    assert "timed out after 2 s; guest killed" in proc.stderr
    assert "fake kernel line 29 (boot 1)" in proc.stderr  # the console tail
    assert len(boots(fake)) == 1 and gone(boots(fake)[0]["pid"])


def test_guest_dying_during_the_command_is_125_and_not_retried(fake: dict[str, Path]) -> None:
    proc = dm_guest(fake, "die")
    assert proc.returncode == 125, proc.stderr
    assert proc.stdout == "out-line\nerr-line\n"  # the command ran, once
    assert "the guest ended before the command finished (vng exit 1)" in proc.stderr
    assert "Kernel panic - not syncing: fake, during the command" in proc.stderr
    assert len(boots(fake)) == 1


def test_sigterm_ends_the_guest_too(fake: dict[str, Path]) -> None:
    env = dict(os.environ, FAKE_VNG_STATE=str(fake["state"]), FAKE_VNG_MODES="hang")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--vng", str(fake["vng"]),
                             "--kernel", "/nonexistent/vmlinuz", "--", "true"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not boots(fake) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.terminate()
        assert proc.wait(timeout=30) == 128 + 15
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert len(boots(fake)) == 1 and gone(boots(fake)[0]["pid"])


def test_missing_vng_is_125(fake: dict[str, Path]) -> None:
    fake["vng"].unlink()
    proc = dm_guest(fake, "ok")
    assert proc.returncode == 125 and "is missing (run `make install-dm`)" in proc.stderr


# ---- KVM or TCG -----------------------------------------------------------------------

def load_dm_guest() -> ModuleType:
    """A fresh copy of the script as a module (its dataclasses need it in sys.modules
    while it loads)."""
    loader = importlib.machinery.SourceFileLoader("dm_guest", str(SCRIPT))
    spec = importlib.util.spec_from_loader("dm_guest", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dm_guest"] = module
    try:
        loader.exec_module(module)
    finally:
        del sys.modules["dm_guest"]
    return module


CPUINFO = "processor\t: 0\nmodel name\t: Fake CPU vmxnet\nflags\t\t: fpu vme {flag} sse2\n\n"


@pytest.mark.parametrize("flag, device, usable", [
    ("vmx", "rw", True),
    ("svm", "rw", True),
    ("vmx", "missing", False),   # a CPU that could, but no usable /dev/kvm
    ("lm", "rw", False),         # /dev/kvm without vmx/svm: the nested-PVM trap
    ("vmxfoo", "rw", False),     # whole words only
])
def test_kvm_only_with_vmx_or_svm_and_a_usable_device(tmp_path: Path, flag: str,
                                                     device: str, usable: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(flag=flag))
    kvm = tmp_path / "kvm"
    if device == "rw":
        kvm.write_text("")
    assert load_dm_guest().kvm_usable(str(cpuinfo), str(kvm)) is usable


def test_no_cpuinfo_means_tcg(tmp_path: Path) -> None:
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    assert load_dm_guest().kvm_usable(str(tmp_path / "missing"), str(kvm)) is False


@pytest.mark.parametrize("kvm", [True, False])
def test_vng_gets_disable_kvm_unless_kvm_is_usable(kvm: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_dm_guest()
    monkeypatch.setattr(module, "kvm_usable", lambda: kvm)
    argv = module.vng_command("/x/vng", "/boot/vmlinuz-test", ["true"], [], "M")
    assert ("--disable-kvm" in argv) is not kvm
    assert argv[:3] == ["/x/vng", "--run", "/boot/vmlinuz-test"]
    assert "--verbose" in argv and "--force-9p" in argv
