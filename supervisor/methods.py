"""The method table: every method's role, parameters and implementation, in one place.

Rule: a method that is not in ``METHODS`` does not exist (deny by default). Parameters
are declared with a checker each; unknown parameters are refused. A change declares
which VGs it locks and which objects it touches, and runs inside a job with those
locks held; what it returns is reported by LVM after the change.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lvmsuper.client import __version__
from lvmsuper.client.errors import InvalidRequest, LvmFailed, NotFound
from lvmsuper.client.models import LV

from . import validate as v
from .auth import Role
from .lvmcmd import size_arg

if TYPE_CHECKING:
    from .jobs import Job
    from .service import Call, Service

__all__ = ["Param", "Method", "METHODS", "Expect", "ORPHANS"]

ORPHANS = "#orphans"  # lock key for changes to PVs outside any VG


@dataclass(frozen=True, slots=True)
class Param:
    check: v.Checker
    required: bool = False
    # what policy applies: "vg" (protected VGs), "lv" (its VG), "device"/"devices"
    # (device globs)
    policy: str | None = None


@dataclass(frozen=True, slots=True)
class Expect:
    """What must (not) exist for a change to make sense; checked when LVM fails, to
    turn its failure into NotFound / AlreadyExists."""

    kind: str  # "pv" | "vg" | "lv"
    name: str
    exists: bool = True


Handler = Callable[["Service", "Call"], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    role: Role
    run: Handler
    params: Mapping[str, Param] = field(default_factory=dict)
    change: bool = False
    locks: Callable[[dict[str, Any]], tuple[str, ...]] = lambda args: ()
    # also lock the VG of the existing PV it names (its "device" parameter)
    locks_pv_vg: bool = False


# ---- reads ----------------------------------------------------------------

async def _ping(svc: Service, call: Call) -> dict[str, Any]:
    return {}


async def _version(svc: Service, call: Call) -> dict[str, Any]:
    return {"lvmsuper": __version__, "lvm": await svc.lvm_version()}


async def _status(svc: Service, call: Call) -> dict[str, Any]:
    return await svc.status()


async def _pvs(svc: Service, call: Call) -> list[Any]:
    a = call.args
    names = a.get("names", [])
    pvs = await svc.read(("pvs", *names, a.get("select")),
                         lambda: svc.lvm.pvs(names, a.get("select")),
                         [Expect("pv", n) for n in names])
    if "vg" in a:
        await svc.ensure([Expect("vg", a["vg"])])
        pvs = [pv for pv in pvs if pv.vg == a["vg"]]
    return pvs


async def _vgs(svc: Service, call: Call) -> list[Any]:
    names = call.args.get("names", [])
    select = call.args.get("select")
    return await svc.read(("vgs", *names, select), lambda: svc.lvm.vgs(names, select),
                          [Expect("vg", n) for n in names])


async def _lvs(svc: Service, call: Call) -> list[Any]:
    a = call.args
    names = [f"{vg}/{lv}" for vg, lv in a.get("names", [])]
    if "vg" in a and names:
        names = [n for n in names if n.split("/")[0] == a["vg"]]
        if not names:
            return []
    positional = names or ([a["vg"]] if "vg" in a else [])
    expect = [Expect("lv", n) for n in names] or [Expect("vg", n) for n in positional]
    lvs: list[LV] = await svc.read(("lvs", *positional, a.get("select")),
                                   lambda: svc.lvm.lvs(positional, a.get("select")), expect)
    wanted = set(a.get("tags", []))
    return [lv for lv in lvs if wanted <= set(lv.tags)]


async def _report(svc: Service, call: Call) -> dict[str, Any]:
    vg = call.args.get("vg")
    pvs, vgs, lvs = await svc.read(("fullreport", vg), lambda: svc.lvm.fullreport(vg),
                                   [Expect("vg", vg)] if vg else [])
    return {"pvs": pvs, "vgs": vgs, "lvs": lvs}


async def _jobs(svc: Service, call: Call) -> list[Any]:
    return [job.to_wire() for job in svc.jobs.all()]


async def _job_status(svc: Service, call: Call) -> dict[str, Any]:
    return svc.jobs.get(call.args["job"]).to_wire()


# ---- changes ---------------------------------------------------------------

def _tag_args(option: str, tags: list[str]) -> list[str]:
    return [arg for tag in tags for arg in (option, tag)]


def _yn(value: bool) -> str:
    return "y" if value else "n"


async def _pvcreate(svc: Service, call: Call) -> list[Any]:
    devices = call.args["devices"]
    absent = [Expect("pv", d, False) for d in devices]
    # Checked first (under #orphans, which pvcreate holds): LVM 2.03.16's pvcreate
    # re-initialises a PV outside any VG without a word, giving it a new UUID.
    await svc.ensure(absent)
    await svc.change(call, "pvcreate", devices, absent, [("pv", d) for d in devices])
    return await svc.lvm.pvs(devices)


async def _pvremove(svc: Service, call: Call) -> dict[str, Any]:
    devices = call.args["devices"]
    await svc.change(call, "pvremove", devices, [Expect("pv", d) for d in devices],
                     [("pv", d) for d in devices])
    return {"removed": devices}


async def _vgcreate(svc: Service, call: Call) -> Any:
    a = call.args
    args = ["--yes", *_tag_args("--addtag", a.get("tags", []))]
    if "extent_size" in a:
        args += ["--physicalextentsize", size_arg(a["extent_size"])]
    await svc.change(call, "vgcreate", [*args, a["name"], *a["devices"]],
                     [Expect("vg", a["name"], False)],
                     [("vg", a["name"]), *(("pv", d) for d in a["devices"])])
    return (await svc.lvm.vgs([a["name"]]))[0]


async def _vgremove(svc: Service, call: Call) -> dict[str, Any]:
    vg, force = call.args["vg"], call.args.get("force", False)
    if not force:
        found = await svc.read(("vgs", vg, None), lambda: svc.lvm.vgs([vg]),
                               [Expect("vg", vg)])
        if found and found[0].lv_count:
            raise InvalidRequest(f"VG {vg!r} holds {found[0].lv_count} LV(s); remove them "
                                 "first or pass force=true", field="force")
    await svc.change(call, "vgremove", ["--force", "--yes", vg] if force else [vg],
                     [Expect("vg", vg)], [("vg", vg)])
    return {"removed": [vg]}


async def _lvcreate(svc: Service, call: Call) -> Any:
    a = call.args
    vg, name, kind = a["vg"], a["name"], a.get("type", "linear")
    # a thin volume has a virtual size; a snapshot of a thin volume has no size at all
    if ("size" in a and "extents" in a) or \
            ("size" not in a and "extents" not in a and kind not in ("thin", "snapshot")):
        raise InvalidRequest("give exactly one of size and extents", field="size")
    if kind == "thin" and ("size" in a or "extents" in a):
        raise InvalidRequest("a thin volume takes virtual_size, not size or extents",
                             field="size")
    needs = {"snapshot": "origin", "thin": "pool"}.get(kind)
    for key in ("origin", "pool", "virtual_size"):
        wanted = key == needs or (kind == "thin" and key == "virtual_size")
        if wanted != (key in a):
            raise InvalidRequest(f"{key} is {'required' if wanted else 'not allowed'} "
                                 f"for type {kind!r}", field=key)
    args = ["--yes", "--name", name]
    if "size" in a:
        args += ["--size", size_arg(a["size"])]
    elif "extents" in a:
        args += ["--extents", a["extents"]]
    expect = [Expect("vg", vg), Expect("lv", f"{vg}/{name}", False)]
    if kind == "snapshot":
        args += ["--snapshot"]
        expect.append(Expect("lv", f"{vg}/{a['origin']}"))
    elif kind == "thin-pool":
        args += ["--type", "thin-pool"]
    elif kind == "thin":
        args += ["--type", "thin", "--virtualsize", size_arg(a["virtual_size"]),
                 "--thinpool", a["pool"]]
        expect.append(Expect("lv", f"{vg}/{a['pool']}"))
    args += _tag_args("--addtag", a.get("tags", []))
    for key, option in (("activate", "--activate"), ("zero", "--zero"),
                        ("contiguous", "--contiguous")):
        if key in a:
            args += [option, _yn(a[key])]
    if "stripes" in a:
        args += ["--stripes", str(a["stripes"])]
    if "stripe_size" in a:
        args += ["--stripesize", size_arg(a["stripe_size"])]
    target = f"{vg}/{a['origin']}" if kind == "snapshot" else vg
    # LVM 2.03 refuses --reportformat for snapshots and thin LVs: plain log there
    await svc.change(call, "lvcreate", [*args, target, *a.get("devices", [])], expect,
                     [("lv", f"{vg}/{name}"), ("vg", vg)], json_log=kind == "linear")
    return (await svc.lvm.lvs([f"{vg}/{name}"]))[0]


async def _lvremove(svc: Service, call: Call) -> dict[str, Any]:
    vg, lv = call.args["lv"]
    full = f"{vg}/{lv}"
    await svc.change(call, "lvremove", ["--yes", full], [Expect("lv", full)],
                     [("lv", full), ("vg", vg)])
    return {"removed": [full]}


async def _lvresize(svc: Service, call: Call) -> Any:
    vg, lv = call.args["lv"]
    full, size = f"{vg}/{lv}", call.args["size"]
    current = await svc.read(("lvs", full, None), lambda: svc.lvm.lvs([full]),
                             [Expect("lv", full)])
    if not current:
        raise NotFound(f"LV {full!r} not found", object_type="lv", object_name=full)
    shrink = size < current[0].size
    if shrink:
        if not call.args.get("force", False):
            raise InvalidRequest(f"shrinking {full} from {current[0].size} to {size} bytes "
                                 "destroys data beyond the new end; pass force=true",
                                 field="force")
        await call.require(Role.DESTROY)
    args = ["--size", size_arg(size), *(["--force"] if shrink else []), full]
    await svc.change(call, "lvresize", args, [Expect("lv", full)], [("lv", full), ("vg", vg)])
    return (await svc.lvm.lvs([full]))[0]


def _tag_changes(args: dict[str, Any]) -> list[str]:
    return _tag_args("--addtag", args.get("add_tags", [])) + \
        _tag_args("--deltag", args.get("del_tags", []))


def _need_some(args: dict[str, Any], *keys: str) -> None:
    if not any(k in args for k in keys):
        raise InvalidRequest(f"give at least one of {', '.join(keys)}", field=keys[0])


async def _pvresize(svc: Service, call: Call) -> Any:
    dev = call.args["device"]
    size = (["--setphysicalvolumesize", size_arg(call.args["size"])]
            if "size" in call.args else [])
    await svc.change(call, "pvresize", ["--yes", *size, dev], [Expect("pv", dev)],
                     [("pv", dev)])
    return (await svc.lvm.pvs([dev]))[0]


async def _pvchange(svc: Service, call: Call) -> Any:
    a, dev = call.args, call.args["device"]
    _need_some(a, "allocatable", "add_tags", "del_tags")
    args = (["--allocatable", _yn(a["allocatable"])] if "allocatable" in a else [])
    await svc.change(call, "pvchange", [*args, *_tag_changes(a), dev], [Expect("pv", dev)],
                     [("pv", dev)])
    return (await svc.lvm.pvs([dev]))[0]


async def _vgextend(svc: Service, call: Call) -> Any:
    vg, devices = call.args["vg"], call.args["devices"]
    await svc.change(call, "vgextend", ["--yes", vg, *devices], [Expect("vg", vg)],
                     [("vg", vg), *(("pv", d) for d in devices)])
    return (await svc.lvm.vgs([vg]))[0]


async def _vgreduce(svc: Service, call: Call) -> Any:
    vg, devices = call.args["vg"], call.args.get("devices", [])
    if bool(devices) == call.args.get("missing", False):
        raise InvalidRequest("give either devices or missing=true", field="devices")
    args = devices or ["--removemissing"]
    await svc.change(call, "vgreduce", [vg, *args] if devices else [*args, vg],
                     [Expect("vg", vg), *(Expect("pv", d) for d in devices)],
                     [("vg", vg), *(("pv", d) for d in devices)])
    return (await svc.lvm.vgs([vg]))[0]


async def _vgrename(svc: Service, call: Call) -> Any:
    vg, new = call.args["vg"], call.args["new_name"]
    await svc.change(call, "vgrename", [vg, new], [Expect("vg", vg), Expect("vg", new, False)],
                     [("vg", vg), ("vg", new)])
    return (await svc.lvm.vgs([new]))[0]


async def _vgchange(svc: Service, call: Call) -> Any:
    a, vg = call.args, call.args["vg"]
    _need_some(a, "activate", "add_tags", "del_tags")
    args = (["--activate", _yn(a["activate"])] if "activate" in a else [])
    await svc.change(call, "vgchange", [*args, *_tag_changes(a), vg], [Expect("vg", vg)],
                     [("vg", vg)])
    return (await svc.lvm.vgs([vg]))[0]


async def _lvrename(svc: Service, call: Call) -> Any:
    (vg, lv), new = call.args["lv"], call.args["new_name"]
    await svc.change(call, "lvrename", [vg, lv, new],
                     [Expect("lv", f"{vg}/{lv}"), Expect("lv", f"{vg}/{new}", False)],
                     [("lv", f"{vg}/{lv}"), ("lv", f"{vg}/{new}")])
    return (await svc.lvm.lvs([f"{vg}/{new}"]))[0]


async def _lvchange(svc: Service, call: Call) -> Any:
    a, (vg, lv) = call.args, call.args["lv"]
    _need_some(a, "activate", "permission", "add_tags", "del_tags")
    # Activating one LV by name is explicit: it also activates an LV carrying LVM's
    # activation-skip flag (thin snapshots get it by default), as `lvchange -ay -K`
    # does. vgchange keeps the flag's meaning (skipped when a whole VG is activated).
    args = (["--activate", "y", "--ignoreactivationskip"] if a.get("activate") is True
            else ["--activate", "n"] if "activate" in a else [])
    args += ["--permission", a["permission"]] if "permission" in a else []
    await svc.change(call, "lvchange", [*args, *_tag_changes(a), f"{vg}/{lv}"],
                     [Expect("lv", f"{vg}/{lv}")], [("lv", f"{vg}/{lv}")])
    return (await svc.lvm.lvs([f"{vg}/{lv}"]))[0]


_PROGRESS = re.compile(r"Moved:\s*([0-9]+(?:\.[0-9]+)?)%")


async def _pvmove(svc: Service, call: Call) -> Any:
    """Always a job; its progress follows LVM's ``-i 1`` lines. A move LVM leaves
    unfinished (it can exit 0 saying "Interrupted") fails, after a rollback."""
    a, source = call.args, call.args["source"]
    job = call.job
    if job is not None:
        job.progress = 0
        job.cancel = lambda: _abort_move(svc, source)
    said: list[str] = []

    def progress(line: str) -> None:
        if line:
            said[:] = [line]
        match = _PROGRESS.search(line)
        if match and job is not None:
            job.progress = min(100, int(float(match.group(1))))

    args = ["-i", "1"]
    if "lv" in a:
        args += ["--name", a["lv"][1]]
    args += [source, *([a["destination"]] if "destination" in a else [])]
    try:
        await svc.lvm.pvmove(args, progress)
    except LvmFailed as exc:
        raise await svc.classify(exc, [Expect("pv", source)]) from None
    call.changed += [{"type": "pv", "name": source}]
    if "destination" in a:
        call.changed += [{"type": "pv", "name": a["destination"]}]
    pv = (await svc.lvm.pvs([source]))[0]
    if pv.vg:
        await _finished_move(svc, job, source, pv.vg, args, said[0] if said else "nothing")
    return pv


async def _abort_move(svc: Service, source: str) -> None:
    """``pvmove --abort``: plain output, as LVM may follow its report with a line of
    polling ("Interrupted: ...") that is no JSON."""
    await svc.lvm.change("pvmove", ["--abort", source], json_log=False)


async def _on_pvmove_mirror(svc: Service, vg: str) -> list[str]:
    """LVs of ``vg`` still on LVM's temporary pvmove mirror (a move not done)."""
    return [lv.full_name for lv in await svc.lvm.lvs([vg])
            if any(d.startswith("pvmove") for d in lv.devices)]


