"""`make install-system DESTDIR=...` puts every unit, bus and polkit file where a
distribution would (what a packager runs)."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import rig


def test_install_system_into_destdir(tmp_path: Path) -> None:
    out = subprocess.run(["make", "-s", "-C", str(rig.REPO), "install-system",
                          f"DESTDIR={tmp_path}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    expected = {
        "lib/systemd/system/lvmsuper.service", "lib/systemd/system/lvmsuper.socket",
        "usr/share/dbus-1/system.d/org.lvmsuper.Supervisor1.conf",
        "usr/share/dbus-1/system-services/org.lvmsuper.Supervisor1.service",
        "usr/share/polkit-1/actions/org.lvmsuper.policy",
        "usr/share/doc/lvmsuper/examples/50-lvmsuper.rules",
    }
    installed = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert installed == expected
    for rel in expected:
        assert (tmp_path / rel).read_bytes() == (rig.REPO / _source(rel)).read_bytes()
        assert (tmp_path / rel).stat().st_mode & 0o777 == 0o644
    activation = (tmp_path / "usr/share/dbus-1/system-services/"
                  "org.lvmsuper.Supervisor1.service").read_text()
    assert "SystemdService=lvmsuper.service" in activation
    assert "Name=org.lvmsuper.Supervisor1" in activation
    ET.parse(tmp_path / "usr/share/dbus-1/system.d/org.lvmsuper.Supervisor1.conf")
    actions = ET.parse(tmp_path / "usr/share/polkit-1/actions/org.lvmsuper.policy")
    ids = {a.get("id") for a in actions.getroot().iter("action")}
    assert ids == {"org.lvmsuper.query", "org.lvmsuper.manage", "org.lvmsuper.destroy"}


def _source(rel: str) -> str:
    name = rel.rsplit("/", 1)[1]
    return f"polkit/{name}" if name.endswith((".policy", ".rules")) else f"systemd/{name}"
