"""The D-Bus boundary under load and against forged signals: `[limits]
max_calls_per_peer` answers Busy before any polkit check, the peer table never leaks,
and the client accepts `Changed` only from the name's owner.

Each test runs its own private bus (and its own daemon): the tests stop and replace
polkit, and a flood must not disturb the module daemon of test_dbus.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rig
from lvmsuper.client import Client
from lvmsuper.client.dbus import BUS_NAME
from test_dbus import ADMIN, Bus, Polkitd, _stop, py
from test_systemd import (BASE_ENV, LVMSUPERD, Proc, _tool, config, procs,  # noqa: F401
                          wait_ping, workdir)

pytestmark = pytest.mark.system

BUSY = "org.lvmsuper.Error.Busy"


@pytest.fixture
def own_bus(users: object) -> Iterator[Bus]:
    rig.system_ready()
    b = Bus()
    try:
        yield b
    finally:
        b.stop()


def wait_until(what: str, ok: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


# A polkit stand-in (run as the polkitd user, the only one the bus lets own the name):
# logs each CheckAuthorization to stdout and answers "authorized" only once the file
# argv[2] exists, so a test decides how long checks stay in flight.
FAKE_POLKIT = """\
import asyncio, os, sys
from dbus_next.aio import MessageBus
from dbus_next import Message, MessageType

async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    async def answer(msg):
        while not os.path.exists(sys.argv[2]):
            await asyncio.sleep(0.02)
        bus.send(Message.new_method_return(msg, "(bba{ss})", [[True, False, {}]]))
    def handler(msg):
        if msg.message_type == MessageType.METHOD_CALL and msg.member == "CheckAuthorization":
            print("check", msg.body[0][1]["name"].value, flush=True)
            asyncio.ensure_future(answer(msg))
            return True
    bus.add_message_handler(handler)
    await bus.request_name("org.freedesktop.PolicyKit1")
    print("ready", flush=True)
    await bus.wait_for_disconnect()

asyncio.run(main())
"""

# Sends argv[3] concurrent calls of member argv[2] on ONE connection; prints the error
# names (or "ok") and the Busy data.
FLOOD = """\
import asyncio, json, sys
from dbus_next.aio import MessageBus
from dbus_next import Message
from lvmsuper.client.dbus import from_dbus

async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    print(json.dumps({"unique_name": bus.unique_name}), flush=True)
    async def one():
        reply = await bus.call(Message(
            destination="org.lvmsuper.Supervisor1", path="/org/lvmsuper/Supervisor1",
            interface="org.lvmsuper.Supervisor1", member=sys.argv[2], signature="a{sv}",
            body=[{}]))
        if reply.error_name is None:
            return {"ok": True}
        data = from_dbus(reply.body[1]) if len(reply.body) > 1 else {}
        return {"error": reply.error_name, "data": data}
    print(json.dumps(await asyncio.gather(*[one() for _ in range(int(sys.argv[3]))])))

asyncio.run(main())
"""


def flood(user: str | None, bus: Bus, member: str, count: int) -> subprocess.Popen[str]:
    kwargs = rig.as_user(user) if user else {}
    return subprocess.Popen([str(rig.VENV_BIN / "python"), "-c", FLOOD, bus.address,
                             member, str(count)], stdout=subprocess.PIPE, text=True,
                            env={"PYTHONDONTWRITEBYTECODE": "1"}, **kwargs)


def answers(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def test_max_calls_per_peer_is_busy_before_polkit_and_others_are_served(
        sandbox: rig.Sandbox, own_bus: Bus, lvm: rig.Sandbox) -> None:
    """A peer with `max_calls_per_peer` calls in flight (held in polkit, or in LVM for
    root) gets Busy with retry_after for every further call, and those never reach
    polkit; other peers are served meanwhile. The bound is per peer for everyone: root
    (which polkit never sees) is bounded too."""
    release = own_bus.dir / "release"
    held = str(sandbox.dir / "release-lvm")
    slow_lvm = rig.fake_lvm(sandbox, "held", before=(
        f'if [ "$1" = vgs ]; then while [ ! -e {held} ]; do sleep 0.02; done; fi'))
    pk_log = own_bus.dir / "fake-polkit.log"
    with open(pk_log, "w") as log:
        pk = subprocess.Popen([str(rig.VENV_BIN / "python"), "-c", FAKE_POLKIT,
                               own_bus.address, str(release)], stdout=log,
                              stderr=subprocess.STDOUT, env={"PYTHONDONTWRITEBYTECODE": "1"},
                              **rig.as_user("polkitd"))
    d = rig.Daemon(sandbox, "limits", lvm={"binary": slow_lvm},
                   dbus={"enabled": True, "bus": own_bus.address},
                   limits={"max_calls_per_peer": 3})
    checks = lambda: [l for l in pk_log.read_text().splitlines() if l.startswith("check")]
    try:
        wait_until("fake polkit ready", lambda: "ready" in pk_log.read_text())
        d.start()
        own_bus.wait_for_owner(BUS_NAME)
        user = flood(ADMIN, own_bus, "Ping", 8)
        wait_until("3 polkit checks in flight", lambda: len(checks()) >= 3)
        root = flood(None, own_bus, "Vgs", 8)
        wait_until("3 vgs in LVM", lambda: sum(
            1 for c in rig.calls(sandbox, "held") if c[:2] == ("start", "vgs")) >= 3)
        # Both floods are saturated; another peer is still served (root: no polkit).
        with Client(d.socket) as sock:
            assert sock.status()["clients"] == 3  # the two floods and this socket
        other = flood(None, own_bus, "Ping", 1)
        assert answers(other) == [{"ok": True}]
        # ... and another user's call reaches polkit: the bound is per peer.
        second = flood(ADMIN, own_bus, "Ping", 1)
        wait_until("the second user's check", lambda: len(checks()) >= 4)
        release.touch()
        Path(held).touch()
        for proc in (user, root):
            got = answers(proc)
            assert got.count({"ok": True}) == 3, got
            busy = [a for a in got if a != {"ok": True}]
            assert len(busy) == 5 and all(a["error"] == BUSY for a in busy), got
            assert all(a["data"]["retry_after"] == 1 for a in busy), got
        assert answers(second) == [{"ok": True}]
        assert len(checks()) == 4, checks()  # the 5 Busy calls never reached polkit
    finally:
        release.touch()
        Path(held).touch()
        d.stop()
        _stop(pk)  # type: ignore[arg-type]
    assert "Traceback" not in d.log(), d.log()


# argv[2] peers, each on its own connection: send a call, wait 0-4 ms, leave the bus
# without waiting for the answer.
HIT_AND_RUN = """\
import asyncio, random, sys
from dbus_next.aio import MessageBus
from dbus_next import Message

