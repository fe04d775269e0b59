"""The man pages lvmsuperd(8), lvmsuperctl(1) and lvmsuper.toml(5), as tools/manpages.py
writes them: every command, option, method and config key of the code is in them, and
man/groff render them without a warning. No root needed."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rig
from lvmsuper.client.cli import _parser as cli_parser
from lvmsuper.supervisor.config import _SCHEMA
from lvmsuper.supervisor.daemon import parser as daemon_parser
from lvmsuper.supervisor.core.methods import METHODS

REPO = Path(__file__).resolve().parent.parent
PAGES = ("lvmsuperd.8", "lvmsuperctl.1", "lvmsuper.toml.5")
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}


def generate(outdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "tools/manpages.py"), str(outdir),
                           *extra], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outdir = tmp_path_factory.mktemp("man")
    out = generate(outdir)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in outdir.iterdir()) == sorted(PAGES)
    return outdir


def _tool(name: str) -> str:
    found = shutil.which(name, path="/usr/bin:/bin")
    rig.need_system(found is not None, f"needs {name} (make install installs groff-base "
                    "and man-db)")
    assert found is not None
    return found


def rendered(page: Path, width: int = 1000) -> str:
    """The page as man shows it, one paragraph per line, hyphens as ASCII."""
    out = subprocess.run([_tool("man"), "-l", str(page)], capture_output=True, text=True,
                         timeout=60, env={**ENV, "MANWIDTH": str(width)})
    assert out.returncode == 0, out.stderr
    return out.stdout.replace("\u2212", "-").replace("\u2010", "-")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions if not isinstance(a, argparse._HelpAction)
            for o in a.option_strings]


def test_every_cli_command_and_option_is_documented(pages: Path) -> None:
    text = rendered(pages / "lvmsuperctl.1")
    parser = cli_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(sub.choices) >= 25
    sections = dict(re.findall(r"^   (\S.*)\n((?:(?!   \S).*\n)*)", text, re.M))
    several = sections.pop("Options of several commands")
    assert set(sections) == set(sub.choices)
    for name, command in sub.choices.items():
        assert f"lvmsuperctl {name}" in sections[name], name  # its usage line
        for option in _options(command):
            told = re.search(rf"^       {re.escape(option)}\b|, {re.escape(option)}\b",
                             sections[name], re.M)
            common = re.search(rf"^       {re.escape(option)}\b.*?\((.*?)\)\n", several,
                               re.M | re.S)
            assert told or (common and name in common.group(1).split(", ")), (name, option)
    for option in _options(parser):
        assert re.search(rf"^       {re.escape(option)}\b", text, re.M), option
    assert "did not answer" in text and "--timeout SECONDS" in text


def test_every_method_is_documented(pages: Path) -> None:
    text = rendered(pages / "lvmsuperd.8")
    assert len(METHODS) >= 25
    for name, method in METHODS.items():
        entry = re.search(rf"^       {re.escape(name)}\s+Role {method.role.value}; "
                          r"parameters: (.*)$", text, re.M)
        assert entry, f"method {name}"
        for param, spec in method.params.items():
            assert (param if spec.required else f"[{param}]") in entry.group(1), (name, param)
    for option in _options(daemon_parser()):
        assert re.search(rf"^       {re.escape(option)}\b", text, re.M), option


def test_every_config_key_is_documented_with_its_default(pages: Path) -> None:
    text = rendered(pages / "lvmsuper.toml.5")
    for section, keys in _SCHEMA.items():
        body = text.split(f"   [{section}]\n", 1)
        assert len(body) == 2, f"section [{section}]"
        for key in keys:
            assert re.search(rf"^       {re.escape(key)} \(default: ", body[1], re.M), \
                f"{section}.{key}"
    assert '       socket_mode (default: "0660")' in text
    assert "       timeout (default: 60)" in text


@pytest.mark.parametrize("page", PAGES)
def test_pages_render_without_warnings(pages: Path, page: str) -> None:
    for width in (60, 80, 120):
        out = subprocess.run([_tool("groff"), "-ww", "-man", "-Tutf8", f"-rLL={width}n", "-z",
                              str(pages / page)], capture_output=True, text=True, timeout=60,
                             env=ENV)
        assert out.returncode == 0 and out.stderr == "", (width, out.stderr)
        out = subprocess.run([_tool("man"), "--warnings", "-l", str(pages / page)],
                             capture_output=True, text=True, timeout=60,
                             env={**ENV, "MANWIDTH": str(width)})
        assert out.returncode == 0 and out.stderr == "", (width, out.stderr)
    name = page.rsplit(".", 1)[0]
    assert rendered(pages / page).splitlines()[3].strip().startswith(f"{name} - ")  # whatis


def test_prose_must_cover_every_config_key(tmp_path: Path) -> None:
    """A key added to the code without its line in man/prose.toml stops the build."""
    prose = (REPO / "man/prose.toml").read_text()
    assert '"limits.max_queue" = ' in prose
    broken = tmp_path / "prose.toml"
    broken.write_text(re.sub(r'^"limits\.max_queue" = .*$', "", prose, flags=re.M))
    out = generate(tmp_path / "man", "--prose", str(broken))
    assert out.returncode != 0 and "limits.max_queue" in out.stderr


def test_source_date_epoch_dates_the_pages(tmp_path: Path) -> None:
    """Reproducible builds: the date comes from SOURCE_DATE_EPOCH (dpkg-buildpackage)."""
    out = subprocess.run([sys.executable, str(REPO / "tools/manpages.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    assert out.returncode == 0, out.stderr
    assert '"2023-11-14"' in (tmp_path / "lvmsuperd.8").read_text().splitlines()[1]
