"""Socket transport against a real daemon: bad input of every class gets a typed error,
changes nothing in LVM and leaves the daemon serving; pipelining; the clients."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

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


def test_symlink_in_dev_pointing_outside_is_refused(daemon: rig.Daemon, vg: rig.Sandbox) -> None:
    link = "/dev/lvmsuper-test-link"
    os.symlink("/etc/shadow", link)
    try:
        reply = rig.Raw(daemon.socket).request("pvcreate", {"devices": [link]})
        assert reply["error"]["data"]["name"] == "InvalidRequest"
        assert "outside /dev" in reply["error"]["message"]
    finally:
        os.unlink(link)


@pytest.mark.parametrize("line, closes", [
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
])
def test_protocol_errors(daemon: rig.Daemon, line: bytes, closes: bool) -> None:
    raw = rig.Raw(daemon.socket)
    raw.send(line + b"\n")
    reply = raw.recv()
    assert reply["error"]["data"]["name"] == "InvalidRequest"
    assert isinstance(reply["error"]["code"], int)
    if closes:
        assert raw.closed()
    else:
        assert raw.request("ping")["result"] == {}
    assert rig.Raw(daemon.socket).request("ping")["result"] == {}


def test_oversize_line_is_refused_and_closes(daemon: rig.Daemon) -> None:
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
    client._sock.shutdown(2)  # the connection breaks under the client
    assert client.vgs()[0].name == "vgbad"  # a read retries once on a new connection
    client._sock.shutdown(2)
    with pytest.raises(ConnectionFailed, match="may or may not have happened"):
        client.lvcreate("vgbad", "never", size=MiB)  # a change never retries
    client.close()
    with pytest.raises(InvalidRequest):
        Client(daemon.socket).lvcreate("vgbad", "x", size=0)


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
    assert watcher.request("subscribe")["result"] == {}
    with Client(daemon.socket) as c:
        c.lvcreate("vgbad", "seen", size=MiB)
    note = watcher.recv()
    assert note["method"] == "changed"
    assert {"type": "lv", "name": "vgbad/seen"} in note["params"]["objects"]


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
