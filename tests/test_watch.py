"""Changes made outside lvmsuper reach subscribers: the host tier watches by polling
(no udevd runs here; the device-mapper tier has udev). Real LVM changes made by root
beside the daemon, as another admin would."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

import rig
from lvmsuper.client import Client

pytestmark = pytest.mark.system

ADMIN, QUERY = "lvmst-admin", "lvmst-query"
POLL = 0.5


def watching(sandbox: rig.Sandbox, name: str, **sections: dict[str, Any]) -> Any:
    sections.setdefault("events", {"poll_interval": POLL})
    return rig.running(sandbox, name, **sections)


def collect(c: Client, seconds: float) -> list[dict[str, Any]]:
    """Every notification that arrives within ``seconds``."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(c.next_notification(timeout=left))
        except TimeoutError:
            break
    return out


def test_an_external_change_reaches_subscribers_named_and_with_its_seqno(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgw", lvm.loops[0])
    with watching(sandbox, "external") as d, rig.client_as(QUERY, d.socket) as c:
        c.subscribe()
        time.sleep(2 * POLL)  # the watcher's first look
        lvm.lvm("lvcreate", "-an", "-Zn", "-n", "byhand", "-L", "4m", "vgw")
        params, took = rig.wait_for_change(c, "lv", "vgw/byhand", POLL + 1)
        seqno = int(lvm.report("vg", "vg_seqno", "vgw")[0]["vg_seqno"])
        assert params["source"] == "external"
        assert {"type": "lv", "name": "vgw/byhand", "seqno": seqno} in params["objects"]
        assert {"type": "vg", "name": "vgw", "seqno": seqno} in params["objects"]
        # a tag by hand, a new PV, and a PV wiped away by hand
        lvm.lvm("lvchange", "--addtag", "x", "vgw/byhand")
        params, _ = rig.wait_for_change(c, "lv", "vgw/byhand", POLL + 1)
        assert params["source"] == "external"
        lvm.lvm("pvcreate", lvm.loops[1])
        params, _ = rig.wait_for_change(c, "pv", lvm.loops[1], POLL + 1)
        assert params["source"] == "external"
        subprocess.run(["wipefs", "-a", "-q", lvm.loops[1]], check=True)
        params, _ = rig.wait_for_change(c, "pv", lvm.loops[1], POLL + 1)
        assert params["source"] == "external"
    assert took <= POLL + 1


def test_a_change_right_after_subscribe_is_announced(sandbox: rig.Sandbox, users: object,
                                                     lvm: rig.Sandbox) -> None:
    """subscribe answers once the watcher has the state it tells changes against, so a
    change made right after the answer is announced even when the watcher's first look
    is slow (here its LV read takes a second). Before, subscribe answered at once, the
    first look read the VGs' seqnos, then LVs that already had the change: it was taken
    in silently, and the next poll saw only the VG's seqno move."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgfirst", lvm.loops[0])
    fake = rig.fake_lvm(sandbox, "slowlvs", slow={"lvs": 1.0})
    with watching(sandbox, "first", lvm={"binary": fake, "cache": False},
                  events={"poll_interval": 2}) as d, rig.client_as(QUERY, d.socket) as c:
        c.subscribe()
        lvm.lvm("lvcreate", "-an", "-Zn", "-n", "quick", "-L", "4m", "vgfirst")
        params, _ = rig.wait_for_change(c, "lv", "vgfirst/quick", 2 + 1.0 + 5)
        assert params["source"] == "external"


def test_a_change_made_here_is_announced_once_as_ours(sandbox: rig.Sandbox, users: object,
                                                       lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgo", lvm.loops[0])
    with watching(sandbox, "own") as d, rig.client_as(QUERY, d.socket) as c, \
            rig.client_as(ADMIN, d.socket) as admin:
        c.subscribe()
        time.sleep(2 * POLL)
        admin.lvcreate("vgo", "mine", size=4 * 2**20)
        notes = collect(c, 4 * POLL)
    naming = [n for n in notes if any(o["name"] == "vgo/mine" for o in n["objects"])]
    assert len(naming) == 1, notes
    seqno = int(lvm.report("vg", "vg_seqno", "vgo")[0]["vg_seqno"])
    assert naming[0]["source"] == "lvmsuper"
    assert {"type": "lv", "name": "vgo/mine", "seqno": seqno} in naming[0]["objects"]
    assert not [n for n in notes if n["source"] == "external"], notes


def test_polling_costs_one_read_per_interval_and_nothing_without_subscribers(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """No subscriber: no poll at all. Ten subscribers: one poll per interval, not ten."""
    lvm.lvm("pvcreate", lvm.loops[0])
    fake = rig.fake_lvm(sandbox, "polls")
    with watching(sandbox, "polls", lvm={"binary": fake},
                  events={"poll_interval": 0.2}) as d:
        def polls() -> int:
            return len([c for c in rig.calls(sandbox, "polls") if c[:2] == ("start", "pvs")])
        time.sleep(1.5)
        assert polls() == 0
        clients = [rig.client_as(QUERY, d.socket) for _ in range(10)]
        try:
            for c in clients:
                c.subscribe()
            before = polls()
            time.sleep(2.0)
            during = polls() - before
        finally:
            for c in clients:
                c.close()
        time.sleep(1.0)
        after = polls()
        time.sleep(1.5)
        assert polls() == after  # nobody listens again: polling stopped
    assert 4 <= during <= 14, during  # about 2.0 / 0.2, whatever the 10 subscribers


def test_a_poll_interval_of_zero_turns_polling_off(sandbox: rig.Sandbox, users: object,
                                                   lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgz", lvm.loops[0])
    with watching(sandbox, "off", events={"poll_interval": 0}) as d, \
            rig.client_as(QUERY, d.socket) as c:
        c.subscribe()
        lvm.lvm("lvcreate", "-an", "-Zn", "-n", "unseen", "-L", "4m", "vgz")
        assert collect(c, 2.0) == []


def test_busy_changes_never_stall_the_watcher_nor_hide_an_external_change(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """Changes made here without a pause, from two callers, while another admin works
    in the same VG by hand: every change of ours is told once as ours, and the one by
    hand as external, within the poll interval."""
    import threading
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgb", lvm.loops[0])
    for name in ("w0", "w1"):
        lvm.lvm("lvcreate", "-an", "-Zn", "-n", name, "-L", "4m", "vgb")
    stop = threading.Event()
    made: list[str] = []

    def work(name: str) -> None:
        with rig.client_as(ADMIN, d.socket) as admin:
            i = 0
            while not stop.is_set():
                admin.lvchange(f"vgb/{name}", add_tags=[f"t{i}"])
                made.append(name)
                i += 1
    with watching(sandbox, "busywatch") as d, rig.client_as(QUERY, d.socket) as c:
        c.subscribe()
        time.sleep(2 * POLL)
        workers = [threading.Thread(target=work, args=(n,)) for n in ("w0", "w1")]
        for w in workers:
            w.start()
        time.sleep(1)
        lvm.lvm("lvcreate", "-an", "-Zn", "-n", "byhand", "-L", "4m", "vgb")
        params, took = rig.wait_for_change(c, "lv", "vgb/byhand", POLL + 3)
        stop.set()
        for w in workers:
            w.join(30)
        notes = collect(c, 4 * POLL)
    assert params["source"] == "external", params
    ours = [n for n in notes if n["source"] == "lvmsuper"]
    assert ours and all(o["name"] in ("vgb", "vgb/w0", "vgb/w1") for n in ours
                        for o in n["objects"])
    assert made  # the workers really changed things all along


def test_a_subscriber_back_after_a_gap_hears_what_changed_meanwhile(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """Nobody listened for a while (polls then read nothing): what changed meanwhile is
    told once somebody listens again, never lost."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgg", lvm.loops[0])
    with watching(sandbox, "gap") as d:
        with rig.client_as(QUERY, d.socket) as c:
            position = c.subscribe()
            time.sleep(2 * POLL)  # the watcher's baseline
        time.sleep(2 * POLL)  # nobody listens
        lvm.lvm("lvcreate", "-an", "-Zn", "-n", "meanwhile", "-L", "4m", "vgg")
        time.sleep(2 * POLL)
        with rig.client_as(QUERY, d.socket) as c:
            c.subscribe(since=position)
            params, _ = rig.wait_for_change(c, "lv", "vgg/meanwhile", POLL + 2)
    assert params["source"] == "external"


def test_an_external_change_in_the_vg_of_our_change_is_still_external(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """Another admin's LV, made just before one of ours in the same VG (before any poll
    saw it): ours is ours, theirs is external."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgm", lvm.loops[0])
    with watching(sandbox, "mixed", events={"poll_interval": 60}) as d, \
            rig.client_as(QUERY, d.socket) as c, rig.client_as(ADMIN, d.socket) as admin:
        c.subscribe()
        time.sleep(1.5)  # the first look
        lvm.lvm("lvcreate", "-an", "-Zn", "-n", "theirs", "-L", "4m", "vgm")
        admin.lvcreate("vgm", "ours", size=4 * 2**20)
        notes = collect(c, 2.0)
    by_name = {o["name"]: n["source"] for n in notes for o in n["objects"]}
    assert by_name.get("vgm/ours") == "lvmsuper", notes
    assert by_name.get("vgm/theirs") == "external", notes
