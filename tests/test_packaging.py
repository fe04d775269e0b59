"""Packaging: the wheel ships every module (the package-dir mapping does not pick up new
subpackages by itself), the client needs no third-party packages, and the public names
are re-exported."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import lvmsuper.client as client_pkg
from lvmsuper.client import errors, models

REPO = Path(__file__).resolve().parent.parent


def test_wheel_contains_every_module(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("lvmsuper-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in (("client", "lvmsuper/client"), ("supervisor", "lvmsuper/supervisor")):
        sources = sorted(p.name for p in (REPO / folder).rglob("*.py"))
        assert sources, folder
        for name in sources:
            assert f"{package}/{name}" in names, f"{package}/{name} missing from the wheel"
        assert f"{package}/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "lvmsuperd = lvmsuper.supervisor.daemon:main" in text
    assert "lvmsuperctl = lvmsuper.client.cli:main" in text


def test_client_imports_only_the_standard_library() -> None:
    """At module level only the standard library; dbus-next only lazily, inside a
    function (the D-Bus transport), so the client imports without it."""
    stdlib = set(sys.stdlib_module_names)
    for path in (REPO / "client").rglob("*.py"):
        tree = ast.parse(path.read_text())
        in_function = {id(node) for fn in ast.walk(tree)
                       if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for node in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                lazy_dbus = root == "dbus_next" and id(node) in in_function
                assert root in stdlib or root == "lvmsuper" or lazy_dbus, \
                    f"{path.name} imports {root}"


def test_public_names_are_exported() -> None:
    exported = set(client_pkg.__all__)
    for name in errors.ERRORS_BY_NAME.values():
        assert name.__name__ in exported
    for model in ("PV", "VG", "LV", "Job"):
        assert model in exported and getattr(models, model) is getattr(client_pkg, model)
    for name in client_pkg.__all__:
        assert hasattr(client_pkg, name), name


# What the daemon and the client never do (SECURITY.md): run a shell, sudo or pkexec,
# unpickle/unmarshal data, or evaluate code. Checked on the syntax tree of every module.
_SHELL_CALLS = {"system", "popen", "getoutput", "getstatusoutput", "create_subprocess_shell",
                "subprocess_shell", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
                "spawnve", "spawnvp", "spawnvpe", "execl", "execle", "execlp", "execlpe",
                "execv", "execve", "execvp", "execvpe", "startfile"}
_CODE_CALLS = {"eval", "exec", "compile", "__import__", "import_module", "execfile"}
_UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle",
                   "jsonpickle", "yaml", "multiprocessing", "xmlrpc", "pty", "code",
                   "codeop"}
_PRIVILEGE_TOOLS = {"sudo", "/usr/bin/sudo", "pkexec", "/usr/bin/pkexec", "su", "/bin/su",
                    "doas", "sh", "/bin/sh", "/usr/bin/sh", "bash", "/bin/bash",
                    "/usr/bin/bash"}


def test_no_shell_sudo_pickle_or_eval_in_code() -> None:
    checked = 0
    for folder in ("client", "supervisor"):
        for path in (REPO / folder).rglob("*.py"):
            checked += 1
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.keyword) and node.arg in ("shell", "executable"):
                    raise AssertionError(f"{where}: {node.arg}= argument")
                if isinstance(node, ast.Name) and node.id in _CODE_CALLS:
                    raise AssertionError(f"{where}: {node.id}")
                if isinstance(node, ast.Attribute) and node.attr in _SHELL_CALLS:
                    raise AssertionError(f"{where}: .{node.attr} runs a shell or replaces "
                                         "the process")
                if isinstance(node, ast.Attribute) and node.attr == "import_module":
                    raise AssertionError(f"{where}: dynamic import")
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    mods = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                    names = [a.name for a in node.names]
                    for mod in mods:
                        assert mod.split(".")[0] not in _UNSAFE_MODULES, f"{where}: imports {mod}"
                    if getattr(node, "module", "") in ("os", "subprocess", "asyncio"):
                        assert not set(names) & _SHELL_CALLS, f"{where}: imports {names}"
                if isinstance(node, ast.Constant) and node.value in _PRIVILEGE_TOOLS:
                    raise AssertionError(f"{where}: runs {node.value}")
    assert checked >= 20  # the walk really saw the packages
