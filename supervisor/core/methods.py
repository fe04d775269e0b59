"""The method table: every method's role, parameters and implementation, in one place.

Rule: a method that is not in ``METHODS`` does not exist (deny by default). Parameters
are declared with a checker each; unknown parameters are refused. A change declares
what it touches (``Touches``): its locks, policy checks, announced objects and the read
that answers it all derive from that (``targets``); its implementation only builds and
runs the LVM command.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

from lvmsuper.client import __version__
from lvmsuper.client.errors import InvalidRequest, LvmFailed, NotFound, PermissionDenied
from lvmsuper.client.models import LV

from ..lvm.argv import size_arg
from ..lvm.calls import Lvm
from . import validate as v
from .auth import Role
from .call import Call, Declare, Expect, Handler, Method, Param, Runtime
from .jobs import Job
from .scopes import Tags, tags_of
from .opening import Handoff, open_device
from .targets import Answer, Touches

__all__ = ["METHODS"]


# ---- reads ----------------------------------------------------------------

def _lvm(rt: Runtime, call: Call) -> Lvm:
    """LVM for this call: its device scan limited to ``scan_devices``, if given."""
    return rt.lvm.scoped(call.scan)


def _key(call: Call, *parts: Any) -> tuple[Any, ...]:
    """A read's coalescing key: its LVM command, including the devices it scans (a
    read limited to some devices never shares a run with one that is not)."""
    return (*parts, ("scan", *call.scan))


async def _ping(svc: Runtime, call: Call) -> dict[str, Any]:
    return {}


async def _subscribe(svc: Runtime, call: Call) -> dict[str, Any]:
    return svc.position()


async def _version(svc: Runtime, call: Call) -> dict[str, Any]:
    return {"lvmsuper": __version__, "lvm": await svc.lvm_version()}


async def _status(svc: Runtime, call: Call) -> dict[str, Any]:
    status = await svc.status()
    if call.scope is not None:  # other callers' errors name other VGs
        status["last_errors"] = []
        # lockspaces: only of the VGs the scope names (by name: no LVM run for tags)
        for key in ("lockspaces", "lost_lockspaces"):
            status[key] = [vg for vg in status[key] if call.scope.by_name(vg)]
    return status


async def _pvs(svc: Runtime, call: Call) -> list[Any]:
    a = call.args
    names = a.get("names", [])
    pvs = await svc.read(_key(call, "pvs", *names, a.get("select")),
                         lambda: _lvm(svc, call).pvs(names, a.get("select")),
                         [Expect("pv", n) for n in names])
    if call.scope is not None:  # a scoped caller: its VGs' PVs (and orphans it may use)
        tags = tags_of(pvs)
        if "vg" in a:
            await _in_scope(svc, call, a["vg"], tags)
        pvs = _named(call.scope.pvs(pvs, tags), pvs, names, "pv",
                     lambda pv: {pv.name, os.path.realpath(pv.name)})
    if "vg" in a:
        await svc.ensure([Expect("vg", a["vg"])])
        pvs = [pv for pv in pvs if pv.vg == a["vg"]]
    return pvs


async def _vgs(svc: Runtime, call: Call) -> list[Any]:
    names = call.args.get("names", [])
    select = call.args.get("select")
    vgs = await svc.read(_key(call, "vgs", *names, select),
                         lambda: _lvm(svc, call).vgs(names, select),
                         [Expect("vg", n) for n in names])
    if call.scope is not None:
        vgs = _named(call.scope.vgs(vgs), vgs, names, "vg", lambda vg: {vg.name})
    return vgs


async def _lvs(svc: Runtime, call: Call) -> list[Any]:
    a = call.args
    names = [f"{vg}/{lv}" for vg, lv in a.get("names", [])]
    if "vg" in a and names:
        names = [n for n in names if n.split("/")[0] == a["vg"]]
        if not names:
            if call.scope is not None:
                await _in_scope(svc, call, a["vg"], {})
            return []
    positional = names or ([a["vg"]] if "vg" in a else [])
    expect = [Expect("lv", n) for n in names] or [Expect("vg", n) for n in positional]
    lvs: list[LV] = await svc.read(_key(call, "lvs", *positional, a.get("select")),
                                   lambda: _lvm(svc, call).lvs(positional, a.get("select")),
                                   expect)
    if call.scope is not None:
        tags = tags_of(lvs)
        if "vg" in a:
            await _in_scope(svc, call, a["vg"], tags)
        lvs = _named(call.scope.lvs(lvs, tags), lvs, names, "lv", lambda lv: {lv.full_name})
    wanted = set(a.get("tags", []))
    if not wanted:
        return lvs  # as read (the read cache may hold its encoding)
    return [lv for lv in lvs if wanted <= set(lv.tags)]


async def _report(svc: Runtime, call: Call) -> dict[str, Any]:
    vg = call.args.get("vg")
    pvs, vgs, lvs = await svc.read(_key(call, "fullreport", vg),
                                   lambda: _lvm(svc, call).fullreport(vg),
                                   [Expect("vg", vg)] if vg else [])
    scope = call.scope
    if scope is not None:
        tags = tags_of(vgs)
        if vg is not None:
            await _in_scope(svc, call, vg, tags)
        pvs, vgs, lvs = scope.pvs(pvs, tags), scope.vgs(vgs), scope.lvs(lvs, tags)
    return {"pvs": pvs, "vgs": vgs, "lvs": lvs}


async def _vgck(svc: Runtime, call: Call) -> dict[str, Any]:
    """LVM's consistency check: ``{"ok", "log"}``. A VG that does not exist is NotFound;
    one that only a narrowed scan (``scan_devices``) hides fails the check."""
    vg = call.args["vg"]
    if call.scope is not None:  # nothing of a VG outside the scope, not even its log
        await _in_scope(svc, call, vg, {})
    ok, log = await svc.read(_key(call, "vgck", vg), lambda: _lvm(svc, call).vgck(vg), [])
    if not ok:
        await svc.ensure([Expect("vg", vg)])
    return {"ok": ok, "log": log}


async def _in_scope(svc: Runtime, call: Call, vg: str, tags: Tags) -> None:
    """A VG a scoped caller names is in its scope, or NotFound (as if it did not
    exist: a scoped caller learns nothing of the others). Its tags come from the read
    already made, or (a VG outside the scope's globs that the read showed nothing of,
    when the scope has tags) from one ``vgs`` run of that VG."""
    scope = call.scope
    if scope is None or scope.by_name(vg):
        return
    if vg not in tags and scope.tags:
        found = await svc.read(_key(call, "vgs", vg, None), lambda: _lvm(svc, call).vgs([vg]),
                               [Expect("vg", vg)])
        tags = tags_of(found)
    if not scope.covers(vg, tags.get(vg, ())):
        raise NotFound(f"VG {vg!r} not found", object_type="vg", object_name=vg)


def _named(shown: list[Any], read: list[Any], names: list[str], kind: str,
           keys: Any) -> list[Any]:
    """A scoped read: an object the caller named but may not see is NotFound, as an
    object that does not exist is."""
    if names:
        visible = {k for item in shown for k in keys(item)}
        for name in names:  # a device may be named by a link to it
            if name not in visible and (kind != "pv" or os.path.realpath(name) not in visible):
                raise NotFound(f"{kind.upper()} {name!r} not found", object_type=kind,
                               object_name=name)
    return shown


def _job_visible(call: Call, job: Job) -> bool:
    """A scoped caller sees its own jobs, and those on VGs its scope names."""
    scope = call.scope
    return scope is None or job.uid == call.caller.uid or (
        job.plan is not None and bool(job.plan.vgs) and all(map(scope.by_name, job.plan.vgs)))


async def _jobs(svc: Runtime, call: Call) -> list[Any]:
    return [job.to_wire() for job in svc.jobs.all() if _job_visible(call, job)]


async def _job_status(svc: Runtime, call: Call) -> dict[str, Any]:
    job = svc.jobs.get(call.args["job"])
    if not _job_visible(call, job):
        raise NotFound(f"no job {job.id!r}", object_type="job", object_name=job.id)
    return job.to_wire()


# ---- changes: what each touches -------------------------------------------------------

def _devs(args: dict[str, Any], key: str) -> tuple[v.Device, ...]:
    value = args.get(key)
    return () if value is None else tuple(value) if isinstance(value, list) else (value,)


def _lv(args: dict[str, Any], key: str = "lv") -> str:
    vg, lv = args[key]
    return f"{vg}/{lv}"


def declare(build: Any) -> Declare:
    """A declaration that depends on the arguments alone."""
    async def touches(rt: Runtime, call: Call) -> Touches:
        return build(call.args)  # type: ignore[no-any-return]
    return touches


async def _wiping(rt: Runtime, call: Call) -> None:
    """``wipe=true`` lets LVM wipe signatures (a filesystem, a partition table) off the
    devices: data is destroyed, so it needs the destroy role."""
    if call.args.get("wipe"):
        await call.require(Role.DESTROY)


async def _declare_pvcreate(rt: Runtime, call: Call) -> Touches:
    await _wiping(rt, call)
    devs = _devs(call.args, "devices")
    return Touches(new_pvs=devs, orphans=True, answer=Answer("pvs", tuple(d.real for d in devs)))


async def _declare_vgcreate(rt: Runtime, call: Call) -> Touches:
    await _wiping(rt, call)
    a = call.args
    return Touches(new_vgs=(a["name"],), pvs=_devs(a, "devices"), orphans=True,
                   add_vg_tags=tuple(a.get("tags", [])), answer=Answer("vg", (a["name"],)))


async def _declare_vgextend(rt: Runtime, call: Call) -> Touches:
    await _wiping(rt, call)
    a = call.args
    return Touches(vgs=(a["vg"],), pvs=_devs(a, "devices"), orphans=True,
                   answer=Answer("vg", (a["vg"],)))


def _vgreduce_touches(a: dict[str, Any]) -> Touches:
    if bool(a.get("devices")) == a.get("missing", False):
        raise InvalidRequest("give either devices or missing=true", field="devices")
    return Touches(vgs=(a["vg"],), pvs=_devs(a, "devices"), orphans=True,
                   answer=Answer("vg", (a["vg"],)))


def _lvcreate_touches(a: dict[str, Any]) -> Touches:
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
    used = tuple(f"{vg}/{a[k]}" for k in ("origin", "pool") if k in a)
    # the PVs to allocate from are devices like any other: [policy] devices apply
    return Touches(vgs=(vg,), lvs=used, new_lvs=(f"{vg}/{name}",), pvs=_devs(a, "devices"),
                   answer=Answer("lv", (f"{vg}/{name}",)))


def _lv_names(a: dict[str, Any]) -> list[str]:
    """The LVs a change names: ``lv``, or a batch ``lvs`` (validated: one VG, no twice)."""
    return [f"{vg}/{lv}" for vg, lv in a["lvs"]] if "lvs" in a else [_lv(a)]


async def _all_there(rt: Runtime, names: list[str]) -> list[Expect]:
    """A batch runs only if every LV it names exists (checked under its VG's lock): LVM
    would otherwise change the others and fail on the missing one, half done."""
    expect = [Expect("lv", n) for n in names]
    if len(names) > 1:
        await rt.ensure(expect)
    return expect


def _lv_touches(answer: str, batch: str | None = None) -> Any:
    """One LV, or a batch of LVs of one VG (``lvs``; answered as ``batch``): the VG is
    locked once; policy, ``changed`` and the audit cover every LV named."""
    def build(a: dict[str, Any]) -> Touches:
        names = tuple(_lv_names(a))
        kind = batch if batch is not None and "lvs" in a else answer
        return Touches(vgs=(names[0].split("/")[0],), lvs=names, answer=Answer(kind, names))
    return build


def _lvrename_touches(a: dict[str, Any]) -> Touches:
    vg, new = a["lv"][0], f"{a['lv'][0]}/{a['new_name']}"
    return Touches(vgs=(vg,), lvs=(_lv(a),), new_lvs=(new,), answer=Answer("lv", (new,)))


def _pv_touches(a: dict[str, Any]) -> Touches:
    """An existing PV: the lock of its VG (or ORPHANS, when it is in none)."""
    dev = a["device"]
    return Touches(pvs=(dev,), answer=Answer("pv", (dev.real,)))


def _pvmove_touches(a: dict[str, Any]) -> Touches:
    source = a["source"]
    return Touches(pvs=(source, *_devs(a, "destination")), one_per_vg="pvmove", long=True,
                   answer=Answer("pv", (source.real,)))


async def _declare_lockspace(rt: Runtime, call: Call) -> Touches:
    """lockstart/lockstop: one VG, or (without ``vg``) every shared VG, which only a
    caller whose role is not limited to some VGs may ask for."""
    vg = call.args.get("vg")
    if vg is None and call.authority.scope(call.caller, call.method.role) is not None:
        raise PermissionDenied(f"{call.method.name} without vg acts on every shared VG: a "
                               "caller limited to some VGs names one",
                               required=str(call.method.role), field="vg")
    return Touches(vgs=(vg,) if vg else (), lockstart=True)


async def _declare_job_cancel(rt: Runtime, call: Call) -> Touches:
    """The job's owner (or root) may stop it, holding the locks of its VGs."""
    job = rt.jobs.get(call.args["job"])
    if call.caller.uid not in (0, job.uid):
        raise PermissionDenied(f"job {job.id} belongs to uid {job.uid}; only its owner or "
                               "root may cancel it", required="owner")
    return Touches(vgs=tuple(job.plan.vgs) if job.plan is not None else ())


# ---- changes: the LVM commands -----------------------------------------------------------

def _tag_args(option: str, tags: list[str]) -> list[str]:
    return [arg for tag in tags for arg in (option, tag)]


def _yn(value: bool) -> str:
    return "y" if value else "n"


def _wipe(args: dict[str, Any]) -> list[str]:
    """Never ``--yes`` (or ``-ff``) unless the caller asked to wipe: without it LVM
    refuses a device that carries a signature instead of wiping it."""
    return ["--yes"] if args.get("wipe") else []


def _reals(args: dict[str, Any], key: str) -> list[str]:
    return [d.real for d in _devs(args, key)]


def _metadata(args: dict[str, Any]) -> list[str]:
    """A PV's metadata layout (pvcreate) and whether its areas are used (pvchange)."""
    out = (["--metadatasize", size_arg(args["metadata_size"])]
           if "metadata_size" in args else [])
    out += ["--metadatacopies", str(args["metadata_copies"])] \
        if "metadata_copies" in args else []
    return out + (["--metadataignore", _yn(args["metadata_ignore"])]
                  if "metadata_ignore" in args else [])


async def _pvcreate(rt: Runtime, call: Call) -> None:
    devices = _reals(call.args, "devices")
    await rt.lvm_change(call, "pvcreate", [*_wipe(call.args), *_metadata(call.args), *devices],
                        [Expect("pv", d, False) for d in devices])


async def _pvremove(rt: Runtime, call: Call) -> None:
    devices = _reals(call.args, "devices")
    await rt.lvm_change(call, "pvremove", devices, [Expect("pv", d) for d in devices])


async def _vgcreate(rt: Runtime, call: Call) -> None:
    a = call.args
    args = [*_wipe(a), *_tag_args("--addtag", a.get("tags", []))]
    if "extent_size" in a:
        args += ["--physicalextentsize", size_arg(a["extent_size"])]
    if "auto_activation" in a:
        args += ["--setautoactivation", _yn(a["auto_activation"])]
    if a.get("shared"):
        # lock type sanlock; LVM starts the new VG's lockspace and waits for it (tens of
        # seconds). Straight on devices: the first shared VG is what creates the global
        # lock, without which pvcreate cannot run under use_lvmlockd=1.
        args += ["--shared"]
    await rt.lvm_change(call, "vgcreate", [*args, a["name"], *_reals(a, "devices")],
                        [Expect("vg", a["name"], False)])


async def _vgremove(rt: Runtime, call: Call) -> None:
    vg, force = call.args["vg"], call.args.get("force", False)
    if not force:
        found = await rt.read(_key(call, "vgs", vg, None), lambda: _lvm(rt, call).vgs([vg]),
                              [Expect("vg", vg)])
        if found and found[0].lv_count:
            raise InvalidRequest(f"VG {vg!r} holds {found[0].lv_count} LV(s); remove them "
                                 "first or pass force=true", field="force")
    await rt.lvm_change(call, "vgremove", ["--force", "--yes", vg] if force else [vg],
                        [Expect("vg", vg)])


async def _lvcreate(rt: Runtime, call: Call) -> None:
    a = call.args
    vg, name, kind = a["vg"], a["name"], a.get("type", "linear")
    # --yes here only answers LVM's question about wiping signatures *inside the new
    # LV's own extents*, never about a device
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
                        ("contiguous", "--contiguous"), ("wipe_signatures", "--wipesignatures")):
        if key in a:
            args += [option, _yn(a[key])]
    if "stripes" in a:
        args += ["--stripes", str(a["stripes"])]
    if "stripe_size" in a:
        args += ["--stripesize", size_arg(a["stripe_size"])]
    target = f"{vg}/{a['origin']}" if kind == "snapshot" else vg
    # LVM 2.03 refuses --reportformat for snapshots and thin LVs: plain log there
    await rt.lvm_change(call, "lvcreate", [*args, target, *_reals(a, "devices")], expect,
                        json_log=kind == "linear")


