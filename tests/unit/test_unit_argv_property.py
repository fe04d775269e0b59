"""Property: no caller value ever becomes an LVM option, or lands outside its slot.

Generated requests (valid, hostile and junk values for every parameter of every method)
go the whole way a real request goes — encoded, split into arbitrary chunks, decoded by
the line codec, shape-checked, then ``Service.call`` with its validators, policy, jobs
and the method handlers — down to the argv the runner would execute; a recording
runner stands in for LVM. Every argv is then read the way LVM's option parser reads
it, and:

- every option is one of the fixed options the builders use, never caller text;
- no positional starts with ``-`` (an option to LVM) or ``@`` (a tag: many objects);
- no element holds NUL or a newline; ``--config`` is always exactly the pinned string;
- each caller string appears only in an option slot its parameter may use (a tag only
  after ``--addtag``/``--deltag``, a selection only after ``--select`` ...), and values
  of fixed-vocabulary options are from that vocabulary;
- every positional is a caller value of the parameter the command's positional schema
  (``POSITIONALS``) puts at that index: ``vgrename`` gets the old name then the new one,
  ``vgextend`` the VG then devices, ``lvrename`` the LV's VG, the LV, then the new name
  ..., so a builder that swapped two positionals, or put a device where a VG goes, fails;
- a read never runs a mutating command; a refused request (InvalidRequest) never ran
  one either; nothing ends as ``Internal``.

Pure: no root, no LVM, no sockets. ``validate.resolve_device`` is replaced by
/dev-containment checks (the block-device test needs real devices; it is not about argv
shape and is covered in test_unit_validate).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lvmsuper.client.errors import Internal, InvalidRequest, LvmSuperError
from lvmsuper.client.protocol import BadLine, LineCodec, make_request, parse_request
from lvmsuper.supervisor.core import validate
from lvmsuper.supervisor.lvm import argv as lvmcmd
from lvmsuper.supervisor.core.auth import Caller, Role
from lvmsuper.supervisor.config import Config
from lvmsuper.supervisor.lvm.calls import Lvm
from lvmsuper.supervisor.core.methods import METHODS
from lvmsuper.supervisor.lvm.runner import RunResult
from lvmsuper.supervisor.core.service import Service

# ---- how LVM reads an argv --------------------------------------------------------

VALUE_OPTIONS = {"--config", "--reportformat", "--units", "-o", "--select", "--configreport",
                 "--name", "--size", "--extents", "--type", "--virtualsize", "--thinpool",
                 "--addtag", "--deltag", "--activate", "--zero", "--contiguous", "--stripes",
                 "--stripesize", "--physicalextentsize", "--setphysicalvolumesize",
                 "--allocatable", "--permission", "-i", "--metadatasize", "--metadatacopies",
                 "--metadataignore", "--setautoactivation", "--wipesignatures", "--devices",
                 "--typeconfig", "--lockopt"}
FLAG_OPTIONS = {"--nosuffix", "--binary", "--yes", "--force", "--snapshot", "--removemissing",
                "--abort", "--ignoreactivationskip", "--refresh", "--shared", "--lockstart",
                "--lockstop"}
READS = {"pvs", "vgs", "lvs", "fullreport", "version", "vgck", "config"}


def _pinned() -> set[str]:
    """The daemon's own --config strings (with and without LVM's JSON command log)."""
    pins = {lvmcmd.pinned_config(None)}
    try:
        pins.add(lvmcmd.pinned_config(None, command_log=False))
    except TypeError:
        pass
    return pins


PINNED = _pinned()
FIELD_LISTS = {",".join(f) for f in (lvmcmd.PV_FIELDS, lvmcmd.VG_FIELDS, lvmcmd.VG_ONLY_FIELDS,
                                      lvmcmd.LV_FIELDS, lvmcmd.LV_ONLY_FIELDS,
                                      lvmcmd.SEG_FIELDS)} | {"pvseg_start"}
YN = {"y", "n"}
# option -> its whole vocabulary (no caller text can be there)
FIXED: dict[str, set[str]] = {
    "--config": PINNED, "--reportformat": {"json"}, "--units": {"b"},
    "-o": FIELD_LISTS, "--configreport": {"pv", "lv", "seg", "pvseg"},
    "--activate": YN | {"ey", "sy"},
    "--zero": YN, "--contiguous": YN, "--allocatable": YN, "-i": {"1"},
    "--type": {"thin-pool", "thin"}, "--permission": {"r", "rw"},
    "--metadatacopies": {"0", "1", "2"}, "--metadataignore": YN, "--setautoactivation": YN,
    "--wipesignatures": YN, "--typeconfig": {"full"}, "--lockopt": {"shupdate,norefresh"}}
SECTORS = re.compile(r"[1-9][0-9]*s\Z")
# option -> the shape its (validated) value must have
SHAPES: dict[str, re.Pattern[str]] = {
    "--size": SECTORS, "--virtualsize": SECTORS, "--stripesize": SECTORS,
    "--physicalextentsize": SECTORS, "--setphysicalvolumesize": SECTORS,
    "--metadatasize": SECTORS, "--devices": re.compile(r"/dev/[^,\0\n]+\Z"),
    "--stripes": re.compile(r"[1-9][0-9]*\Z"),
    "--extents": re.compile(r"[1-9][0-9]*\Z|[1-9][0-9]{0,2}%(FREE|VG)\Z"),
    "--name": re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*\Z"),
    "--thinpool": re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*\Z"),
    "--addtag": re.compile(r"[A-Za-z0-9_+.=!:&#/][A-Za-z0-9_+.=!:&#/-]*\Z"),
    "--deltag": re.compile(r"[A-Za-z0-9_+.=!:&#/][A-Za-z0-9_+.=!:&#/-]*\Z"),
    "--select": re.compile(r"[^\0\n\r]+\Z")}
POS = ("pos", "")
# parameter -> the option slots its strings may take in an argv (where a positional may
# come from is the command's schema below)
ALLOWED: dict[str, set[tuple[str, str]]] = {
    "lv": {("opt", "--name")},  # pvmove --name: the LV part
    "name": {("opt", "--name")}, "pool": {("opt", "--thinpool")},
    "tags": {("opt", "--addtag")}, "add_tags": {("opt", "--addtag")},
    "del_tags": {("opt", "--deltag")}, "select": {("opt", "--select")},
    "extents": {("opt", "--extents")}, "type": {("opt", "--type")},
    "permission": {("opt", "--permission")}, "stripes": {("opt", "--stripes")},
    "size": {("opt", "--size"), ("opt", "--setphysicalvolumesize")},
    "virtual_size": {("opt", "--virtualsize")}, "stripe_size": {("opt", "--stripesize")},
    "extent_size": {("opt", "--physicalextentsize")},
    "scan_devices": {("opt", "--devices")}, "metadata_size": {("opt", "--metadatasize")},
    "metadata_copies": {("opt", "--metadatacopies")}}




REPORTED_VG = "<the VG LVM reported>"  # a positional taken from LVM's own report


@dataclass(frozen=True)
class Positionals:
    """Which caller values a command's positionals may be, index by index.

    A reference is a parameter (``"vg"``: its string, or each string of its list), a part
    of a ``vg/lv`` parameter (``"lv.vg"``, ``"lv.lv"``), or two references joined by a
    slash (``"vg/name"``: the LV a lvcreate makes). ``fixed[i]`` lists what the i-th
    positional may be, ``rest`` what every later one may be; ``required`` is how many
    must be there (by default all of ``fixed``)."""

    fixed: tuple[tuple[str, ...], ...] = ()
    rest: tuple[str, ...] = ()
    required: int | None = None


_DEVICE_READ = Positionals(rest=("devices",), required=1)
# (method, LVM command) -> its positionals. Derived from supervisor/core/methods.py (the
# handlers: the change, then the read of what it made) and lvm.py/lvmcmd.py (the report
# builders); ``classify`` (NotFound/AlreadyExists after a failure) runs a fullreport of
# everything, so "fullreport" takes no positional except for the ``report`` method. A
# (method, command) pair missing here is a command the method must not run.
POSITIONALS: dict[tuple[str, str], Positionals] = {
    ("version", "version"): Positionals(),
    ("status", "version"): Positionals(),  # status shows LVM's version
    ("pvs", "pvs"): Positionals(rest=("names",), required=0),
    ("vgs", "vgs"): Positionals(rest=("names",), required=0),
    # names (each "vg/lv", filtered by vg), else the vg alone, else nothing
    ("lvs", "lvs"): Positionals(fixed=(("names", "vg"),), rest=("names",), required=0),
    ("report", "fullreport"): Positionals(fixed=(("vg",),), required=0),
    ("pvcreate", "pvcreate"): _DEVICE_READ,
    ("pvcreate", "pvs"): _DEVICE_READ,
    ("pvremove", "pvremove"): _DEVICE_READ,
    ("vgcreate", "vgcreate"): Positionals(fixed=(("name",), ("devices",)), rest=("devices",)),
    ("vgcreate", "vgs"): Positionals(fixed=(("name",),)),
    ("vgremove", "vgs"): Positionals(fixed=(("vg",),)),
    ("vgremove", "vgremove"): Positionals(fixed=(("vg",),)),
    # the VG, or for a snapshot its origin as "vg/origin"; then the PVs to allocate from
    ("lvcreate", "lvcreate"): Positionals(fixed=(("vg", "vg/origin"),), rest=("devices",)),
    ("lvcreate", "lvs"): Positionals(fixed=(("vg/name",),)),
    # one LV, or a batch of them (never both: exactly one of lv and lvs is given)
    ("lvremove", "lvremove"): Positionals(fixed=(("lv", "lvs"),), rest=("lvs",)),
    ("vgck", "vgck"): Positionals(fixed=(("vg",),)),
    ("lvresize", "lvs"): Positionals(fixed=(("lv",),)),
    ("lvresize", "lvresize"): Positionals(fixed=(("lv",),)),
    ("pvresize", "pvresize"): Positionals(fixed=(("device",),)),
    ("pvresize", "pvs"): Positionals(fixed=(("device",),)),
    ("pvchange", "pvchange"): Positionals(fixed=(("device",),)),
    ("pvchange", "pvs"): Positionals(fixed=(("device",),)),
    ("vgextend", "vgextend"): Positionals(fixed=(("vg",), ("devices",)), rest=("devices",)),
    ("vgextend", "vgs"): Positionals(fixed=(("vg",),)),
    # the VG then the PVs to take out, or (with --removemissing) the VG alone
    ("vgreduce", "vgreduce"): Positionals(fixed=(("vg",),), rest=("devices",)),
    ("vgreduce", "vgs"): Positionals(fixed=(("vg",),)),
    ("vgrename", "vgrename"): Positionals(fixed=(("vg",), ("new_name",))),
    ("vgrename", "vgs"): Positionals(fixed=(("new_name",),)),
    ("vgchange", "vgchange"): Positionals(fixed=(("vg",),)),
    ("vgchange", "vgs"): Positionals(fixed=(("vg",),)),
    # one shared VG's lockspace, or (without vg) every shared VG's
    ("lockstart", "vgchange"): Positionals(fixed=(("vg",),), required=0),
    ("lockstart", "vgs"): Positionals(fixed=(("vg",),)),
    ("lockstop", "vgchange"): Positionals(fixed=(("vg",),), required=0),
    ("lockstop", "vgs"): Positionals(fixed=(("vg",),)),
    ("lvrename", "lvrename"): Positionals(fixed=(("lv.vg",), ("lv.lv",), ("new_name",))),
    ("lvrename", "lvs"): Positionals(fixed=(("lv.vg/new_name",),)),
    ("lvchange", "lvchange"): Positionals(fixed=(("lv", "lvs"),), rest=("lvs",)),
    ("lvchange", "lvs"): Positionals(fixed=(("lv", "lvs"),), rest=("lvs",)),
    ("pvmove", "pvmove"): Positionals(fixed=(("source",), ("destination",)), required=1),
    ("pvmove", "pvs"): Positionals(fixed=(("source",),)),
    # after the move: the source PV's VG as LVM reported it (no caller value)
    ("pvmove", "lvs"): Positionals(fixed=((REPORTED_VG,),)),
}


def ref_values(ref: str, params: dict[str, Any]) -> set[str]:
    """The texts a schema reference stands for, given the caller's params."""
    if ref == REPORTED_VG:
        return {PV_ROW["vg_name"]}
    if "/" in ref:
        left, right = ref.split("/")
        return {f"{a}/{b}" for a in ref_values(left, params)
                for b in ref_values(right, params)}
    key, _, part = ref.partition(".")
    value = params.get(key)
    texts = {t for t in (value if isinstance(value, list) else [value]) if isinstance(t, str)}
    if part:  # "vg/lv" -> one part (validate.lv_path splits at the first slash)
        texts = {t.partition("/")[0 if part == "vg" else 2] for t in texts if "/" in t}
    return texts


