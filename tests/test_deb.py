"""The Debian package, as `make deb` builds it (build/deb/lvmsuper_<version>_all.deb): lintian
finds no error, it ships every file `make install-system` installs, every module of the
wheel, both commands and the man pages, it depends on Debian's lvm2, python3-dbus-next and
python3-systemd, its maintainer scripts create the group before starting the socket and
start nothing else, and its code runs with Debian's python3. Never installed here (this
host has no systemd as PID 1): the full-system tier installs it in a guest."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import rig
from test_install import FILES, MAN_PAGES

pytestmark = pytest.mark.system

VERSION = tomllib.loads((rig.REPO / "pyproject.toml").read_text())["project"]["version"]
DEB = rig.REPO / "build" / "deb" / f"lvmsuper_{VERSION}_all.deb"
SITE = "usr/lib/python3/dist-packages"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
# lintian tags accepted, each with why (README.md, "Install the Debian package"):
ACCEPTED_TAGS = {
    # a systemd-only daemon (Type=notify, socket activation): no init.d script
    "package-supports-alternative-init-but-no-init.d-script",
}


def _git_status() -> str:
    return subprocess.run(["git", "-C", str(rig.REPO), "status", "--porcelain"],
                          capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="module")
def deb() -> Path:
    """One `make deb` per test session (it installs missing build dependencies)."""
    rig.need_system(os.geteuid() == 0, "needs root (make deb installs build dependencies)")
    rig.need_system(shutil.which("apt-get") is not None, "needs apt-get (Debian)")
    before = _git_status()
    out = subprocess.run(["make", "-s", "-C", str(rig.REPO), "deb"], capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert DEB.is_file(), out.stdout
    assert _git_status() == before  # dpkg-buildpackage's by-products stay out of the tree
    return DEB


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deb-root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=60)
    return root


def _listing(deb: Path) -> dict[str, str]:
    """path -> mode string, for every regular file in the package."""
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                         check=True, timeout=60)
    files = {}
    for row in out.stdout.splitlines():
        mode, *_, path = row.split(None, 5)
        if mode.startswith("-"):
            files[path.removeprefix("./")] = mode
    return files


def _wheel_modules(tmp_path: Path) -> set[str]:
    """The modules of the wheel built from the tree the package was built from (the
    copy make deb made: in the checkout, setuptools' build/lib may hold stale ones)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(DEB.parent / "src")], check=True,
                   capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("lvmsuper-*.whl")
    return {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("lvmsuper/")}


def test_lintian_finds_no_errors(deb: Path) -> None:
    lintian = shutil.which("lintian", path=ENV["PATH"])
    assert lintian is not None  # make deb installs it
    out = subprocess.run([lintian, "--info", "--pedantic", str(deb)], capture_output=True,
                         text=True, timeout=300, env=ENV)
    print(out.stdout)
    tags = re.findall(r"^([EWIPX]): lvmsuper: (\S+)", out.stdout, re.M)
    assert not [t for t in tags if t[0] == "E"], out.stdout
    assert {tag for _, tag in tags} <= ACCEPTED_TAGS, out.stdout
    assert out.returncode == 0, out.stdout + out.stderr


def test_package_ships_every_file(deb: Path, unpacked: Path, tmp_path: Path) -> None:
    files = _listing(deb)
    expected = set(FILES) | {f"{page}.gz" for page in MAN_PAGES}
    expected |= {"usr/bin/lvmsuperd", "usr/bin/lvmsuperctl"}
    modules = _wheel_modules(tmp_path)
    assert any(m.endswith("supervisor/daemon.py") for m in modules)
    expected |= {f"{SITE}/{m}" for m in modules}
    # every module of the source folders, subpackages included (the wheel's listing
    # could itself miss one: tests/test_packaging.py)
    for folder in ("client", "supervisor"):
        for path in (rig.REPO / folder).rglob("*.py"):
            expected.add(f"{SITE}/lvmsuper/{folder}/{path.relative_to(rig.REPO / folder)}")
    missing = expected - set(files)
    assert not missing, sorted(missing)
    extra = {f for f in set(files) - expected
             if not re.fullmatch(rf"{SITE}/lvmsuper-{re.escape(VERSION)}\.dist-info/\w+(\.txt)?"
                                 r"|usr/share/doc/lvmsuper/(copyright|changelog\.gz)", f)}
    assert not extra, sorted(extra)
    for rel, source in FILES.items():  # as in the repository, as install-system puts them
        assert (unpacked / rel).read_bytes() == (rig.REPO / source).read_bytes(), rel
        assert files[rel] == "-rw-r--r--", rel
    for command in ("lvmsuperd", "lvmsuperctl"):
        assert files[f"usr/bin/{command}"] == "-rwxr-xr-x"
        assert (unpacked / "usr/bin" / command).read_text().startswith("#!/usr/bin/python3\n")


def test_man_pages_render(unpacked: Path) -> None:
    for page in MAN_PAGES:
        path = unpacked / f"{page}.gz"
        assert gzip.decompress(path.read_bytes()).startswith(b".\\\" Generated by")
        out = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True,
                             text=True, timeout=60, env={**ENV, "MANWIDTH": "80"})
        assert out.returncode == 0 and out.stderr == "", (page, out.stderr)
        assert "lvmsuper" in out.stdout