async def _lvremove(rt: Runtime, call: Call) -> None:
    """One LV or a batch (``lvs``), in one LVM run."""
    names = _lv_names(call.args)
    await rt.lvm_change(call, "lvremove", ["--yes", *names], await _all_there(rt, names))


async def _lvresize(rt: Runtime, call: Call) -> None:
    full, size = _lv(call.args), call.args["size"]
    current = await rt.read(_key(call, "lvs", full, None), lambda: _lvm(rt, call).lvs([full]),
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
    # In a shared VG, growing an LV active on several hosts (shared) keeps this host's
    # shared lock (LVM's "shupdate"; with sanlock no remote refresh: "norefresh"): the
    # other hosts see the new size after their own lvchange refresh=true.
    shared = ["--lockopt", "shupdate,norefresh"] if current[0].lock_args and not shrink else []
    args = ["--size", size_arg(size), *(["--force"] if shrink else []), *shared, full]
    await rt.lvm_change(call, "lvresize", args, [Expect("lv", full)])


def _tag_changes(args: dict[str, Any]) -> list[str]:
    return _tag_args("--addtag", args.get("add_tags", [])) + \
        _tag_args("--deltag", args.get("del_tags", []))


def _need_some(args: dict[str, Any], *keys: str) -> None:
    if not any(k in args for k in keys):
        raise InvalidRequest(f"give at least one of {', '.join(keys)}", field=keys[0])


async def _pvresize(rt: Runtime, call: Call) -> None:
    dev = call.args["device"].real
    size = (["--setphysicalvolumesize", size_arg(call.args["size"])]
            if "size" in call.args else [])
    await rt.lvm_change(call, "pvresize", ["--yes", *size, dev], [Expect("pv", dev)])


async def _pvchange(rt: Runtime, call: Call) -> None:
    a, dev = call.args, call.args["device"].real
    _need_some(a, "allocatable", "metadata_ignore", "add_tags", "del_tags")
    args = (["--allocatable", _yn(a["allocatable"])] if "allocatable" in a else [])
    await rt.lvm_change(call, "pvchange", [*args, *_metadata(a), *_tag_changes(a), dev],
                        [Expect("pv", dev)])


async def _vgextend(rt: Runtime, call: Call) -> None:
    vg = call.args["vg"]
    await rt.lvm_change(call, "vgextend", [*_wipe(call.args), vg, *_reals(call.args, "devices")],
                        [Expect("vg", vg)])


async def _vgreduce(rt: Runtime, call: Call) -> None:
    vg, devices = call.args["vg"], _reals(call.args, "devices")
    args = [vg, *devices] if devices else ["--removemissing", vg]
    await rt.lvm_change(call, "vgreduce", args,
                        [Expect("vg", vg), *(Expect("pv", d) for d in devices)])


async def _vgrename(rt: Runtime, call: Call) -> None:
    vg, new = call.args["vg"], call.args["new_name"]
    await rt.lvm_change(call, "vgrename", [vg, new],
                        [Expect("vg", vg), Expect("vg", new, False)])


# ``activate``: true, false, or a shared VG's lock mode. true is LVM's -ay (in a shared
# VG, LVM makes it exclusive: -aey).
_ACTIVATE = {True: "y", False: "n", "exclusive": "ey", "shared": "sy"}


async def _vgchange(rt: Runtime, call: Call) -> None:
    a, vg = call.args, call.args["vg"]
    _need_some(a, "activate", "add_tags", "del_tags")
    args = (["--activate", _ACTIVATE[a["activate"]]] if "activate" in a else [])
    await rt.lvm_change(call, "vgchange", [*args, *_tag_changes(a), vg], [Expect("vg", vg)])


async def _lvrename(rt: Runtime, call: Call) -> None:
    (vg, lv), new = call.args["lv"], call.args["new_name"]
    await rt.lvm_change(call, "lvrename", [vg, lv, new],
                        [Expect("lv", f"{vg}/{lv}"), Expect("lv", f"{vg}/{new}", False)])


async def _lvchange(rt: Runtime, call: Call) -> None:
    """One LV or a batch (``lvs``), in one LVM run."""
    a, names = call.args, _lv_names(call.args)
    _need_some(a, "activate", "refresh", "permission", "add_tags", "del_tags")
    expect = await _all_there(rt, names)
    if a.get("refresh"):
        # LVM's --refresh (reload the device from the metadata, e.g. after another host
        # extended the LV) is a command form of its own: it takes no other change
        others = [k for k in ("activate", "permission", "add_tags", "del_tags") if k in a]
        if others:
            raise InvalidRequest(f"refresh goes alone, not with {others[0]}", field=others[0])
        await rt.lvm_change(call, "lvchange", ["--refresh", *names], expect)
        return
    if a.get("activate") == "shared":
        await _shareable(rt, call, names)
    # Activating an LV by name is explicit: it also activates an LV carrying LVM's
    # activation-skip flag (thin snapshots get it by default), as `lvchange -ay -K`
    # does. vgchange keeps the flag's meaning (skipped when a whole VG is activated).
    mode = _ACTIVATE[a["activate"]] if "activate" in a else None
    args = ([] if mode is None else ["--activate", "n"] if mode == "n" else
            ["--activate", mode, "--ignoreactivationskip"])
    args += ["--permission", a["permission"]] if "permission" in a else []
    if len(args) + len(_tag_changes(a)) == 0:
        raise InvalidRequest("refresh=false changes nothing; give a change", field="refresh")
    await rt.lvm_change(call, "lvchange", [*args, *_tag_changes(a), *names], expect)


async def _shareable(rt: Runtime, call: Call, names: list[str]) -> None:
    """Only plain LVs (linear, striped; no snapshot of or on them) can be active on
    several hosts at once: a thin pool, a thin volume, a snapshot or an origin is
    refused before LVM runs."""
    lvs = await rt.read(_key(call, "lvs", *names, None), lambda: _lvm(rt, call).lvs(names),
                        [Expect("lv", n) for n in names])
    for lv in lvs:
        if lv.segtype not in ("linear", "striped") or lv.attr[:1] not in ("-", "") \
                or lv.origin:
            raise InvalidRequest(f"{lv.full_name} ({lv.segtype}) cannot be active on several "
                                 "hosts at once: activate it exclusive", field="activate")


async def _shared_vg(rt: Runtime, call: Call) -> str | None:
    """The ``vg`` of lockstart/lockstop, which must be a shared VG (a local VG has no
    lockspace: LVM would do nothing and say nothing)."""
    vg = call.args.get("vg")
    if vg is not None:
        found = await rt.read(_key(call, "vgs", vg, None), lambda: _lvm(rt, call).vgs([vg]),
                              [Expect("vg", vg)])
        if found and not found[0].shared:
            raise InvalidRequest(f"VG {vg!r} is not shared (lock type "
                                 f"{found[0].lock_type or 'none'}): it has no lockspace",
                                 field="vg")
    return vg


async def _lockstart(rt: Runtime, call: Call) -> dict[str, Any]:
    """``vgchange --lockstart``: joins the VG's sanlock lockspace (all shared VGs'
    without ``vg``) and waits until its locks are ready (tens of seconds). A lockspace
    this host lost is dropped first (``lvmlockctl --drop``) so that it can start again."""
    vg = await _shared_vg(rt, call)
    if vg is not None and vg in (await rt.lockd.info()).lost:
        await rt.lockd.drop(vg)
    # LVM 2.03 refuses --reportformat with --lockstart/--lockstop: plain log there
    args, expect = ["--lockstart", *([vg] if vg else [])], [Expect("vg", vg)] if vg else []
    try:
        await rt.lvm_change(call, "vgchange", args, expect, json_log=False)
    except LvmFailed as exc:
        # LVM activates the VG's hidden lvmlock LV, then lvmlockd opens its
        # /dev/mapper node: seen in the cluster tier, lvmlockd looked before udev had
        # made the node ("VG svg start failed: invalid parameters for sanlock", lvmlockd:
        # "stat error 2"). The LV stays active: a second start finds the node.
        if "start failed: invalid parameters for sanlock" not in exc.message:
            raise
        await asyncio.sleep(2)
        await rt.lvm_change(call, "vgchange", args, expect, json_log=False)
    started = (await rt.lockd.info()).started
    return {"started": started if vg is None else [vg]}


async def _lockstop(rt: Runtime, call: Call) -> dict[str, Any]:
    """``vgchange --lockstop``: leaves the VG's lockspace (all of them without ``vg``);
    LVM refuses while an LV of it is active here."""
    vg = await _shared_vg(rt, call)
    before = set((await rt.lockd.info()).started)
    await rt.lvm_change(call, "vgchange", ["--lockstop", *([vg] if vg else [])],
                        [Expect("vg", vg)] if vg else [], json_log=False)
    after = set((await rt.lockd.info()).started)
    return {"stopped": [vg] if vg is not None else sorted(before - after)}


_PROGRESS = re.compile(r"Moved:\s*([0-9]+(?:\.[0-9]+)?)%")


async def _pvmove(rt: Runtime, call: Call) -> None:
    """Always a job; its progress follows LVM's ``-i 1`` lines. A move LVM leaves
    unfinished (it can exit 0 saying "Interrupted") fails, after a rollback. One move
    per VG at once (``one_per_vg``): a second move's mirror would look like this one
    left half-done."""
    a, source = call.args, call.args["source"].real
    job = call.job
    if job is not None:
        job.progress = 0
        job.cancel = lambda: _abort_move(rt, source)
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
    args += [source, *_reals(a, "destination")]
    call.ran = True
    try:
        await _lvm(rt, call).pvmove(args, progress)
    except LvmFailed as exc:
        raise await rt.classify(exc, [Expect("pv", source)]) from None
    assert call.plan is not None
    vg = call.plan.pv_vgs.get(source)
    if vg:
        await _finished_move(rt, job, source, vg, args, said[0] if said else "nothing")
    call.completed = True


async def _abort_move(rt: Runtime, source: str) -> None:
    """``pvmove --abort``: plain output, as LVM may follow its report with a line of
    polling ("Interrupted: ...") that is no JSON."""
    await rt.lvm.change("pvmove", ["--abort", source], json_log=False)


async def _on_pvmove_mirror(rt: Runtime, vg: str) -> list[str]:
    """LVs of ``vg`` still on LVM's temporary pvmove mirror (a move not done)."""
    return [lv.full_name for lv in await rt.lvm.lvs([vg])
            if any(d.startswith("pvmove") for d in lv.devices)]


async def _finished_move(rt: Runtime, job: Job | None, source: str, vg: str,
                         args: list[str], said: str) -> None:
    """Fails a move LVM left half-done, rolled back (``pvmove --abort``) if it can be:
    the caller must never see "succeeded" (or "cancelled") while LVs still sit on the
    pvmove mirror."""
    if not await _on_pvmove_mirror(rt, vg):
        return
    if job is not None:
        job.cancelled = False  # whatever was asked, this is a failure
    try:
        await _abort_move(rt, source)
    except LvmFailed:
        pass  # reported below by what LVM then shows
    still = await _on_pvmove_mirror(rt, vg)
    raise LvmFailed(
        f"pvmove stopped before the move was done (LVM said: {said}); " + (
            f"pvmove --abort could not roll it back: {', '.join(still)} still on LVM's "
            "temporary pvmove mirror" if still else
            "rolled back with pvmove --abort: the LVs are where they were"),
        argv=["lvm", "pvmove", *args], rc=0, log=[], stderr="")


async def _job_cancel(rt: Runtime, call: Call) -> dict[str, Any]:
    job = rt.jobs.get(call.args["job"])
    if job.state == "running":
        if job.cancel is None:
            raise InvalidRequest(f"job {job.id} ({job.method}) cannot be stopped cleanly; "
                                 "it runs to completion", field="job")
        # Marked first: pvmove may end the moment it is asked. What the job then says
        # comes from what LVM did (Job.aborted: it had not reported 100%; _finished_move:
        # no LV left on the pvmove mirror), not from this mark alone.
        job.cancelled = True
        call.ran = True
        await asyncio.shield(job.cancel())  # a caller gone mid-abort does not stop it
        call.completed = True
    return job.to_wire()


async def _lv_open(rt: Runtime, call: Call) -> Handoff:
    """Under the VG's lock: the LV as LVM reports it now (exactly this name), active,
    then its device opened (``opening``) and handed to the caller."""
    full, mode = _lv(call.args), call.args["mode"]
    found = await rt.read(_key(call, "lv_open", full), lambda: _lvm(rt, call).lv_devices([full]),
                          [Expect("lv", full)])
    device = next((d for d in found if d.full_name == full), None)
    if device is None:
        raise NotFound(f"LV {full!r} not found", object_type="lv", object_name=full)
    if not device.active or device.major < 0 or device.minor < 0:
        raise InvalidRequest(f"LV {full!r} is not active; activate it first "
                             "(lvchange activate=true)", field="lv")
    call.handoff = open_device(full, device.major, device.minor, mode,
                               call.args.get("shared", False))
    call.handoff.path = device.path or call.handoff.path
    return call.handoff


# ---- the table ------------------------------------------------------------------

_Q, _M, _D, _O = Role.QUERY, Role.MANAGE, Role.DESTROY, Role.OPEN
_WAIT = {"wait": Param(v.wait), "request_id": Param(v.request_id)}
_DEVICES = Param(v.devices, True)
_VG = Param(v.vg_name, True)
_LV = Param(v.lv_path, True)
_PV = Param(v.existing_pv, True)
_TAGS = {"add_tags": Param(v.tags), "del_tags": Param(v.tags)}
_WIPE = {"wipe": Param(v.boolean)}
# every method that runs LVM on devices: its scan limited to these (never its policy)
_SCAN = {"scan_devices": Param(v.scan_devices)}
# a single LV or a batch of LVs of one VG: exactly one of the two
_LV_OR_BATCH = {"lv": Param(v.lv_path, one_of="lv"), "lvs": Param(v.lv_paths, one_of="lv")}


def _change(name: str, role: Role, run: Handler, params: dict[str, Param],
            touches: Declare, *, scan: bool = True) -> Method:
    return Method(name, role, run, {**params, **(_SCAN if scan else {}), **_WAIT}, touches)


def _read(name: str, run: Handler, params: dict[str, Param]) -> Method:
    return Method(name, _Q, run, {**params, **_SCAN})


def _table(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in methods}


METHODS: dict[str, Method] = _table(
    Method("ping", _Q, _ping),
    Method("version", _Q, _version),
    Method("status", _Q, _status),
    # the transport attaches the listener (and replays from ``since``) on success
    Method("subscribe", _Q, _subscribe, {"since": Param(v.position)}),
    _read("pvs", _pvs, {"names": Param(v.string_list_of(v.device_path)),
                        "vg": Param(v.vg_name), "select": Param(v.select)}),
    _read("vgs", _vgs, {"names": Param(v.string_list_of(v.vg_name)),
                        "select": Param(v.select)}),
    _read("lvs", _lvs, {"vg": Param(v.vg_name), "names": Param(v.string_list_of(v.lv_path)),
                        "tags": Param(v.tags), "select": Param(v.select)}),
    _read("report", _report, {"vg": Param(v.vg_name)}),
    _read("vgck", _vgck, {"vg": _VG}),
    Method("jobs", _Q, _jobs),
    Method("job_status", _Q, _job_status, {"job": Param(v.job_id, True)}),
    _change("job_cancel", _M, _job_cancel, {"job": Param(v.job_id, True)}, _declare_job_cancel,
            scan=False),
    _change("pvmove", _M, _pvmove, {"source": _PV, "destination": Param(v.existing_pv),
                                    "lv": Param(v.lv_path)}, declare(_pvmove_touches)),
    _change("pvcreate", _M, _pvcreate, {
        "devices": _DEVICES, **_WIPE, "metadata_size": Param(v.size),
        "metadata_copies": Param(v.metadata_copies), "metadata_ignore": Param(v.boolean)},
        _declare_pvcreate),
    _change("pvremove", _D, _pvremove, {"devices": _DEVICES},
            declare(lambda a: Touches(pvs=_devs(a, "devices"), orphans=True, answer=Answer(
                "removed", tuple(d.real for d in _devs(a, "devices")))))),
    _change("vgcreate", _M, _vgcreate, {"name": _VG, "devices": _DEVICES,
                                        "extent_size": Param(v.extent_size),
                                        "tags": Param(v.tags), **_WIPE,
                                        "auto_activation": Param(v.boolean),
                                        "shared": Param(v.boolean)},
            _declare_vgcreate),
    _change("vgremove", _D, _vgremove, {"vg": _VG, "force": Param(v.boolean)},
            declare(lambda a: Touches(vgs=(a["vg"],), orphans=True,
                                      answer=Answer("removed", (a["vg"],))))),
    _change("lvcreate", _M, _lvcreate, {
        "vg": _VG, "name": Param(v.lv_name, True), "size": Param(v.size),
        "extents": Param(v.extents), "tags": Param(v.tags), "activate": Param(v.boolean),
        "zero": Param(v.boolean), "contiguous": Param(v.boolean),
        "wipe_signatures": Param(v.boolean),
        "type": Param(v.choice("linear", "snapshot", "thin-pool", "thin")),
        "origin": Param(v.lv_name), "pool": Param(v.lv_name), "virtual_size": Param(v.size),
        "stripes": Param(v.stripes), "stripe_size": Param(v.extent_size),
        "devices": Param(v.string_list_of(v.existing_pv))}, declare(_lvcreate_touches)),
    _change("pvresize", _M, _pvresize, {"device": _PV, "size": Param(v.size)},
            declare(_pv_touches)),
    _change("pvchange", _M, _pvchange, {"device": _PV, "allocatable": Param(v.boolean),
                                        "metadata_ignore": Param(v.boolean), **_TAGS},
            declare(_pv_touches)),
    _change("vgextend", _M, _vgextend, {"vg": _VG, "devices": _DEVICES, **_WIPE},
            _declare_vgextend),
    _change("vgreduce", _D, _vgreduce, {"vg": _VG, "devices": Param(v.string_list_of(
        v.existing_pv)), "missing": Param(v.boolean)}, declare(_vgreduce_touches)),
    _change("vgrename", _M, _vgrename, {"vg": _VG, "new_name": _VG},
            declare(lambda a: Touches(vgs=(a["vg"],), new_vgs=(a["new_name"],), orphans=True,
                                      renames=a["vg"], answer=Answer("vg", (a["new_name"],))))),
    _change("vgchange", _M, _vgchange, {"vg": _VG, "activate": Param(v.activation), **_TAGS},
            declare(lambda a: Touches(vgs=(a["vg"],), add_vg_tags=tuple(a.get("add_tags", [])),
                                      del_vg_tags=tuple(a.get("del_tags", [])),
                                      answer=Answer("vg", (a["vg"],))))),
    _change("lvrename", _M, _lvrename, {"lv": _LV, "new_name": Param(v.lv_name, True)},
            declare(_lvrename_touches)),
    _change("lvchange", _M, _lvchange, {**_LV_OR_BATCH, "activate": Param(v.activation),
                                        "refresh": Param(v.boolean),
                                        "permission": Param(v.choice("r", "rw")), **_TAGS},
            declare(_lv_touches("lv", batch="lvs"))),
    # shared VGs: join / leave lockspaces (one VG, or all shared VGs without vg)
    _change("lockstart", _M, _lockstart, {"vg": Param(v.vg_name)}, _declare_lockspace,
            scan=False),
    _change("lockstop", _M, _lockstop, {"vg": Param(v.vg_name)}, _declare_lockspace,
            scan=False),
    _change("lvremove", _D, _lvremove, _LV_OR_BATCH, declare(_lv_touches("removed"))),
    # no wait, no request_id: it runs in the caller's task and yields a descriptor once
    Method("lv_open", _O, _lv_open, {"lv": _LV, "mode": Param(v.choice("r", "rw"), True),
                                     "shared": Param(v.boolean), **_SCAN},
           declare(lambda a: Touches(vgs=(a["lv"][0],), lvs=(_lv(a),))), inline=True),
    _change("lvresize", _M, _lvresize, {"lv": _LV, "size": Param(v.size, True),
                                        "force": Param(v.boolean)}, declare(_lv_touches("lv"))),
)