def check_positionals(method: str, argv: Sequence[str], roles: Sequence[tuple[str, str]],
                      params: dict[str, Any]) -> None:
    """Each positional is a value of a parameter its index admits, for this command."""
    if argv[0] == "config":  # the read cache asks LVM one setting of its own
        assert [a for a, r in zip(argv, roles) if r == POS] == ["devices/scan_lvs",
                                                                "devices/types"], argv
        return
    schema = POSITIONALS.get((method, argv[0]))
    if schema is None and argv[0] == "fullreport":
        schema = Positionals()  # classify's report of everything
    if schema is None and argv[0] == "pvs" and METHODS[method].change:
        schema = Positionals(required=0)  # the PV report a change is checked against
    if argv[0] == "pvs" and not [a for a, r in zip(argv, roles) if r == POS] \
            and METHODS[method].change:
        return  # that report names no object
    assert schema is not None, f"{method} ran {argv[0]}, which it has no reason to: {argv}"
    positionals = [arg for arg, role in zip(argv, roles) if role == POS]
    required = len(schema.fixed) if schema.required is None else schema.required
    assert len(positionals) >= required, f"{method}: a positional is missing: {argv}"
    if not schema.rest:
        assert len(positionals) <= len(schema.fixed), f"{method}: extra positional: {argv}"
    for index, arg in enumerate(positionals):
        refs = schema.fixed[index] if index < len(schema.fixed) else schema.rest
        admitted = set().union(*(ref_values(r, params) for r in refs))
        assert arg in admitted, (f"{method}: positional {index} of {argv[0]} is {arg!r}, "
                                 f"not a value of {' or '.join(refs)}: {argv}")


