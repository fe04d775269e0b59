"""The full-system tier: lvmsuper installed from its Debian package into a whole Debian
system (systemd as PID 1, the system bus, logind, polkitd, journald, udev, real
device-mapper), tested as a user would meet it.

Runs only inside the guest that `make test-system` boots (tools/system-guest sets
LVMSUPER_SYSTEM_GUEST=1), with Debian's /usr/bin/python3 -m pytest and --confcutdir
tests/system (the host tiers' conftest and rig.py are not loaded: they import the
repository's code, this tier uses only what the package installed). Anywhere else every
test fails rather than skips. The session starts with `dpkg -i $LVMSUPER_DEB`; the
files run in their numbered order, the last one purges the package.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import sysrig


def _problem() -> str | None:
    if os.environ.get("LVMSUPER_SYSTEM_GUEST") != "1":
        return "LVMSUPER_SYSTEM_GUEST=1 is not set: not inside the system guest"
    if os.geteuid() != 0:
        return "not running as root"
    if Path("/proc/1/comm").read_text().strip() != "systemd":
        return "PID 1 is not systemd"
    if not os.environ.get("LVMSUPER_DEB", "").endswith(".deb"):
        return "LVMSUPER_DEB does not name the package to install"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session", autouse=True)
def installed() -> Iterator[None]:
    """The package installed as an admin would: LVM configured for the test loops
    first, then `dpkg -i`, then the test users."""
    problem = _problem()
    if problem:
        pytest.fail(f"tests/system run only in the guest of `make test-system`: {problem}",
                    pytrace=False)
    Path("/etc/lvm/lvm.conf").write_text(sysrig.GUEST_LVM_CONF)
    lvm_dir = Path(sysrig.LVM_DIR)
    lvm_dir.mkdir(parents=True, exist_ok=True)
    (lvm_dir / "lvm.conf").write_text(sysrig.LVM_CONF)
    if Path("/etc/lvm/profile").is_dir():  # the daemon's shell runner uses a profile
        shutil.copytree("/etc/lvm/profile", lvm_dir / "profile", dirs_exist_ok=True)
    sysrig.write_config()
    # man-db's dpkg trigger re-indexes every manual page of the (9p) root: minutes under
    # emulation, for nothing the tests read. This file is its switch.
    Path("/var/lib/man-db/auto-update").unlink(missing_ok=True)
    # A container image's "start no service" switch, if the host root is one (then the
    # postinst would not start lvmsuper.socket); a real system has none.
    Path("/usr/sbin/policy-rc.d").unlink(missing_ok=True)
    sysrig.run("dpkg", "-i", os.environ["LVMSUPER_DEB"], timeout=600)
    sysrig.run("useradd", "-m", "-G", "lvmsuper", sysrig.MEMBER)
    sysrig.run("useradd", "-m", sysrig.OUTSIDER)
    yield
