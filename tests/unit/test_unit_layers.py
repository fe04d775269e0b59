"""The daemon's tree shows its layers, and imports only go down.

Layers, bottom up: ``config`` < ``lvm/`` (argv builders, runners, parsers) < ``core/``
(method table, service, policy, jobs, audit) < ``transports/`` (socket, D-Bus) and
``watch/`` (changes made outside the daemon) < ``daemon``. The client (``lvmsuper.client``) is below all of them and never imports the
daemon. Within a layer, imports form no cycle (type-only imports included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SUPERVISOR = Path(__file__).resolve().parents[2] / "supervisor"
CLIENT = Path(__file__).resolve().parents[2] / "client"
RANK = {"config": 0, "lvm": 1, "core": 2, "transports": 3, "watch": 3, "daemon": 4}


def modules() -> dict[str, Path]:
    """Dotted names under lvmsuper.supervisor ("core.service") -> file."""
    found = {}
    for path in SUPERVISOR.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(SUPERVISOR).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """The supervisor modules ``name`` imports (relative or absolute), dotted."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[:len(package) - node.level + 1] if node.level > 1 else package
            target = [*base, *(node.module.split(".") if node.module else [])]
        elif node.module and node.module.startswith("lvmsuper.supervisor"):
            target = node.module.split(".")[2:]
        else:
            continue
        known = modules()
        for alias in node.names:  # "from . import validate" names a module
            candidate = ".".join([*target, alias.name])
            out.add(candidate if candidate in known else ".".join(target))
    return {m for m in out if m}


def layer(name: str) -> int:
    return RANK[name.split(".")[0]]


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_only_go_down(name: str) -> None:
    path = modules()[name]
    for target in imports_of(name, path):
        assert layer(target) <= layer(name), f"{name} imports {target}, a layer above it"


def test_no_import_cycle() -> None:
    graph = {name: imports_of(name, path) - {name} for name, path in modules().items()}
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack, name]))
        if name in done:
            return
        for target in graph.get(name, ()):
            visit(target, [*stack, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_the_client_never_imports_the_daemon() -> None:
    for path in CLIENT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("lvmsuper.supervisor"), path
