"""Fixtures for the device-mapper tier: real LVM on loop devices, as root.

These tests run only inside the throwaway QEMU guest started by `make test-dm`
(tools/dm-guest), which boots a kernel with device-mapper and sets
LVMSUPER_DM_GUEST=1. Anywhere else every test here fails (never skips), so a run
that lacks the tier cannot pass for one that had it.

`lvm_sandbox` gives a test its own loop devices and an LVM_SYSTEM_DIR whose
lvm.conf admits exactly those devices; `make_lvm_sandbox(count, size_mib)` builds
other shapes. Everything a sandbox created is removed when the test ends.

Results: the guest's /tmp is a throwaway overlay, so the logs of the lvmsuperd
instances the tests start there (rig.Daemon, `*.log` in the session sandbox) are copied
to `$LVMSUPER_DM_RESULTS/daemon-logs/` (a directory shared with the host; `make
test-dm` sets it to build/dm-results) after every test and, complete, at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import rig

GUEST_ENV = "LVMSUPER_DM_GUEST"
RESULTS_ENV = "LVMSUPER_DM_RESULTS"
MODULES = ("loop", "dm_mod", "dm_thin_pool", "dm_snapshot", "dm_mirror")


def _device_mapper_problem() -> str | None:
    """Why this process cannot run the tier, or None when it can."""
    if os.environ.get(GUEST_ENV) != "1":
        return f"{GUEST_ENV}=1 is not set: not inside the dm-guest"
    if os.geteuid() != 0:
        return "not running as root"
    for module in MODULES:
        subprocess.run(["modprobe", module], capture_output=True)
    # A /dev/mapper/control node alone proves nothing: the driver must be listed.
    misc = Path("/proc/misc").read_text() if Path("/proc/misc").exists() else ""
    if not any(line.split()[1:] == ["device-mapper"] for line in misc.splitlines()):
        return "the kernel has no device-mapper (not in /proc/misc)"
    if not Path("/dev/loop-control").exists():
        return "/dev/loop-control is missing (loop module not loaded)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/dm `system`, so `-m 'not system'` leaves them out."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session", autouse=True)
def device_mapper() -> None:
    """Fails every test in tests/dm, before any other fixture, outside the guest."""
    problem = _device_mapper_problem()
    if problem:
        pytest.fail(
            f"tests/dm need a kernel with device-mapper, as root, in the guest: {problem}. "
            "Run them with `make test-dm`.",
            pytrace=False,
        )


# ---- daemon logs back to the host ----------------------------------------------------

_SANDBOX_DIRS: list[Path] = []


def save_daemon_logs() -> None:
    """Copy the daemons' logs out of the throwaway overlay into the results dir."""
    results = os.environ.get(RESULTS_ENV)
    if not results:
        return
    target = Path(results) / "daemon-logs"
    for directory in _SANDBOX_DIRS:
        for log in sorted(directory.glob("*.log")):
            target.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(log, target / log.name)
            except OSError as exc:  # results are a help, not the test
                print(f"cannot copy {log} to {target}: {exc}")


@pytest.fixture(scope="session")
def sandbox(sandbox: rig.Sandbox) -> Iterator[rig.Sandbox]:
    """tests/conftest.py's session sandbox; torn down after every daemon on it has
    stopped, so the logs copied then are complete."""
    _SANDBOX_DIRS.append(sandbox.dir)
    try:
        yield sandbox
    finally:
        save_daemon_logs()
        _SANDBOX_DIRS.remove(sandbox.dir)


@pytest.fixture(scope="session")
def daemon(sandbox: rig.Sandbox, users: dict[str, list[str]]) -> Iterator[rig.Daemon]:
    """tests/conftest.py's daemon with a start-up limit for TCG: lvmsuperd's Python
    start-up alone takes seconds there, and more on a loaded host (10 s was missed)."""
    d = rig.Daemon(sandbox).start(timeout=120)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(autouse=True)
def _daemon_logs_after_each_test() -> Iterator[None]:
    """A snapshot after every test: a guest killed on a timeout still leaves logs."""
    yield
    save_daemon_logs()


