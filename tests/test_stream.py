"""The manager's view: a numbered, resumable change stream, and changes that a retry never
doubles (request_id). Real daemon, real LVM on loop devices; a proxy between client and
daemon cuts connections at chosen points of a change.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rig
from lvmsuper.client import Client
from lvmsuper.client.errors import InvalidRequest

pytestmark = pytest.mark.system

ADMIN, QUERY = "lvmst-admin", "lvmst-query"
MiB = 2**20


def until(ready: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def notes_of(c: Client, count: int) -> list[dict[str, Any]]:
    """The next ``count`` notifications' params."""
    return [c.next_notification(timeout=20) for _ in range(count)]


@pytest.fixture
def vg(lvm: rig.Sandbox) -> rig.Sandbox:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgs0", lvm.loops[0])
    return lvm


# ---- the stream ----------------------------------------------------------------------

def test_notifications_are_numbered_and_a_subscriber_resumes_without_a_gap(
        sandbox: rig.Sandbox, users: object, vg: rig.Sandbox) -> None:
    # no polling: nothing but the changes made here is told
    with rig.running(sandbox, "numbered", events={"poll_interval": 0}) as daemon, \
            rig.client_as(QUERY, daemon.socket) as watcher, \
            rig.client_as(ADMIN, daemon.socket) as admin:
        start = watcher.subscribe()
        assert set(start) == {"boot", "seq"}
        for i in range(3):
            admin.vgchange("vgs0", add_tags=[f"t{i}"])
        live = notes_of(watcher, 3)
        # a subscriber that was away comes back with the position it had: exactly
        # what it missed, in order, then the live stream
        with rig.client_as(QUERY, daemon.socket) as back:
            assert back.subscribe(since=start) == {"boot": start["boot"],
                                                   "seq": start["seq"] + 3}
            replay = notes_of(back, 3)
            admin.vgchange("vgs0", del_tags=["t0"])
            (after,) = notes_of(back, 1)
    assert [n["seq"] for n in live] == [start["seq"] + 1, start["seq"] + 2, start["seq"] + 3]
    assert {n["boot"] for n in live} == {start["boot"]}
    assert {n["source"] for n in live} == {"lvmsuper"}
    assert all({"type": "vg", "name": "vgs0"} in rig.named(n["objects"]) for n in live)
    assert replay == live
    assert after["seq"] == start["seq"] + 4


def test_a_subscriber_that_cannot_resume_gets_a_reset_never_a_gap(
        sandbox: rig.Sandbox, users: object, vg: rig.Sandbox) -> None:
    with rig.running(sandbox, "ring", events={"keep": 2, "poll_interval": 0}) as d:
        with rig.client_as(ADMIN, d.socket) as admin, \
                rig.client_as(QUERY, d.socket) as first:
            start = first.subscribe()
            for i in range(3):
                admin.vgchange("vgs0", add_tags=[f"r{i}"])
            notes_of(first, 3)  # all three told (a change's notice follows its answer)
        now = {"boot": start["boot"], "seq": start["seq"] + 3}
        for since in (start,  # two of the three it missed are left in the ring of 2
                      {"boot": "0123abcd", "seq": start["seq"]},  # another life
                      {"boot": start["boot"], "seq": start["seq"] + 10}):  # the future
            with rig.client_as(QUERY, d.socket) as c:
                assert c.subscribe(since=since) == now
                assert c.next_notification(timeout=10) == {"reset": True, **now}
        with rig.client_as(QUERY, d.socket) as c:  # one back: the ring has it
            c.subscribe(since={"boot": start["boot"], "seq": start["seq"] + 2})
            assert c.next_notification(timeout=10)["seq"] == start["seq"] + 3
        with rig.client_as(QUERY, d.socket) as c:
            for bad in ({"boot": "x y", "seq": 1}, {"boot": "ab", "seq": -1},
                        {"seq": 1}, "ab:1"):
                with pytest.raises(InvalidRequest):
                    c.subscribe(since=bad)  # type: ignore[arg-type]