def slots(argv: Sequence[str]) -> list[tuple[str, str]]:
    """Each element's role as LVM's getopt sees it: the command, an option, an option's
    value, or a positional. Fails on anything LVM would read as an unknown option."""
    out = [("cmd", "")]
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in VALUE_OPTIONS:
            assert i + 1 < len(argv), f"{arg} without its value: {argv}"
            out += [("flag", arg), ("opt", arg)]
            i += 2
        elif arg in FLAG_OPTIONS:
            out.append(("flag", arg))
            i += 1
        else:
            assert not arg.startswith("-"), f"{arg!r} would be an option to LVM: {argv}"
            assert not arg.startswith("@"), f"{arg!r} would select by tag: {argv}"
            out.append(POS)
            i += 1
    return out


def caller_strings(params: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(parameter, text) for every string the caller sent (and the parts of a
    ``vg/lv``), and for every number the texts it may be rendered as (``7``, and ``7s``
    for a size in sectors)."""
    if isinstance(params, str):
        yield key, params
        if key in ("lv", "lvs", "names") and "/" in params:  # "vg/lv": LVM may get the parts
            for part in params.split("/"):
                yield key, part
    elif isinstance(params, int) and not isinstance(params, bool):
        yield key, str(params)
        if params > 0:
            yield key, lvmcmd.size_arg(params)
    elif isinstance(params, list):
        for item in params:
            yield from caller_strings(item, key)
    elif isinstance(params, dict):
        for k, v in params.items():
            yield from caller_strings(v, k if not key else key)


def check_argv(method: str, argv: list[str], params: dict[str, Any]) -> None:
    assert argv and argv[0].isalpha(), argv
    for arg in argv:
        assert "\0" not in arg and "\n" not in arg, f"NUL or newline in {argv}"
    if argv[0] != "version":
        assert argv[1] == "--config" and argv[2] in PINNED, f"not the pinned --config: {argv}"
    roles = slots(argv)
    by_value: dict[str, set[str]] = {}
    for key, text in caller_strings(params):
        by_value.setdefault(text, set()).add(key)
    check_positionals(method, argv, roles, params)
    for arg, (kind, option) in zip(argv, roles):
        if kind == "pos":
            continue  # checked against the command's positional schema above
        if kind == "opt":
            if option in FIXED:
                assert arg in FIXED[option], f"{option} {arg!r} is not its vocabulary: {argv}"
            if option in SHAPES:
                assert SHAPES[option].match(arg), f"{option} {arg!r} is not its shape: {argv}"
        keys = by_value.get(arg)
        if not keys or kind in ("cmd", "flag") or (kind == "opt" and arg in FIXED.get(option, ())):
            continue  # our own command, options and fixed vocabulary
        allowed = set().union(*(ALLOWED.get(k, set()) for k in keys))
        assert (kind, option) in allowed, \
            f"caller value {arg!r} (from {sorted(keys)}) landed in {kind} {option}: {argv}"
    if argv[0] in ("pvs", "vgs", "lvs") and isinstance(params.get("select"), str):
        # the one value that may look like an option is always --select's argument
        assert (params["select"], ("opt", "--select")) in zip(argv, roles), \
            f"the selection is not --select's argument: {argv}"


# ---- a Service over a recording runner ------------------------------------------------

def _row(fields: Sequence[str], values: dict[str, str]) -> dict[str, str]:
    return {f: values.get(f, "0") for f in fields}


PV_ROW = _row(lvmcmd.PV_FIELDS, {"pv_name": "/dev/loop0", "pv_uuid": "u1", "vg_name": "vg0",
                                 "pv_tags": "", "pv_attr": "a--", "pv_allocatable": "1"})
VG_ROW = _row(lvmcmd.VG_FIELDS, {"vg_name": "vg0", "vg_uuid": "u2", "vg_permissions": "writeable",
                                 "vg_lock_type": "", "vg_lock_args": "", "vg_systemid": "", "vg_tags": "",
                                 "vg_attr": "wz--n-"})
LV_ROW = _row(lvmcmd.LV_FIELDS, {"lv_name": "lv0", "vg_name": "vg0", "lv_full_name": "vg0/lv0",
                                 "lv_uuid": "u3", "lv_path": "/dev/vg0/lv0",
                                 "lv_size": str(2**30), "segtype": "linear", "lv_active": "",
                                 "origin": "", "pool_lv": "", "data_percent": "",
                                 "metadata_percent": "", "devices": "/dev/loop0(0)",
                                 "lv_tags": "", "lv_attr": "-wi-------",
                                 "lv_lockargs": ""})


class Recorder:
    """Stands in for ExecRunner: records each argv, answers with a plausible report."""

    def __init__(self, fail_changes: bool) -> None:
        self.argvs: list[list[str]] = []
        self.fail_changes = fail_changes

    async def run(self, args: Sequence[str], *, timeout: float | None,
                  on_line: Callable[[str], None] | None = None) -> RunResult:
        argv = list(args)
        self.argvs.append(argv)
        command, rc = argv[0], 0
        if command == "version":
            out = "  LVM version:     2.03.16(2) (2022-05-18)\n"
        elif command in ("pvs", "vgs", "lvs"):
            row = {"pvs": PV_ROW, "vgs": VG_ROW, "lvs": LV_ROW}[command]
            out = json.dumps({"report": [{command[:2]: [row]}]}, indent=2)
        elif command == "fullreport":
            lv_row = {k: v for k, v in LV_ROW.items() if k in lvmcmd.LV_ONLY_FIELDS}
            seg = {"lv_uuid": "u3", "segtype": "linear", "devices": "/dev/loop0(0)"}
            out = json.dumps({"report": [{"vg": [VG_ROW], "pv": [PV_ROW], "lv": [lv_row],
                                          "seg": [seg], "pvseg": []}]}, indent=2)
        else:
            rc = 5 if self.fail_changes else 0
            out = json.dumps({"log": [{"log_type": "error", "log_message": "injected"}]}
                             if rc else {"log": []}, indent=2)
        return RunResult(("/sbin/lvm", *argv), rc, out, "", 0.001)


class AllowAll:
    async def allowed(self, caller: Caller, role: Role, details: Any) -> bool:
        return True

    def scope(self, caller: Caller, role: Role) -> None:
        return None


ROOT = Caller(uid=0, gid=0, pid=1, comm="test")
CONFIG = Config(lvm_binary="/sbin/lvm", policy_devices=("/dev/*",), jobs_keep=0)


def call(line: bytes, cuts: list[int], fail_changes: bool
         ) -> tuple[Any, list[list[str]], dict[str, Any] | None]:
    """Feeds ``line`` through the codec in pieces, then through Service.call; returns
    (result or error, argvs run, the params as the daemon decoded them)."""
    codec = LineCodec()
    points = sorted({c % (len(line) + 1) for c in cuts})
    messages: list[Any] = []
    for a, b in zip([0, *points], [*points, len(line)]):
        messages += codec.feed(line[a:b])
    assert len(messages) == 1, messages
    if isinstance(messages[0], BadLine):
        return messages[0].error, [], None
    try:
        request = parse_request(messages[0])
    except InvalidRequest as exc:
        return exc, [], None
    recorder = Recorder(fail_changes)

    async def run() -> Any:
        service = Service(CONFIG, Lvm(recorder, timeout=60, extra_config=None))
        try:
            return await service.call(ROOT, request.method, request.params, AllowAll())
        except LvmSuperError as exc:
            return exc
        finally:
            await service.drain()  # a job (wait, pvmove) finishes its LVM work too

    return asyncio.run(run()), recorder.argvs, request.params


# ---- generated input ---------------------------------------------------------------

HOSTILE = ["", "-", "--", "--config", "--config=global{activation=1}", "-ff", "--yes", "-L1g",
           "--select", "a\nb", "a\x00b", "a\rb", "..", ".", "/", "vg/lv", "vg/lv/x", "@tag",
           "/dev/../etc/shadow", "/dev/loop0 --yes", "/dev/loop0\n", " x", "x ", "ｖｇ0",
           "\u2010\u2010yes", "\uff0dff", "x\u200b", "#orphans", "snapshot0", "pvmove0",
           "x_tmeta", "=", "!x", "%FREE", "1%FREE", "100%VG", "50%PVS", "linear", "thin",
           "r", "rw", "y", "n", "json", "b", "/dev/loop0", "/dev/-ff", "/dev/@x",
           "/dev/loop0:0-9", "vg0", "lv0", "vg0/lv0", "-vg0/lv0", "vg0/-lv0",
           "1-1", "99999999999999999999-1", "x" * 200]
NAME = st.from_regex(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,12}", fullmatch=True)
TAG = st.from_regex(r"[A-Za-z0-9_+.=!:&#/][A-Za-z0-9_+.=!:&#/-]{0,12}", fullmatch=True)
DEVICE = st.one_of(st.sampled_from(["/dev/loop0", "/dev/loop1", "/dev/sdb", "/dev/mapper/mpatha",
                                    "/dev/disk/by-id/scsi-0QEMU_disk:1"]),
                   st.from_regex(r"/dev/[A-Za-z0-9_.:+@=,#%~-][A-Za-z0-9/_.:+@=,#%~-]{0,20}",
                                 fullmatch=True))
TEXT = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=16))
JUNK = st.recursive(st.none() | st.booleans() | st.integers() | TEXT
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(TEXT, inner, max_size=2), max_leaves=6)


SIZE = st.integers(min_value=1, max_value=2**63 - 1)
POW2 = st.sampled_from([2**k for k in range(10, 35)])
LV = st.builds(lambda a, b: f"{a}/{b}", NAME, NAME)
# parameter -> valid values (validators accept them; the handlers may still refuse)
VALID_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "vg": NAME, "name": NAME, "new_name": NAME, "origin": NAME, "pool": NAME, "lv": LV,
    "names": st.lists(st.one_of(NAME, DEVICE, LV), min_size=1, max_size=4),
    "devices": st.lists(DEVICE, min_size=1, max_size=4, unique=True), "device": DEVICE,
    "source": DEVICE, "destination": DEVICE,
    "tags": st.lists(TAG, max_size=4), "add_tags": st.lists(TAG, max_size=4),
    "del_tags": st.lists(TAG, max_size=4),
    "select": st.one_of(st.text(min_size=1, max_size=30).filter(
        lambda t: not any(c in t for c in "\0\n\r")), st.sampled_from(
        ["--yes", "-ff", "--config=x", "@tag", "vg_name=vg0 || --force"])),
    "size": SIZE, "virtual_size": SIZE, "extent_size": POW2, "stripe_size": POW2,
    "stripes": st.integers(min_value=1, max_value=128),
    "extents": st.one_of(st.integers(min_value=1, max_value=2**32 - 1),
                         st.from_regex(r"[1-9][0-9]?%(FREE|VG)", fullmatch=True)),
    "type": st.sampled_from(["linear", "snapshot", "thin-pool", "thin"]),
    "permission": st.sampled_from(["r", "rw"]),
    "job": st.from_regex(r"[0-9]{1,3}-[0-9]{1,3}", fullmatch=True),
    "lvs": st.lists(NAME, min_size=1, max_size=4, unique=True).map(
        lambda names: [f"vg0/{n}" for n in names]),
    "scan_devices": st.lists(DEVICE, min_size=1, max_size=4, unique=True),
    "metadata_size": SIZE, "metadata_copies": st.integers(min_value=0, max_value=2),
    "wait": st.sampled_from([0, 0.0, 30]),
}
HOSTILE_VALUES = st.one_of(TEXT, TEXT, JUNK, st.integers(min_value=-2**70, max_value=2**70),
                           st.lists(TEXT, max_size=3))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A method with its required parameters and some optional ones, all valid; then
    (most of the time) one or two of them, or an undeclared one, made hostile."""
    name = draw(st.sampled_from(sorted(METHODS)))
    declared = METHODS[name].params
    keys = [k for k, p in declared.items() if p.required]
    if declared:
        keys += draw(st.lists(st.sampled_from(sorted(declared)), unique=True, max_size=4))
    params = {k: draw(VALID_VALUES.get(k, st.booleans())) for k in dict.fromkeys(keys)}
    for _ in range(draw(st.integers(0, 2))):
        victim = draw(st.sampled_from(sorted(declared) + ["?"])) if declared else "?"
        if victim == "?":
            victim = draw(TEXT)  # an undeclared parameter
        params[victim] = draw(HOSTILE_VALUES)
    return name, params


@pytest.fixture(autouse=True, scope="module")
def syntax_only_devices() -> Iterator[None]:
    def resolve(text: str, field: str, *, must_exist: bool = True) -> validate.Device:
        if not os.path.realpath(text).startswith("/dev/"):
            raise InvalidRequest(f"{field}: {text!r} resolves outside /dev", field=field)
        return validate.Device(text, text, 0)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(validate, "resolve_device", resolve)
        yield


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(), cuts=st.lists(st.integers(min_value=0), max_size=4),
       fail_changes=st.booleans())
