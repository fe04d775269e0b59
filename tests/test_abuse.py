"""Connection abuse against a real daemon: slow and silent peers, peers that never read,
too many connections, and peers that vanish mid-request.

What a user would notice if any of this broke: a ping taking seconds because somebody
else's connection is slow; the daemon refusing everybody after a burst of idle
connections; the daemon's memory growing without bound; a change lost, or a traceback
in the log, because its caller hung up.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rig
from lvmsuper.client import NotFound, Client

pytestmark = pytest.mark.system
MiB = 2**20
PING = b'{"jsonrpc":"2.0","id":"p","method":"ping"}\n'
PING_BOUND = 0.2  # seconds: the bound for a ping while others misbehave


def ping_time(path: str) -> float:
    """Seconds for one ping round trip on a fresh connection (connect included)."""
    started = time.monotonic()
    raw = rig.Raw(path)
    try:
        assert raw.request("ping", rid="p") == {"jsonrpc": "2.0", "id": "p", "result": {}}
    finally:
        raw.close()
    return time.monotonic() - started


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def clean_log(text: str) -> None:
    for bad in ("Traceback", "Internal", "ERROR", "exception", "never retrieved"):
        assert bad not in text, f"{bad!r} in the daemon's log:\n{text[-3000:]}"


def test_fifty_slow_clients_do_not_delay_a_ping(daemon: rig.Daemon, lvm: rig.Sandbox) -> None:
    """50 connections each hold a partial request line and trickle a byte now and then;
    pings on other connections still answer within 200 ms, and every slow request is
    answered once its line is complete."""
    slow = [rig.Raw(daemon.socket) for _ in range(50)]
    lines = [json.dumps({"jsonrpc": "2.0", "id": i, "method": "pvs"}).encode() + b"\n"
             for i in range(50)]
    sent = [10] * 50
    for raw, line in zip(slow, lines):
        raw.send(line[:10])
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            for i, (raw, line) in enumerate(zip(slow, lines)):
                if sent[i] < len(line) - 2:  # never the newline: the line stays partial
                    raw.send(line[sent[i]:sent[i] + 1])
                    sent[i] += 1
            stop.wait(0.02)

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        times = [ping_time(daemon.socket) for _ in range(40)]
        with Client(daemon.socket) as c:
            assert c.pvs() == []  # LVM work is not held up either
    finally:
        stop.set()
        thread.join()
    print(f"ping with 50 slow clients: max {max(times) * 1000:.2f} ms, "
          f"median {sorted(times)[20] * 1000:.2f} ms")
    assert max(times) < PING_BOUND, times
    for i, (raw, line) in enumerate(zip(slow, lines)):
        raw.send(line[sent[i]:])
    for i, raw in enumerate(slow):
        assert raw.recv() == {"jsonrpc": "2.0", "id": i, "result": []}
        raw.close()


def test_a_peer_that_never_reads_is_throttled(daemon: rig.Daemon, lvm: rig.Sandbox) -> None:
    """A peer pipelining requests without reading its answers is no longer read from once
    its answers back up: its sends block, the daemon's memory stays flat, and everyone
    else is served as before."""
    assert daemon.proc is not None
    before = rss(daemon.proc.pid)
    hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hog.connect(daemon.socket)
    hog.settimeout(1.0)
    request = b'{"jsonrpc":"2.0","id":1,"method":"status"}\n'  # ~700-byte answers
    sent = 0
    try:
        for _ in range(100_000):  # 4.4 MB of requests, ~70 MB of answers if all served
            hog.sendall(request)
            sent += 1
    except TimeoutError:
        pass
    grown = rss(daemon.proc.pid) - before
    times = [ping_time(daemon.socket) for _ in range(20)]
    hog.close()
    print(f"non-reading peer: {sent} requests accepted before it blocked; "
          f"daemon RSS +{grown / MiB:.1f} MiB; ping max {max(times) * 1000:.2f} ms")
    assert sent < 100_000, "the daemon kept reading from a peer that never reads"
    assert grown < 16 * MiB
    assert max(times) < PING_BOUND, times
    assert ping_time(daemon.socket) < PING_BOUND


@pytest.fixture(scope="module")
def limited(sandbox: rig.Sandbox, users: object) -> Iterator[rig.Daemon]:
    d = rig.Daemon(sandbox, "limited", limits={"max_connections": 4}).start()
    try:
        yield d
    finally:
        d.stop()
        clean_log(d.log())


def test_max_connections_is_enforced_with_a_clear_refusal(limited: rig.Daemon) -> None:
    held = [rig.Raw(limited.socket) for _ in range(4)]
    for raw in held:
        assert raw.request("ping")["result"] == {}  # each is accepted and counted
    refused = rig.Raw(limited.socket)
    reply = refused.recv()
    assert reply["id"] is None
    assert reply["error"]["data"]["name"] == "Busy"
    assert reply["error"]["data"]["retry_after"] > 0
    assert "max_connections = 4" in reply["error"]["message"]
    assert refused.closed()
    for raw in held:
        assert raw.request("ping")["result"] == {}  # the held ones are unaffected
    held.pop().close()
    for _ in range(100):  # the freed slot is taken back as soon as the daemon sees EOF
        raw = rig.Raw(limited.socket)
        try:
            if "result" in raw.request("ping"):
                break
        except EOFError:
            pass
        finally:
            raw.close()
        time.sleep(0.02)
    else:
        raise AssertionError("a freed connection slot was never reused")
    for raw in held:
        raw.close()



BUS_PEERS = """\
import asyncio, sys
from dbus_next.aio import MessageBus
from dbus_next import Message

