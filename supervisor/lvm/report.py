"""Pure parsers for LVM's JSON output: a document, then typed PV/VG/LV models.

Rule: LVM's text is read in exactly one place. Anything that is not the JSON document
LVM promises (junk lines before it, truncation, wrong types) raises
``LvmOutputInvalid`` quoting the first offending line; the one known LVM 2.03.16 quirk
(a trailing comma before ``]`` in the log report, fixed upstream in 2.03.24) is
tolerated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lvmsuper.client.errors import LvmOutputInvalid
from lvmsuper.client.models import LV, PV, VG

__all__ = ["LvmDocument", "Listing", "LvDevice", "parse_document", "pvs_from", "vgs_from",
           "lvs_from", "lv_devices_from", "excerpt"]

EXCERPT = 2000


def excerpt(text: str, limit: int = EXCERPT) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"


@dataclass(frozen=True, slots=True)
class LvmDocument:
    """One LVM JSON document: report rows by type (merged over VGs) and the log, and
    the run it came from (argv, rc, stderr, stdout) for errors found in its rows."""

    reports: dict[str, list[dict[str, str]]]
    log: list[dict[str, str]]
    context: dict[str, Any] = field(default_factory=dict)


def _invalid(reason: str, line: str, stdout: str, ctx: dict[str, Any]) -> LvmOutputInvalid:
    return LvmOutputInvalid(f"LVM output could not be parsed: {reason}: {line[:200]!r}",
                            line=line[:1000], stdout=excerpt(stdout), **ctx)


def _drop_trailing_commas(text: str) -> str:
    """Removes a ``,`` that (outside strings) is followed only by blanks and ``]``/``}``."""
    out: list[str] = []
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == ",":
            rest = text[i + 1:i + 64].lstrip()
            if rest[:1] in ("]", "}"):
                continue
        out.append(ch)
    return "".join(out)


def parse_document(stdout: str, **ctx: Any) -> LvmDocument:
    """Parses LVM's whole stdout; ``ctx`` (argv, rc, stderr) goes into errors."""
    lines = stdout.splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise _invalid("empty output", "", stdout, ctx)
    if first.strip() != "{":
        raise _invalid("unexpected line before the JSON report", first, stdout, ctx)
    try:
        doc = json.loads(stdout)
    except json.JSONDecodeError as exc:
        try:
            doc = json.loads(_drop_trailing_commas(stdout))
        except json.JSONDecodeError:
            line = lines[exc.lineno - 1] if 0 < exc.lineno <= len(lines) else ""
            raise _invalid(exc.msg, line, stdout, ctx) from None
    if not isinstance(doc, dict):
        raise _invalid("the document is not a JSON object", first, stdout, ctx)
    reports: dict[str, list[dict[str, str]]] = {}
    for entry in _list_of_dicts(doc.get("report", []), "report", stdout, ctx):
        for kind, rows in entry.items():
            reports.setdefault(kind, []).extend(_list_of_dicts(rows, kind, stdout, ctx))
    log = _list_of_dicts(doc.get("log", []), "log", stdout, ctx)
    return LvmDocument(reports, log, {**ctx, "stdout": stdout})


def _list_of_dicts(value: Any, what: str, stdout: str, ctx: dict[str, Any]) -> list[Any]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _invalid(f'"{what}" is not a list of objects', json.dumps(value)[:200],
                       stdout, ctx)
    return value


T = TypeVar("T")


class Listing(list[T]):
    """A pv or lv report's objects, and the tags of the VGs they belong to (from the
    same run: a scoped caller's read is filtered by them)."""

    vg_tags: dict[str, frozenset[str]]

    def __init__(self, items: list[T], rows: list[dict[str, str]]) -> None:
        super().__init__(items)
        self.vg_tags = {row["vg_name"]: frozenset(_list_field(row.get("vg_tags", "")))
                        for row in rows if row.get("vg_name")}


# ---- field conversion -------------------------------------------------------

def _int(value: str) -> int:
    return int(value)


def _opt_str(value: str) -> str | None:
    return value or None


def _flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise ValueError(f"expected 0 or 1, got {value!r}")
    return value == "1"


def _percent(value: str) -> float | None:
    return float(value) if value not in ("", "-1") else None