def test_changes_resumes_across_a_daemon_restart(sandbox: rig.Sandbox, users: object,
                                                 vg: rig.Sandbox) -> None:
    """``Client.changes()`` follows the daemon through a restart: what it saw, then a
    reset (a new life: read everything again), then the new life's changes."""
    d = rig.Daemon(sandbox, "restart").start()
    seen: list[dict[str, Any]] = []
    watcher = Client(d.socket, timeout=10)

    def follow() -> None:
        with contextlib.suppress(Exception):
            for params in watcher.changes():
                seen.append(params)
                if len(seen) == 3:
                    return
    thread = threading.Thread(target=follow, daemon=True)
    try:
        thread.start()
        with Client(d.socket) as admin:
            until(lambda: admin.status()["clients"] >= 2)
            time.sleep(1)  # connected is not yet subscribed
            admin.vgchange("vgs0", add_tags=["before"])
        until(lambda: seen)
        d.stop()
        d.start()
        with Client(d.socket) as admin:
            until(lambda: len(seen) >= 2, timeout=30)
            time.sleep(1)
            admin.vgchange("vgs0", add_tags=["after"])
        thread.join(30)
    finally:
        d.stop()
        watcher.close()
    assert len(seen) == 3, seen
    before, reset, after = seen
    assert before["source"] == "lvmsuper" and not before.get("reset")
    assert reset["reset"] is True and reset["boot"] != before["boot"]
    assert after["boot"] == reset["boot"] and after["seq"] == reset["seq"] + 1


# ---- idempotent changes ------------------------------------------------------------------

def test_a_change_repeated_with_its_request_id_runs_once(sandbox: rig.Sandbox, users: object,
                                                         vg: rig.Sandbox) -> None:
    fake = rig.fake_lvm(sandbox, "rid", slow={"lvchange": 2})
    with rig.running(sandbox, "rid", lvm={"binary": fake}) as d:
        with rig.client_as(ADMIN, d.socket) as c:
            first = c.lvcreate("vgs0", "once", size=4 * MiB, request_id="mgr:1")
            again = c.lvcreate("vgs0", "once", size=4 * MiB, request_id="mgr:1")
            assert again == first
            with pytest.raises(InvalidRequest) as info:
                c.lvcreate("vgs0", "other", size=4 * MiB, request_id="mgr:1")
            assert info.value.data["field"] == "request_id"
            # a repeat of a change still running gets its job, and then its outcome
            ref = c.lvchange("vgs0/once", add_tags=["slow"], request_id="mgr:2", wait=0)
            assert c.lvchange("vgs0/once", add_tags=["slow"], request_id="mgr:2",
                              wait=0) == ref
            assert c.lvchange("vgs0/once", add_tags=["slow"],
                              request_id="mgr:2").tags == ["slow"]
        with rig.client_as("lvmst-manage", d.socket) as other:  # ids are per caller
            assert other.lvcreate("vgs0", "theirs", size=4 * MiB,
                                  request_id="mgr:1").name == "theirs"
    made = [c for c in rig.calls(sandbox, "rid") if c[:2] == ("start", "lvcreate")]
    assert len(made) == 2  # once, and the other caller's
    assert len([c for c in rig.calls(sandbox, "rid") if c[:2] == ("start", "lvchange")]) == 1
    assert sorted(lv["lv_name"] for lv in vg.report("lv", "lv_name")) == ["once", "theirs"]


class Cutter:
    """A Unix-socket proxy in front of the daemon that cuts the first connection at a
    chosen point: ``"waiting"`` and ``"running"`` when ``cut`` is set, ``"answered"``
    when the daemon's answer arrives (it is never passed on)."""

    def __init__(self, target: str, path: str, mode: str) -> None:
        self.target, self.path, self.mode = target, path, mode
        self.cut = threading.Event()
        self.connections = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o666)
        self.listener.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            first = self.connections == 1
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, False, first),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True, first),
                             daemon=True).start()
            if first and self.mode != "answered":
                threading.Thread(target=self._cut_when_told, args=(client, upstream),
                                 daemon=True).start()

    def _cut_when_told(self, a: socket.socket, b: socket.socket) -> None:
        self.cut.wait(60)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool, first: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if answers and first and self.mode == "answered" and b'"result"' in data:
                    for s in (src, dst):  # the change is done; its answer is lost
                        with contextlib.suppress(OSError):
                            s.shutdown(socket.SHUT_RDWR)
                        s.close()
                    return
                dst.sendall(data)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("cut", ["waiting", "running", "answered"])
