"""The daemon under concurrency, faults, shutdown and journald.

A fake ``lvm`` (a shell script that logs, sleeps or misbehaves, then runs the real LVM)
is used only to make LVM slow or broken on demand; every change still happens in real
LVM on the sandbox's loop devices.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import subprocess
import threading
import time
from typing import Any

import pytest

import rig
from lvmsuper.client import AsyncClient, Busy, Client, LvmOutputInvalid, Timeout

pytestmark = pytest.mark.system
MiB = 2**20


def start(sandbox: rig.Sandbox, name: str, lvm_binary: str, **sections: Any) -> rig.Daemon:
    lvm_section = {"binary": lvm_binary, **sections.pop("lvm", {})}
    return rig.Daemon(sandbox, name, lvm=lvm_section, **sections).start()


def two_vgs(lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0], lvm.loops[1])
    lvm.lvm("vgcreate", "vga", lvm.loops[0])
    lvm.lvm("vgcreate", "vgb", lvm.loops[1])


def changes_then_a_read(d: rig.Daemon, lvs: list[tuple[str, str]]) -> list[str]:
    """Starts an lvcreate per (vg, name) at once, then (0.3 s later) a read; returns
    the labels ("vg/name", "read") in the order their answers came."""
    done: list[str] = []

    async def scenario() -> None:
        async with AsyncClient(d.socket) as c:
            async def run(label: str, coro: Any) -> None:
                await coro
                done.append(label)
            changes = [asyncio.create_task(run(f"{vg}/{lv}", c.call(
                "lvcreate", vg=vg, name=lv, size=MiB))) for vg, lv in lvs]
            await asyncio.sleep(0.3)
            await run("read", c.vgs())
            await asyncio.gather(*changes)
    asyncio.run(scenario())
    return done


def test_one_vg_serialised_vgs_in_parallel_reads_never_wait(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    two_vgs(lvm)
    d = start(sandbox, "serial", rig.fake_lvm(sandbox, "serial", slow={"lvcreate": 1.0}))
    try:
        done = changes_then_a_read(d, [("vga", "one"), ("vga", "two"), ("vgb", "three")])
    finally:
        d.stop()
    assert done[0] == "read", done  # the read did not queue behind the slow changes
    log = [(event, last) for event, cmd, last in rig.calls(sandbox, "serial")
           if cmd == "lvcreate"]
    vga = [event for event, last in log if last == "vga"]
    assert vga == ["start", "end", "start", "end"], log  # never two at once in vga
    # ...while vgb's change ran beside the first vga one
    assert log.index(("start", "vgb")) < log.index(("end", "vga")), log
    assert {lv["lv_full_name"] for lv in lvm.report("lv", "lv_full_name")} == {
        "vga/one", "vga/two", "vgb/three"}


def test_busy_when_the_queue_is_full(sandbox: rig.Sandbox, users: object,
                                     lvm: rig.Sandbox) -> None:
    d = start(sandbox, "busy", rig.fake_lvm(sandbox, "busy", slow={"vgs": 1.0}),
              limits={"max_parallel": 1, "max_queue": 1})

    async def scenario() -> list[Any]:
        async with AsyncClient(d.socket) as c:
            first = asyncio.create_task(c.vgs())     # runs (slowly) in the only slot
            await asyncio.sleep(0.2)
            second = asyncio.create_task(c.lvs())    # waits: the queue is now full
            await asyncio.sleep(0.2)
            status = await c.status()
            third = await asyncio.gather(c.pvs(), return_exceptions=True)
            return [status, third[0], *(await asyncio.gather(first, second))]
    try:
        status, third, first, second = asyncio.run(scenario())
    finally:
        d.stop()
    assert isinstance(third, Busy) and third.data["retry_after"] > 0
    assert status["requests"]["queued"] == 1 and status["requests"]["in_flight"] >= 2
    assert first == second == []
    # the refused read never ran (version: the daemon's start; config: the read
    # cache asks LVM once which devices it scans)
    assert [cmd for event, cmd, _ in rig.calls(sandbox, "busy") if event == "start"
            and cmd not in ("version", "config")] == ["vgs", "lvs"]


def test_disconnect_mid_change_keeps_the_change_and_its_job(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    two_vgs(lvm)
    d = start(sandbox, "gone", rig.fake_lvm(sandbox, "gone", slow={"lvcreate": 1.0}))
    try:
        raw = rig.Raw(d.socket)
        raw.send(b'{"jsonrpc":"2.0","id":1,"method":"lvcreate","params":'
                 b'{"vg":"vga","name":"orphan","size":1048576}}\n')
        time.sleep(0.3)
        raw.close()  # the caller goes away while LVM runs
        with Client(d.socket) as c:
            for _ in range(100):
                jobs = [j for j in c.call("jobs") if j.method == "lvcreate"]
                if jobs and jobs[0].state != "running":
                    break
                time.sleep(0.05)
        assert jobs[0].state == "succeeded" and jobs[0].result["full_name"] == "vga/orphan"
        assert lvm.report("lv", "lv_name", "vga/orphan")
        assert "lvcreate" in d.log() and "result=ok" in d.log()
    finally:
        d.stop()


def test_sigterm_waits_for_a_running_change(sandbox: rig.Sandbox, users: object,
                                            lvm: rig.Sandbox) -> None:
    """SIGTERM: a read in flight and a change in flight both finish and are answered,
    the change is never killed, exit 0; a request sent after SIGTERM is not read, its
    connection ends after the answers due (so the client retries it elsewhere)."""
    two_vgs(lvm)
    d = start(sandbox, "term", rig.fake_lvm(sandbox, "term",
                                            slow={"lvcreate": 1.5, "pvs": 1.0}))
    changer, reader = rig.Raw(d.socket), rig.Raw(d.socket)
    changer.send(b'{"jsonrpc":"2.0","id":7,"method":"lvcreate","params":'
                 b'{"vg":"vgb","name":"late","size":1048576}}\n')
    time.sleep(0.3)
    reader.send(b'{"jsonrpc":"2.0","id":8,"method":"pvs"}\n')
    time.sleep(0.2)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    changer.send(b'{"jsonrpc":"2.0","id":9,"method":"ping"}\n')  # too late
    assert changer.recv()["result"]["full_name"] == "vgb/late"  # id 7
    with pytest.raises(EOFError):  # the ping (id 9) is never answered: no Busy
        changer.recv()
    assert [pv["name"] for pv in reader.recv()["result"]] == \
        [pv["pv_name"] for pv in lvm.report("pv", "pv_name")]
    assert d.proc.wait(timeout=30) == 0
    assert ("end", "lvcreate", "vgb") in rig.calls(sandbox, "term")  # never killed
    assert lvm.report("lv", "lv_name", "vgb/late")
    assert "waiting for 2 request(s) and 1 running job(s)" in d.log()
    assert not os.path.exists(d.socket)


def test_sigterm_under_load_answers_every_request_it_took(sandbox: rig.Sandbox,
                                                         users: object) -> None:
    """Requests the daemon took before SIGTERM are answered with their results, never
    with Busy: 16 connections pipelining pings while it stops each see only results,
    then the end of the connection (the rest a client retries on the next daemon).
    The stop begins between a request being read and its handler starting in about
    half the stops under this load, so three stops show a refusal almost surely."""
    for round_ in range(3):
        answers, ended = stop_under_load(rig.Daemon(sandbox, f"stopload{round_}").start())
        assert ended == 16 and len(answers) > 16 * 32, (ended, len(answers))
        refused = [a for a in answers if "result" not in a]
        assert refused == [], f"{len(refused)} of {len(answers)}: {refused[:3]}"


def stop_under_load(d: rig.Daemon) -> tuple[list[dict[str, Any]], int]:
    """SIGTERM to ``d`` while 16 connections send pings, 32 at a time: every answer,
    and how many connections then ended (a stopping daemon closes each one)."""
    batch = b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % i for i in range(32))
    answers: list[dict[str, Any]] = []
    ended = 0

    def reader() -> None:
        nonlocal ended
        raw = rig.Raw(d.socket)
        try:
            while True:
                raw.send(batch)
                for _ in range(32):
                    answers.append(raw.recv())
        except (EOFError, OSError):
            ended += 1
        finally:
            raw.close()

    threads = [threading.Thread(target=reader) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=60)
    assert d.proc.wait(timeout=30) == 0
    return answers, ended


def test_read_timeout_kills_the_whole_process_group(sandbox: rig.Sandbox, users: object,
                                                    lvm: rig.Sandbox) -> None:
    pids = sandbox.dir / "hang.pids"
    fake = rig.fake_lvm(sandbox, "hang", before=(
        f'if [ "$1" = pvs ]; then sleep 300 & echo "$$ $!" > {pids}; sleep 300; fi'))
    d = start(sandbox, "hang", fake, lvm={"timeout": 1})
    try:
        with Client(d.socket) as c:
            started = time.monotonic()
            with pytest.raises(Timeout) as err:
                c.pvs()
            assert time.monotonic() - started < 15, "the read outlived its 1 s timeout"
            assert err.value.data["timeout"] == 1 and err.value.data["argv"][1] == "pvs"
            assert c.ping() == {}  # the daemon keeps serving
        shell, child = (int(p) for p in pids.read_text().split())
        for pid in (shell, child):
            assert not alive(pid), f"process {pid} survived the timeout"
        assert d.proc is not None
        assert children_of(d.proc.pid) == [], "the daemon left a child unreaped"
        assert not os.path.exists(f"/proc/{shell}"), "lvm is a zombie: never reaped"
    finally:
        d.stop()


def children_of(pid: int) -> list[int]:
    return [int(c) for task in os.listdir(f"/proc/{pid}/task")
            for c in open(f"/proc/{pid}/task/{task}/children").read().split()]


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its new parent to reap it)."""
    for _ in range(50):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.1)
    return True


