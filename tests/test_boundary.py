"""The privilege boundary against a caller who knows LVM (issue: "Close the holes").

Each test is a regression test for one way around policy or one way to hurt the root
daemon that the daemon once allowed; each failed on the code before the fix. Real LVM
on loop devices, real unprivileged users on connections they made; a fake ``lvm`` only
where real LVM cannot produce the fault (a slow command, junk on stdout, a failing read).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import rig
from lvmsuper.client import Client
from lvmsuper.client.models import to_wire
from lvmsuper.client.errors import (Busy, InvalidRequest, LvmFailed, LvmSuperError, NotFound,
                                    PermissionDenied)

pytestmark = pytest.mark.system

ADMIN, QUERY, MANAGE = "lvmst-admin", "lvmst-query", "lvmst-manage"
MiB = 2**20


def as_user(user: str, d: rig.Daemon) -> Client:
    return rig.client_as(user, d.socket)  # type: ignore[no-any-return]


def audit_lines(d: rig.Daemon, method: str) -> list[str]:
    return [line for line in d.log().splitlines() if f"audit: {method} " in line]


# ---- 1. a VG is named by its name only --------------------------------------------------

def test_a_protected_vg_named_by_its_uuid_is_never_reached(sandbox: rig.Sandbox, users: object,
                                                           lvm: rig.Sandbox) -> None:
    """LVM takes a VG's UUID where a name goes (``vgrename <uuid> new`` renames it):
    once, a caller renamed a protected VG that way."""
    lvm.lvm("pvcreate", lvm.loops[0], lvm.loops[1])
    lvm.lvm("vgcreate", "vgprot", lvm.loops[0])
    lvm.lvm("vgcreate", "vgfree", lvm.loops[1])
    uuid = lvm.report("vg", "vg_uuid", "vgprot")[0]["vg_uuid"]
    with rig.running(sandbox, "uuid", policy={"protected_vgs": ["vgprot"]}) as d:
        before = lvm.state()
        with as_user(ADMIN, d) as c:
            for alias in (uuid, uuid.replace("-", "")):
                for method, params in [
                        ("vgrename", {"vg": alias, "new_name": "stolen"}),
                        ("vgremove", {"vg": alias, "force": True}),
                        ("vgchange", {"vg": alias, "add_tags": ["x"]}),
                        ("lvcreate", {"vg": alias, "name": "x", "size": 4 * MiB}),
                        ("lvchange", {"lv": f"{alias}/x", "add_tags": ["x"]}),
                        ("vgextend", {"vg": alias, "devices": [lvm.loops[2]]})]:
                    with pytest.raises(InvalidRequest) as info:
                        c.call(method, **params)
                    assert "UUID" in info.value.message, (method, info.value)
            # the free VG by its name still works: the check is on aliases, not on VGs
            assert c.vgchange("vgfree", add_tags=["ok"]).tags == ["ok"]
        after = lvm.state()
        assert after["vg"] != before["vg"]  # vgfree got its tag ...
        assert [vg for vg in after["vg"] if vg["vg_name"] == "vgprot"] == \
            [vg for vg in before["vg"] if vg["vg_name"] == "vgprot"]  # ... vgprot nothing
        assert after["pv"] == before["pv"] and after["lv"] == before["lv"]
        assert len(audit_lines(d, "vgrename")) == 2  # refused attempts are audited


def test_a_vg_renamed_while_a_change_waits_is_not_found(sandbox: rig.Sandbox, users: object,
                                                        lvm: rig.Sandbox) -> None:
    """Existence is checked again under the VG's lock: a change that waited while its
    VG was renamed acts on nothing (before: LVM resolved the name again, later)."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgwait", lvm.loops[0])
    slow = rig.fake_lvm(sandbox, "rename", slow={"vgchange": 3})
    with rig.running(sandbox, "rename", lvm={"binary": slow}) as d:
        with as_user(ADMIN, d) as first, as_user(ADMIN, d) as second:
            outcome: dict[str, Any] = {}
            waiter = threading.Thread(target=lambda: outcome.update(
                tags=first.vgchange("vgwait", add_tags=["a"]).tags))
            waiter.start()
            _until(lambda: any(c[:2] == ("start", "vgchange") for c in rig.calls(sandbox, "rename")))
            # vgrename queues behind the running vgchange (same VG lock); a second
            # vgchange of the old name queues behind the rename
            renamer = threading.Thread(target=lambda: outcome.update(
                renamed=second.vgrename("vgwait", "vgnew").name))
            renamer.start()
            time.sleep(0.5)
            with as_user(ADMIN, d) as third, pytest.raises(NotFound) as info:
                third.vgchange("vgwait", add_tags=["b"])
            waiter.join(30)
            renamer.join(30)
    assert info.value.data["object_name"] == "vgwait"
    assert outcome == {"tags": ["a"], "renamed": "vgnew"}
    assert lvm.report("vg", "vg_name,vg_tags") == [{"vg_name": "vgnew", "vg_tags": "a"}]