def test_control_fields(deb: Path) -> None:
    def field(name: str) -> str:
        return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True,
                              text=True, check=True, timeout=60).stdout.strip()

    assert (field("Package"), field("Version"), field("Architecture")) == \
        ("lvmsuper", VERSION, "all")
    depends = [alternatives.strip() for alternatives in field("Depends").split(",")]
    names = {d.split()[0] for d in depends}
    assert {"lvm2", "python3-dbus-next", "python3-systemd"} <= names, depends
    assert "python3:any" in names or "python3" in names, depends
    # systemd-sysusers, for the postinst that creates the group
    assert any("systemd" in d.split(" | ") for d in depends), depends
    changelog = subprocess.run(["dpkg-parsechangelog", "-l", str(rig.REPO / "debian/changelog"),
                                "-S", "Version"], capture_output=True, text=True,
                               check=True, timeout=60).stdout.strip()
    assert changelog == VERSION  # the native package's version is pyproject's


def test_maintainer_scripts(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path)], check=True, timeout=60)
    postinst = (tmp_path / "postinst").read_text()
    sysusers = postinst.index("systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} lvmsuper.conf")
    enable = postinst.index("deb-systemd-helper enable 'lvmsuper.socket'")
    start = postinst.index("deb-systemd-invoke $_dh_action 'lvmsuper.socket'")
    assert sysusers < enable < start  # the socket's group exists before the socket
    # the service is never enabled on installation nor started: only re-enabled if the
    # admin had enabled it, and started by the socket or D-Bus
    assert not re.search(r"deb-systemd-invoke \S+ 'lvmsuper\.service'", postinst)
    assert "was-enabled 'lvmsuper.service'; then\n\t\t\t# Create new symlinks" in postinst
    postrm = (tmp_path / "postrm").read_text()
    purge = postrm.split('if [ "$1" = "purge" ]; then', 1)[1]
    assert "groupdel lvmsuper" in purge and 'rm -rf "${DPKG_ROOT:-}/run/lvmsuper"' in purge
    assert "deb-systemd-helper purge 'lvmsuper.service' 'lvmsuper.socket'" in postrm
    for script in ("postinst", "postrm", "prerm", "preinst"):
        out = subprocess.run(["sh", "-n", str(tmp_path / script)], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, (script, out.stderr)


def test_packaged_code_runs_with_debian_python(unpacked: Path, tmp_path: Path) -> None:
    """The commands as shipped, under /usr/bin/python3 with the package's modules."""
    env = {**ENV, "PYTHONPATH": str(unpacked / SITE)}
    config = tmp_path / "lvmsuper.toml"
    config.write_text('[server]\nsocket_group = "root"\n')
    out = subprocess.run(["/usr/bin/python3", str(unpacked / "usr/bin/lvmsuperd"), "--config",
                          str(config), "--check-config"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0 and "configuration OK" in out.stdout, out.stderr
    out = subprocess.run(["/usr/bin/python3", str(unpacked / "usr/bin/lvmsuperctl"),
                          "--socket", str(tmp_path / "none.sock"), "ping"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 3 and "cannot connect" in out.stderr, out.stderr
    out = subprocess.run(["/usr/bin/python3", "-c", "import lvmsuper.client, "
                          "lvmsuper.supervisor.transports.dbus; print(lvmsuper.client.__file__)"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0 and out.stdout.startswith(str(unpacked)), out.stderr
