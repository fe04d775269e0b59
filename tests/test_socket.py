"""Socket transport against a real daemon: bad input of every class gets a typed error,
changes nothing in LVM and leaves the daemon serving; pipelining; the clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rig
from lvmsuper.client import AsyncClient, Client, ConnectionFailed, InvalidRequest, JobRef

pytestmark = pytest.mark.system
MiB = 2**20


@pytest.fixture
def vg(daemon: rig.Daemon, lvm: rig.Sandbox) -> rig.Sandbox:
    lvm.lvm("pvcreate", lvm.loops[0], lvm.loops[1])
    lvm.lvm("vgcreate", "vgbad", lvm.loops[0])
    lvm.lvm("lvcreate", "-n", "keep", "-L", "4m", "vgbad")
    return lvm


def bad_params(loops: list[str]) -> list[tuple[str, dict[str, object], str]]:
    """(method, params, field at fault)."""
    return [
        ("lvcreate", {"vg": "vgbad", "name": "--config", "size": MiB}, "name"),
        ("lvcreate", {"vg": "-vgbad", "name": "x", "size": MiB}, "vg"),
        ("lvcreate", {"vg": "vgbad", "name": "a\nb", "size": MiB}, "name"),
        ("lvcreate", {"vg": "vgbad", "name": "a\x00b", "size": MiB}, "name"),
        ("lvcreate", {"vg": "vgbad", "name": "a/b", "size": MiB}, "name"),
        ("lvcreate", {"vg": "vgbad", "name": "..", "size": MiB}, "name"),
        ("lvcreate", {"vg": "vgbad", "name": "vо1", "size": MiB}, "name"),  # Cyrillic о
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": 0}, "size"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": -5}, "size"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": 2**63}, "size"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": 10**40}, "size"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": 1.5}, "size"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": "10G"}, "size"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": True}, "size"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": MiB, "tags": ["--addtag"]}, "tags[0]"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": MiB, "tags": ["a b"]}, "tags[0]"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": MiB, "tags": ["t"] * 65}, "tags"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": MiB, "colour": "red"}, "colour"),
        ("lvcreate", {"vg": "vgbad", "size": MiB}, "name"),
        ("lvcreate", {"vg": ["vgbad"], "name": "x", "size": MiB}, "vg"),
        ("lvcreate", {"vg": {"$ne": 1}, "name": "x", "size": MiB}, "vg"),
        ("lvremove", {"lv": "vgbad"}, "lv"),
        ("lvremove", {"lv": "vgbad/keep/x"}, "lv"),
        ("lvresize", {"lv": "vgbad/keep", "size": MiB, "force": "yes"}, "force"),
        ("pvcreate", {"devices": ["/dev/../etc/shadow"]}, "devices[0]"),
        ("pvcreate", {"devices": ["/etc/shadow"]}, "devices[0]"),
        ("pvcreate", {"devices": ["--config=x"]}, "devices[0]"),
        ("pvcreate", {"devices": ["/dev/null"]}, "devices[0]"),
        ("pvcreate", {"devices": []}, "devices"),
        ("pvcreate", {"devices": [loops[2]] * 2}, "devices"),
        ("pvcreate", {"devices": ["/dev/loop0"] * 10000}, "devices"),
        ("pvcreate", {"devices": loops[2]}, "devices"),
        ("vgs", {"select": "vg_name=x\n--config"}, "select"),
        ("lvs", {"names": ["vgbad"]}, "names[0]"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "extents": "50%PVS"}, "extents"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": MiB, "wait": -1}, "wait"),
        *more_bad_params(loops),
    ]


def nested(depth: int) -> object:
    value: object = "vgbad"
    for _ in range(depth):
        value = [value]
    return value


def more_bad_params(loops: list[str]) -> list[tuple[str, dict[str, object], str]]:
    """The rest of the issue's catalogue: huge arrays and numbers, nesting, look-alikes,
    option-like values, path tricks, reserved names, type confusion."""
    lv = {"vg": "vgbad", "size": MiB}
    return [
        # 10,000-element arrays
        ("lvs", {"names": ["vgbad/keep"] * 10000}, "names"),
        ("vgs", {"names": ["vgbad"] * 10000}, "names"),
        ("lvcreate", {**lv, "name": "x", "tags": ["t"] * 10000}, "tags"),
        ("vgextend", {"vg": "vgbad", "devices": [loops[1]] * 10000}, "devices"),
        # huge and odd numbers
        ("lvcreate", {**lv, "name": "x", "size": 1e300}, "size"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "extents": 2**32}, "extents"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "extents": "0%FREE"}, "extents"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "extents": "101%VG"}, "extents"),
        ("lvcreate", {**lv, "name": "x", "wait": 10**30}, "wait"),
        ("lvcreate", {**lv, "name": "x", "wait": True}, "wait"),
        ("lvcreate", {**lv, "name": "x", "stripes": 2**40}, "stripes"),
        ("vgcreate", {"name": "vgn", "devices": [loops[1]], "extent_size": 3 * MiB},
         "extent_size"),
        # deeply nested params (within the codec's depth limit)
        ("lvcreate", {"vg": nested(29), "name": "x", "size": MiB}, "vg"),  # depth 32
        ("lvs", {"select": {"a": {"b": {"c": {"d": ["vg_name=vgbad"]}}}}}, "select"),
        # unicode look-alikes and invisible characters
        ("lvcreate", {**lv, "vg": "vgb\u0430d", "name": "x"}, "vg"),      # Cyrillic a
        ("lvcreate", {**lv, "vg": "\uff56\uff47bad", "name": "x"}, "vg"),  # fullwidth vg
        ("lvcreate", {**lv, "name": "\u2010\u2010config"}, "name"),        # hyphens
        ("lvcreate", {**lv, "name": "\uff0d\uff0dyes"}, "name"),           # fullwidth -
        ("lvcreate", {**lv, "name": "keep\u200b"}, "name"),                 # zero width
        ("lvcreate", {**lv, "name": "x\u202egpj"}, "name"),                 # RTL override
        ("lvremove", {"lv": "vgbad/k\u0435ep"}, "lv"),                      # Cyrillic e
        ("pvcreate", {"devices": ["/dev/l\u043eop0"]}, "devices[0]"),
        # option-like values
        ("lvcreate", {**lv, "name": "-L1g"}, "name"),
        ("lvcreate", {**lv, "name": "-"}, "name"),
        ("lvcreate", {**lv, "name": "--"}, "name"),
        ("lvcreate", {**lv, "vg": "--yes", "name": "x"}, "vg"),
        ("lvremove", {"lv": "vgbad/--force"}, "lv"),
        ("lvremove", {"lv": "-vgbad/keep"}, "lv"),
        ("lvrename", {"lv": "vgbad/keep", "new_name": "--help"}, "new_name"),
        ("vgrename", {"vg": "vgbad", "new_name": "-ff"}, "new_name"),
        ("lvchange", {"lv": "vgbad/keep", "add_tags": ["-t"]}, "add_tags[0]"),
        ("lvchange", {"lv": "vgbad/keep", "permission": "--config=x"}, "permission"),
        ("lvcreate", {**lv, "name": "x", "type": "raid1 --yes"}, "type"),
        ("pvcreate", {"devices": ["-ff"]}, "devices[0]"),
        ("pvresize", {"device": f"{loops[0]} --yes"}, "device"),
        ("lvs", {"--config": "global{}"}, "--config"),
        ("job_status", {"job": "--all"}, "job"),
        # names with newline, NUL, '/', '.', '..', too long, reserved by LVM
        ("vgcreate", {"name": "vg\nbad", "devices": [loops[1]]}, "name"),
        ("vgcreate", {"name": "vg\x00", "devices": [loops[1]]}, "name"),
        ("vgcreate", {"name": "..", "devices": [loops[1]]}, "name"),
        ("vgcreate", {"name": ".", "devices": [loops[1]]}, "name"),
        ("vgrename", {"vg": "vgbad", "new_name": "a/b"}, "new_name"),
        ("lvremove", {"lv": "vgbad/.."}, "lv"),
        ("lvcreate", {**lv, "name": "x" * 128}, "name"),
        ("lvcreate", {**lv, "name": "snapshot0"}, "name"),
        ("lvcreate", {**lv, "name": "pvmove0"}, "name"),
        ("lvcreate", {**lv, "name": "data_tmeta"}, "name"),
        ("lvchange", {"lv": "vgbad/keep", "add_tags": ["t\n"]}, "add_tags[0]"),
        ("lvs", {"select": "x" * 4097}, "select"),
        ("lvs", {"select": "vg_name=vgbad\x00"}, "select"),
        ("job_status", {"job": "../../etc/passwd"}, "job"),
        # paths: not normalised, not under /dev, not block devices
        ("vgextend", {"vg": "vgbad", "devices": ["/dev/../etc/shadow"]}, "devices[0]"),
        ("pvs", {"names": ["/dev/../etc/shadow"]}, "names[0]"),
        ("pvcreate", {"devices": ["/dev/./loop0"]}, "devices[0]"),
        ("pvcreate", {"devices": ["/dev//loop0"]}, "devices[0]"),
        ("pvcreate", {"devices": ["/dev/loop0/"]}, "devices[0]"),
        ("pvcreate", {"devices": ["/dev"]}, "devices[0]"),
        ("pvcreate", {"devices": ["/proc/self/root/dev/loop0"]}, "devices[0]"),
        ("pvcreate", {"devices": ["dev/loop0"]}, "devices[0]"),
        ("pvcreate", {"devices": ["/dev/shm"]}, "devices[0]"),
        ("pvcreate", {"devices": ["/dev/zero"]}, "devices[0]"),
        ("pvcreate", {"devices": ["/dev/no-such-device-x"]}, "devices[0]"),
        ("pvchange", {"device": "/dev/loop0\n", "allocatable": False}, "device"),
        # type confusion
        ("lvcreate", {**lv, "name": None}, "name"),
        ("lvcreate", {**lv, "name": 7}, "name"),
        ("lvcreate", {**lv, "name": "x", "activate": "false"}, "activate"),
        ("vgremove", {"vg": "vgbad", "force": 1}, "force"),
        ("lvs", {"tags": "owner=me"}, "tags"),
    ]


def test_bad_params_are_typed_errors_and_change_nothing(daemon: rig.Daemon,
                                                        vg: rig.Sandbox) -> None:
    before = vg.state()
    raw = rig.Raw(daemon.socket)
    for i, (method, params, field) in enumerate(bad_params(vg.loops)):
        reply = raw.request(method, params, rid=i)
        assert reply["id"] == i
        err = reply.get("error")
        assert err, (method, params, reply)
        assert err["data"]["name"] == "InvalidRequest", (method, params, err)
        assert err["data"].get("field") == field, (method, params, err)
        assert isinstance(err["message"], str) and err["message"]
    assert vg.state() == before
    assert raw.request("ping") == {"jsonrpc": "2.0", "id": 1, "result": {}}


@contextlib.contextmanager
def dev_links(links: dict[str, str]) -> Iterator[None]:
    """Symlinks under /dev for the duration (names are ours: lvmsuper-test-*)."""
    made = []
    try:
        for name, target in links.items():
            path = f"/dev/lvmsuper-test-{name}"
            os.symlink(target, path)
            made.append(path)
        yield
    finally:
        for path in made:
            os.unlink(path)


def test_symlink_in_dev_pointing_outside_is_refused(daemon: rig.Daemon, vg: rig.Sandbox) -> None:
    """A path under /dev is judged by what it resolves to: outside /dev, not a block
    device, or dangling is InvalidRequest, and through a directory users can write
    PermissionDenied, before LVM ever sees it."""
    image = str(vg.dir / "disk2.img")  # the very file behind a sandbox loop device
    links = {"link": "/etc/shadow", "rel": "../etc/shadow", "image": image,
             "chain": "/dev/lvmsuper-test-link", "dir": "/dev/shm", "chr": "/dev/zero",
             "dangling": "/dev/lvmsuper-test-no-such"}
    # the image sits in /tmp, which every user can write: refused for that first
    reasons = {"link": "outside /dev", "rel": "outside /dev",
               "image": "users other than root can change",
               "chain": "outside /dev", "dir": "not a block device",
               "chr": "not a block device", "dangling": "does not exist"}
    before = vg.state()
    raw = rig.Raw(daemon.socket)
    with dev_links(links):
        for name, reason in reasons.items():
            for method, params, field in [
                    ("pvcreate", {"devices": [f"/dev/lvmsuper-test-{name}"]}, "devices[0]"),
                    ("vgextend", {"vg": "vgbad", "devices": [f"/dev/lvmsuper-test-{name}"]},
                     "devices[0]")]:
                reply = raw.request(method, params)
                expected = "PermissionDenied" if name == "image" else "InvalidRequest"
                assert reply["error"]["data"]["name"] == expected, (name, reply)
                assert reply["error"]["data"]["field"] == field
                assert reason in reply["error"]["message"], (name, reply)
    assert vg.state() == before
    assert raw.request("ping")["result"] == {}


def test_policy_refusals_change_nothing(sandbox: rig.Sandbox, vg: rig.Sandbox) -> None:
    """Out-of-policy targets, direct or through a /dev symlink to a device LVM would
    accept: PermissionDenied naming the field, LVM untouched."""
    d = rig.Daemon(sandbox, "narrow", policy={"devices": [vg.loops[1]],
                                              "protected_vgs": ["vgbad"]}).start()
    cases: list[tuple[str, dict[str, object], str]] = [
        ("pvcreate", {"devices": [vg.loops[2]]}, "devices"),
        ("pvcreate", {"devices": ["/dev/lvmsuper-test-alias"]}, "devices"),
        ("pvcreate", {"devices": [vg.loops[1], vg.loops[3]]}, "devices"),
        ("vgcreate", {"name": "vgbad", "devices": [vg.loops[1]]}, "name"),
        ("vgcreate", {"name": "vgnew", "devices": ["/dev/lvmsuper-test-alias"]}, "devices"),
        ("lvcreate", {"vg": "vgbad", "name": "x", "size": MiB}, "vg"),
        ("lvremove", {"lv": "vgbad/keep"}, "lv"),
        ("lvresize", {"lv": "vgbad/keep", "size": 8 * MiB}, "lv"),
        ("lvrename", {"lv": "vgbad/keep", "new_name": "moved"}, "lv"),
        ("lvchange", {"lv": "vgbad/keep", "add_tags": ["mine"]}, "lv"),
        ("vgchange", {"vg": "vgbad", "add_tags": ["mine"]}, "vg"),
        ("vgrename", {"vg": "vgbad", "new_name": "vgmine"}, "vg"),
        ("vgremove", {"vg": "vgbad", "force": True}, "vg"),
        ("vgextend", {"vg": "vgbad", "devices": [vg.loops[1]]}, "vg"),
        ("vgreduce", {"vg": "vgbad", "missing": True}, "vg"),
    ]
    try:
        before = vg.state()
        raw = rig.Raw(d.socket)
        with dev_links({"alias": vg.loops[3]}):
            for method, params, field in cases:
                reply = raw.request(method, params)
                error = reply.get("error")
                assert error and error["data"]["name"] == "PermissionDenied", (method, reply)
                assert error["data"]["field"] == field, (method, params, error)
        assert vg.state() == before
        assert raw.request("ping")["result"] == {}
    finally:
        d.stop()


HOSTILE_LINES = [  # (line, the daemon closes the connection after answering)
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping"', True),        # invalid JSON
    (b'\xff\xfe{"x": 1}', True),                                     # not UTF-8
    (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', False),     # batch
    (b'{"jsonrpc": "2.0", "method": "ping"}', False),                # notification
    (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', False),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "pvs", "params": [1]}', False),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "no_such_method"}', False),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "__init__"}', False),
    (b'"just a string"', False),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "pvs", "params": ' + b'{"a":' * 100 + b'1'
     + b'}' * 101, True),                                            # nested too deep
    (b'{"jsonrpc": "2.0", "id": 1, "method": "lvcreate", "params": {"vg": "vgbad", '
     b'"name": "x", "size": 1e400}}', False),                        # decodes to infinity
    (b'{"jsonrpc": "2.0", "id": 1, "method": "lvcreate", "params": {"vg": "vgbad", '
     b'"name": "x", "size": ' + b'9' * 5000 + b'}}', True),          # 5000-digit integer
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": NaN}}', True),
    (b'\xef\xbb\xbf{"jsonrpc": "2.0", "id": 1, "method": "ping"}', True),  # UTF-8 BOM
    (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}', False),  # id not scalar
    (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', False),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": null}', False),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "sudo": true}', False),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "method": "lvremove"}', False),  # dup
    (b'{"jsonrpc": "2.0", "id": 1, "method": "PING"}', False),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "lvremove\\u0000"}', False),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "' + b'x' * 100_000 + b'"}', False),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}\r\x00', True),  # junk after the object
]


@pytest.mark.parametrize("line, closes", HOSTILE_LINES)
def test_protocol_errors(daemon: rig.Daemon, vg: rig.Sandbox, line: bytes,
                         closes: bool) -> None:
    before = vg.state()
    raw = rig.Raw(daemon.socket)
    raw.send(line + b"\n")
    reply = raw.recv()
    assert reply["error"]["data"]["name"] == "InvalidRequest"
    assert isinstance(reply["error"]["code"], int)
    assert len(reply["error"]["message"]) < len(line) + 100  # no amplification
    if closes:
        assert raw.closed()
    else:
        assert raw.request("ping")["result"] == {}
    assert rig.Raw(daemon.socket).request("ping")["result"] == {}
    assert vg.state() == before


def test_oversize_line_is_refused_and_closes(daemon: rig.Daemon, vg: rig.Sandbox) -> None:
    before = vg.state()
    raw = rig.Raw(daemon.socket)
    try:
        raw.send(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * (2 * MiB))
    except BrokenPipeError:
        pass  # the daemon stops reading at the limit and closes; its answer is queued
    reply = raw.recv()
    assert reply["error"]["data"]["name"] == "InvalidRequest"
    assert "exceeds" in reply["error"]["message"]
    assert raw.closed()
    assert rig.Raw(daemon.socket).request("ping")["result"] == {}
    assert vg.state() == before


def test_pipelined_requests_all_answered_by_id(daemon: rig.Daemon, vg: rig.Sandbox) -> None:
    raw = rig.Raw(daemon.socket)
    methods = ["pvs", "ping", "vgs", "lvs", "version", "ping", "nope"] * 3
    raw.send(b"".join(json.dumps({"jsonrpc": "2.0", "id": f"r{i}", "method": m}).encode()
                      + b"\n" for i, m in enumerate(methods)))
    replies = {r["id"]: r for r in (raw.recv() for _ in methods)}
    assert set(replies) == {f"r{i}" for i in range(len(methods))}
    for i, m in enumerate(methods):
        reply = replies[f"r{i}"]
        assert ("error" in reply) == (m == "nope"), reply
    assert [g["name"] for g in replies["r2"]["result"]] == ["vgbad"]


def test_async_client_concurrent_and_sync_client_reconnects(daemon: rig.Daemon,
                                                            vg: rig.Sandbox) -> None:
    async def many() -> list[object]:
        async with AsyncClient(daemon.socket) as c:
            return list(await asyncio.gather(*(c.lvs(vg="vgbad") for _ in range(20)),
                                             c.ping()))
    results = asyncio.run(many())
    assert all([lv.full_name for lv in r] == ["vgbad/keep"] for r in results[:20])  # type: ignore[attr-defined]
    assert results[20] == {}

    client = Client(daemon.socket)
    assert client.vgs()[0].name == "vgbad"
    assert client._sock is not None
    # A connection that broke while idle is noticed before anything is sent on it, so
    # a read and even a change go out safely on a new one.
    client._sock.shutdown(socket.SHUT_RDWR)
    assert client.vgs()[0].name == "vgbad"
    client._sock.shutdown(socket.SHUT_RDWR)
    assert client.lvcreate("vgbad", "fresh", size=MiB).full_name == "vgbad/fresh"
    client.close()
    assert vg.report("lv", "lv_name", "vgbad/fresh")
    with pytest.raises(InvalidRequest):
        Client(daemon.socket).lvcreate("vgbad", "x", size=0)


def test_sync_client_retries_a_read_and_a_change_once(tmp_path: Path) -> None:
    """A peer that hangs up after reading each request: the read and the change are each
    sent twice (once more on a new connection), the change both times with the same
    request_id, and the change's error says its outcome is unknown."""
    path = str(tmp_path / "hangup.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    received: list[tuple[str, str | None]] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = json.loads(conn.makefile("rb").readline())
                received.append((request["method"],
                                 request.get("params", {}).get("request_id")))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with Client(path, timeout=30) as c:
            with pytest.raises(ConnectionFailed) as read:
                c.vgs()
            assert "may or may not" not in read.value.message
            with pytest.raises(ConnectionFailed, match="may or may not have happened"):
                c.lvcreate("vg0", "x", size=MiB)
        assert [m for m, _ in received] == ["vgs", "vgs", "lvcreate", "lvcreate"]
        ids = [i for _, i in received[2:]]
        assert ids[0] and ids[0] == ids[1]
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        server.close()
        thread.join(timeout=5)


def test_sync_client_with_a_timeout_reuses_its_connection(daemon: rig.Daemon) -> None:
    """Checking that the daemon has not hung up must not wait for data: a client with
    a (long) timeout makes many calls on one connection, promptly."""
    started = time.monotonic()
    with Client(daemon.socket, timeout=120) as c:
        first = c._sock
        for _ in range(5):
            assert c.ping() == {}
        assert c._sock is first
    assert time.monotonic() - started < 60, "each call waited for the client's timeout"


def test_change_with_wait_zero_returns_a_job(daemon: rig.Daemon, vg: rig.Sandbox) -> None:
    with Client(daemon.socket) as c:
        ref = c.lvcreate("vgbad", "jobbed", size=MiB, wait=0)
        assert isinstance(ref, JobRef)
        for _ in range(200):
            job = c.call("job_status", job=ref.id)
            if job.state != "running":
                break
            asyncio.run(asyncio.sleep(0.02))
        assert job.state == "succeeded" and job.result["full_name"] == "vgbad/jobbed"
        assert any(j.id == ref.id for j in c.call("jobs"))
    assert vg.report("lv", "lv_name", "vgbad/jobbed")


def test_subscribe_gets_changed_notifications(daemon: rig.Daemon, vg: rig.Sandbox) -> None:
    watcher = rig.Raw(daemon.socket)
    assert set(watcher.request("subscribe")["result"]) == {"boot", "seq"}
    with Client(daemon.socket) as c:
        c.lvcreate("vgbad", "seen", size=MiB)
    # (what earlier tests did by hand beside the daemon may be told first, as external)
    while True:
        note = watcher.recv()
        assert note["method"] == "changed"
        if note["params"]["source"] == "lvmsuper":
            break
    assert {"type": "lv", "name": "vgbad/seen"} in rig.named(note["params"]["objects"])


def test_start_up_errors_are_clear(sandbox: rig.Sandbox, daemon: rig.Daemon) -> None:
    bin_ = str(rig.VENV_BIN / "lvmsuperd")
    bad = sandbox.dir / "bad.toml"
    bad.write_text('[limits]\nmax_parallel = "4"\n')
    out = subprocess.run([bin_, "--config", str(bad), "--check-config"], capture_output=True,
                         text=True)
    assert out.returncode == 1 and "limits.max_parallel" in out.stderr
    bad.write_text('[server]\nsocket_group = "no-such-group-x"\n')
    out = subprocess.run([bin_, "--config", str(bad), "--check-config"], capture_output=True,
                         text=True)
    assert out.returncode == 1 and "groupadd --system no-such-group-x" in out.stderr
    out = subprocess.run([bin_, "--config", str(daemon.config_path), "--check-config"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # a second daemon on a live socket refuses to start; the first keeps serving
    out = subprocess.run([bin_, "--config", str(daemon.config_path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1 and "already serving" in out.stderr
    assert rig.Raw(daemon.socket).request("ping")["result"] == {}