def _list_field(value: str) -> list[str]:
    return [item for item in value.split(",") if item]


def _devices(value: str) -> list[str]:
    """``/dev/sda(0),/dev/sdb(12)`` to device names, in order, without repeats."""
    out: list[str] = []
    for item in _list_field(value):
        name = item.split("(", 1)[0]
        if name not in out:
            out.append(name)
    return out


def _active(value: str) -> bool | None:
    # "active"/"" with device-mapper; "unknown" where the kernel has none.
    return {"active": True, "": False, "1": True, "0": False}.get(value)


def _open(value: str) -> bool | None:
    # "-1" (or "unknown") where the kernel has no device-mapper to ask
    return {"open": True, "1": True, "": False, "0": False}.get(value)


def _segment(row: dict[str, str]) -> dict[str, Any]:
    """One segment row: its first extent in the LV, its length in extents, and where
    it lies (``devices``: ``/dev/sda(0),/dev/sdb(12)``: each PV and its first extent)."""
    pvs = []
    for item in _list_field(row["devices"]):
        name, _, start = item.partition("(")
        pvs.append({"name": name, "start": int(start.rstrip(")")) if start else 0})
    return {"lv_start": int(row["seg_start_pe"]), "extents": int(row["seg_size_pe"]),
            "pvs": pvs}


Conv = Callable[[str], Any]
_PV_MAP: Sequence[tuple[str, str, Conv]] = (
    ("name", "pv_name", str), ("uuid", "pv_uuid", str), ("vg", "vg_name", _opt_str),
    ("size", "pv_size", _int), ("free", "pv_free", _int), ("used", "pv_used", _int),
    ("dev_size", "dev_size", _int), ("pe_start", "pe_start", _int),
    ("pe_count", "pv_pe_count", _int), ("pe_alloc_count", "pv_pe_alloc_count", _int),
    ("allocatable", "pv_allocatable", _flag), ("exported", "pv_exported", _flag),
    ("missing", "pv_missing", _flag), ("tags", "pv_tags", _list_field),
    ("mda_count", "pv_mda_count", _int), ("mda_free", "pv_mda_free", _int),
    ("attr", "pv_attr", str), ("vg_uuid", "vg_uuid", _opt_str),
    ("mda_used_count", "pv_mda_used_count", _int))
_VG_MAP: Sequence[tuple[str, str, Conv]] = (
    ("name", "vg_name", str), ("uuid", "vg_uuid", str), ("size", "vg_size", _int),
    ("free", "vg_free", _int), ("extent_size", "vg_extent_size", _int),
    ("extent_count", "vg_extent_count", _int), ("free_count", "vg_free_count", _int),
    ("pv_count", "pv_count", _int), ("lv_count", "lv_count", _int),
    ("snap_count", "snap_count", _int), ("seqno", "vg_seqno", _int),
    ("writable", "vg_permissions", lambda v: v == "writeable"),
    ("resizable", "vg_extendable", _flag), ("exported", "vg_exported", _flag),
    ("partial", "vg_partial", _flag), ("shared", "vg_shared", _flag),
    ("lock_type", "vg_lock_type", _opt_str), ("lock_args", "vg_lock_args", _opt_str),
    ("system_id", "vg_systemid", _opt_str),
    ("tags", "vg_tags", _list_field), ("mda_count", "vg_mda_count", _int),
    ("mda_free", "vg_mda_free", _int), ("attr", "vg_attr", str),
    ("mda_size", "vg_mda_size", _int))
_LV_MAP: Sequence[tuple[str, str, Conv]] = (
    ("name", "lv_name", str), ("vg", "vg_name", str), ("full_name", "lv_full_name", str),
    ("uuid", "lv_uuid", str), ("path", "lv_path", _opt_str), ("size", "lv_size", _int),
    ("segtype", "segtype", str), ("active", "lv_active", _active),
    ("permissions", "lv_attr", lambda a: {"w": "rw", "r": "r", "R": "r"}.get(a[1:2])),
    ("origin", "origin", _opt_str), ("pool", "pool_lv", _opt_str),
    ("data_percent", "data_percent", _percent),
    ("metadata_percent", "metadata_percent", _percent),
    ("devices", "devices", _devices), ("tags", "lv_tags", _list_field),
    ("attr", "lv_attr", str), ("open", "lv_device_open", _open),
    ("lock_args", "lv_lockargs", _opt_str))