async def _finished_move(svc: Service, job: Job | None, source: str, vg: str,
                         args: list[str], said: str) -> None:
    """Fails a move LVM left half-done, rolled back (``pvmove --abort``) if it can be:
    the caller must never see "succeeded" (or "cancelled") while LVs still sit on the
    pvmove mirror."""
    if not await _on_pvmove_mirror(svc, vg):
        return
    if job is not None:
        job.cancelled = False  # whatever was asked, this is a failure
    try:
        await _abort_move(svc, source)
    except LvmFailed:
        pass  # reported below by what LVM then shows
    still = await _on_pvmove_mirror(svc, vg)
    raise LvmFailed(
        f"pvmove stopped before the move was done (LVM said: {said}); " + (
            f"pvmove --abort could not roll it back: {', '.join(still)} still on LVM's "
            "temporary pvmove mirror" if still else
            "rolled back with pvmove --abort: the LVs are where they were"),
        argv=["lvm", "pvmove", *args], rc=0, log=[], stderr="")


async def _job_cancel(svc: Service, call: Call) -> dict[str, Any]:
    job = svc.jobs.get(call.args["job"])
    if job.state == "running":
        if job.cancel is None:
            raise InvalidRequest(f"job {job.id} ({job.method}) cannot be stopped cleanly; "
                                 "it runs to completion", field="job")
        # Marked first: pvmove may end the moment it is asked. What the job then says
        # comes from what LVM did (Job.aborted: it had not reported 100%; _finished_move:
        # no LV left on the pvmove mirror), not from this mark alone.
        job.cancelled = True
        await asyncio.shield(job.cancel())  # a caller gone mid-abort does not stop it
    return job.to_wire()


