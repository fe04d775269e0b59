"""Delegation limited to some VGs (``[[access.scope]]``): what a scoped caller sees.

Rules: a caller's scope for a role is the union of the ``[[access.scope]]`` entries of
its groups that grant that role; a caller who has the role from a global ``[access]``
list (or is root) has no scope for it: it sees and may touch everything, as before. A
VG is in a scope when its name matches one of the globs (fnmatch, case-sensitive) or it
carries one of the tags; its PVs and LVs go with it. An orphan PV is in a scope when
``[policy] devices`` allows its device (a scoped caller may make VGs of those).

Reads are filtered here, from the one LVM report they ran (pv and lv reports carry
their VG's tags: ``Listing.vg_tags``), never by a second run. The D-Bus transport has
no scopes of its own: there polkit decides each call, with the call's details.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lvmsuper.client.models import LV, PV, VG

from .validate import Device

__all__ = ["VgScope", "Tags", "tags_of", "details"]

Tags = Mapping[str, frozenset[str]]  # VG name -> its tags


@dataclass(frozen=True, slots=True)
class VgScope:
    globs: tuple[str, ...]
    tags: frozenset[str]
    devices: tuple[str, ...] = ()  # [policy] devices: orphan PVs on them are in scope

    def by_name(self, vg: str) -> bool:
        return any(fnmatch.fnmatchcase(vg, glob) for glob in self.globs)

    def covers(self, vg: str, tags: Iterable[str]) -> bool:
        return self.by_name(vg) or not self.tags.isdisjoint(tags)

    def orphan(self, device: str) -> bool:
        """An orphan PV on ``device``: in scope when policy lets PVs be made there."""
        real = os.path.realpath(device)
        return any(fnmatch.fnmatchcase(device, g) or fnmatch.fnmatchcase(real, g)
                   for g in self.devices)

    def owner(self, vg: str | None, device: str, tags: Tags) -> bool:
        """A PV (or anything of a VG) that belongs to ``vg`` (None: an orphan PV)."""
        if not vg:
            return self.orphan(device)
        return self.covers(vg, tags.get(vg, ()))

    def sees(self, kind: str, name: str, vgs: Mapping[str, frozenset[str]]) -> bool:
        """A change notification's object (``vgs``: the VGs it belongs to, with their
        tags; none: an orphan PV)."""
        if not vgs:
            return kind == "pv" and self.orphan(name)
        return any(self.covers(vg, tags) for vg, tags in vgs.items())

    # ---- reads ---------------------------------------------------------------------

    def vgs(self, vgs: Iterable[VG]) -> list[VG]:
        return [vg for vg in vgs if self.covers(vg.name, vg.tags)]

    def pvs(self, pvs: Iterable[PV], tags: Tags) -> list[PV]:
        return [pv for pv in pvs if self.owner(pv.vg, pv.name, tags)]

    def lvs(self, lvs: Iterable[LV], tags: Tags) -> list[LV]:
        return [lv for lv in lvs if self.covers(lv.vg, tags.get(lv.vg, ()))]


def tags_of(rows: Any) -> dict[str, frozenset[str]]:
    """The VG tags a report carries: ``Listing.vg_tags`` of a pv or lv report, or the
    VGs' own tags."""
    found = getattr(rows, "vg_tags", None)
    if found is not None:
        return dict(found)
    return {vg.name: frozenset(vg.tags) for vg in rows if isinstance(vg, VG)}


def details(method: str, args: Mapping[str, Any]) -> dict[str, str]:
    """What a call acts on, for polkit (``vg``, ``lv``, ``devices``, ``method``; each
    a string, empty when the call names none): validated values only."""
    vgs: list[str] = []
    lvs: list[str] = []
    devices: list[str] = []
    for key, value in args.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, tuple) and len(item) == 2:  # a validated "vg/lv"
                vgs.append(item[0])
                lvs.append(f"{item[0]}/{item[1]}")
            elif isinstance(item, Device) and key != "scan_devices":
                devices.append(item.real)
    if isinstance(args.get("vg"), str):
        vgs.insert(0, args["vg"])
        if method == "lvcreate" and isinstance(args.get("name"), str):
            lvs.insert(0, f"{args['vg']}/{args['name']}")
    elif method == "vgcreate" and isinstance(args.get("name"), str):
        vgs.insert(0, args["name"])
    return {"method": method, "vg": ",".join(dict.fromkeys(vgs)),
            "lv": ",".join(dict.fromkeys(lvs)), "devices": ",".join(dict.fromkeys(devices))}