def test_junk_before_the_json_is_typed_and_quoted(sandbox: rig.Sandbox, users: object,
                                                  lvm: rig.Sandbox) -> None:
    """The seed incident's exact pollution, put where a PAM module would put it."""
    fake = rig.fake_lvm(sandbox, "junk", before='echo "Last login: Fri Dec 28 21:41:33 EST 2018"')
    d = start(sandbox, "junk", fake)
    try:
        with Client(d.socket) as c:
            with pytest.raises(LvmOutputInvalid) as err:
                c.pvs()
            assert err.value.data["line"] == "Last login: Fri Dec 28 21:41:33 EST 2018"
            assert err.value.data["rc"] == 0 and err.value.data["argv"][1] == "pvs"
            assert c.ping() == {}
    finally:
        d.stop()


def test_sigusr1_dumps_recent_commands(daemon: rig.Daemon, lvm: rig.Sandbox) -> None:
    with Client(daemon.socket) as c:
        c.vgs()
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGUSR1)
    for _ in range(100):
        if "recent LVM commands" in daemon.log():
            break
        time.sleep(0.02)
    text = daemon.log()
    assert "recent LVM commands" in text and " vgs " in text and "rc=0" in text


def test_audit_goes_to_journald_with_fields(sandbox: rig.Sandbox, users: object,
                                            lvm: rig.Sandbox) -> None:
    two_vgs(lvm)
    with rig.journald():
        d = rig.Daemon(sandbox, "journal").start()
        try:
            proc = rig.python_as("lvmst-admin", (
                "from lvmsuper.client import Client\n"
                "with Client() as c:\n"
                "    c.lvcreate('vga', 'audited', size=1048576)\n"), d.socket)
            assert proc.returncode == 0, proc.stderr
        finally:
            d.stop()
        entries: list[dict[str, Any]] = []
        for _ in range(50):
            out = subprocess.run(["journalctl", "--no-pager", "-o", "json",
                                  "SYSLOG_IDENTIFIER=lvmsuperd", "LVMSUPER_METHOD=lvcreate"],
                                 capture_output=True, text=True)
            entries = [json.loads(line) for line in out.stdout.splitlines()]
            entries = [e for e in entries if "audited" in e.get("LVMSUPER_PARAMS", "")]
            if entries:
                break
            time.sleep(0.1)
    assert len(entries) == 1, "every change is audited exactly once"
    e = entries[0]
    uid = rig.as_user("lvmst-admin")["user"]
    assert e["LVMSUPER_CALLER_UID"] == str(uid) and e["LVMSUPER_RESULT"] == "ok"
    assert e["LVMSUPER_TRANSPORT"] == "socket"
    assert e["LVMSUPER_CALLER_COMM"] == "python" and int(e["LVMSUPER_CALLER_PID"]) > 1
    assert float(e["LVMSUPER_DURATION_MS"]) > 0
    params = json.loads(e["LVMSUPER_PARAMS"])
    assert len(params.pop("request_id")) == 32  # the client's, for a safe retry
    assert params == {"vg": "vga", "name": "audited", "size": MiB}