def _until(ready: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ---- 2. devices: resolved once, through root-only directories ---------------------------

@pytest.fixture
def link_dir() -> Iterator[str]:
    """A root-only directory under /dev for symlinks (as udev's /dev/disk/by-id is)."""
    path = f"/dev/lvmsuper-test-{os.getpid()}"
    os.mkdir(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_device_is_resolved_once_and_lvm_gets_the_resolved_path(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox, link_dir: str) -> None:
    """A symlink allowed by policy is followed once, at admission; LVM is handed the
    block device it led to, and a swap of the link while the change waited for its lock
    changes nothing (before: LVM resolved the string again, after the wait)."""
    a, b = lvm.loops[0], lvm.loops[1]
    link = f"{link_dir}/pv"
    os.symlink(a, link)
    fake = rig.fake_lvm(sandbox, "link", slow={"vgcreate": 3})
    policy = {"devices": [f"{link_dir}/*", lvm.loops[2]]}  # not a, not b by name
    with rig.running(sandbox, "link", lvm={"binary": fake}, policy=policy) as d:
        with as_user(ADMIN, d) as c1, as_user(ADMIN, d) as c2:
            # a slow vgcreate holds #orphans; the pvcreate of the link waits for it
            holder = threading.Thread(target=lambda: c1.vgcreate("vghold", [lvm.loops[2]]))
            holder.start()
            _until(lambda: ("start", "vgcreate") in
                   [c[:2] for c in rig.calls(sandbox, "link")])
            outcome: dict[str, Any] = {}

            def create() -> None:
                try:
                    outcome["result"] = c2.pvcreate([link])
                except LvmSuperError as exc:
                    outcome["error"] = exc
            waiter = threading.Thread(target=create)
            waiter.start()
            time.sleep(0.5)
            os.unlink(link)
            os.symlink(b, link)  # now the link leads somewhere else
            holder.join(30)
            waiter.join(30)
        assert isinstance(outcome.get("error"), PermissionDenied), outcome
        assert "no longer leads to" in outcome["error"].message
        pvs = {pv["pv_name"] for pv in lvm.report("pv", "pv_name")}
        assert a not in pvs and b not in pvs

        # unchanged, it works, and LVM is given the real device, not the link
        with as_user(ADMIN, d) as c:
            (pv,) = c.pvcreate([link])
        assert pv.name == b
        assert ("start", "pvcreate", b) in rig.calls(sandbox, "link")
        assert all(link not in c[2] for c in rig.calls(sandbox, "link"))


def test_a_path_through_a_directory_users_can_write_is_refused(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """/dev/shm is world-writable inside /dev: a user's symlink there could lead to any
    disk. Refused even when a policy glob admits it, for new and existing PVs."""
    link = f"/dev/shm/lvmsuper-test-{os.getpid()}"
    os.symlink(lvm.loops[0], link)
    try:
        with rig.running(sandbox, "shm", policy={"devices": ["/dev/shm/*", *lvm.loops]}) as d:
            before = lvm.state()
            with as_user(ADMIN, d) as c:
                for method, params in [("pvcreate", {"devices": [link]}),
                                       ("vgcreate", {"name": "vgshm", "devices": [link]}),
                                       ("pvresize", {"device": link}),
                                       ("pvmove", {"source": link})]:
                    with pytest.raises(PermissionDenied) as info:
                        c.call(method, **params)
                    assert "/dev/shm" in info.value.message
            assert lvm.state() == before
    finally:
        os.unlink(link)


# ---- 3. backpressure ----------------------------------------------------------------------

def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_a_client_that_does_not_read_cannot_grow_the_daemon(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """Once, a query user that sent thousands of ``lvs`` without reading grew the root
    daemon by 100 MB in seconds: every answer was buffered. Now the daemon stops reading
    a connection whose unsent answers pass ``[limits] max_pending_bytes``."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgbig", lvm.loops[0])
    for i in range(12):
        lvm.lvm("lvcreate", "-an", "-Zn", "-n", f"lv{i:02d}" + "x" * 100, "-L", "4m",
                "--addtag", "t" * 120, "vgbig")
    with rig.running(sandbox, "pressure", limits={"max_pending_bytes": 256 * 1024}) as d:
        assert d.proc is not None
        with as_user(QUERY, d) as probe:
            baseline = probe.status()["requests"]["total"]
        rss_before = _rss_kib(d.proc.pid)
        hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        hog.connect(d.socket)
        hog.setblocking(False)
        line = b'{"jsonrpc":"2.0","id":1,"method":"lvs","params":{"vg":"vgbig"}}\n'
        sent, deadline = 0, time.monotonic() + 8
        while time.monotonic() < deadline and sent < 20000 * len(line):
            try:
                sent += hog.send(line * 64)
            except BlockingIOError:
                time.sleep(0.05)  # the daemon stopped reading us: that is the point
        time.sleep(1)
        with as_user(QUERY, d) as probe:
            served = probe.status()["requests"]["total"] - baseline
        grown = _rss_kib(d.proc.pid) - rss_before
        hog.close()
        answer = len(json.dumps(to_wire(Client(d.socket).lvs(vg="vgbig")))) + 40
    # the limit in answers, plus the requests in flight, plus what the kernel buffers
    bound = (256 * 1024 + 2 * 212992) // answer + 64 + 64
    assert served < bound, (served, bound, answer)
    assert sent < 20000 * len(line)  # the hog was stopped, not served
    assert grown < 40 * 1024, f"daemon RSS grew by {grown} KiB"


def test_a_subscriber_that_does_not_read_is_dropped(sandbox: rig.Sandbox, users: object,
                                                    lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgsub", lvm.loops[0])
    lvm.lvm("lvcreate", "-an", "-Zn", "-n", "one", "-L", "4m", "vgsub")
    with rig.running(sandbox, "sub", limits={"max_pending_bytes": 64 * 1024}) as d:
        hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        hog.connect(d.socket)
        hog.sendall(b'{"jsonrpc":"2.0","id":0,"method":"subscribe"}\n')
        hog.setblocking(False)
        # unread answers fill the kernel's buffer and the daemon's, up to the limit
        line = b'{"jsonrpc":"2.0","id":1,"method":"lvs"}\n'
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                hog.send(line * 32)
            except BlockingIOError:
                time.sleep(0.05)
        with as_user(ADMIN, d) as c:
            c.lvchange("vgsub/one", add_tags=["ping"])
        _until(lambda: "dropping subscriber" in d.log(), timeout=10)
        hog.setblocking(True)
        hog.settimeout(10)
        try:  # what was sent before, then the end: reset, or EOF
            while hog.recv(1 << 20):
                pass
            closed = True
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            closed = False
        hog.close()
        assert closed, "the daemon kept the subscriber that does not read"
        with as_user(QUERY, d) as c:
            assert c.ping() == {}


# ---- 4. a change LVM made is reported as made -------------------------------------------

FAIL_VGS = 'case "$1" in vgs) echo "no vgs today" >&2; exit 5;; esac'


def test_a_change_whose_answer_cannot_be_read_is_reported_as_made(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """Once, a vgrename whose follow-up read failed answered LvmFailed although the VG
    was renamed, and nobody was told."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgold", lvm.loops[0])
    fake = rig.fake_lvm(sandbox, "answer", before=FAIL_VGS)
    with rig.running(sandbox, "answer", lvm={"binary": fake}) as d:
        with as_user(QUERY, d) as watcher:
            watcher.call("subscribe")
            with as_user(ADMIN, d) as c, pytest.raises(LvmFailed) as info:
                c.vgrename("vgold", "vgdone")
            _until(lambda: watcher.ping() == {} and any(
                {"type": "vg", "name": "vgdone"} in rig.named(n["params"]["objects"])
                for n in watcher.notifications))
        assert info.value.data["completed"] is True
        assert {"type": "vg", "name": "vgdone"} in rig.named(info.value.data["objects"])
        assert lvm.report("vg", "vg_name") == [{"vg_name": "vgdone"}]
        (line,) = audit_lines(d, "vgrename")
        assert "result=ok" in line


def test_text_around_a_successful_changes_log_does_not_fail_it(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgjunk", lvm.loops[0])
    junk = 'case "$1" in lvcreate) echo "Last login: Mon Dec  1 on pts/0";; esac'
    fake = rig.fake_lvm(sandbox, "junkchange", before=junk)
    with rig.running(sandbox, "junkchange", lvm={"binary": fake}) as d, as_user(ADMIN, d) as c:
        lv = c.lvcreate("vgjunk", "made", size=4 * MiB)
    assert lv.full_name == "vgjunk/made"
    assert lvm.report("lv", "lv_name", "vgjunk") == [{"lv_name": "made"}]


# ---- 5 and 6. pvmove: one per VG; job_cancel is a change of the job's owner --------------

PVMOVE = 'case "$1" in pvmove) sleep 2; echo "end $1 $last" >> {calls}; exit 0;; esac'


def test_two_pvmoves_in_one_vg_run_one_after_the_other(sandbox: rig.Sandbox, users: object,
                                                       lvm: rig.Sandbox) -> None:
    """A second move's temporary mirror made a successful first move look half-done."""
    lvm.lvm("pvcreate", *lvm.loops[:3])
    lvm.lvm("vgcreate", "vgmove", *lvm.loops[:3])
    calls = sandbox.dir / "moves.calls"
    fake = rig.fake_lvm(sandbox, "moves", before=PVMOVE.format(calls=calls))
    with rig.running(sandbox, "moves", lvm={"binary": fake}) as d, as_user(ADMIN, d) as c:
        first = c.pvmove(lvm.loops[0])
        second = c.pvmove(lvm.loops[1])
        _until(lambda: c.job_status(first.id).state != "running" and
               c.job_status(second.id).state != "running", timeout=30)
        assert c.job_status(first.id).state == "succeeded"
        assert c.job_status(second.id).state == "succeeded"
    moves = [call for call in rig.calls(sandbox, "moves") if call[1] == "pvmove"]
    assert [m[0] for m in moves] == ["start", "end", "start", "end"], moves


def test_job_cancel_is_a_change_for_the_jobs_owner(sandbox: rig.Sandbox, users: object,
                                                   lvm: rig.Sandbox) -> None:
    """Once, any manage user could abort anyone's pvmove, unaudited and unlocked."""
    lvm.lvm("pvcreate", *lvm.loops[:2])
    lvm.lvm("vgcreate", "vgcancel", *lvm.loops[:2])
    slow = 'case "$1" in pvmove) [ "$2" = --abort ] || sleep 4; exit 0;; esac'
    fake = rig.fake_lvm(sandbox, "cancel", before=slow)
    with rig.running(sandbox, "cancel", lvm={"binary": fake}) as d:
        with as_user(MANAGE, d) as owner, as_user(ADMIN, d) as other:
            job = owner.pvmove(lvm.loops[0])
            with pytest.raises(PermissionDenied):
                other.job_cancel(job.id)
            assert owner.job_status(job.id).state == "running"
            assert not [c for c in rig.calls(sandbox, "cancel") if "--abort" in c[2]]
            owner.job_cancel(job.id)
            _until(lambda: owner.job_status(job.id).state != "running")
            assert owner.job_status(job.id).state == "cancelled"
        lines = audit_lines(d, "job_cancel")
        assert len(lines) == 2
        assert "result=PermissionDenied" in lines[0] and "result=ok" in lines[1]


# ---- 7. contention stays Busy and leaves nothing locked ----------------------------------

def test_busy_while_waiting_for_locks_stays_busy(sandbox: rig.Sandbox, users: object,
                                                 lvm: rig.Sandbox) -> None:
    """Once, a change refused while taking the first of its locks came back as Internal
    (the lock table was cleaned of a lock never taken) and left counts behind."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgbusy", lvm.loops[0])
    fake = rig.fake_lvm(sandbox, "lockbusy", slow={"pvcreate": 3})
    with rig.running(sandbox, "lockbusy", lvm={"binary": fake},
                 limits={"max_queue": 1, "max_parallel": 1}) as d:
        results: dict[str, Any] = {}

        def change(name: str, method: str, **params: Any) -> None:
            with as_user(ADMIN, d) as c:
                try:
                    results[name] = c.call(method, **params)
                except LvmSuperError as exc:
                    results[name] = exc
        # the first holds #orphans for 3 s, the second waits for it (the queue is full)
        calls = [("first", "pvcreate", {"devices": [lvm.loops[1]]}),
                 ("second", "pvcreate", {"devices": [lvm.loops[2]]}),
                 # locks #orphans and vgbusy: refused at the first, never took the second
                 ("third", "vgextend", {"vg": "vgbusy", "devices": [lvm.loops[3]],
                                        "request_id": "busy-1"})]
        threads = []
        for name, method, params in calls:
            threads.append(threading.Thread(target=change, args=(name, method),
                                            kwargs=params))
            threads[-1].start()
            time.sleep(0.5)
        for thread in threads:
            thread.join(60)
        assert isinstance(results["third"], Busy), results
        assert not isinstance(results["first"], LvmSuperError), results
        assert not isinstance(results["second"], LvmSuperError), results
        with as_user(ADMIN, d) as c:  # nothing is left locked: the same change now runs
            # (with its request_id too: Busy is no outcome, the repeat runs it)
            assert c.vgextend("vgbusy", [lvm.loops[3]], request_id="busy-1").pv_count == 2
            assert c.status()["requests"]["queued"] == 0


# ---- 8. nothing is wiped without asking ---------------------------------------------------

def _has_ext4(dev: str) -> bool:
    out = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", dev],
                         capture_output=True, text=True)
    return out.stdout.strip() == "ext4"


@contextlib.contextmanager
def _wiped_afterwards(lvm: rig.Sandbox, *devices: str) -> Iterator[None]:
    """Whatever happens, the next test finds no filesystem on these loop devices."""
    try:
        yield
    finally:
        lvm.wipe()
        subprocess.run(["wipefs", "-a", "-q", *devices], check=False, capture_output=True)


def test_a_filesystem_is_never_wiped_without_wipe_true(sandbox: rig.Sandbox, users: object,
                                                       lvm: rig.Sandbox) -> None:
    """Once, vgcreate and vgextend passed --yes: an allowed device carrying ext4 became
    a PV and its filesystem was gone."""
    rig.need_system(shutil.which("mkfs.ext4") is not None, "needs mkfs.ext4 (e2fsprogs)")
    fs0, fs1, fs2 = lvm.loops[0], lvm.loops[1], lvm.loops[2]
    for dev in (fs0, fs1, fs2):
        subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True)
    lvm.lvm("pvcreate", lvm.loops[3])
    lvm.lvm("vgcreate", "vgwipe", lvm.loops[3])
    with rig.running(sandbox, "wipe") as d, _wiped_afterwards(lvm, fs0, fs1, fs2):
        with as_user(ADMIN, d) as c:
            for method, params in [("pvcreate", {"devices": [fs0]}),
                                   ("vgcreate", {"name": "vgfs", "devices": [fs1]}),
                                   ("vgextend", {"vg": "vgwipe", "devices": [fs2]})]:
                with pytest.raises((LvmFailed, InvalidRequest)):
                    c.call(method, **params)
        assert all(_has_ext4(dev) for dev in (fs0, fs1, fs2))
        with as_user(MANAGE, d) as c:  # wiping destroys data: the destroy role
            with pytest.raises(PermissionDenied):
                c.vgcreate("vgfs", [fs1], wipe=True)
        assert _has_ext4(fs1)
        with as_user(ADMIN, d) as c:
            assert c.vgcreate("vgfs", [fs1], wipe=True).name == "vgfs"
            assert c.vgextend("vgwipe", [fs2], wipe=True).pv_count == 2
            assert [pv.name for pv in c.pvcreate([fs0], wipe=True)] == [fs0]
        assert not any(_has_ext4(dev) for dev in (fs0, fs1, fs2))
        assert any('"wipe": true' in line and "result=ok" in line
                   for line in audit_lines(d, "vgcreate"))


# ---- 10. the job table is bounded ----------------------------------------------------------

def test_finished_jobs_are_bounded_by_max_kept(sandbox: rig.Sandbox, users: object,
                                               lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgjobs", lvm.loops[0])
    with rig.running(sandbox, "jobs", jobs={"max_kept": 3}) as d, as_user(ADMIN, d) as c:
        refs = [c.vgchange("vgjobs", add_tags=[f"t{i}"], wait=0) for i in range(6)]
        ids = [r.id for r in refs]  # type: ignore[union-attr]
        _until(lambda: not any(j.state == "running" for j in c.jobs()))
        kept = [j.id for j in c.jobs()]
        assert kept == ids[-3:]
        with pytest.raises(NotFound):
            c.job_status(ids[0])


# ---- 12. reads: queued means waiting, coalesced reads count ---------------------------------

def test_queued_counts_waiting_reads_only_and_coalesced_ones_too(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    fake = rig.fake_lvm(sandbox, "queue", slow={"vgs": 2})
    with rig.running(sandbox, "queue", lvm={"binary": fake},
                 limits={"max_parallel": 1, "max_queue": 3}) as d:
        outcomes: list[Any] = []

        def read() -> None:
            with as_user(QUERY, d) as c:
                try:
                    outcomes.append(c.vgs())
                except LvmSuperError as exc:
                    outcomes.append(exc)
        threads = [threading.Thread(target=read) for _ in range(6)]
        for t in threads:
            t.start()
            time.sleep(0.1)
        time.sleep(0.5)  # one runs, the others wait for the same (coalesced) next run
        with as_user(QUERY, d) as c:
            waiting = c.status()["requests"]["queued"]
        for t in threads:
            t.join(30)
        with as_user(QUERY, d) as c:
            after = c.status()["requests"]["queued"]
    assert waiting == 3  # at most max_queue wait; coalesced ones count
    assert sum(isinstance(o, Busy) for o in outcomes) == 2, outcomes
    assert after == 0
