"""Result models keep one stable key set and rebuild exactly from their wire form."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from lvmsuper.client.models import LV, PV, VG, Job, Model, to_wire

PV_WIRE: dict[str, Any] = {
    "name": "/dev/loop0", "uuid": "Ee8iHf-0Vtq-1cI0-SI1A-Jm9Q-qIdx-3Cpwv4", "vg": "vg0",
    "size": 1069547520, "free": 532676608, "used": 536870912, "dev_size": 1073741824,
    "pe_start": 1048576, "pe_count": 255, "pe_alloc_count": 128, "allocatable": True,
    "exported": False, "missing": False, "tags": ["ssd"], "mda_count": 1,
    "mda_free": 519168, "attr": "a--", "vg_uuid": "i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW",
    "mda_used_count": 1}
VG_WIRE: dict[str, Any] = {
    "name": "vg0", "uuid": "i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW", "size": 2139095040,
    "free": 1602224128, "extent_size": 4194304, "extent_count": 510, "free_count": 382,
    "pv_count": 2, "lv_count": 1, "snap_count": 0, "seqno": 3, "writable": True,
    "resizable": True, "exported": False, "partial": False, "shared": False,
    "lock_type": None, "lock_args": None, "system_id": None, "tags": [], "mda_count": 2, "mda_free": 519168,
    "attr": "wz--n-", "mda_size": 1044480, "pvs": ["/dev/loop0", "/dev/loop1"]}
LV_WIRE: dict[str, Any] = {
    "name": "lv0", "vg": "vg0", "full_name": "vg0/lv0",
    "uuid": "3d2sBc-lzUS-0GNQ-vJ8H-8n1M-VaJ5-Gc1d3P", "path": "/dev/vg0/lv0",
    "size": 536870912, "segtype": "linear", "active": None, "permissions": "rw",
    "origin": None, "pool": None, "data_percent": None, "metadata_percent": None,
    "devices": ["/dev/loop0", "/dev/loop1"], "tags": ["db", "prod"], "attr": "-wi-------",
    "open": None, "segments": [{"lv_start": 0, "extents": 128,
                                "pvs": [{"name": "/dev/loop0", "start": 0}]}],
    "lock_args": None}
JOB_WIRE: dict[str, Any] = {
    "id": "1700000000-1", "method": "pvmove", "state": "failed", "progress": 40,
    "result": None, "error": {"code": -32010, "message": "pvmove failed",
                              "data": {"name": "LvmFailed"}},
    "uid": 1000, "started": 1700000000.25, "finished": 1700000012.5}

CASES = [(PV, PV_WIRE), (VG, VG_WIRE), (LV, LV_WIRE), (Job, JOB_WIRE)]


@pytest.mark.parametrize(("cls", "wire"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_roundtrip(cls: type[Model], wire: dict[str, Any]) -> None:
    obj = cls.from_wire(json.loads(json.dumps(wire)))
    assert obj.to_wire() == wire
    assert list(obj.to_wire()) == [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize(("cls", "wire"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_key_set_is_exactly_the_documented_one(cls: type[Model],
                                               wire: dict[str, Any]) -> None:
    assert {f.name for f in dataclasses.fields(cls)} == set(wire)


@pytest.mark.parametrize(("cls", "wire"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_missing_key_is_valueerror_naming_it(cls: type[Model], wire: dict[str, Any]) -> None:
    key = sorted(wire)[0]
    partial = {k: v for k, v in wire.items() if k != key}
    with pytest.raises(ValueError, match=key):
        cls.from_wire(partial)


def test_unknown_extra_keys_from_a_newer_daemon_are_ignored() -> None:
    pv = PV.from_wire({**PV_WIRE, "new_field": 1})
    assert pv.to_wire() == PV_WIRE


def test_lists_are_copied_not_shared() -> None:
    wire = json.loads(json.dumps(LV_WIRE))
    lv = LV.from_wire(wire)
    wire["devices"].append("/dev/loop9")
    assert lv.devices == ["/dev/loop0", "/dev/loop1"]


def test_models_are_frozen() -> None:
    vg = VG.from_wire(VG_WIRE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        vg.name = "other"  # type: ignore[misc]


def test_to_wire_walks_lists_and_dicts() -> None:
    pv, lv = PV.from_wire(PV_WIRE), LV.from_wire(LV_WIRE)
    assert to_wire({"pvs": [pv], "lvs": [lv], "n": 1}) == \
        {"pvs": [PV_WIRE], "lvs": [LV_WIRE], "n": 1}
    assert json.loads(json.dumps(to_wire([pv]))) == [PV_WIRE]
