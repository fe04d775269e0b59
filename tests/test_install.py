"""`make install-system DESTDIR=...` puts every unit, bus, polkit, sysusers and doc file
where a distribution would (what a packager runs), and the sysusers.d file creates the
`lvmsuper` group in a throwaway root."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import rig

# installed path -> source in the repository
FILES = {
    "lib/systemd/system/lvmsuper.service": "systemd/lvmsuper.service",
    "lib/systemd/system/lvmsuper.socket": "systemd/lvmsuper.socket",
    "usr/lib/sysusers.d/lvmsuper.conf": "systemd/lvmsuper.sysusers",
    "usr/share/dbus-1/system.d/org.lvmsuper.Supervisor1.conf":
        "systemd/org.lvmsuper.Supervisor1.conf",
    "usr/share/dbus-1/system-services/org.lvmsuper.Supervisor1.service":
        "systemd/org.lvmsuper.Supervisor1.service",
    "usr/share/polkit-1/actions/org.lvmsuper.policy": "polkit/org.lvmsuper.policy",
    "usr/share/doc/lvmsuper/examples/50-lvmsuper.rules": "polkit/50-lvmsuper.rules",
    "usr/share/doc/lvmsuper/README.md": "README.md",
}


def install_into(root: Path) -> None:
    out = subprocess.run(["make", "-s", "-C", str(rig.REPO), "install-system",
                          f"DESTDIR={root}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_install_system_into_destdir(tmp_path: Path) -> None:
    install_into(tmp_path)
    installed = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert installed == set(FILES)
    for rel, source in FILES.items():
        assert (tmp_path / rel).read_bytes() == (rig.REPO / source).read_bytes(), rel
        assert (tmp_path / rel).stat().st_mode & 0o777 == 0o644
    activation = (tmp_path / "usr/share/dbus-1/system-services/"
                  "org.lvmsuper.Supervisor1.service").read_text()
    assert "SystemdService=lvmsuper.service" in activation
    assert "Name=org.lvmsuper.Supervisor1" in activation
    ET.parse(tmp_path / "usr/share/dbus-1/system.d/org.lvmsuper.Supervisor1.conf")
    actions = ET.parse(tmp_path / "usr/share/polkit-1/actions/org.lvmsuper.policy")
    ids = {a.get("id") for a in actions.getroot().iter("action")}
    assert ids == {"org.lvmsuper.query", "org.lvmsuper.manage", "org.lvmsuper.destroy"}


def test_units_documentation_is_installed(tmp_path: Path) -> None:
    """Every Documentation= of the units points at something the install puts there
    (`systemctl help lvmsuper` must not open nothing): no man page ships, so no man:."""
    install_into(tmp_path)
    for unit in ("lvmsuper.service", "lvmsuper.socket"):
        text = (tmp_path / "lib/systemd/system" / unit).read_text()
        urls = " ".join(re.findall(r"^Documentation=(.*)$", text, re.M)).split()
        assert urls, unit
        for url in urls:
            assert url.startswith("file:/"), (unit, url)
            assert (tmp_path / url.removeprefix("file:/")).is_file(), (unit, url)


def test_sysusers_file_creates_the_group(tmp_path: Path) -> None:
    """The packagers' way to the `lvmsuper` group: the installed sysusers.d file, applied
    by the real systemd-sysusers to a throwaway root (never this machine's /etc)."""
    lines = [line for line in (rig.REPO / "systemd/lvmsuper.sysusers").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert [line.split() for line in lines] == [["g", "lvmsuper", "-", "-"]]
    sysusers = shutil.which("systemd-sysusers", path="/usr/bin:/bin:/usr/sbin:/sbin")
    rig.need_system(sysusers is not None, "needs systemd-sysusers (package systemd)")
    assert sysusers is not None
    root = tmp_path / "root"
    install_into(root)
    (root / "etc").mkdir()
    (root / "etc/group").write_text("root:x:0:\n")
    for _ in range(2):  # a second run (package upgrade) changes nothing
        out = subprocess.run([sysusers, f"--root={root}"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        groups = [line.split(":") for line in (root / "etc/group").read_text().splitlines()]
        assert [g[0] for g in groups] == ["root", "lvmsuper"], groups
        gid = int(groups[1][2])
        assert 0 < gid < 1000, gid  # a system group
