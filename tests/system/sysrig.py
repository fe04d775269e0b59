"""Helpers for the full-system tier (tests/system): commands as root or as a test user,
systemd unit state, loop devices, LVM under the tests' own LVM_SYSTEM_DIR.

Runs only inside the guest of `make test-system` (tools/system-guest), with Debian's
python3 and lvmsuper as its Debian package installed it: nothing here imports the
repository's code.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

LVM_DIR = "/etc/lvm/lvmsuper-test"   # the LVM_SYSTEM_DIR of the daemon and of the tests
CONFIG = Path("/etc/lvmsuper/lvmsuper.toml")
BASE_CONFIG = f"""[lvm]
system_dir = "{LVM_DIR}"

[policy]
devices = ["/dev/loop*"]
"""
# Only the loops the tests make (the guest has no other block device), no lvmpolld
# (pvmove polls by itself), no dmeventd monitoring.
LVM_CONF = """devices {
    global_filter = [ "a|^/dev/loop[0-9]+$|", "r|.*|" ]
    use_devicesfile = 0
}
global {
    use_lvmpolld = 0
    event_activation = 0
}
activation {
    monitoring = 0
}
"""
# The guest's own LVM (udev's pvscan for every new PV) sees nothing, activates nothing.
GUEST_LVM_CONF = """devices {
    global_filter = [ "r|.*|" ]
}
global {
    event_activation = 0
}
"""
MEMBER, OUTSIDER = "alice", "bob"  # in group lvmsuper; in no group of lvmsuper's
RULES = Path("/etc/polkit-1/rules.d/50-lvmsuper.rules")
EXAMPLE_RULES = Path("/usr/share/doc/lvmsuper/examples/50-lvmsuper.rules")
BUS = ["org.lvmsuper.Supervisor1", "/org/lvmsuper/Supervisor1", "org.lvmsuper.Supervisor1"]


def run(*argv: str, check: bool = True, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})
    if check and proc.returncode != 0:
        raise AssertionError(f"{list(argv)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def as_user(user: str, *argv: str, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """argv as ``user``, without a login session (runuser: no pam_systemd)."""
    return run("runuser", "-u", user, "--", *argv, check=check, timeout=timeout)


def python_as(user: str, code: str, *args: str, timeout: float = 300) -> Any:
    """Debian's python3 running ``code`` as ``user``; its last stdout line as JSON."""
    proc = as_user(user, "/usr/bin/python3", "-c", code, *args, timeout=timeout)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ctl(user: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return as_user(user, "/usr/bin/lvmsuperctl", *args, check=check)


def busctl_as(user: str, method: str, *args: str,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    return as_user(user, "busctl", "--timeout=120", "call", *BUS, method, "a{sv}", *args,
                   check=check)


def prop(unit: str, name: str) -> str:
    return run("systemctl", "show", "-P", name, unit).stdout.strip()


def active(unit: str) -> str:
    return run("systemctl", "is-active", unit, check=False).stdout.strip()


def wait_for(what: str, predicate: Callable[[], bool], timeout: float,
             interval: float = 0.5) -> float:
    """Seconds until ``predicate()`` held; AssertionError naming ``what`` after timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)
    return time.monotonic() - started


def journal_cursor() -> str:
    """Where the journal ends now: read on from here with ``journal_after``."""
    last = run("journalctl", "-n", "1", "-o", "json", "--no-pager").stdout
    return str(json.loads(last.splitlines()[-1])["__CURSOR"])


def journal_after(cursor: str, *args: str) -> str:
    return run("journalctl", "--no-pager", f"--after-cursor={cursor}", *args).stdout


def write_config(extra: str = "") -> None:
    CONFIG.parent.mkdir(exist_ok=True)
    CONFIG.write_text(BASE_CONFIG + extra)


def stop_daemon() -> None:
    run("systemctl", "stop", "lvmsuper.service")
    run("systemctl", "reset-failed", "lvmsuper.service", check=False)


def lvm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """LVM as the daemon sees it (the tests' LVM_SYSTEM_DIR)."""
    return run("lvm", *args, check=check, env={"LVM_SYSTEM_DIR": LVM_DIR})


def make_loops(count: int, size_mib: int, tag: str) -> list[str]:
    """Loop devices over sparse files in the guest's throwaway /var/tmp."""
    loops = []
    for n in range(count):
        backing = Path("/var/tmp", f"lvmsuper-{tag}-{n}.img")
        with open(backing, "wb") as f:
            f.truncate(size_mib * 2**20)
        loops.append(run("losetup", "-f", "--show", str(backing)).stdout.strip())
    run("udevadm", "settle")
    return loops


def drop_loops(loops: Sequence[str], vgs: Sequence[str] = ()) -> None:
    """Undo make_loops (and the VGs on them) with LVM directly; errors are not the test's."""
    for vg in vgs:
        lvm("vgremove", "-f", "-y", vg, check=False)
    for loop in loops:
        lvm("pvremove", "-y", loop, check=False)
        backing = run("losetup", "-n", "-O", "BACK-FILE", loop, check=False).stdout.strip()
        run("losetup", "-d", loop, check=False)
        if backing:
            Path(backing).unlink(missing_ok=True)


def pkcheck_as(user: str, action: str) -> int:
    """pkcheck's exit status for ``user``'s own process (no session), 0: authorized."""
    return as_user(user, "sh", "-c", f"exec pkcheck --action-id {action} --process $$",
                   check=False).returncode


def example_rules(installed: bool) -> None:
    """The package's example rules in /etc/polkit-1/rules.d, or not; returns once
    polkitd (which reloads on its own, a moment later) decides accordingly."""
    if installed:
        RULES.write_bytes(EXAMPLE_RULES.read_bytes())
    else:
        RULES.unlink(missing_ok=True)
    wait_for(f"polkitd {'with' if installed else 'without'} the example rules",
             lambda: (pkcheck_as(MEMBER, "org.lvmsuper.manage") == 0) == installed,
             timeout=60)