# ---- the table ------------------------------------------------------------------

_Q, _M, _D = Role.QUERY, Role.MANAGE, Role.DESTROY
_WAIT = {"wait": Param(v.wait)}
_DEVICES = Param(v.devices, True, "devices")
_VG = Param(v.vg_name, True, "vg")
_LV = Param(v.lv_path, True, "lv")
_PV = Param(v.device_path, True, "device")  # an existing PV: policy globs apply
_TAGS = {"add_tags": Param(v.tags), "del_tags": Param(v.tags)}


def _lock_vg(key: str) -> Callable[[dict[str, Any]], tuple[str, ...]]:
    return lambda args: (args[key] if isinstance(args[key], str) else args[key][0],)


def _table(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in methods}


METHODS: dict[str, Method] = _table(
    Method("ping", _Q, _ping),
    Method("version", _Q, _version),
    Method("status", _Q, _status),
    Method("subscribe", _Q, _ping),  # the transport attaches the listener on success
    Method("pvs", _Q, _pvs, {"names": Param(v.string_list_of(v.device_path)),
                             "vg": Param(v.vg_name), "select": Param(v.select)}),
    Method("vgs", _Q, _vgs, {"names": Param(v.string_list_of(v.vg_name)),
                             "select": Param(v.select)}),
    Method("lvs", _Q, _lvs, {"vg": Param(v.vg_name), "names": Param(v.string_list_of(v.lv_path)),
                             "tags": Param(v.tags), "select": Param(v.select)}),
    Method("report", _Q, _report, {"vg": Param(v.vg_name)}),
    Method("jobs", _Q, _jobs),
    Method("job_status", _Q, _job_status, {"job": Param(v.job_id, True)}),
    Method("job_cancel", _M, _job_cancel, {"job": Param(v.job_id, True)}),
    Method("pvmove", _M, _pvmove, {"source": _PV,
                                   "destination": Param(v.device_path, False, "device"),
                                   "lv": Param(v.lv_path), **_WAIT}, True,
           lambda args: ("#pvmove:" + args["source"],)),
    Method("pvcreate", _M, _pvcreate, {"devices": _DEVICES, **_WAIT}, True,
           lambda args: (ORPHANS,)),
    Method("pvremove", _D, _pvremove, {"devices": _DEVICES, **_WAIT}, True,
           lambda args: (ORPHANS,)),
    Method("vgcreate", _M, _vgcreate, {"name": Param(v.vg_name, True, "vg"),
                                       "devices": _DEVICES, "extent_size": Param(v.extent_size),
                                       "tags": Param(v.tags), **_WAIT}, True,
           lambda args: (ORPHANS, args["name"])),
    Method("vgremove", _D, _vgremove, {"vg": _VG, "force": Param(v.boolean), **_WAIT}, True,
           lambda args: (ORPHANS, args["vg"])),
    Method("lvcreate", _M, _lvcreate, {
        "vg": _VG, "name": Param(v.lv_name, True), "size": Param(v.size),
        "extents": Param(v.extents), "tags": Param(v.tags), "activate": Param(v.boolean),
        "zero": Param(v.boolean), "contiguous": Param(v.boolean),
        "type": Param(v.choice("linear", "snapshot", "thin-pool", "thin")),
        "origin": Param(v.lv_name), "pool": Param(v.lv_name), "virtual_size": Param(v.size),
        "stripes": Param(v.stripes), "stripe_size": Param(v.extent_size),
        "devices": Param(v.string_list_of(v.device_path)), **_WAIT}, True, _lock_vg("vg")),
    Method("pvresize", _M, _pvresize, {"device": _PV,
                                       "size": Param(v.size), **_WAIT}, True,
           lambda args: (ORPHANS,), locks_pv_vg=True),
    Method("pvchange", _M, _pvchange, {"device": _PV,
                                       "allocatable": Param(v.boolean), **_TAGS, **_WAIT},
           True, lambda args: (ORPHANS,), locks_pv_vg=True),
    Method("vgextend", _M, _vgextend, {"vg": _VG, "devices": _DEVICES, **_WAIT}, True,
           lambda args: (ORPHANS, args["vg"])),
    Method("vgreduce", _D, _vgreduce, {"vg": _VG, "devices": Param(v.string_list_of(
        v.device_path)), "missing": Param(v.boolean), **_WAIT}, True,
        lambda args: (ORPHANS, args["vg"])),
    Method("vgrename", _M, _vgrename, {"vg": _VG, "new_name": Param(v.vg_name, True, "vg"),
                                       **_WAIT}, True,
           lambda args: (ORPHANS, args["vg"], args["new_name"])),
    Method("vgchange", _M, _vgchange, {"vg": _VG, "activate": Param(v.boolean), **_TAGS,
                                       **_WAIT}, True, _lock_vg("vg")),
    Method("lvrename", _M, _lvrename, {"lv": _LV, "new_name": Param(v.lv_name, True),
                                       **_WAIT}, True, _lock_vg("lv")),
    Method("lvchange", _M, _lvchange, {"lv": _LV, "activate": Param(v.boolean),
                                       "permission": Param(v.choice("r", "rw")), **_TAGS,
                                       **_WAIT}, True, _lock_vg("lv")),
    Method("lvremove", _D, _lvremove, {"lv": _LV, **_WAIT}, True, _lock_vg("lv")),
    Method("lvresize", _M, _lvresize, {"lv": _LV, "size": Param(v.size, True),
                                       "force": Param(v.boolean), **_WAIT}, True,
           _lock_vg("lv")),
)