def test_queued_identical_reads_share_one_run_and_never_go_stale(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """Reads queued behind a running identical read share one new LVM run; none of them
    gets the older run's result, which predates a change made directly with lvm."""
    runs = sandbox.dir / "coalesce.runs"
    script = sandbox.dir / "coalesce-lvm"
    script.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = vgs ] && echo vgs >> {runs}\n'
        f'out=$({rig.LVM} "$@"); rc=$?\n'      # LVM's snapshot is taken now...
        '[ "$1" = vgs ] && sleep 0.8\n'         # ...and answered later
        'printf "%s\\n" "$out"\nexit $rc\n')
    script.chmod(0o755)
    lvm.lvm("pvcreate", lvm.loops[0])
    d = start(sandbox, "coalesce", str(script), limits={"max_parallel": 1})
    runs.write_text("")

    async def scenario() -> list[list[str]]:
        async with AsyncClient(d.socket) as c:
            first = asyncio.create_task(c.vgs())
            await asyncio.sleep(0.3)  # its LVM run has happened, its answer is pending
            lvm.lvm("vgcreate", "vgnew", lvm.loops[0])
            later = [asyncio.create_task(c.vgs()) for _ in range(3)]
            results = [await first] + [await t for t in later]
            return [[vg.name for vg in r] for r in results]
    try:
        names = asyncio.run(scenario())
    finally:
        d.stop()
    assert names[0] == []  # started before the change
    assert names[1:] == [["vgnew"]] * 3  # queued after it: fresh, never the old answer
    assert runs.read_text().split() == ["vgs", "vgs"]  # three queued reads, one run


