"""What the watcher compares: a snapshot of PVs, VGs (by seqno) and LVs, and the objects
that differ between two snapshots.

Rule: pure data, no I/O. LVs are compared only for VGs whose seqno moved (or for all,
when the snapshot was taken after a udev event: activation changes no seqno). ``blend``
takes one scope (some VGs with their PVs and LVs, some PVs) from one snapshot and the
rest from another: a change made here is judged on its own scope, a scan on the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lvmsuper.client.models import LV

__all__ = ["Snapshot", "diff", "blend"]


@dataclass(slots=True)
class Snapshot:
    pvs: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # name -> uuid, vg, size
    vgs: dict[str, tuple[str, int]] = field(default_factory=dict)       # name -> uuid, seqno
    lvs: dict[str, tuple[Any, ...]] = field(default_factory=dict)       # vg/lv -> state

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, str]]) -> Snapshot:
        snap = cls()
        for row in rows:
            snap.pvs[row["pv_name"]] = (row.get("pv_uuid", ""), row.get("vg_name", ""),
                                        row.get("dev_size", ""))
            if row.get("vg_name"):
                seqno = row.get("vg_seqno", "")
                snap.vgs[row["vg_name"]] = (row.get("vg_uuid", ""),
                                            int(seqno) if seqno.isdigit() else -1)
        return snap

    def add_lvs(self, lvs: Iterable[LV]) -> None:
        for lv in lvs:
            self.lvs[lv.full_name] = (lv.uuid, lv.size, lv.attr, tuple(lv.tags), lv.active,
                                      lv.segtype, lv.origin, lv.pool)

    def moved_vgs(self, before: Snapshot) -> list[str]:
        """VGs new, gone, or at another seqno than in ``before``."""
        names = set(self.vgs) | set(before.vgs)
        return sorted(n for n in names if self.vgs.get(n) != before.vgs.get(n))

    def seqno(self, vg: str) -> int | None:
        found = self.vgs.get(vg)
        return found[1] if found and found[1] >= 0 else None


def diff(before: Snapshot, after: Snapshot, lv_vgs: Iterable[str]) -> list[dict[str, Any]]:
    """The objects that changed from ``before`` to ``after``: PVs, VGs and the LVs of
    ``lv_vgs`` (whose LVs both snapshots hold), each with its VG's seqno now."""
    out: list[dict[str, Any]] = []

    def add(kind: str, name: str, vg: str | None) -> None:
        entry: dict[str, Any] = {"type": kind, "name": name}
        seqno = after.seqno(vg) if vg else None
        if seqno is not None:
            entry["seqno"] = seqno
        out.append(entry)

    for name in sorted(set(before.pvs) | set(after.pvs)):
        if before.pvs.get(name) != after.pvs.get(name):
            vg = (after.pvs.get(name) or before.pvs.get(name) or ("", "", ""))[1]
            add("pv", name, vg or None)
    for name in after.moved_vgs(before):
        add("vg", name, name)
    wanted = set(lv_vgs)
    for name in sorted(set(before.lvs) | set(after.lvs)):
        vg = name.split("/")[0]
        if vg in wanted and before.lvs.get(name) != after.lvs.get(name):
            add("lv", name, vg)
    return out


def blend(inside: Snapshot, outside: Snapshot, vgs: Iterable[str],
          pvs: Iterable[str]) -> Snapshot:
    """A snapshot whose objects in the scope (the VGs ``vgs``, their PVs and LVs, and
    the PVs ``pvs``) come from ``inside``, all others from ``outside``."""
    scope_vgs, scope_pvs = set(vgs), set(pvs)

    def in_scope_pv(name: str) -> bool:
        vg_in = (inside.pvs.get(name) or ("", "", ""))[1]
        vg_out = (outside.pvs.get(name) or ("", "", ""))[1]
        return name in scope_pvs or vg_in in scope_vgs or vg_out in scope_vgs

    out = Snapshot()
    for name in set(inside.pvs) | set(outside.pvs):
        source = inside if in_scope_pv(name) else outside
        if name in source.pvs:
            out.pvs[name] = source.pvs[name]
    for name in set(inside.vgs) | set(outside.vgs):
        source = inside if name in scope_vgs else outside
        if name in source.vgs:
            out.vgs[name] = source.vgs[name]
    for name in set(inside.lvs) | set(outside.lvs):
        source = inside if name.split("/")[0] in scope_vgs else outside
        if name in source.lvs:
            out.lvs[name] = source.lvs[name]
    return out
