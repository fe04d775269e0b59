#!/usr/bin/env python3
"""Writes lvmsuperd(8), lvmsuperctl(1) and lvmsuper.toml(5) as roff into a directory.

Rule: what the code declares is read from the code, never restated: lvmsuperd's and
lvmsuperctl's argparse parsers (options, commands), the daemon's method table (names,
roles, parameters), the client's method declarations (what each method does), the
config schema and the defaults of ``Config``. The prose around it lives in one file,
man/prose.toml. Every import of the daemon's internals is in ``_daemon()``: the one
place to re-point when its modules move.

    tools/manpages.py OUTDIR [--prose FILE]

Needs ``lvmsuper`` importable (the venv, or PYTHONPATH at a built or installed tree).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import sys
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PROSE = Path(__file__).resolve().parent.parent / "man" / "prose.toml"


@dataclasses.dataclass(frozen=True)
class MethodFacts:
    name: str
    role: str
    change: bool
    params: tuple[tuple[str, bool], ...]  # (name, required)


@dataclasses.dataclass(frozen=True)
class KeyFacts:
    section: str
    key: str
    default: str  # as TOML, or "unset"


@dataclasses.dataclass(frozen=True)
class Facts:
    daemon: argparse.ArgumentParser
    cli: argparse.ArgumentParser
    methods: tuple[MethodFacts, ...]
    keys: tuple[KeyFacts, ...]
    method_docs: dict[str, str]
    version: str


def _daemon() -> tuple[argparse.ArgumentParser, tuple[MethodFacts, ...], tuple[KeyFacts, ...]]:
    """The daemon's command line, method table and config schema with defaults."""
    from lvmsuper.supervisor.config import _SCHEMA, Config
    from lvmsuper.supervisor.daemon import parser
    from lvmsuper.supervisor.core.methods import METHODS

    methods = tuple(MethodFacts(m.name, str(m.role.value), m.change,
                                tuple((p, spec.required) for p, spec in m.params.items()))
                    for m in METHODS.values())
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    keys = tuple(KeyFacts(section, key, _toml(defaults[attr], octal=convert.__name__ == "_mode"))
                 for section, table in _SCHEMA.items()
                 for key, (attr, convert) in table.items())
    return parser(), methods, keys


def _client() -> tuple[argparse.ArgumentParser, dict[str, str], str]:
    """lvmsuperctl's command line, each method's description, the version."""
    from lvmsuper.client import __version__
    from lvmsuper.client._core import Methods, rpc
    from lvmsuper.client.cli import _parser

    docs = {name: inspect.cleandoc(spec.__doc__ or "") for name, spec in vars(Methods).items()
            if isinstance(spec, rpc)}
    return _parser(), docs, __version__


def facts() -> Facts:
    daemon, methods, keys = _daemon()
    cli, docs, version = _client()
    return Facts(daemon, cli, methods, keys, docs, version)


def _toml(value: Any, octal: bool = False) -> str:
    if value is None or value == "":
        return "unset"
    if octal and isinstance(value, int):
        return f'"{value:04o}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


# ---- roff ----------------------------------------------------------------------------

def esc(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, `code` in bold, and a line
    may break after a slash (long paths on narrow terminals)."""
    text = text.replace("\\", "\\e").replace("-", "\\-").replace("/", "/\\:")
    return re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)


def line(text: str) -> str:
    """A text line that roff cannot take for a request."""
    return "\\&" + text if text.startswith((".", "'")) else text


def prose(text: str) -> list[str]:
    """man/prose.toml's markup: paragraphs, indented examples, ``term :: text``."""
    out: list[str] = []
    for block in re.split(r"\n[ \t]*\n", text.strip("\n")):
        rows = block.split("\n")
        if all(row.startswith("  ") for row in rows):
            out += [".PP", ".RS 4", ".nf", *(line(esc(row[2:])) for row in rows),
                    ".fi", ".RE"]
        elif " :: " in rows[0]:
            term, body = " ".join(row.strip() for row in rows).split(" :: ", 1)
            out += [".TP", line(esc(term)), line(esc(body))]
        else:
            out += [".PP", line(esc(" ".join(row.strip() for row in rows)))]
    return out


def header(name: str, section: int, summary: str, version: str, manual: str) -> list[str]:
    epoch = _source_date()
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch)) if epoch is not None else ""
    return [f".\\\" Generated by tools/manpages.py from the code and man/prose.toml.",
            f'.TH "{name.upper()}" "{section}" "{date}" "lvmsuper {version}" "{manual}"',
            ".nh", ".ad l", ".SH NAME", line(f"{esc(name)} \\- {esc(summary)}")]


def _source_date() -> int | None:
    """SOURCE_DATE_EPOCH, for reproducible builds (dpkg-buildpackage sets it)."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else None


def usage(parser: argparse.ArgumentParser) -> str:
    """argparse's own usage line, unwrapped, without ``[-h]``."""
    wide = argparse.HelpFormatter(parser.prog, width=100000)
    wide.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, "")
    return " ".join(wide.format_help().split()).replace("[-h] ", "")


def invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"\\fI{esc(str(action.metavar or action.dest))}\\fR"
    if action.nargs == 0:
        return ", ".join(f"\\fB{esc(o)}\\fR" for o in action.option_strings)
    meta = action.metavar or ("{" + ",".join(map(str, action.choices)) + "}"
                              if action.choices else action.dest.upper())
    return ", ".join(f"\\fB{esc(o)}\\fR \\fI{esc(str(meta))}\\fR"
                     for o in action.option_strings)