def test_pv_changes_hold_the_lock_of_the_pvs_vg(sandbox: rig.Sandbox, users: object,
                                                lvm: rig.Sandbox) -> None:
    """pvchange writes its VG's metadata: it waits for a change running in that VG, and
    not for one in another VG."""
    two_vgs(lvm)
    d = start(sandbox, "pvlock", rig.fake_lvm(sandbox, "pvlock", slow={"lvcreate": 1.0}))

    async def scenario() -> None:
        async with AsyncClient(d.socket) as c:
            slow = asyncio.create_task(c.call("lvcreate", vg="vga", name="one", size=MiB))
            await asyncio.sleep(0.3)
            await asyncio.gather(
                c.call("pvchange", device=lvm.loops[1], add_tags=["other"]),
                c.call("pvchange", device=lvm.loops[0], add_tags=["same"]), slow)
    try:
        asyncio.run(scenario())
    finally:
        d.stop()
    log = [(event, cmd, last) for event, cmd, last in rig.calls(sandbox, "pvlock")
           if cmd in ("lvcreate", "pvchange")]
    end = log.index(("end", "lvcreate", "vga"))
    assert log.index(("start", "pvchange", lvm.loops[0])) > end, log  # same VG: waited
    assert log.index(("end", "pvchange", lvm.loops[1])) < end, log  # other VG: did not
    assert [r["pv_tags"] for r in lvm.report("pv", "pv_tags", *lvm.loops[:2])] == \
        ["same", "other"]


