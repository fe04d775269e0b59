"""``lvmsuperctl``: the admin's and scripts' view of lvmsuperd.

Exit codes: 0 ok, 1 the daemon answered with an error (its message is printed),
2 usage error, 3 cannot connect to the daemon, or it did not answer within ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._core import DEFAULT_TIMEOUT, JobRef
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
    if "cache" in s:
        c = s["cache"]
        line = (f"cache:      {c['hits']} hits, {c['misses']} misses"
                + ("" if c.get("enabled", True) else " (off)")
                + (f"; last miss: {c['last_miss']}" if c.get("last_miss") else ""))
        lines.append(line[:79])
    if s.get("lockspaces") or s.get("lost_lockspaces"):
        lines.append(f"lockspaces: {', '.join(s.get('lockspaces') or []) or '-'}")
    for vg in s.get("lost_lockspaces") or []:
        lines.append(f"LOST lockspace: {vg} (changes in it refused until lockstart)")
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
    p.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"give up when the daemon has not answered within this time "
                   f"(default {DEFAULT_TIMEOUT:g}; a change: plus its --wait; 0: never)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print the raw JSON result")
        return c

    def scanning(c: argparse.ArgumentParser) -> argparse.ArgumentParser:
        c.add_argument("--scan-device", action="append", dest="scan_devices",
                       metavar="DEVICE", help="LVM scans only this block device for this "
                       "call, repeatable: LVM's --devices")
        return c

    def change(name: str, help: str) -> argparse.ArgumentParser:
        c = scanning(cmd(name, help))
        c.add_argument("--wait", type=float, help="seconds to wait before getting a job id")
        c.add_argument("--request-id", help="an id for this change: repeated with the same "
                       "id after a lost answer it runs only once")
        return c

    def batch(c: argparse.ArgumentParser) -> None:
        c.add_argument("lv_list", nargs="*", metavar="vg/lv",
                       help="the LV, or several of one VG (one LVM run)")
        c.add_argument("--lv", action="append", dest="lv_more", metavar="vg/lv",
                       help="an LV (repeatable; as the positionals)")

    cmd("status", "daemon status")
    cmd("ping", "check the daemon answers")
    cmd("version", "lvmsuper and LVM versions")
    c = scanning(cmd("pvs", "list physical volumes"))
    c.add_argument("--vg", help="only the PVs of this VG")
    c.add_argument("--select", help=_SELECT)
    c.add_argument("names", nargs="*", help="device paths")
    c = scanning(cmd("vgs", "list volume groups"))
    c.add_argument("--select", help=_SELECT)
    c.add_argument("names", nargs="*", help="VG names")
    c = scanning(cmd("lvs", "list logical volumes"))
    c.add_argument("--vg", help="only the LVs of this VG")
    c.add_argument("--tag", action="append", dest="tags",
                   help="only LVs carrying this tag (repeatable: all of them)")
    c.add_argument("--select", help=_SELECT)
    c.add_argument("names", nargs="*", help="vg/lv")
    c = scanning(cmd("vgck", "check a VG's metadata (LVM's vgck)"))
    c.add_argument("vg")
    cmd("jobs", "list jobs")
    c = cmd("job-status", "show one job")
    c.add_argument("job")
    c = change("pvcreate", "initialise devices as PVs")
    c.add_argument("devices", nargs="+")
    c.add_argument("--wipe", action="store_true",
                   help="let LVM wipe signatures (filesystems ...) off the devices")
    c.add_argument("--metadata-size", type=parse_size, help="each metadata area's size")
    c.add_argument("--metadata-copies", type=int, choices=[0, 1, 2],
                   help="metadata areas per PV")
    c.add_argument("--metadata-ignore", type=_yes_no, metavar="y|n", help=_MDA_IGNORE)
    c = change("pvremove", "wipe PV labels")
    c.add_argument("devices", nargs="+")
    c = change("vgcreate", "create a VG")
    c.add_argument("name")
    c.add_argument("devices", nargs="+")
    c.add_argument("--extent-size", type=parse_size, help="the VG's extent size (e.g. 4M)")
    c.add_argument("--tag", action="append", dest="tags", help="a tag (repeatable)")
    c.add_argument("--wipe", action="store_true",
                   help="let LVM wipe signatures (filesystems ...) off the devices")
    c.add_argument("--auto-activation", type=_yes_no, metavar="y|n",
                   help="whether LVM's autoactivation activates the VG")
    c.add_argument("--shared", action="store_true",
                   help="a VG shared by hosts through lvmlockd and sanlock")
    c = change("vgremove", "remove a VG")
    c.add_argument("vg")
    c.add_argument("--force", action="store_true", help="also remove its LVs")
    c = change("lvcreate", "create a linear LV")
    c.add_argument("vg")
    c.add_argument("name")
    size = c.add_mutually_exclusive_group()
    size.add_argument("--size", "-L", type=parse_size, help="the size (e.g. 10G)")
    size.add_argument("--extents", "-l", help="count, or N%%FREE / N%%VG")
    c.add_argument("--tag", action="append", dest="tags", help="a tag (repeatable)")
    c.add_argument("--type", choices=["linear", "snapshot", "thin-pool", "thin"],
                   help="the LV's type (default linear)")
    c.add_argument("--origin", help="snapshot: the origin LV's name")
    c.add_argument("--pool", help="thin: the thin pool's name")
    c.add_argument("--virtual-size", type=parse_size, help="thin: the virtual size")
    c.add_argument("--stripes", type=int, help="stripe over this many PVs")
    c.add_argument("--stripe-size", type=parse_size, help="the stripe size (e.g. 64K)")
    c.add_argument("--contiguous", action="store_true", help="contiguous allocation")
    c.add_argument("--activate", type=_yes_no, metavar="y|n", help=_ACTIVATE)
    c.add_argument("--zero", type=_yes_no, metavar="y|n",
                   help="zero the start of the new LV (y) or not (n)")
    c.add_argument("--device", action="append", dest="devices", help="allocate from this PV")
    c.add_argument("--wipe-signatures", type=_yes_no, metavar="y|n",
                   help="wipe signatures found in the new LV's extents (y) or not (n)")
    c = change("lvremove", "remove LVs (several: one VG, one LVM run)")
    batch(c)
    c = change("lvresize", "resize an LV to a new size")
    c.add_argument("lv", help="vg/lv")
    c.add_argument("size", type=parse_size, help="the new size (e.g. 20G)")
    c.add_argument("--force", action="store_true", help="allow shrinking")
    c = change("lvrename", "rename an LV")
    c.add_argument("lv", help="vg/lv")
    c.add_argument("new_name")
    c = change("lvchange", "activate/deactivate, refresh, permission, tags of LVs")
    batch(c)
    _change_flags(c, permission=True)
    c.add_argument("--refresh", action="store_true",
                   help="reload the LVs' devices from the metadata (alone)")
    c = change("vgextend", "add PVs to a VG")
    c.add_argument("vg")
    c.add_argument("devices", nargs="+")
    c.add_argument("--wipe", action="store_true",
                   help="let LVM wipe signatures (filesystems ...) off the devices")
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
    c = change("lockstart", "start shared VG lockspaces here - slow: use --wait")
    c.add_argument("vg", nargs="?", help="this shared VG only")
    c = change("lockstop", "stop shared VG lockspaces here")
    c.add_argument("vg", nargs="?", help="this shared VG only")
    c = change("pvresize", "resize a PV (default: to its device's size)")
    c.add_argument("device")
    c.add_argument("--size", type=parse_size, help="the new size (e.g. 100G)")
    c = change("pvchange", "allocatable flag and tags of a PV")
    c.add_argument("device")
    c.add_argument("--allocatable", type=_yes_no, metavar="y|n",
                   help="whether new extents may be allocated on the PV")
    c.add_argument("--metadata-ignore", type=_yes_no, metavar="y|n", help=_MDA_IGNORE)
    c.add_argument("--addtag", action="append", dest="add_tags", help=_ADDTAG)
    c.add_argument("--deltag", action="append", dest="del_tags", help=_DELTAG)
    c = change("pvmove", "move extents off a PV (always a job)")
    c.add_argument("source")
    c.add_argument("destination", nargs="?")
    c.add_argument("--lv", help="only this vg/lv")
    c = cmd("job-cancel", "stop a job where LVM can stop cleanly (pvmove)")
    c.add_argument("job")
    c = scanning(cmd("lv-open", "open an active LV as root and run a command on it: the "
                     "descriptor is its standard input or --fd N; no root and no shell "
                     "needed; exits with the command's status"))
    c.add_argument("lv", help="vg/lv")
    c.add_argument("--mode", choices=["r", "rw"], required=True,
                   help="read-only or read-write")
    c.add_argument("--shared", action="store_true",
                   help="rw without O_EXCL: others may open it for writing too")
    c.add_argument("--fd", type=int, metavar="N",
                   help="the descriptor's number in the command: 0 by default")
    c.add_argument("argv", nargs="*", metavar="CMD",
                   help="the command and its arguments after --")
    cmd("monitor", "print changes as they happen, one line each (--json: the raw "
        "notification); follows the daemon through restarts")
    c = cmd("call", "call any method with JSON params")
    c.add_argument("method")
    c.add_argument("params", nargs="?", default="{}", help="a JSON object")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _yes_no(text: str) -> bool:
    if text.lower() in ("y", "yes", "true", "1"):
        return True
    if text.lower() in ("n", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: use y or n")


_SELECT = "an LVM selection, e.g. 'vg_free > 0' (see lvmreport(7))"
_ACTIVATE = "activate (y) or deactivate (n)"
_ACTIVATE_MODE = ("activate (y) or deactivate (n); in a shared VG exclusive (ey: y is "
                  "the same) or shared (sy)")
_ADDTAG = "add this tag (repeatable)"
_DELTAG = "remove this tag (repeatable)"
_MDA_IGNORE = "keep the PV's metadata areas but leave them unused (y) or use them (n)"


def _activation(text: str) -> bool | str:
    modes = {"ey": "exclusive", "exclusive": "exclusive", "sy": "shared", "shared": "shared"}
    return modes[text.lower()] if text.lower() in modes else _yes_no(text)


def _change_flags(c: argparse.ArgumentParser, permission: bool = False) -> None:
    c.add_argument("--activate", type=_activation, metavar="y|n|ey|sy", help=_ACTIVATE_MODE)
    if permission:
        c.add_argument("--permission", choices=["r", "rw"], help="read-only or read-write")
    c.add_argument("--addtag", action="append", dest="add_tags", help=_ADDTAG)
    c.add_argument("--deltag", action="append", dest="del_tags", help=_DELTAG)


_SKIP = {"socket", "json", "command", "dbus", "timeout"}
_FLAGS = {"force", "missing", "contiguous", "wipe", "refresh", "shared"}  # store_true: absent: not given


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params = {k: v for k, v in vars(args).items()
              if k not in _SKIP and v is not None and v != []
              and not (k in _FLAGS and v is False)}
    if args.command == "lvcreate" and "extents" in params and params["extents"].isdigit():
        params["extents"] = int(params["extents"])
    if args.command in ("job-status", "job-cancel"):
        return {"job": params["job"]}
    if args.command in ("lvchange", "lvremove"):
        names = params.pop("lv_list", []) + params.pop("lv_more", [])
        if len(names) == 1:
            params["lv"] = names[0]
        else:
            params["lvs"] = names  # none: the daemon says what is missing
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
        print(table("lv", wire if isinstance(wire, list) else [wire]))
    elif command == "vgck":
        print("\n".join(["ok" if wire["ok"] else "failed"] +
                        [f"  {e.get('type', '')}: {e.get('message', '')}" for e in wire["log"]]))
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


def change_line(params: dict[str, Any]) -> str:
    """One notification as one line: when, its place in the stream, where it came
    from, what changed."""
    when = time.strftime("%H:%M:%S")
    if params.get("reset"):
        return (f"{when} reset (boot {params.get('boot')}, seq {params.get('seq')}): "
                "changes were missed; read everything again")
    objects = ", ".join(
        f"{o.get('type')} {o.get('name')}" + (f" (seqno {o['seqno']})" if "seqno" in o else "")
        for o in params.get("objects", []))
    return f"{when} #{params.get('seq')} {params.get('source', '?')}: {objects}"


def monitor(client: Client, as_json: bool) -> int:
    """``lvmsuperctl monitor``: an admin's ``journalctl -f`` for storage. Ctrl-C ends it
    whatever SIGINT state it inherited (ignored or blocked by whoever started it)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        for params in client.changes():
            print(json.dumps(params) if as_json else change_line(params), flush=True)
    except KeyboardInterrupt:
        return 0
    return 0