def _documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every option (the usage line shows only its first spelling), and the arguments
    that have a help text."""
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
            and a.help != argparse.SUPPRESS and (a.help or a.option_strings)]


def _key(action: argparse.Action) -> tuple[tuple[str, ...], str]:
    return tuple(action.option_strings), str(action.help)


def options(actions: list[argparse.Action], skip: frozenset[tuple[tuple[str, ...], str]]
            = frozenset(), used_by: dict[tuple[tuple[str, ...], str], list[str]] | None = None
            ) -> list[str]:
    """A tagged paragraph per option or argument (less ``skip``; with ``used_by``,
    naming the commands that take it)."""
    out: list[str] = []
    for action in actions:
        if _key(action) in skip:
            continue
        text = action.help.replace("%%", "%") if action.help else ""
        if used_by is not None:
            text += " (" + ", ".join(used_by[_key(action)]) + ")"
        out += [".TP", line(invocation(action)), *([line(esc(text))] if text else [])]
    return out


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each lvmsuperctl command, in the parser's order."""
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    return [(name, helps.get(name, ""), p) for name, p in sub.choices.items()]


# ---- the pages -----------------------------------------------------------------------

def lvmsuperd_page(f: Facts, text: dict[str, Any]) -> str:
    out = header("lvmsuperd", text["section"], text["summary"], f.version,
                 "System Administration")
    out += [".SH SYNOPSIS", line(esc(usage(f.daemon))), ".SH DESCRIPTION",
            *prose(text["description"]), ".SH OPTIONS", *options(_documented(f.daemon)),
            ".SH METHODS", *prose(text["methods_intro"])]
    for m in f.methods:
        params = ", ".join(f"`{p}`" if required else f"[`{p}`]" for p, required in m.params)
        out += [".TP", line(f"\\fB{esc(m.name)}\\fR"),
                line(esc(f"Role `{m.role}`; parameters: {params or 'none'}.")),
                *([".br", line(esc(_flat(f.method_docs[m.name])))]
                  if f.method_docs.get(m.name) else [])]
    out += _sections(text)
    return "\n".join(out) + "\n"


def lvmsuperctl_page(f: Facts, text: dict[str, Any]) -> str:
    out = header("lvmsuperctl", text["section"], text["summary"], f.version,
                 "User Commands")
    out += [".SH SYNOPSIS", line(esc(usage(f.cli))), ".SH DESCRIPTION",
            *prose(text["description"]), ".SH OPTIONS", *options(_documented(f.cli))]
    commands = subcommands(f.cli)
    # an option many commands take (--json, --wait) is told once, with who takes it
    used_by: dict[tuple[tuple[str, ...], str], list[str]] = {}
    for name, _, parser in commands:
        for action in _documented(parser):
            if action.option_strings:
                used_by.setdefault(_key(action), []).append(name)
    common = frozenset(k for k, names in used_by.items() if len(names) > 3)
    out += [".SH COMMANDS"]
    for name, help_text, parser in commands:
        out += [".SS " + esc(name), line(esc(usage(parser))), ".PP", line(esc(help_text)),
                *options(_documented(parser), skip=common)]
    out += [".SS Options of several commands"]
    for name, _, parser in commands:
        taken = [a for a in _documented(parser) if _key(a) in common]
        out += options(taken, used_by=used_by)
        common -= {_key(a) for a in taken}
    out += _sections(text)
    return "\n".join(out) + "\n"


def toml_page(f: Facts, text: dict[str, Any]) -> str:
    meanings: dict[str, str] = text["keys"]
    known = {f"{k.section}.{k.key}" for k in f.keys}
    if known != set(meanings):
        raise SystemExit("man/prose.toml and the config schema disagree: "
                         f"no text for {sorted(known - set(meanings))}, "
                         f"no such key {sorted(set(meanings) - known)}")
    out = header("lvmsuper.toml", text["section"], text["summary"], f.version,
                 "File Formats")
    out += [".SH DESCRIPTION", *prose(text["description"]), ".SH KEYS"]
    section = ""
    for k in f.keys:
        if k.section != section:
            section = k.section
            out += [".SS " + esc(f"[{section}]")]
        out += [".TP", line(f"\\fB{esc(k.key)}\\fR (default: {esc(k.default)})"),
                line(esc(meanings[f"{k.section}.{k.key}"]))]
    out += [".SH EXAMPLE", *prose(text["example"])]
    out += _sections(text)
    return "\n".join(out) + "\n"


def _flat(doc: str) -> str:
    return " ".join(doc.replace("``", "`").split())


def _sections(text: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for sec in text.get("sections", []):
        out += [".SH " + esc(sec["title"]), *prose(sec["text"])]
    return out


PAGES = {"lvmsuperd.8": ("lvmsuperd", lvmsuperd_page),
         "lvmsuperctl.1": ("lvmsuperctl", lvmsuperctl_page),
         "lvmsuper.toml.5": ("lvmsuper.toml", toml_page)}


def write_pages(outdir: Path, prose_file: Path = PROSE) -> list[Path]:
    with open(prose_file, "rb") as fh:
        text = tomllib.load(fh)
    f = facts()
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, (key, render) in PAGES.items():
        path = outdir / filename
        path.write_text(render(f, text[key]))
        written.append(path)
    return written


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write lvmsuper's man pages.")
    p.add_argument("outdir", type=Path)
    p.add_argument("--prose", type=Path, default=PROSE)
    args = p.parse_args(None if argv is None else list(argv))
    for path in write_pages(args.outdir, args.prose):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