def run(argv: Sequence[str], env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure (with check) fail the test with its output."""
    proc = subprocess.run(list(argv), env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}",
            pytrace=False,
        )
    return proc


def lvm_conf(devices: Sequence[str], udev: bool) -> str:
    admit = ", ".join(f'"a|^{d}$|"' for d in devices)
    sync = 1 if udev else 0
    return f"""\
devices {{
    filter = [ {admit}, "r|.*|" ]
    global_filter = [ {admit}, "r|.*|" ]
    hints = "none"
    use_devicesfile = 0
}}
global {{
    use_aio = 0
    use_lvmpolld = 0
}}
activation {{
    udev_sync = {sync}
    udev_rules = {sync}
}}
backup {{
    backup = 0
    archive = 0
}}
"""


@dataclass
class LvmSandbox:
    """Loop devices plus an lvm.conf that admits exactly them."""

    loops: list[str]          # e.g. ["/dev/loop0", "/dev/loop1"]
    system_dir: Path          # LVM_SYSTEM_DIR; lvm.conf inside
    vg: str                   # a free, unique VG name for the test to use
    env: dict[str, str] = field(default_factory=dict)  # os.environ + LVM_SYSTEM_DIR

    def lvm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `lvm ARGS` against this sandbox only."""
        return run(["lvm", *args], env=self.env, check=check)

    def report(self, *args: str) -> list[dict[str, str]]:
        """Rows of a JSON report, e.g. report("lvs", "-o", "lv_name,lv_active", vg)."""
        out = self.lvm(*args, "--reportformat", "json").stdout
        rows: list[dict[str, str]] = []
        for section in json.loads(out)["report"]:
            for key, value in section.items():
                if isinstance(value, list) and key not in ("log",):
                    rows.extend(value)
        return rows


def _teardown(sandbox: LvmSandbox, files: list[Path]) -> list[str]:
    errors: list[str] = []
    if sandbox.loops:
        pvs = sandbox.lvm("pvs", "--noheadings", "-o", "vg_name", *sandbox.loops, check=False)
        for vg in sorted({v.strip() for v in pvs.stdout.split() if v.strip()}):
            p = sandbox.lvm("vgremove", "-f", "-y", vg, check=False)
            if p.returncode:
                errors.append(f"vgremove {vg}: {p.stderr.strip()}")
        for loop in sandbox.loops:
            if sandbox.lvm("pvs", loop, check=False).returncode == 0:
                p = sandbox.lvm("pvremove", "-ff", "-y", loop, check=False)
                if p.returncode:
                    errors.append(f"pvremove {loop}: {p.stderr.strip()}")
    for loop in sandbox.loops:  # only the loop devices this sandbox attached
        p = run(["losetup", "-d", loop], check=False)
        if p.returncode:
            errors.append(f"losetup -d {loop}: {p.stderr.strip()}")
    for f in files:
        f.unlink(missing_ok=True)
    return errors


@pytest.fixture
def make_lvm_sandbox(
    device_mapper: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., LvmSandbox]]:
    """Factory: make_lvm_sandbox(count=2, size_mib=64) -> LvmSandbox (sparse files)."""
    made: list[tuple[LvmSandbox, list[Path]]] = []

    def make(count: int = 2, size_mib: int = 64) -> LvmSandbox:
        base = tmp_path_factory.mktemp("lvm")
        sandbox = LvmSandbox(loops=[], system_dir=base / "etc-lvm",
                             vg=f"dmt{secrets.token_hex(3)}")
        files: list[Path] = []
        made.append((sandbox, files))
        for i in range(count):
            backing = base / f"disk{i}.img"
            with backing.open("wb") as fh:
                fh.truncate(size_mib * 1024 * 1024)
            files.append(backing)
            sandbox.loops.append(run(["losetup", "-f", "--show", str(backing)]).stdout.strip())
        sandbox.system_dir.mkdir()
        (sandbox.system_dir / "lvm.conf").write_text(lvm_conf(sandbox.loops, rig.udev_running()))
        sandbox.env = dict(os.environ, LVM_SYSTEM_DIR=str(sandbox.system_dir))
        return sandbox

    yield make
    errors: list[str] = []
    for sandbox, files in reversed(made):
        errors += _teardown(sandbox, files)
    if errors:
        pytest.fail("lvm sandbox cleanup failed: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def lvm_sandbox(make_lvm_sandbox: Callable[..., LvmSandbox]) -> LvmSandbox:
    """Two 64 MiB loop devices and an lvm.conf that admits exactly them."""
    return make_lvm_sandbox()
