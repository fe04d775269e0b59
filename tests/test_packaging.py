"""Packaging: the wheel ships every module (the package-dir mapping does not pick up new
subpackages by itself), the client needs no third-party packages, and the public names
are re-exported."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lvmsuper.client as client_pkg
from lvmsuper.client import errors, models

REPO = Path(__file__).resolve().parent.parent


def test_wheel_contains_every_module(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("lvmsuper-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in (("client", "lvmsuper/client"), ("supervisor", "lvmsuper/supervisor")):
        sources = sorted(str(p.relative_to(REPO / folder))
                         for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)
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


# What the daemon, the client and the tools never do (SECURITY.md): run a shell, sudo
# or pkexec, unpickle/unmarshal data, or evaluate code. Checked on the syntax tree of
# every module (comments and prose cannot trip it; a construct can).
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
# subprocess's calls that start a program: the command must be an argv list, never one
# string (asyncio.create_subprocess_exec takes the program and its arguments apart).
_PROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}
# The one construct a tool may use that names a shell without running one: useradd's
# `--shell /bin/sh` (the login shell of the demo's throwaway user). Allowed only where
# listed, only right after "--shell" in the same argv list, and each listed file must
# still have it (no stale allowance).
_LOGIN_SHELL_OK = {"tools/demo.py": 1}


def _string_command(node: ast.expr) -> bool:
    """A command given as one string (a literal, an f-string, or one built by + or %)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    return isinstance(node, ast.BinOp) and (_string_command(node.left)
                                           or _string_command(node.right))


def unsafe_constructs(source: str, name: str) -> list[str]:
    """What the syntax tree of ``source`` does that the project never does, one line per
    finding (``name:line: what``). A login shell after ``--shell`` is reported as
    ``login shell``, for the caller to allow where it is expected."""
    tree = ast.parse(source, filename=name)
    found: list[str] = []
    login_shells: set[int] = set()
    # subprocess's calls as they are named here: subprocess.run, or run imported bare
    bare = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and node.module == "subprocess" for a in node.names if a.name in _PROCESS_CALLS}
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)):
            for before, item in zip(node.elts, node.elts[1:]):
                if isinstance(before, ast.Constant) and before.value == "--shell" \
                        and isinstance(item, ast.Constant) and item.value in _PRIVILEGE_TOOLS:
                    login_shells.add(id(item))
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.keyword) and node.arg in ("shell", "executable"):
            found.append(f"{where}: {node.arg}= argument")
        if isinstance(node, ast.Name) and node.id in _CODE_CALLS:
            found.append(f"{where}: {node.id}")
        if isinstance(node, ast.Attribute) and node.attr in _SHELL_CALLS:
            found.append(f"{where}: .{node.attr} runs a shell or replaces the process")
        if isinstance(node, ast.Attribute) and node.attr == "import_module":
            found.append(f"{where}: dynamic import")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
            names = [a.name for a in node.names]
            for mod in mods:
                if mod.split(".")[0] in _UNSAFE_MODULES:
                    found.append(f"{where}: imports {mod}")
            if getattr(node, "module", "") in ("os", "subprocess", "asyncio") \
                    and set(names) & (_SHELL_CALLS | _CODE_CALLS):
                found.append(f"{where}: imports {names}")
        if isinstance(node, ast.Call):
            func = node.func
            called = (func.attr if isinstance(func, ast.Attribute) and func.attr in _PROCESS_CALLS
                      and isinstance(func.value, ast.Name) and func.value.id == "subprocess"
                      else func.id if isinstance(func, ast.Name) and func.id in bare else "")
            command = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "args"), None)
            if called and command is not None and _string_command(command):
                found.append(f"{where}: {called}() with a command string")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            words = node.value.split()
            # a privilege tool as a whole string, or as a command line's first word
            # ("sudo lvm pvs"); prose that mentions one ("no sudo anywhere") is not code
            if node.value in _PRIVILEGE_TOOLS or (words and words[0] in _PRIVILEGE_TOOLS):
                if id(node) in login_shells:
                    found.append(f"{where}: login shell {node.value}")
                else:
                    found.append(f"{where}: runs {node.value}")
    return found