def test_no_caller_value_becomes_an_option_or_leaves_its_slot(
        request: tuple[str, dict[str, Any]], cuts: list[int], fail_changes: bool) -> None:
    method, params = request
    line = LineCodec.encode(make_request(1, method, params))
    outcome, argvs, decoded = call(line, cuts, fail_changes)
    assert not isinstance(outcome, Internal), (method, params, outcome)
    if decoded is None:
        assert isinstance(outcome, InvalidRequest)
        return
    assert decoded == json.loads(line)["params"]  # the codec delivered it unchanged
    for argv in argvs:
        check_argv(method, argv, decoded)
    mutating = [a for a in argvs if a[0] not in READS]
    event(f"outcome: {type(outcome).__name__ if isinstance(outcome, LvmSuperError) else 'ok'}")
    event(f"mutating argv built: {bool(mutating)}")
    if not METHODS[method].change:
        assert not mutating, (method, argvs)
    if isinstance(outcome, InvalidRequest):
        assert not mutating, ("refused, yet LVM ran", method, params, argvs)
    for argv in mutating:
        assert argv[0] == COMMAND.get(method, method), (method, argv)  # its own command
    assert len(mutating) <= 1, argvs


# the methods whose LVM command has another name
COMMAND = {"lockstart": "vgchange", "lockstop": "vgchange"}