def test_a_lost_connection_never_doubles_a_change(sandbox: rig.Sandbox, users: object,
                                                  vg: rig.Sandbox, cut: str) -> None:
    """The client's one call survives its connection being cut before LVM starts (the
    change waits for its VG's lock), while LVM runs, and after LVM finished but before
    the answer got through: exactly one change, and the caller gets its outcome."""
    fake = rig.fake_lvm(sandbox, f"cut-{cut}", slow={"lvcreate": 2, "vgchange": 3})
    with rig.running(sandbox, f"cut-{cut}", lvm={"binary": fake}) as d:
        proxy = Cutter(d.socket, str(Path(sandbox.dir) / f"proxy-{cut}.sock"), cut)
        try:
            if cut == "waiting":  # another change holds vgs0's lock for 3 s
                holder = threading.Thread(
                    target=lambda: Client(d.socket).vgchange("vgs0", add_tags=["hold"]))
                holder.start()
                until(lambda: ("start", "vgchange") in
                      [c[:2] for c in rig.calls(sandbox, f"cut-{cut}")])

            def cut_later() -> None:
                if cut == "waiting":
                    time.sleep(1)  # the lvcreate is queued behind the 3 s vgchange
                elif cut == "running":
                    until(lambda: ("start", "lvcreate") in
                          [c[:2] for c in rig.calls(sandbox, f"cut-{cut}")])
                proxy.cut.set()
            threading.Thread(target=cut_later, daemon=True).start()
            with Client(proxy.path, timeout=30) as c:
                lv = c.lvcreate("vgs0", "cutme", size=4 * MiB)
            assert lv.full_name == "vgs0/cutme"
            assert proxy.connections == 2  # the call went through a second connection
        finally:
            proxy.close()
    made = [c for c in rig.calls(sandbox, f"cut-{cut}") if c[:2] == ("start", "lvcreate")]
    assert len(made) == 1, made
    assert [lv["lv_name"] for lv in vg.report("lv", "lv_name")] == ["cutme"]


def test_lvmsuperctl_monitor_prints_changes_and_follows_a_restart(
        sandbox: rig.Sandbox, users: object, vg: rig.Sandbox) -> None:
    import json
    import select
    import signal
    import subprocess
    d = rig.Daemon(sandbox, "monitor").start()
    proc = subprocess.Popen([str(rig.VENV_BIN / "lvmsuperctl"), "--socket", d.socket,
                             "monitor", "--json"], stdout=subprocess.PIPE, text=True,
                            stderr=open(sandbox.dir / "monitor.err", "w"), **rig.as_user(QUERY))

    def line() -> dict[str, Any]:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, ("monitor printed nothing: " + (sandbox.dir / "monitor.err").read_text()
                       + d.log()[-3000:])
        return json.loads(proc.stdout.readline())  # type: ignore[no-any-return]
    try:
        with Client(d.socket) as admin:
            until(lambda: admin.status()["clients"] >= 2)
            time.sleep(1)  # connected is not yet subscribed
            admin.vgchange("vgs0", add_tags=["one"])
        first = line()
        d.stop()
        d.start()
        reset = line()  # the monitor is back, and says so
        with Client(d.socket) as admin:
            admin.vgchange("vgs0", add_tags=["two"])
        second = line()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, (sandbox.dir / "monitor.err").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        d.stop()
    assert first["source"] == "lvmsuper" and {"type": "vg", "name": "vgs0"} in rig.named(first["objects"])
    assert reset["reset"] is True and reset["boot"] != first["boot"]
    assert second["boot"] == reset["boot"] and second["seq"] == reset["seq"] + 1


def test_two_calls_with_one_request_id_at_once_run_the_change_once(
        sandbox: rig.Sandbox, users: object, vg: rig.Sandbox) -> None:
    """A repeat that arrives while the first call is still being planned waits for it
    and gets its outcome (here the planning reads LVM: the allocation PV's VG)."""
    fake = rig.fake_lvm(sandbox, "twice", slow={"pvs": 1})
    results: list[Any] = []
    with rig.running(sandbox, "twice", lvm={"binary": fake}) as d:
        def create() -> None:
            with rig.client_as(ADMIN, d.socket) as c:
                results.append(c.lvcreate("vgs0", "one", size=4 * MiB,
                                          devices=[vg.loops[0]], request_id="same"))
        threads = [threading.Thread(target=create) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert len(results) == 2 and results[0] == results[1], results
    made = [c for c in rig.calls(sandbox, "twice") if c[:2] == ("start", "lvcreate")]
    assert len(made) == 1, made