def _python_sources() -> list[Path]:
    """Every module of the client and the daemon, and every tool (by suffix or by a
    python shebang: tools/dm-guest has none). A tool that is not Python fails here,
    so that nothing under tools/ goes unchecked."""
    paths = [p for folder in ("client", "supervisor") for p in (REPO / folder).rglob("*.py")]
    for path in sorted((REPO / "tools").rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        head = path.read_bytes()[:100].split(b"\n", 1)[0]
        python = path.suffix == ".py" or (head.startswith(b"#!") and b"python" in head)
        assert python, f"{path.relative_to(REPO)}: not Python, so not checked; check it here"
        paths.append(path)
    return paths


def test_no_shell_sudo_pickle_or_eval_in_code() -> None:
    sources = _python_sources()
    names = {str(p.relative_to(REPO)) for p in sources}
    assert {"tools/demo.py", "tools/dm-guest"} <= names  # the tools are walked too
    assert sum(n.startswith(("client/", "supervisor/")) for n in names) >= 20
    problems: list[str] = []
    login_shells: dict[str, int] = {}
    for path in sources:
        name = str(path.relative_to(REPO))
        for finding in unsafe_constructs(path.read_text(), name):
            if ": login shell " in finding and name in _LOGIN_SHELL_OK:
                login_shells[name] = login_shells.get(name, 0) + 1
            else:
                problems.append(finding)
    assert not problems, "\n".join(problems)
    assert login_shells == _LOGIN_SHELL_OK  # the allowance is used, exactly as often


# Negative controls: each pattern, in a small sample, is caught (and the checker is not
# fooled by the words in comments or prose).
@pytest.mark.parametrize("sample, finding", [
    ("x = eval('1 + 1')", ": eval"),
    ("exec('print(1)')", ": exec"),
    ("f = compile('1', 'x', 'eval')", ": compile"),
    ("m = __import__('os')", ": __import__"),
    ("import importlib\nm = importlib.import_module('os')", "dynamic import"),
    ("import pickle", "imports pickle"),
    ("import pickle as p", "imports pickle"),
    ("from pickle import loads", "imports pickle"),
    ("import _pickle", "imports _pickle"),
    ("import marshal", "imports marshal"),
    ("import yaml", "imports yaml"),
    ("from multiprocessing.managers import BaseManager", "imports multiprocessing"),
    ("import subprocess\nsubprocess.run(['lvm', 'pvs'], shell=True)", "shell= argument"),
    ("import subprocess\nsubprocess.run(['lvm'], shell=False)", "shell= argument"),
    ("import subprocess\nsubprocess.Popen(['x'], executable='/bin/sh')", "executable="),
    ("import os\nos.system('lvm pvs')", ".system runs a shell"),
    ("import os\nos.popen('lvm pvs')", ".popen runs a shell"),
    ("from os import system\nsystem('lvm pvs')", "imports ['system']"),
    ("import os\nos.execv('/sbin/lvm', ['lvm'])", ".execv"),
    ("import asyncio\nasyncio.create_subprocess_shell('lvm pvs')", ".create_subprocess_shell"),
    ("import subprocess\nsubprocess.getoutput('lvm pvs')", ".getoutput"),
    ("import subprocess\nsubprocess.run('lvm pvs')", "run() with a command string"),
    ("import subprocess\nsubprocess.check_output(args='lvm pvs')", "check_output() with"),
    ("import subprocess\nvg = 'x'\nsubprocess.Popen(f'lvm vgs {vg}')", "Popen() with"),
    ("import subprocess\nsubprocess.call('lvm ' + 'pvs')", "call() with"),
    ("from subprocess import run as r\nr('lvm pvs')", "r() with"),
    ("import subprocess\nsubprocess.run(['sudo', 'lvm', 'pvs'])", "runs sudo"),
    ("import subprocess\nsubprocess.run(['/usr/bin/pkexec', 'lvm'])", "runs /usr/bin/pkexec"),
    ("import subprocess\nsubprocess.run(['sh', '-c', 'lvm pvs'])", "runs sh"),
    ("import subprocess\nsubprocess.run('sudo lvm pvs'.split())", "runs sudo lvm pvs"),
    ("import subprocess\nsubprocess.run(['bash', '-c', 'x'])", "runs bash"),
    ("argv = ['useradd', '--shell', '/bin/sh', 'u']", "login shell /bin/sh"),
])
def test_the_unsafe_code_checker_catches(sample: str, finding: str) -> None:
    found = unsafe_constructs(sample, "sample.py")
    assert any(finding in f for f in found), (sample, found)


def test_the_unsafe_code_checker_ignores_words() -> None:
    sample = ('# no shell=True, no sudo, no pickle, no eval( here\n'
              'print("it runs every command below, no sudo anywhere")\n'
              'doc = "the wire format is JSON, never pickle; eval is never called"\n'
              'import subprocess\n'
              'subprocess.run(["lvm", "pvs"], check=True)\n'
              'client.call("pvs")  # an RPC method, not a process\n'
              'import asyncio\nasyncio.create_subprocess_exec("/sbin/lvm", "pvs")\n'
              'import re\npattern = re.compile("x")\n')
    assert unsafe_constructs(sample, "sample.py") == []