VALID: dict[str, dict[str, Any]] = {
    "pvcreate": {"devices": ["/dev/loop2", "/dev/loop3"],  # not PVs in the report
                 "metadata_size": 2**27, "metadata_copies": 2, "metadata_ignore": True,
                 "scan_devices": ["/dev/loop2", "/dev/loop3"]},
    "pvremove": {"devices": ["/dev/loop0"]},
    "pvresize": {"device": "/dev/loop0", "size": 10**9},
    "pvchange": {"device": "/dev/loop0", "allocatable": False, "add_tags": ["a"],
                 "del_tags": ["b"], "metadata_ignore": False},
    "vgcreate": {"name": "vg1", "devices": ["/dev/loop0"], "extent_size": 2**22,
                 "tags": ["t", "MDT_X=a&44&b"], "auto_activation": False, "shared": True},
    "vgextend": {"vg": "vg0", "devices": ["/dev/loop1"]},
    "vgreduce": {"vg": "vg0", "devices": ["/dev/loop1"]},
    "vgremove": {"vg": "vg0", "force": True},
    "vgrename": {"vg": "vg0", "new_name": "vg9"},
    "vgchange": {"vg": "vg0", "activate": "exclusive", "add_tags": ["t"]},
    "lockstart": {},
    "lockstop": {},
    "lvcreate": {"vg": "vg0", "name": "lv1", "size": 2**20, "tags": ["t"], "zero": False,
                 "stripes": 1, "devices": ["/dev/loop0"], "wipe_signatures": False},
    "lvremove": {"lvs": ["vg0/lv0"], "scan_devices": ["/dev/loop0"]},
    "lvresize": {"lv": "vg0/lv0", "size": 2**31},
    "lvrename": {"lv": "vg0/lv0", "new_name": "lv9"},
    "lvchange": {"lvs": ["vg0/lv0"], "permission": "r", "del_tags": ["t"]},
    "pvmove": {"source": "/dev/loop0", "destination": "/dev/loop1", "lv": "vg0/lv0"},
}


