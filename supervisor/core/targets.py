"""What a change touches, declared once, and everything derived from that declaration.

Rule: a change states in one ``Touches`` which VGs, PVs and LVs it acts on (and which it
creates). From that alone come its lock keys, its policy checks, the existence checks
made under its locks, the ``changed`` objects it announces and the read that answers
it. Policy is decided on the objects LVM will act on: VGs by their exact name (never a
UUID or other alias), devices by the path they resolved to at admission, an existing
PV by the VG it belongs to, and each of these is checked again under the locks.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lvmsuper.client.errors import AlreadyExists, Busy, NotFound, PermissionDenied
from lvmsuper.client.models import PV

from ..config import Config
from .scopes import Tags, VgScope
from .validate import Device

__all__ = ["ORPHANS", "Touches", "Answer", "Plan", "Policy", "PvView"]

ORPHANS = "#orphans"  # lock key of changes that move PVs into or out of VGs, or rename VGs


@dataclass(frozen=True, slots=True)
class Answer:
    """The read that answers a change: ``kind`` is "pv", "pvs", "vg", "lv" (read from
    LVM after the change), "lvs" (a batch: ``{"lvs": [LV, ...]}``, read in one run) or
    "removed" (``{"removed": names}``, nothing to read)."""

    kind: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Touches:
    vgs: tuple[str, ...] = ()            # existing VGs, by exact name
    new_vgs: tuple[str, ...] = ()        # VG names it creates (or renames to)
    pvs: tuple[Device, ...] = ()         # devices it acts on (PVs or to be): the VG
                                         # each one is in, if any, is touched too
    new_pvs: tuple[Device, ...] = ()     # devices pvcreate makes PVs: none may be one
    lvs: tuple[str, ...] = ()            # existing LVs, "vg/lv" (the VG is in vgs)
    new_lvs: tuple[str, ...] = ()        # LVs it creates, "vg/lv"
    orphans: bool = False                # holds ORPHANS
    add_vg_tags: tuple[str, ...] = ()    # tags it gives the VGs it touches or creates
    del_vg_tags: tuple[str, ...] = ()    # tags it takes off them
    renames: str | None = None           # the VG new_vgs renames (its tags go along)
    one_per_vg: str | None = None        # e.g. "pvmove": one such change per VG at once
    long: bool = False                   # runs for long: VG locks only while checking
    lockstart: bool = False              # (re)starts lockspaces: runs in a VG whose
                                         # lockspace is lost (others are refused there)
    answer: Answer | None = None


@dataclass(slots=True)
class Plan:
    """A declaration with the VGs of its existing PVs resolved (before the locks, and
    confirmed under them)."""

    touches: Touches
    args: dict[str, Any] = field(default_factory=dict)  # the call's (for error fields)
    pv_vgs: dict[str, str | None] = field(default_factory=dict)  # real path -> VG

    @property
    def vgs(self) -> list[str]:
        t = self.touches
        found = {vg for vg in self.pv_vgs.values() if vg}
        return sorted({*t.vgs, *t.new_vgs, *(lv.split("/")[0] for lv in t.lvs), *found})

    def field_of(self, target: object) -> str | None:
        """The parameter a VG name or a device came from, for the caller's error."""
        for key, value in self.args.items():
            for item in value if isinstance(value, list) else [value]:
                if item == target or (isinstance(item, tuple) and item[:1] == (target,)):
                    return key
        return None

    def check_keys(self) -> list[str]:
        """Held while the change is checked (and, unless ``long``, while it runs). A
        change to a PV in a VG holds that VG's lock; to a PV in none, ``ORPHANS``."""
        orphans = self.touches.orphans or any(vg is None for vg in self.pv_vgs.values())
        return sorted({*([ORPHANS] if orphans else []), *self.vgs})

    def run_keys(self) -> list[str]:
        """Held for the whole run (taken before ``check_keys``)."""
        t = self.touches
        serial = [f"#{t.one_per_vg}:{vg}" for vg in self.vgs] if t.one_per_vg else []
        return sorted(serial) if t.long else sorted({*serial, *self.check_keys()})

    def changed(self) -> list[dict[str, str]]:
        t = self.touches
        pv_vgs = sorted({vg for vg in self.pv_vgs.values() if vg})
        items = [("vg", n) for n in (*t.vgs, *t.new_vgs, *pv_vgs)]
        items += [("pv", d.real) for d in (*t.pvs, *t.new_pvs)]
        items += [("lv", n) for n in (*t.lvs, *t.new_lvs)]
        seen: set[tuple[str, str]] = set()
        out = []
        for kind, name in items:
            if name and (kind, name) not in seen:
                seen.add((kind, name))
                out.append({"type": kind, "name": name})
        return out


class PvView:
    """One ``pvs`` report, indexed by real device path: which VG each PV is in."""

    def __init__(self, pvs: Iterable[PV]) -> None:
        self.vg_of: dict[str, str | None] = {}
        self.vg_names: set[str] = set()
        for pv in pvs:
            self.vg_of[os.path.realpath(pv.name)] = pv.vg
            self.vg_of[pv.name] = pv.vg
            if pv.vg:
                self.vg_names.add(pv.vg)

    def is_pv(self, device: Device) -> bool:
        return device.real in self.vg_of


