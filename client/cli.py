"""``lvmsuperctl``: the admin's and scripts' view of lvmsuperd.

Exit codes: 0 ok, 1 the daemon answered with an error (its message is printed),
2 usage error, 3 cannot connect to the daemon.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._core import JobRef
from .errors import ConnectionFailed, LvmSuperError
from .models import to_wire
from .sync import Client

__all__ = ["main", "parse_size", "human_size"]

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50,
          "E": 2**60}


def parse_size(text: str) -> int:
    """``10G``, ``512M``, ``1.5T``, ``4096`` (bytes); binary units (K = 1024). Exact
    (integer arithmetic, never float, so byte counts beyond 2**53 keep every digit); a
    fraction of a byte is dropped."""
    match = re.fullmatch(r"\s*([0-9]{1,40})(?:\.([0-9]{1,40}))?\s*([BKMGTPE]?)(?:I?B)?\s*",
                         text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 10G or 512M")
    whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
    # "1.5G" is 15 * 2**30 // 10: scale by the unit first, divide last
    divisor: int = 10 ** len(fraction)
    value = int(whole + fraction) * _UNITS[unit] // divisor
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive size")
    return value


def human_size(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.2f}{unit}"
        value /= 1024
    return str(value)


_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "pv": [("PV", "name"), ("VG", "vg"), ("Attr", "attr"), ("PSize", "size#"),
           ("PFree", "free#"), ("Tags", "tags")],
    "vg": [("VG", "name"), ("#PV", "pv_count"), ("#LV", "lv_count"), ("Attr", "attr"),
           ("VSize", "size#"), ("VFree", "free#"), ("Tags", "tags")],
    "lv": [("LV", "name"), ("VG", "vg"), ("Attr", "attr"), ("LSize", "size#"),
           ("Type", "segtype"), ("Active", "active"), ("Devices", "devices"),
           ("Tags", "tags")],
    "job": [("Job", "id"), ("Method", "method"), ("State", "state"),
            ("Progress", "progress"), ("UID", "uid")],
}


def _cell(row: dict[str, Any], key: str) -> str:
    if key.endswith("#"):
        return human_size(row.get(key[:-1]))
    value = row.get(key)
    if isinstance(value, list):
        return ",".join(map(str, value))
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(kind: str, rows: Sequence[dict[str, Any]]) -> str:
    cols = _COLUMNS[kind]
    cells = [[title for title, _ in cols]] + [[_cell(r, key) for _, key in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in cells)


def status_text(s: dict[str, Any]) -> str:
    req, lat = s["requests"], s["latency_ms"]
    lines = [
        f"lvmsuperd {s['version']}  pid {s['pid']}  up {s['uptime']:.0f} s",
        f"LVM:        {s['lvm_version']}",
        f"transports: {', '.join(s['transports']) or '-'}   clients: {s['clients']}",
        f"requests:   {req['total']} total, {req['failed']} failed, "
        f"{req['in_flight']} in flight, {req['queued']} queued",
        f"latency:    p50 {_ms(lat['p50'])}  p99 {_ms(lat['p99'])}",
        f"jobs:       {s['jobs']} running",
    ]
    if s["last_errors"]:
        lines.append("last errors:")
        for err in s["last_errors"]:
            when = time.strftime("%H:%M:%S", time.localtime(err["time"]))
            lines.append(f"  {when} {err['method']}: {err['error']}: {err['message']}"[:79])
    return "\n".join(lines)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lvmsuperctl", description="Talk to lvmsuperd.")
    p.add_argument("--socket", help="daemon socket (default $LVMSUPER_SOCKET or "
                   "/run/lvmsuper/lvmsuper.sock)")
    p.add_argument("--json", action="store_true", help="print the raw JSON result")
    p.add_argument("--dbus", action="store_true",
                   help="talk over the D-Bus system bus ($DBUS_SYSTEM_BUS_ADDRESS) instead")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print the raw JSON result")
        return c

    def change(name: str, help: str) -> argparse.ArgumentParser:
        c = cmd(name, help)
        c.add_argument("--wait", type=float, help="seconds to wait before getting a job id")
        return c

    cmd("status", "daemon status")
    cmd("ping", "check the daemon answers")
    cmd("version", "lvmsuper and LVM versions")
    c = cmd("pvs", "list physical volumes")
    c.add_argument("--vg")
    c.add_argument("--select")
    c.add_argument("names", nargs="*")
    c = cmd("vgs", "list volume groups")
    c.add_argument("--select")
    c.add_argument("names", nargs="*")
    c = cmd("lvs", "list logical volumes")
    c.add_argument("--vg")
    c.add_argument("--tag", action="append", dest="tags")
    c.add_argument("--select")
    c.add_argument("names", nargs="*", help="vg/lv")
    cmd("jobs", "list jobs")
    c = cmd("job-status", "show one job")
    c.add_argument("job")
    c = change("pvcreate", "initialise devices as PVs")
    c.add_argument("devices", nargs="+")
    c = change("pvremove", "wipe PV labels")
    c.add_argument("devices", nargs="+")
    c = change("vgcreate", "create a VG")
    c.add_argument("name")
    c.add_argument("devices", nargs="+")
    c.add_argument("--extent-size", type=parse_size)
    c.add_argument("--tag", action="append", dest="tags")
    c = change("vgremove", "remove a VG")
    c.add_argument("vg")
    c.add_argument("--force", action="store_true", help="also remove its LVs")
    c = change("lvcreate", "create a linear LV")
    c.add_argument("vg")
    c.add_argument("name")
    size = c.add_mutually_exclusive_group()
    size.add_argument("--size", "-L", type=parse_size)
    size.add_argument("--extents", "-l", help="count, or N%%FREE / N%%VG")
    c.add_argument("--tag", action="append", dest="tags")
    c.add_argument("--type", choices=["linear", "snapshot", "thin-pool", "thin"])
    c.add_argument("--origin", help="snapshot: the origin LV's name")
    c.add_argument("--pool", help="thin: the thin pool's name")
    c.add_argument("--virtual-size", type=parse_size, help="thin: the virtual size")
    c.add_argument("--stripes", type=int)
    c.add_argument("--stripe-size", type=parse_size)
    c.add_argument("--contiguous", action="store_true")
    c.add_argument("--activate", type=_yes_no, metavar="y|n")
    c.add_argument("--zero", type=_yes_no, metavar="y|n")
    c.add_argument("--device", action="append", dest="devices", help="allocate from this PV")
    c = change("lvremove", "remove an LV")
    c.add_argument("lv", help="vg/lv")
    c = change("lvresize", "resize an LV to a new size")
    c.add_argument("lv", help="vg/lv")
    c.add_argument("size", type=parse_size)
    c.add_argument("--force", action="store_true", help="allow shrinking")
    c = change("lvrename", "rename an LV")
    c.add_argument("lv", help="vg/lv")
    c.add_argument("new_name")
    c = change("lvchange", "activate/deactivate, permission, tags of an LV")
    c.add_argument("lv", help="vg/lv")
    _change_flags(c, permission=True)
    c = change("vgextend", "add PVs to a VG")
    c.add_argument("vg")
    c.add_argument("devices", nargs="+")
    c = change("vgreduce", "remove PVs from a VG")
    c.add_argument("vg")
    c.add_argument("devices", nargs="*")
    c.add_argument("--missing", action="store_true", help="remove missing PVs")
    c = change("vgrename", "rename a VG")
    c.add_argument("vg")
    c.add_argument("new_name")
    c = change("vgchange", "activate/deactivate, tags of a VG")
    c.add_argument("vg")
    _change_flags(c)
    c = change("pvresize", "resize a PV (default: to its device's size)")
    c.add_argument("device")
    c.add_argument("--size", type=parse_size)
    c = change("pvchange", "allocatable flag and tags of a PV")
    c.add_argument("device")
    c.add_argument("--allocatable", type=_yes_no, metavar="y|n")
    c.add_argument("--addtag", action="append", dest="add_tags")
    c.add_argument("--deltag", action="append", dest="del_tags")
    c = change("pvmove", "move extents off a PV (always a job)")
    c.add_argument("source")
    c.add_argument("destination", nargs="?")
    c.add_argument("--lv", help="only this vg/lv")
    c = cmd("job-cancel", "stop a job where LVM can stop cleanly (pvmove)")
    c.add_argument("job")
    c = cmd("call", "call any method with JSON params")
    c.add_argument("method")
    c.add_argument("params", nargs="?", default="{}", help="a JSON object")
    return p


def _yes_no(text: str) -> bool:
    if text.lower() in ("y", "yes", "true", "1"):
        return True
    if text.lower() in ("n", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: use y or n")


def _change_flags(c: argparse.ArgumentParser, permission: bool = False) -> None:
    c.add_argument("--activate", type=_yes_no, metavar="y|n")
    if permission:
        c.add_argument("--permission", choices=["r", "rw"])
    c.add_argument("--addtag", action="append", dest="add_tags")
    c.add_argument("--deltag", action="append", dest="del_tags")


_SKIP = {"socket", "json", "command", "dbus"}
_FLAGS = {"force", "missing", "contiguous"}  # store_true: absent means "not given"


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params = {k: v for k, v in vars(args).items()
              if k not in _SKIP and v is not None and v != []
              and not (k in _FLAGS and v is False)}
    if args.command == "lvcreate" and "extents" in params and params["extents"].isdigit():
        params["extents"] = int(params["extents"])
    if args.command in ("job-status", "job-cancel"):
        return {"job": params["job"]}
    return params


def _print(command: str, result: Any, as_json: bool) -> None:
    wire = to_wire(result)
    if isinstance(result, JobRef):
        print(json.dumps({"job": result.id}) if as_json else
              f"still running as job {result.id}; see 'lvmsuperctl job-status {result.id}'")
    elif as_json:
        print(json.dumps(wire, indent=2))
    elif command == "status":
        print(status_text(wire))
    elif command in ("pvs", "vgs", "lvs", "jobs"):
        print(table(command.rstrip("s") if command != "jobs" else "job", wire))
    elif command == "pvcreate":
        print(table("pv", wire))
    elif command == "vgcreate":
        print(table("vg", [wire]))
    elif command in ("lvcreate", "lvresize", "lvrename", "lvchange"):
        print(table("lv", [wire]))
    elif command in ("vgextend", "vgreduce", "vgrename", "vgchange"):
        print(table("vg", [wire]))
    elif command in ("pvresize", "pvchange"):
        print(table("pv", [wire]))
    elif command in ("job-status", "job-cancel"):
        print(table("job", [wire]))
    elif isinstance(wire, dict) and "removed" in wire:
        print("removed: " + ", ".join(wire["removed"]))
    else:
        print(json.dumps(wire, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    method = args.command.replace("-", "_")
    try:
        if method == "call":
            params = json.loads(args.params)
            if not isinstance(params, dict):
                raise ValueError("params must be a JSON object")
            method = args.method
        else:
            params = _params(args)
    except ValueError as exc:
        print(f"lvmsuperctl: bad JSON params: {exc}", file=sys.stderr)
        return 2
    try:
        with Client(args.socket, transport="dbus" if args.dbus else "socket") as client:
            result = client.call(method, **params)
    except ConnectionFailed as exc:
        print(f"lvmsuperctl: {exc.message}", file=sys.stderr)
        return 3
    except LvmSuperError as exc:
        print(f"lvmsuperctl: {exc.name}: {exc.message}", file=sys.stderr)
        return 1
    _print(args.command, result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