@pytest.mark.parametrize("method", sorted(VALID))
def test_every_change_reaches_its_argv_builder(method: str) -> None:
    """The property above is not vacuous: valid params of every change do produce the
    mutating argv, and it passes the same checks."""
    # job_cancel is a change too, but needs a running job (tests/test_boundary.py)
    assert set(VALID) == {m for m, spec in METHODS.items() if spec.change} - {"job_cancel"}
    params = VALID[method]
    outcome, argvs, decoded = call(LineCodec.encode(make_request(1, method, params)), [],
                                   False)
    assert not isinstance(outcome, LvmSuperError), outcome
    mutating = [a for a in argvs if a[0] == COMMAND.get(method, method)]
    assert len(mutating) == 1, argvs
    for argv in argvs:
        check_argv(method, argv, params)


PIN = lvmcmd.pinned_config(None)
REPORT = lvmcmd.report_argv("lv")[3:]  # --reportformat json ... -o <LV fields>


def _change(command: str, *args: str, json_log: bool = True) -> list[str]:
    return lvmcmd.change_argv(command, list(args), json_log=json_log)


# (method, params, what a broken builder could build, what the right one builds, the
# complaint expected). Each right argv passes: the complaint is about the defect alone.
INJECTIONS = [
    ("lvcreate", {"vg": "vg0", "name": "-ff", "size": 512},                      # option
     ["lvcreate", "--config", PIN, "--yes", "--size", "1s", "-ff", "vg0"],
     None, "would be an option"),
    ("lvcreate", {"vg": "@t", "name": "x", "size": 512},                         # tag
     _change("lvcreate", "--yes", "--name", "x", "--size", "1s", "@t"), None, "select by tag"),
    ("vgchange", {"vg": "vg0", "add_tags": ["t"]},                               # slot
     _change("vgchange", "--addtag", "vg0", "vg0"),
     _change("vgchange", "--addtag", "t", "vg0"), "landed in opt --addtag"),
    ("lvs", {"vg": "vg0", "select": "y"},                                        # moved
     ["lvs", "--config", PIN, *REPORT, "--select", "x", "vg0"],
     ["lvs", "--config", PIN, *REPORT, "--select", "y", "vg0"], "not --select's argument"),
    ("lvs", {"vg": "vg0"}, ["lvs", "--config", PIN + " global{}", *REPORT, "vg0"],  # config
     ["lvs", "--config", PIN, *REPORT, "vg0"], "not the pinned --config"),
    ("lvs", {"vg": "vg0"}, ["lvs", "--config", PIN, "--config", "x", *REPORT, "vg0"],  # vocab
     ["lvs", "--config", PIN, *REPORT, "vg0"], "not its vocabulary"),
    ("lvcreate", {"vg": "vg0", "name": "x", "size": 10},                         # shape
     _change("lvcreate", "--yes", "--name", "x", "--size", "10G", "vg0"),
     _change("lvcreate", "--yes", "--name", "x", "--size", "1s", "vg0"), "not its shape"),
    ("lvcreate", {"vg": "vg0", "name": "a\nb", "size": 512},                     # newline
     _change("lvcreate", "--yes", "--name", "a\nb", "--size", "1s", "vg0"), None,
     "NUL or newline"),
    # positionals: each value at its own index
    ("vgrename", {"vg": "vg0", "new_name": "vg9"},                               # swapped
     _change("vgrename", "vg9", "vg0"), _change("vgrename", "vg0", "vg9"),
     "positional 0 of vgrename is 'vg9', not a value of vg"),
    ("lvrename", {"lv": "vg0/lv0", "new_name": "lv9"},                           # VG <-> LV
     _change("lvrename", "lv0", "vg0", "lv9"), _change("lvrename", "vg0", "lv0", "lv9"),
     "positional 0 of lvrename is 'lv0', not a value of lv.vg"),
    ("lvrename", {"lv": "vg0/lv0", "new_name": "lv9"},                           # old <-> new
     _change("lvrename", "vg0", "lv9", "lv0"), _change("lvrename", "vg0", "lv0", "lv9"),
     "positional 1 of lvrename is 'lv9'"),
    ("vgextend", {"vg": "vg0", "devices": ["/dev/loop1"]},                       # device as VG
     _change("vgextend", "--yes", "/dev/loop1", "vg0"),
     _change("vgextend", "--yes", "vg0", "/dev/loop1"),
     "positional 0 of vgextend is '/dev/loop1', not a value of vg"),
    ("vgcreate", {"name": "vg1", "devices": ["/dev/loop0"]},                     # VG as device
     _change("vgcreate", "--yes", "/dev/loop0", "vg1"),
     _change("vgcreate", "--yes", "vg1", "/dev/loop0"), "positional 0 of vgcreate"),
    ("vgreduce", {"vg": "vg0", "devices": ["/dev/loop1"]},
     _change("vgreduce", "/dev/loop1", "vg0"), _change("vgreduce", "vg0", "/dev/loop1"),
     "positional 0 of vgreduce"),
    ("lvcreate", {"vg": "vg0", "name": "lv1", "size": 512},                      # LV as VG
     _change("lvcreate", "--yes", "--name", "vg0", "--size", "1s", "lv1"),
     _change("lvcreate", "--yes", "--name", "lv1", "--size", "1s", "vg0"),
     "positional 0 of lvcreate is 'lv1'"),
    ("lvcreate", {"vg": "vg0", "name": "lv1", "size": 512, "devices": ["/dev/loop0"]},
     _change("lvcreate", "--yes", "--name", "lv1", "--size", "1s", "/dev/loop0", "vg0"),
     _change("lvcreate", "--yes", "--name", "lv1", "--size", "1s", "vg0", "/dev/loop0"),
     "positional 0 of lvcreate is '/dev/loop0'"),
    ("lvcreate", {"vg": "vg0", "name": "lv1", "size": 512},                      # its read
     lvmcmd.report_argv("lv", names=["lv1/vg0"]), lvmcmd.report_argv("lv", names=["vg0/lv1"]),
     "positional 0 of lvs is 'lv1/vg0', not a value of vg/name"),
    ("lvcreate", {"vg": "vg0", "name": "s1", "type": "snapshot", "origin": "lv0", "size": 512},
     _change("lvcreate", "--yes", "--name", "s1", "--size", "1s", "--snapshot", "vg0/s1",
             json_log=False),
     _change("lvcreate", "--yes", "--name", "s1", "--size", "1s", "--snapshot", "vg0/lv0",
             json_log=False), "not a value of vg or vg/origin"),
    ("pvmove", {"source": "/dev/loop0", "destination": "/dev/loop1"},            # swapped
     _change("pvmove", "-i", "1", "/dev/loop1", "/dev/loop0", json_log=False),
     _change("pvmove", "-i", "1", "/dev/loop0", "/dev/loop1", json_log=False),
     "positional 0 of pvmove is '/dev/loop1', not a value of source"),
    ("vgextend", {"vg": "vg0", "devices": ["/dev/loop1"]},                       # missing
     _change("vgextend", "--yes", "vg0"), None, "a positional is missing"),
    ("lvremove", {"lv": "vg0/lv0"},                                              # extra
     _change("lvremove", "--yes", "vg0/lv0", "vg0/lv0"), _change("lvremove", "--yes", "vg0/lv0"),
     "positional 1 of lvremove is 'vg0/lv0', not a value of lvs"),
    ("lvs", {"vg": "vg0"}, _change("lvremove", "--yes", "vg0/lv0"), None,          # command
     "has no reason to"),
    ("lvremove", {"lvs": ["vg0/a", "vg0/b"]},                                    # batch extra
     _change("lvremove", "--yes", "vg0/a", "vg0/b", "vg0/c"),
     _change("lvremove", "--yes", "vg0/a", "vg0/b"), "positional 2 of lvremove is 'vg0/c'"),
    ("lvs", {"vg": "vg0", "scan_devices": ["/dev/loop0"]},                       # scan slot
     ["lvs", "--config", PIN, *REPORT[:-2], "/dev/loop0", "vg0"],
     ["lvs", "--config", PIN, *REPORT[:-2], "--devices", "/dev/loop0", *REPORT[-2:], "vg0"],
     "positional 0 of lvs is '/dev/loop0'"),
    ("pvs", {"names": ["/dev/loop0"]}, lvmcmd.report_argv("pv", names=["/dev/loop9"]),
     lvmcmd.report_argv("pv", names=["/dev/loop0"]), "not a value of names"),
]


@pytest.mark.parametrize("method, params, bad, good, complaint", INJECTIONS,
                         ids=[f"{i}-{case[0]}" for i, case in enumerate(INJECTIONS)])
def test_the_checker_catches_injections(method: str, params: dict[str, Any], bad: list[str],
                                        good: list[str] | None, complaint: str) -> None:
    """The oracle is not vacuous: argvs a broken builder could produce are caught, each
    for its own defect (the right argv for the same request passes)."""
    if good is not None:
        check_argv(method, good, params)
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        check_argv(method, bad, params)
