"""The watcher's comparison: which objects differ between two snapshots (pure)."""

from __future__ import annotations

from lvmsuper.client.models import LV
from lvmsuper.supervisor.watch.snapshot import Snapshot, diff


def rows(*pvs: tuple[str, str, int]) -> list[dict[str, str]]:
    return [{"pv_name": name, "pv_uuid": f"u-{name}", "dev_size": "64", "vg_name": vg,
             "vg_uuid": f"v-{vg}" if vg else "", "vg_seqno": str(seqno) if vg else ""}
            for name, vg, seqno in pvs]


def lv(vg: str, name: str, *, tags: tuple[str, ...] = (), size: int = 4) -> LV:
    return LV(name=name, vg=vg, full_name=f"{vg}/{name}", uuid=f"l-{name}", path=None,
              size=size, segtype="linear", active=None, permissions=None, origin=None,
              pool=None, data_percent=None, metadata_percent=None, devices=[],
              tags=list(tags), attr="-wi-------", open=None, segments=[])


def snap(pvs: list[dict[str, str]], lvs: list[LV]) -> Snapshot:
    s = Snapshot.from_rows(pvs)
    s.add_lvs(lvs)
    return s


def test_nothing_changed_is_nothing() -> None:
    a = snap(rows(("/dev/a", "vg", 3)), [lv("vg", "x")])
    b = snap(rows(("/dev/a", "vg", 3)), [lv("vg", "x")])
    assert diff(a, b, b.moved_vgs(a)) == []


def test_a_new_lv_names_the_lv_and_its_vg_with_the_new_seqno() -> None:
    a = snap(rows(("/dev/a", "vg", 3)), [lv("vg", "x")])
    b = snap(rows(("/dev/a", "vg", 4)), [lv("vg", "x"), lv("vg", "y")])
    assert b.moved_vgs(a) == ["vg"]
    assert diff(a, b, ["vg"]) == [{"type": "vg", "name": "vg", "seqno": 4},
                                  {"type": "lv", "name": "vg/y", "seqno": 4}]


def test_a_retagged_lv_and_a_removed_one() -> None:
    a = snap(rows(("/dev/a", "vg", 3)), [lv("vg", "x"), lv("vg", "gone")])
    b = snap(rows(("/dev/a", "vg", 5)), [lv("vg", "x", tags=("t",))])
    assert [o["name"] for o in diff(a, b, ["vg"])] == ["vg", "vg/gone", "vg/x"]


def test_pvs_that_appear_vanish_or_move() -> None:
    a = snap(rows(("/dev/a", "", 0), ("/dev/b", "vg", 2)), [])
    b = snap(rows(("/dev/a", "vg", 3), ("/dev/c", "", 0)), [])
    names = {(o["type"], o["name"]) for o in diff(a, b, b.moved_vgs(a))}
    assert names == {("pv", "/dev/a"), ("pv", "/dev/b"), ("pv", "/dev/c"), ("vg", "vg")}


def test_lvs_of_vgs_not_compared_are_not_reported() -> None:
    a = snap(rows(("/dev/a", "vg", 3)), [lv("vg", "x")])
    b = snap(rows(("/dev/a", "vg", 3)), [lv("vg", "x", size=8)])
    assert diff(a, b, []) == []  # seqno unmoved and no udev event: LVs not compared
    assert diff(a, b, ["vg"]) == [{"type": "lv", "name": "vg/x", "seqno": 3}]