def test_changes_beyond_max_parallel_wait_for_a_slot_reads_do_not(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """max_parallel bounds LVM changes at once (different VGs included), apart from the
    reads' slots: a read still answers while the changes queue."""
    two_vgs(lvm)
    d = start(sandbox, "slots", rig.fake_lvm(sandbox, "slots", slow={"lvcreate": 1.0}),
              limits={"max_parallel": 1})
    try:
        done = changes_then_a_read(d, [("vga", "x"), ("vgb", "x")])
    finally:
        d.stop()
    assert done[0] == "read", done
    log = [(event, last) for event, cmd, last in rig.calls(sandbox, "slots")
           if cmd == "lvcreate"]
    assert [event for event, _ in log] == ["start", "end", "start", "end"], log
    assert {lv["lv_full_name"] for lv in lvm.report("lv", "lv_full_name")} == {
        "vga/x", "vgb/x"}


REFUSED = """\
import json
from lvmsuper.client import Client, LvmSuperError
out = []
with Client() as c:
    for method, params in json.loads(%r):
        try:
            c.call(method, **params)
            out.append("ok")
        except LvmSuperError as e:
            out.append(e.name)
print(json.dumps(out))
"""


def test_refused_changes_are_audited_refused_reads_are_not(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """Every change is audited once with its outcome, also when it never reached LVM:
    a caller without the role, an invalid request, a device outside policy."""
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgaud", lvm.loops[0])
    d = rig.Daemon(sandbox, "audit", policy={"devices": [lvm.loops[0]]}).start()
    try:
        todo = [("lvcreate", {"vg": "vgaud", "name": "nope", "size": MiB}), ("pvs", {})]
        out = rig.python_as("lvmst-out", REFUSED % json.dumps(todo), d.socket)
        assert json.loads(out.stdout) == ["PermissionDenied"] * 2, out.stderr
        todo = [("lvcreate", {"vg": "vgaud", "name": "bad", "size": 0}),
                ("pvcreate", {"devices": [lvm.loops[2]]})]
        out = rig.python_as("lvmst-admin", REFUSED % json.dumps(todo), d.socket)
        assert json.loads(out.stdout) == ["InvalidRequest", "PermissionDenied"], out.stderr
    finally:
        d.stop()
    audit = [line for line in d.log().splitlines() if "audit:" in line]
    out_uid, admin_uid = (pwd.getpwnam(u).pw_uid for u in ("lvmst-out", "lvmst-admin"))
    assert len(audit) == 3, audit  # the refused pvs read is not an audited change
    assert f"audit: lvcreate by uid={out_uid} " in audit[0]
    assert '"name": "nope"' in audit[0] and "result=PermissionDenied" in audit[0]
    assert f"uid={admin_uid} " in audit[1] and "result=InvalidRequest" in audit[1]
    assert f"audit: pvcreate by uid={admin_uid} " in audit[2]
    assert lvm.loops[2] in audit[2] and "result=PermissionDenied" in audit[2]
    assert lvm.report("lv", "lv_name") == []
    assert [pv["pv_name"] for pv in lvm.report("pv", "pv_name")] == [lvm.loops[0]]


def test_repeated_sigterm_still_exits_0(sandbox: rig.Sandbox, users: object) -> None:
    """An admin's second `kill` (or a burst of them) during shutdown: still exit 0,
    never death by signal once the event loop is gone."""
    for i in range(3):
        d = rig.Daemon(sandbox, f"terms{i}").start()
        assert d.proc is not None
        sent = 0
        while d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            sent += 1
            time.sleep(0.002)
        assert d.proc.returncode == 0, (sent, d.log())
        assert sent > 1


def test_log_level_quiets_chatter_but_never_the_audit(sandbox: rig.Sandbox, users: object,
                                                      lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vglog", lvm.loops[0])
    logs = {}
    for level in ("debug", "warning"):
        d = rig.Daemon(sandbox, f"level-{level}", args=["--log-level", level]).start()
        try:
            with Client(d.socket) as c:
                c.lvcreate("vglog", level, size=MiB)
        finally:
            d.stop()
        logs[level] = d.log()
    assert "INFO: serving on" in logs["debug"] and "DEBUG:" in logs["debug"]
    assert "serving on" not in logs["warning"] and "DEBUG:" not in logs["warning"]
    for level, text in logs.items():
        assert 'audit: lvcreate by uid=0' in text and f'"name": "{level}"' in text, text