async def main():
    buses = [await MessageBus(bus_address=sys.argv[1]).connect() for _ in range(3)]
    for bus in buses:  # each peer calls once (refused: polkit is not running) and stays
        await bus.call(Message(destination="org.lvmsuper.Supervisor1",
                               path="/org/lvmsuper/Supervisor1",
                               interface="org.lvmsuper.Supervisor1", member="Ping",
                               signature="a{sv}", body=[{}]))
    print("connected", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def test_bus_peers_do_not_use_up_the_sockets_connections(sandbox: rig.Sandbox,
                                                         users: object) -> None:
    """Anyone may call on the bus (polkit decides per call): bus peers must not count
    against the socket's max_connections, or they could lock socket users out."""
    from test_dbus import Bus  # the private system-like bus of the D-Bus tests
    bus = Bus()
    d = rig.Daemon(sandbox, "buspeers", limits={"max_connections": 2},
                   dbus={"enabled": True, "bus": bus.address}).start()
    peers = None
    try:
        bus.wait_for_owner("org.lvmsuper.Supervisor1")
        peers = subprocess.Popen([str(rig.VENV_BIN / "python"), "-c", BUS_PEERS, bus.address],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 **rig.as_user("lvmst-out"))
        assert peers.stdout is not None and peers.stdout.readline() == "connected\n"
        held = [rig.Raw(d.socket) for _ in range(2)]
        for raw in held:
            assert raw.request("ping")["result"] == {}
        status = held[0].request("status")["result"]
        assert status["clients"] == 5  # all are shown; the socket counts its own
        for raw in held:
            raw.close()
    finally:
        if peers is not None:
            peers.communicate(timeout=10)
        d.stop()
        bus.stop()


IDLE = 0.5


@pytest.fixture(scope="module")
def idle(sandbox: rig.Sandbox, users: object) -> Iterator[rig.Daemon]:
    fake = rig.fake_lvm(sandbox, "idle", slow={"pvs": 3 * IDLE})
    d = rig.Daemon(sandbox, "idle", lvm={"binary": fake},
                   limits={"connection_idle_timeout": IDLE}).start()
    try:
        yield d
    finally:
        d.stop()
        clean_log(d.log())


async def closed_after(path: str, send: bytes = b"", trickle: bytes = b"",
                       expect: int = 0) -> float:
    """Connects, sends ``send``, then ``trickle`` a byte per 50 ms; reads ``expect``
    answers; returns the seconds from the last answer (or connect) to EOF."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(send)
    since = time.monotonic()
    for _ in range(expect):
        line = await asyncio.wait_for(reader.readline(), 10)
        assert b'"result"' in line, line
        since = time.monotonic()

    async def dribble() -> None:
        for byte in trickle:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    dribbler = asyncio.create_task(dribble())
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""
        return time.monotonic() - since
    finally:
        dribbler.cancel()
        writer.close()


def test_idle_connections_are_closed(idle: rig.Daemon, lvm: rig.Sandbox) -> None:
    """Silent, finished and slowloris connections are closed after the idle timeout;
    one waiting for a slow answer is not (the timer starts when the answer is sent)."""
    partial = b'{"jsonrpc":"2.0","id":1,"method":"ping"'
    pvs = b'{"jsonrpc":"2.0","id":1,"method":"pvs"}\n'

    async def scenario() -> list[float]:
        return list(await asyncio.gather(
            closed_after(idle.socket),                                  # silent
            closed_after(idle.socket, PING, expect=1),                  # done, then silent
            closed_after(idle.socket, partial[:5], trickle=partial[5:]),  # slowloris
            closed_after(idle.socket, pvs, expect=1)))                  # slow answer

    started = time.monotonic()
    silent, done, slowloris, slow = asyncio.run(scenario())
    for waited in (silent, done, slowloris, slow):
        assert IDLE * 0.9 <= waited < IDLE + 1.5, (silent, done, slowloris, slow)
    assert time.monotonic() - started >= 3 * IDLE  # the slow answer was waited for
    assert "no request for 0.5 s ([limits] connection_idle_timeout)" in idle.log()
    assert ping_time(idle.socket) < PING_BOUND


def test_subscribers_are_never_idle(idle: rig.Daemon, lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgidle", lvm.loops[0])
    watcher = rig.Raw(idle.socket)
    assert set(watcher.request("subscribe")["result"]) == {"boot", "seq"}
    time.sleep(3 * IDLE)
    with Client(idle.socket) as c:
        c.lvcreate("vgidle", "noticed", size=4 * MiB)
    note = watcher.recv()  # still connected, still notified
    assert note["method"] == "changed"
    assert {"type": "lv", "name": "vgidle/noticed"} in rig.named(note["params"]["objects"])
    watcher.close()


def test_a_client_idle_past_the_timeout_reconnects_for_reads(idle: rig.Daemon,
                                                             lvm: rig.Sandbox) -> None:
    with Client(idle.socket) as c:
        assert c.ping() == {}
        time.sleep(2 * IDLE)  # the daemon closes the connection meanwhile
        assert c.vgs() == []  # a read reconnects transparently
        time.sleep(2 * IDLE)
        # a change too: the client sees the close before sending, so nothing was lost
        # and nothing can be "maybe done"
        with pytest.raises(NotFound):
            c.lvcreate("vgnone", "x", size=2**20)


@pytest.fixture(scope="module")
def hangups(sandbox: rig.Sandbox, users: object) -> Iterator[rig.Daemon]:
    fake = rig.fake_lvm(sandbox, "hangup", slow={"lvcreate": 0.1, "pvs": 0.2})
    d = rig.Daemon(sandbox, "hangup", lvm={"binary": fake}).start()
    try:
        yield d
    finally:
        d.stop()


def test_clients_vanishing_mid_request_lose_nothing_and_log_no_error(
        hangups: rig.Daemon, lvm: rig.Sandbox) -> None:
    """Clients send a change and a slow read (and some half a line), then hang up at
    once: every change still lands, each is audited as ok, and the log has no error."""
    lvm.lvm("pvcreate", lvm.loops[0], lvm.loops[1])
    lvm.lvm("vgcreate", "vghup0", lvm.loops[0])
    lvm.lvm("vgcreate", "vghup1", lvm.loops[1])
    wanted = set()
    for i in range(12):
        vg = f"vghup{i % 2}"
        wanted.add(f"{vg}/gone{i}")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(hangups.socket)
        s.sendall(json.dumps({"jsonrpc": "2.0", "id": i, "method": "lvcreate", "params": {
            "vg": vg, "name": f"gone{i}", "size": 4 * MiB}}).encode() + b"\n"
            + b'{"jsonrpc":"2.0","id":"r","method":"pvs"}\n{"jsonrpc":"2.0","id":')
        s.close()
    for _ in range(12):  # and some that hang up half-way through their first line
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(hangups.socket)
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"lvcreate","params":{"vg":"vghup0",')
        s.close()
    with Client(hangups.socket) as c:
        for _ in range(200):
            jobs = [j for j in c.call("jobs") if j.method == "lvcreate"]
            if len(jobs) == 12 and all(j.state != "running" for j in jobs):
                break
            time.sleep(0.05)
        assert sorted(j.state for j in jobs) == ["succeeded"] * 12, jobs
        assert c.ping() == {}
    assert {r["lv_full_name"] for r in lvm.report("lv", "lv_full_name")} == wanted
    text = hangups.log()
    assert text.count("audit: lvcreate") == 12 and text.count("result=ok") == 12
    clean_log(text)