def lv_open_run(client: Client, args: argparse.Namespace) -> int:
    """``lvmsuperctl lv-open``: CMD runs (no shell) with the LV's descriptor as its
    standard input, or as descriptor N (``--fd``); the exit status is CMD's."""
    command = args.argv
    target = 0 if args.fd is None else args.fd
    if not command or target < 0:
        print("lvmsuperctl: lv-open needs a command after -- and --fd N >= 0",
              file=sys.stderr)
        return 2
    if target > 2 and _is_open(target):
        print(f"lvmsuperctl: --fd {target} is in use here; choose another number",
              file=sys.stderr)
        return 2
    handle = client.lv_open(args.lv, args.mode, shared=args.shared or None,
                            scan_devices=args.scan_devices)
    with handle:
        client.close()  # the command inherits nothing of the connection
        fd = handle.fileno()
        std = {0: "stdin", 1: "stdout", 2: "stderr"}
        try:
            if target in std:
                proc = subprocess.run(command, **{std[target]: fd})  # type: ignore[call-overload]
            else:
                os.dup2(fd, target)  # inheritable: the command gets it as N
                try:
                    proc = subprocess.run(command, pass_fds=(target,))
                finally:
                    os.close(target)
        except OSError as exc:
            print(f"lvmsuperctl: cannot run {command[0]}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 127
    code = int(proc.returncode)
    return 128 - code if code < 0 else code


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``lv-open ... -- CMD ...``: lvmsuperctl's own arguments, and CMD's (argparse
    would take CMD's options for its own)."""
    if "lv-open" in argv and "--" in argv[argv.index("lv-open"):]:
        cut = argv.index("--", argv.index("lv-open"))
        return argv[:cut], argv[cut + 1:]
    return argv, None


def main(argv: list[str] | None = None) -> int:
    ours, command = _split_command(sys.argv[1:] if argv is None else list(argv))
    args = _parser().parse_args(ours)
    if command is not None:
        if args.command != "lv-open" or args.argv:
            print("lvmsuperctl: give lv-open's command once: after --", file=sys.stderr)
            return 2
        args.argv = command
    method = args.command.replace("-", "_")
    if method == "monitor":
        with Client(args.socket, timeout=args.timeout or None,
                    transport="dbus" if args.dbus else "socket") as client:
            return monitor(client, args.json)
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
        with Client(args.socket, timeout=args.timeout or None,
                    transport="dbus" if args.dbus else "socket") as client:
            if method == "lv_open":
                return lv_open_run(client, args)
            result = client.call(method, **params)
    except ConnectionFailed as exc:
        if "timeout" in exc.data:  # connected, but nobody answered: a daemon that is not up
            print(f"lvmsuperctl: the daemon did not answer: {exc.message}; see "
                  "'systemctl status lvmsuper' and 'journalctl -u lvmsuper'", file=sys.stderr)
        else:
            print(f"lvmsuperctl: {exc.message}", file=sys.stderr)
        return 3
    except LvmSuperError as exc:
        print(f"lvmsuperctl: {exc.name}: {exc.message}", file=sys.stderr)
        return 1
    _print(args.command, result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