def _convert(row: dict[str, str], mapping: Sequence[tuple[str, str, Conv]],
             ctx: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name, conv in mapping:
        raw = row.get(name)
        try:
            if not isinstance(raw, str):
                raise ValueError("missing or not a string")
            out[key] = conv(raw)
        except ValueError as exc:
            run = {k: v for k, v in ctx.items() if k != "stdout"}
            raise _invalid(f"field {name}: {exc}", json.dumps(row)[:500],
                           ctx.get("stdout", ""), run) from None
    return out


def pvs_from(rows: list[dict[str, str]], **ctx: Any) -> Listing[PV]:
    return Listing([PV(**_convert(row, _PV_MAP, ctx)) for row in rows], rows)


def vgs_from(rows: list[dict[str, str]], pvs: list[PV] | None = None,
             **ctx: Any) -> list[VG]:
    """VGs from ``vgs`` rows (one per PV: ``pv_name`` gives each VG's PVs) or from
    fullreport's vg rows with its PVs (``pvs``)."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        vg = _convert(row, _VG_MAP, ctx)
        seen = merged.setdefault(vg["uuid"], {**vg, "pvs": []})
        name = row.get("pv_name")
        if name and name not in seen["pvs"]:
            seen["pvs"].append(name)
    if pvs is not None:
        for pv in pvs:
            if pv.vg_uuid in merged and pv.name not in merged[pv.vg_uuid]["pvs"]:
                merged[pv.vg_uuid]["pvs"].append(pv.name)
    return [VG(**vg) for vg in merged.values()]


def lvs_from(rows: list[dict[str, str]], segments: list[dict[str, str]] | None = None,
             **ctx: Any) -> Listing[LV]:
    """LVs from ``lvs`` rows (one per segment) or from fullreport's lv rows joined with
    its seg rows; an LV's devices are those of all its segments."""
    if segments is not None:
        by_uuid: dict[str, list[dict[str, str]]] = {}
        for seg in segments:
            by_uuid.setdefault(seg.get("lv_uuid", ""), []).append(seg)
        rows = [{**row, **seg} for row in rows
                for seg in by_uuid.get(row.get("lv_uuid", ""), [{"segtype": "", "devices": ""}])]
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        lv = _convert(row, _LV_MAP, ctx)
        lv["segments"] = [] if "seg_size_pe" not in row else [_convert_segment(row, ctx)]
        seen = merged.get(lv["uuid"])
        if seen is None:
            merged[lv["uuid"]] = lv
        else:
            seen["devices"] += [d for d in lv["devices"] if d not in seen["devices"]]
            seen["segments"] += lv["segments"]
    for lv in merged.values():
        lv["segments"].sort(key=lambda seg: seg["lv_start"])
    return Listing([LV(**lv) for lv in merged.values()], rows)


def _convert_segment(row: dict[str, str], ctx: dict[str, Any]) -> dict[str, Any]:
    try:
        return _segment(row)
    except (KeyError, ValueError, TypeError) as exc:
        run = {k: v for k, v in ctx.items() if k != "stdout"}
        raise _invalid(f"segment fields: {exc}", json.dumps(row)[:500],
                       ctx.get("stdout", ""), run) from None


@dataclass(frozen=True, slots=True)
class LvDevice:
    """Where an LV's device is: its kernel major:minor (-1 when it has none)."""

    full_name: str
    path: str | None
    active: bool
    major: int
    minor: int
    size: int


def _kernel_number(value: str) -> int:
    return int(value) if value.lstrip("-").isdigit() else -1


_LV_DEVICE_MAP: Sequence[tuple[str, str, Conv]] = (
    ("full_name", "lv_full_name", str), ("path", "lv_path", _opt_str),
    ("active", "lv_active", lambda v: _active(v) is True),
    ("major", "lv_kernel_major", _kernel_number), ("minor", "lv_kernel_minor", _kernel_number),
    ("size", "lv_size", _int))


def lv_devices_from(rows: list[dict[str, str]], **ctx: Any) -> list[LvDevice]:
    """One per LV (an ``lvs`` without segment fields prints one row per LV)."""
    return [LvDevice(**_convert(row, _LV_DEVICE_MAP, ctx)) for row in rows]
