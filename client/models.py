"""Typed results: one frozen dataclass per object type, one stable key set each.

The wire form is a JSON object with exactly these keys (snake_case); the daemon builds
them from LVM's reports and the clients rebuild them with ``from_wire``. Sizes and
counts are ints in bytes, flags are bools, absent values None, lists lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self, TypeVar

__all__ = ["PV", "VG", "LV", "Job", "Model", "to_wire"]


@dataclass(frozen=True, slots=True)
class Model:
    """Base class: conversion to and from the wire dictionary."""

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Self:
        names = _fields(cls)
        try:
            return cls(*[v.copy() if type(v) is list else v for v in map(data.__getitem__, names)])
        except KeyError:
            missing = [n for n in names if n not in data]
            raise ValueError(f"{cls.__name__} lacks {', '.join(missing)}") from None

    @classmethod
    def from_fresh(cls, data: dict[str, Any]) -> Self:
        """``from_wire`` for a dict just decoded and owned by nobody else (a client's
        answer): its lists are taken as they are, not copied."""
        try:
            return cls(*map(data.__getitem__, _fields(cls)))
        except KeyError:
            return cls.from_wire(data)  # raises, naming what is missing

    def to_wire(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in _fields(type(self))}


def _fields(cls: type[Model]) -> tuple[str, ...]:
    """The field names, in order: what @dataclass precomputed for ``match``, so nothing
    is looked up per object (a report of 1,000 LVs converts 1,000 of them)."""
    names: tuple[str, ...] = cls.__match_args__
    return names


@dataclass(frozen=True, slots=True)
class PV(Model):
    name: str
    uuid: str
    vg: str | None
    size: int
    free: int
    used: int
    dev_size: int
    pe_start: int
    pe_count: int
    pe_alloc_count: int
    allocatable: bool
    exported: bool
    missing: bool
    tags: list[str]
    mda_count: int
    mda_free: int
    attr: str
    vg_uuid: str | None    # the UUID of its VG (None: an orphan PV)
    mda_used_count: int    # metadata areas in use (not ignored)


@dataclass(frozen=True, slots=True)
class VG(Model):
    name: str
    uuid: str
    size: int
    free: int
    extent_size: int
    extent_count: int
    free_count: int
    pv_count: int
    lv_count: int
    snap_count: int
    seqno: int
    writable: bool
    resizable: bool
    exported: bool
    partial: bool
    shared: bool
    lock_type: str | None
    lock_args: str | None  # lvmlockd's lock arguments (shared VGs), else None
    system_id: str | None
    tags: list[str]
    mda_count: int
    mda_free: int
    attr: str
    mda_size: int          # bytes of its smallest metadata area
    pvs: list[str]         # its PVs' names ("[unknown]" for a missing one)


@dataclass(frozen=True, slots=True)
class LV(Model):
    name: str
    vg: str
    full_name: str
    uuid: str
    path: str | None
    size: int
    segtype: str
    active: bool | None
    permissions: str | None
    origin: str | None
    pool: str | None
    data_percent: float | None
    metadata_percent: float | None
    devices: list[str]
    tags: list[str]
    attr: str
    open: bool | None      # its device is open (None: no device-mapper to ask)
    # in extents: [{"lv_start", "extents", "pvs": [{"name", "start"}]}], one per segment
    segments: list[dict[str, Any]]
    lock_args: str | None = None  # lvmlockd's lock arguments (an LV of a shared VG)


@dataclass(frozen=True, slots=True)
class Job(Model):
    id: str
    method: str
    state: str
    progress: int | None
    result: Any
    error: dict[str, Any] | None
    uid: int
    started: float
    finished: float | None


M = TypeVar("M", bound=Model)


def to_wire(value: Any) -> Any:
    """Models (also inside lists and dicts) to plain JSON values."""
    if isinstance(value, Model):
        return value.to_wire()
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value
