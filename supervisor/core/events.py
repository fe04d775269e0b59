"""The change stream: every ``changed`` notification of this daemon's life, numbered.

Rules: each notification carries ``seq`` (one more than the one before, for the whole
life of the daemon), ``boot`` (a random id of this life) and ``source`` (``"lvmsuper"``
for changes made here, ``"external"`` for what the watchers noticed). The last
``[events] keep`` are kept in a ring, so a subscriber that comes back with the position
it had (``since``) gets exactly what it missed; one that was away too long, or comes
from another life, gets ``{"reset": true, ...}`` first: it must read everything again.
Attaching a listener and computing its replay happen in one step (no await between),
so nothing falls between the replay and the live stream.

A listener may see only part of the stream (a scoped caller: ``visible``): each object is
kept with the VGs it belongs to (a PV: the VGs it was in before and after the change,
as its producer or the last report says) and their tags as last read; the listener gets
the objects it may see, with the notification's own ``seq`` (it sees gaps), or nothing.
"""

from __future__ import annotations

import collections
import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from .targets import Plan

__all__ = ["Events", "Listener", "Visible", "ChangeObserver", "Announcer", "plan_hints"]

log = logging.getLogger("lvmsuperd.events")

Listener = Callable[[dict[str, Any]], None]
# May the listener see an object (its type, its name) of these VGs (none: an orphan PV)
# with these tags?
Visible = Callable[[str, str, dict[str, frozenset[str]]], bool]
Owners = tuple[str, ...]


class Events:
    def __init__(self, keep: int) -> None:
        self.boot = secrets.token_hex(8)
        self.seq = 0
        # each notification with, per object, its VGs and their tags then
        self._ring: collections.deque[tuple[dict[str, Any], list[dict[str, frozenset[str]]]]] \
            = collections.deque(maxlen=keep)
        self._listeners: list[Listener] = []
        self._active: dict[int, Callable[[], bool]] = {}  # id(listener) -> listens now?
        self._visible: dict[int, Visible] = {}  # id(listener) -> its filter, if any
        self.vg_tags: dict[str, frozenset[str]] = {}  # as last reported (kept when gone)
        self.pv_vgs: dict[str, Owners] = {}           # PV -> its VG as last reported

    @property
    def position(self) -> dict[str, Any]:
        return {"boot": self.boot, "seq": self.seq}

    @property
    def listening(self) -> int:
        """Listeners that listen now (the D-Bus adapter only while it has peers)."""
        return sum(1 for listener in self._listeners
                   if self._active.get(id(listener), _always)())

    def learn(self, rows: list[dict[str, str]]) -> None:
        """Which VG each PV is in and each VG's tags, from a report's rows (pv_name,
        vg_name, vg_tags)."""
        for row in rows:
            vg = row.get("vg_name", "")
            if row.get("pv_name"):
                self.pv_vgs[row["pv_name"]] = (vg,) if vg else ()
            if vg:
                self.vg_tags[vg] = frozenset(t for t in row.get("vg_tags", "").split(",") if t)

    def _owners(self, obj: dict[str, Any], hints: dict[str, Owners]) -> dict[str, frozenset[str]]:
        name = str(obj.get("name", ""))
        vgs: Owners = ((name,) if obj.get("type") == "vg" else
                       (name.split("/")[0],) if obj.get("type") == "lv" else
                       hints.get(name, self.pv_vgs.get(name, ())))
        return {vg: self.vg_tags.get(vg, frozenset()) for vg in vgs if vg}

    def publish(self, objects: list[dict[str, Any]], source: str,
                hints: dict[str, Owners] | None = None) -> dict[str, Any] | None:
        """Numbers and sends one notification; nothing for an empty list. ``hints``:
        the VGs of PVs, where the producer knows them better than the last report."""
        if not objects:
            return None
        self.seq += 1
        params = {"objects": objects, "source": source, "seq": self.seq, "boot": self.boot}
        owners = [self._owners(o, hints or {}) for o in objects]
        self._ring.append((params, owners))
        for listener in list(self._listeners):
            shown = self._shown(listener, params, owners)
            if shown is None:
                continue
            try:
                listener(shown)
            except Exception:
                log.exception("change listener failed")
        return params

    def _shown(self, listener: Listener, params: dict[str, Any],
               owners: list[dict[str, frozenset[str]]]) -> dict[str, Any] | None:
        """What of a notification ``listener`` may see (None: nothing)."""
        visible = self._visible.get(id(listener))
        if visible is None or "objects" not in params:
            return params
        objects = [o for o, vgs in zip(params["objects"], owners)
                   if visible(str(o.get("type")), str(o.get("name")), vgs)]
        return {**params, "objects": objects} if objects else None

    def attach(self, listener: Listener, since: dict[str, Any] | None = None,
               active: Callable[[], bool] | None = None, visible: Visible | None = None
               ) -> tuple[dict[str, Any], list[dict[str, Any]], Callable[[], None]]:
        """Registers ``listener`` (listening while ``active()``, by default always; told
        only of the objects ``visible`` admits, if given); returns the current position,
        what it missed since ``since`` (or one reset marker), and a function that
        detaches it."""
        replay: list[dict[str, Any]] = []
        self._listeners.append(listener)
        if visible is not None:
            self._visible[id(listener)] = visible
        if since is not None:
            replay = [shown for params, owners in self._since(since)
                      if (shown := self._shown(listener, params, owners)) is not None]
        if active is not None:
            self._active[id(listener)] = active

        def detach() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
                self._active.pop(id(listener), None)
                self._visible.pop(id(listener), None)
        return self.position, replay, detach

    def _since(self, since: dict[str, Any]
               ) -> list[tuple[dict[str, Any], list[dict[str, frozenset[str]]]]]:
        seq = since["seq"]
        if since["boot"] != self.boot or seq > self.seq:
            return [({"reset": True, **self.position}, [])]
        if seq == self.seq:
            return []
        oldest = self._ring[0][0]["seq"] if self._ring else self.seq + 1
        if seq + 1 < oldest:  # some it missed are gone from the ring: no silent gap
            return [({"reset": True, **self.position}, [])]
        return [(p, owners) for p, owners in self._ring if p["seq"] > seq]


def _always() -> bool:
    return True


class ChangeObserver(Protocol):
    """Told of every change made here: when it starts (before its locks), and when it
    ends (under them, for a change that is not long): whether it ran LVM, and whether
    LVM completed it. ``finished`` announces it; it never raises."""

    def begin(self, plan: Plan) -> None: ...

    async def finished(self, plan: Plan, ran: bool, completed: bool) -> None: ...


class Announcer:
    """The observer without a watcher: a completed change is announced as declared."""

    def __init__(self, events: Events) -> None:
        self.events = events

    def begin(self, plan: Plan) -> None:
        pass

    async def finished(self, plan: Plan, ran: bool, completed: bool) -> None:
        if completed:
            self.events.publish(plan.changed(), "lvmsuper", plan_hints(plan))


def plan_hints(plan: Plan) -> dict[str, Owners]:
    """The PVs a change acted on belong to the VGs it touched."""
    return {d.real: tuple(plan.vgs) for d in (*plan.touches.pvs, *plan.touches.new_pvs)}