async def peer(i):
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    bus.send(Message(destination="org.lvmsuper.Supervisor1",
                     path="/org/lvmsuper/Supervisor1",
                     interface="org.lvmsuper.Supervisor1", member="Ping", signature="a{sv}",
                     body=[{}]))
    await asyncio.sleep(random.uniform(0, 0.004))
    bus.disconnect()

async def main():
    for start in range(0, int(sys.argv[2]), 20):
        await asyncio.gather(*[peer(i) for i in range(start, start + 20)])

asyncio.run(main())
"""


def test_peers_that_call_and_leave_leave_no_entry(sandbox: rig.Sandbox, own_bus: Bus,
                                                  users: object) -> None:
    """Hundreds of peers that call and leave at once, at every point of their call: once
    they are gone, `status` counts no D-Bus client (the peer table is empty), so a
    socket-activated daemon can idle out again."""
    polkit = Polkitd(own_bus)
    polkit.start()  # real polkitd: non-root peers get real checks in flight
    d = rig.Daemon(sandbox, "leak", dbus={"enabled": True, "bus": own_bus.address})
    try:
        d.start()
        own_bus.wait_for_owner(BUS_NAME)
        for user in (None, ADMIN):
            proc = rig.run_as(user, [str(rig.VENV_BIN / "python"), "-c", HIT_AND_RUN,
                                     own_bus.address, "300"],
                              env={"PYTHONDONTWRITEBYTECODE": "1"}, timeout=120)
            assert proc.returncode == 0, proc.stderr
        with Client(d.socket) as sock:  # polkit answers 600 peers slowly on a busy machine
            deadline = time.monotonic() + 60
            while (clients := sock.status()["clients"]) != 1:  # this socket only
                assert time.monotonic() < deadline, f"{clients - 1} D-Bus peers left"
                time.sleep(0.05)
        # A peer that stays on the bus after its call is still counted, then let go.
        out = py(ADMIN, "call(dbus, 'ping')\n"
                 "out['clients'] = call(sock, 'status')['result']['clients']\n", d, own_bus)
        assert out["clients"] == 2
    finally:
        d.stop()
        polkit.stop()
    assert "Traceback" not in d.log(), d.log()


def test_socket_activated_daemon_idles_out_after_hit_and_run_peers(
        sandbox: rig.Sandbox, own_bus: Bus, workdir: Path, procs: list[Proc]) -> None:
    """The user-visible side of the peer table: a socket-activated daemon with
    `idle_timeout` serves hundreds of peers that call and leave, then exits as idle."""
    tool = _tool("systemd-socket-activate")
    cfg, _ = config(sandbox, workdir, idle_timeout=1,
                    sections={"dbus": {"enabled": True, "bus": own_bus.address}})
    listen = str(workdir / "activated.sock")
    proc = Proc([tool, "-l", listen, *[f"-E{k}={v}" for k, v in BASE_ENV.items()],
                 str(LVMSUPERD), "--config", str(cfg)], workdir / "activate.log",
                dict(BASE_ENV))
    procs.append(proc)
    wait_until("systemd-socket-activate listens", lambda: os.path.exists(listen))
    wait_ping(listen, proc)  # starts the daemon
    held = rig.Raw(listen)  # a socket client: the daemon cannot idle out during the flood
    try:
        assert "result" in held.request("ping")
        own_bus.wait_for_owner(BUS_NAME)
        flood = rig.run_as(None, [str(rig.VENV_BIN / "python"), "-c", HIT_AND_RUN,
                                  own_bus.address, "600"],
                           env={"PYTHONDONTWRITEBYTECODE": "1"}, timeout=120)
        assert flood.returncode == 0, flood.stderr
        assert proc.popen.poll() is None, proc.log()  # it served the whole flood
        deadline = time.monotonic() + 60
        while (clients := held.request("status")["result"]["clients"]) != 1:  # held only
            assert time.monotonic() < deadline, f"{clients - 1} D-Bus peers left"
            time.sleep(0.05)
    finally:
        held.close()
    assert proc.wait_exit(timeout=30) == 0, proc.log()
    assert "idle for" in proc.log()