class Policy:
    def __init__(self, config: Config) -> None:
        self.protected = frozenset(config.protected_vgs)
        self.globs = config.policy_devices

    def device_allowed(self, device: Device) -> bool:
        return any(fnmatch.fnmatchcase(device.given, glob) or
                   fnmatch.fnmatchcase(device.real, glob) for glob in self.globs)

    def check(self, plan: Plan) -> None:
        """Protected VGs and device globs; before the locks and again under them."""
        t = plan.touches
        for dev in (*t.new_pvs, *t.pvs):
            if not self.device_allowed(dev):
                raise PermissionDenied(f"device {dev.given!r} is not allowed by [policy] "
                                       "devices", required="policy", object_type="pv",
                                       object_name=dev.given, field=plan.field_of(dev))
        for vg in plan.vgs:
            if vg in self.protected:
                via = [d for d in t.pvs if plan.pv_vgs.get(d.real) == vg]
                raise PermissionDenied(
                    f"VG {vg!r} is protected by policy" +
                    (f" ({via[0].given} belongs to it)" if via else ""), required="policy",
                    object_type="vg", object_name=vg,
                    field=plan.field_of(via[0] if via else vg))

    def resolve(self, plan: Plan, view: PvView) -> None:
        """The VGs of the plan's existing PVs, from ``view``."""
        plan.pv_vgs = {d.real: view.vg_of.get(d.real) for d in plan.touches.pvs}

    def verify(self, plan: Plan, view: PvView | None) -> None:
        """Under the locks: every named object is what it was at admission, exists (or
        not) as declared, and policy still allows the change. ``view`` (LVM's PV report,
        read under the locks) is needed only by changes that name devices: a VG or LV
        is named exactly (``validate.vg_name`` admits no alias), so LVM itself finds it
        or reports it missing (NotFound), and its name is what policy judges."""
        t = plan.touches
        for dev in (*t.pvs, *t.new_pvs):
            if not dev.still_same():
                raise PermissionDenied(f"{dev.given!r} no longer leads to {dev.real} (it "
                                       "changed while the change waited); nothing was done",
                                       required="policy", object_type="pv",
                                       object_name=dev.given)
        if view is not None:
            self._verify_view(plan, view)
        self.check(plan)

    @staticmethod
    def check_scope(plan: Plan, scope: VgScope | None, role: str, tags: Tags) -> None:
        """A scoped caller (``scope``; None: unscoped) acts only within its scope: every
        VG the plan touches is in it (by name, or by ``tags``: what LVM last said), and
        every VG the change leaves behind still is, with the name and tags it then has
        (a rename, a new VG, tags taken off). An orphan PV is judged by [policy]
        devices alone (``check``)."""
        if scope is None:
            return
        t = plan.touches
        add, drop = frozenset(t.add_vg_tags), frozenset(t.del_vg_tags)
        for vg in plan.vgs:
            if vg in t.new_vgs:
                continue
            before = tags.get(vg, frozenset())
            if not scope.covers(vg, before):
                via = [d for d in t.pvs if plan.pv_vgs.get(d.real) == vg]
                raise PermissionDenied(
                    f"VG {vg!r} is outside the caller's scope for the {role} role" +
                    (f" ({via[0].given} belongs to it)" if via else ""), required=str(role),
                    object_type="vg", object_name=vg,
                    field=plan.field_of(via[0] if via else vg))
            if t.renames != vg and (add or drop) and \
                    not scope.covers(vg, (before - drop) | add):
                raise PermissionDenied(
                    f"VG {vg!r} would leave the caller's scope for the {role} role with "
                    f"those tags removed", required=str(role), object_type="vg",
                    object_name=vg, field="del_tags" if "del_tags" in plan.args else None)
        for vg in t.new_vgs:
            base = tags.get(t.renames, frozenset()) if t.renames else frozenset()
            if not scope.covers(vg, (base - drop) | add):
                raise PermissionDenied(
                    f"VG {vg!r} would be outside the caller's scope for the {role} role",
                    required=str(role), object_type="vg", object_name=vg,
                    field=plan.field_of(vg))

    @staticmethod
    def needs_view(plan: Plan) -> bool:
        return bool(plan.touches.pvs or plan.touches.new_pvs)

    @staticmethod
    def _verify_view(plan: Plan, view: PvView) -> None:
        t = plan.touches
        for dev in t.pvs:
            if view.vg_of.get(dev.real) != plan.pv_vgs.get(dev.real):
                raise Busy(f"PV {dev.real} moved to another VG while this change waited; "
                           "nothing was done, retry", retry_after=1)
        for dev in t.new_pvs:
            if view.is_pv(dev):
                raise AlreadyExists(f"PV {dev.real!r} already exists", object_type="pv",
                                    object_name=dev.real)
        for vg in {*t.vgs, *(lv.split("/")[0] for lv in t.lvs)}:
            if vg not in view.vg_names:
                raise NotFound(f"VG {vg!r} not found", object_type="vg", object_name=vg)
        for vg in t.new_vgs:
            if vg in view.vg_names:
                raise AlreadyExists(f"VG {vg!r} already exists", object_type="vg",
                                    object_name=vg)
