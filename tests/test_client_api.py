"""The client's named methods: one per method of the daemon's table, named and typed as
on the wire, for ``Client`` and ``AsyncClient`` alike; each exercised against a real
daemon and real LVM (over the socket and over D-Bus) and checked against LVM's own
report; the asyncio client's retry rule; the asyncio client on D-Bus.

The private bus and polkitd are test_dbus.py's (its fixtures, imported).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rig
from lvmsuper.client import (AsyncClient, Client, ConnectionFailed, InvalidRequest, Job, JobRef,
                             LvmFailed, NotFound, __version__)
from lvmsuper.client._core import AsyncMethods, BlockingMethods, Methods, rpc
from lvmsuper.client.models import LV, PV, VG
from lvmsuper.supervisor.core.methods import METHODS
from test_dbus import ADMIN, OUT, Bus, bus, dd, polkit  # noqa: F401  (fixtures)

MiB = 2**20
STATUS_KEYS = {"version", "pid", "uptime", "lvm_version", "transports", "clients", "requests",
               "latency_ms", "jobs", "last_errors", "cache", "lockspaces", "lost_lockspaces"}
SPECS = {name: value for name, value in vars(Methods).items() if isinstance(value, rpc)}


# ---- the declarations follow the daemon's table ----------------------------------------

def test_every_daemon_method_has_a_named_method_with_its_wire_parameters() -> None:
    assert set(SPECS) == set(METHODS)
    for name, method in METHODS.items():
        params = SPECS[name].signature.parameters
        assert set(params) == set(method.params), name
        for key, param in method.params.items():
            declared = params[key]
            if param.required:  # required: positional (or by keyword), no default
                assert declared.default is inspect.Parameter.empty, (name, key)
                assert declared.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, (name, key)
            elif param.one_of is not None and key == param.one_of:
                # one of a group ("lv" or a batch "lvs"): the single one keeps its place
                assert declared.default is None, (name, key)
                assert declared.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, (name, key)
            else:  # optional: keyword-only, None meaning "not given"
                assert declared.default is None, (name, key)
                assert declared.kind is inspect.Parameter.KEYWORD_ONLY, (name, key)
        if method.change:
            assert "wait" in params, name
            assert "JobRef" in str(SPECS[name].signature.return_annotation), name
    for client in (Client, AsyncClient):
        for name in METHODS:
            assert getattr(client, name) is SPECS[name]  # declared once, inherited


class Recorder(BlockingMethods):
    def __init__(self, answer: Any) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.answer = answer

    def call(self, method: str, **params: Any) -> Any:
        self.sent.append((method, params))
        return self.answer


class AsyncRecorder(AsyncMethods):
    def __init__(self, answer: Any) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.answer = answer

    async def call(self, method: str, **params: Any) -> Any:
        self.sent.append((method, params))
        return self.answer


@pytest.mark.parametrize("kind", [Recorder, AsyncRecorder])
def test_named_methods_send_exactly_the_arguments_given(kind: type[Any]) -> None:
    recorder = kind("answer")

    def run(value: Any) -> Any:
        return asyncio.run(value) if inspect.isawaitable(value) else value

    assert inspect.iscoroutinefunction(recorder.vgs) == (kind is AsyncRecorder)
    assert run(recorder.lvcreate("vg0", "lv0", size=MiB, tags=None, zero=False)) == "answer"
    assert run(recorder.lvresize("vg0/lv0", 2 * MiB, wait=0)) == "answer"
    assert run(recorder.vgreduce("vg0", missing=True)) == "answer"
    assert run(recorder.job_status(job="1-2")) == "answer"
    assert recorder.sent == [
        ("lvcreate", {"vg": "vg0", "name": "lv0", "size": MiB, "zero": False}),  # None: not sent
        ("lvresize", {"lv": "vg0/lv0", "size": 2 * MiB, "wait": 0}),
        ("vgreduce", {"vg": "vg0", "missing": True}),
        ("job_status", {"job": "1-2"})]
    for bad in (lambda: recorder.lvcreate("vg0", "lv0", colour="red"),
                lambda: recorder.lvcreate("vg0"),
                lambda: recorder.pvs([rig.LVM])):  # optional parameters are keyword-only
        with pytest.raises(TypeError, match="^(lvcreate|pvs)\\(\\): "):
            run(bad())
    assert len(recorder.sent) == 4
    assert "Creates an LV" in (recorder.lvcreate.__doc__ or "")
    assert str(inspect.signature(recorder.lvrename)) == \
        ("(lv: 'str', new_name: 'str', *, scan_devices: 'list[str] | None' = None, "
         "request_id: 'str | None' = None, wait: 'float | None' = None) -> 'LV | JobRef'")
    # a batch: the single LV keeps its place; the batch is by keyword
    run(recorder.lvchange(lvs=["vg0/a", "vg0/b"], refresh=True))
    run(recorder.lvremove("vg0/a"))
    assert recorder.sent[-2:] == [("lvchange", {"lvs": ["vg0/a", "vg0/b"], "refresh": True}),
                                  ("lvremove", {"lv": "vg0/a"})]


# ---- every named method against a real daemon and real LVM ------------------------------

class Api:
    """A Client or an AsyncClient, called alike: the asyncio client's coroutines run to
    completion on a loop of its own here, so one test body serves both."""

    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client
        self.loop = asyncio.new_event_loop() if isinstance(client, AsyncClient) else None

    def run(self, value: Any) -> Any:
        if self.loop is None:
            return value
        assert inspect.iscoroutine(value)  # the asyncio client's methods are coroutines
        return self.loop.run_until_complete(value)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        return lambda *args, **kwargs: self.run(method(*args, **kwargs))

    def notifications(self) -> list[dict[str, Any]]:
        self.run(self.client.ping())  # lets pending notifications in
        if isinstance(self.client, AsyncClient):
            queue, out = self.client.notifications, []
            while not queue.empty():
                out.append(queue.get_nowait())
            return out
        return list(self.client.notifications)

    def close(self) -> None:
        self.run(self.client.close())
        if self.loop is not None:
            self.loop.close()


@pytest.fixture(params=["socket", "dbus"])
def transport(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Client keyword arguments reaching a daemon over this transport."""
    if request.param == "socket":
        return {"socket_path": request.getfixturevalue("daemon").socket}
    request.getfixturevalue("dd")  # lvmsuperd on test_dbus's private bus, with polkitd
    return {"transport": "dbus", "bus_address": request.getfixturevalue("bus").address,
            "timeout": 60}


@pytest.fixture(params=[Client, AsyncClient], ids=["Client", "AsyncClient"])
def api(request: pytest.FixtureRequest, transport: dict[str, Any],
        lvm: rig.Sandbox) -> Iterator[Api]:
    rig.system_ready()
    wrapped = Api(request.param(**transport))
    try:
        yield wrapped
    finally:
        wrapped.close()


def one(lvm: rig.Sandbox, kind: str, fields: str, name: str) -> dict[str, str]:
    (row,) = lvm.report(kind, fields, name)
    return row


def finished(api: Api, ref: JobRef) -> Job:
    deadline = time.monotonic() + 30
    while (job := api.job_status(ref.id)).state == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    return job  # type: ignore[no-any-return]


@pytest.mark.system
def test_every_named_method_against_lvm(api: Api, lvm: rig.Sandbox) -> None:
    d0, d1, d2, _ = lvm.loops
    # the daemon itself
    assert api.ping() == {}
    version = api.version()
    assert set(version) == {"lvmsuper", "lvm"} and version["lvmsuper"] == __version__
    assert version["lvm"] and version["lvm"] in lvm.lvm("version").stdout
    status = api.status()
    assert set(status) == STATUS_KEYS
    assert set(status["requests"]) == {"total", "failed", "in_flight", "queued"}
    assert set(status["latency_ms"]) == {"p50", "p99"}
    assert status["version"] == __version__ and status["lvm_version"] == version["lvm"]
    assert set(api.subscribe()) == {"boot", "seq"}  # the stream's position, either way
    assert api.pvs() == [] and api.vgs() == [] and api.lvs() == []
    assert isinstance(api.jobs(), list)

    # PVs
    created = api.pvcreate([d0, d1, d2])
    assert all(isinstance(pv, PV) for pv in created)
    assert {pv.name: (pv.uuid, pv.size, pv.vg) for pv in created} == {
        row["pv_name"]: (row["pv_uuid"], int(row["pv_size"]), None)
        for row in lvm.report("pv", "pv_name,pv_uuid,pv_size")}

    # a VG: create, extend, reduce, rename, tags
    vg = api.vgcreate("vgapi", [d0], extent_size=4 * MiB, tags=["made=api"])
    row = one(lvm, "vg", "vg_uuid,vg_extent_size,vg_tags,pv_count", "vgapi")
    assert isinstance(vg, VG) and vg.name == "vgapi" and vg.uuid == row["vg_uuid"]
    assert vg.extent_size == int(row["vg_extent_size"]) == 4 * MiB
    assert vg.tags == ["made=api"] and row["vg_tags"] == "made=api"
    vg = api.vgextend("vgapi", [d1, d2])
    assert vg.pv_count == int(one(lvm, "vg", "pv_count", "vgapi")["pv_count"]) == 3
    vg = api.vgreduce("vgapi", devices=[d2])
    assert vg.pv_count == int(one(lvm, "vg", "pv_count", "vgapi")["pv_count"]) == 2
    assert one(lvm, "pv", "vg_name", d2)["vg_name"] == ""
    vg = api.vgrename("vgapi", "vgren")
    assert (vg.name, vg.uuid) == ("vgren", one(lvm, "vg", "vg_uuid", "vgren")["vg_uuid"])
    assert lvm.report("vg", "vg_name") == [{"vg_name": "vgren"}]
    vg = api.vgchange("vgren", add_tags=["b"], del_tags=["made=api"])
    assert vg.tags == ["b"] and one(lvm, "vg", "vg_tags", "vgren")["vg_tags"] == "b"

    # an LV: create (rounded up to whole extents), rename, change, grow, shrink
    lv = api.lvcreate("vgren", "data", size=8 * MiB + 1, tags=["t1"])
    row = one(lvm, "lv", "lv_uuid,lv_size,lv_tags", "vgren/data")
    assert isinstance(lv, LV) and lv.full_name == "vgren/data" and lv.uuid == row["lv_uuid"]
    assert lv.size == int(row["lv_size"]) == 12 * MiB and lv.tags == ["t1"] == [row["lv_tags"]]
    lv = api.lvrename("vgren/data", "renamed")
    assert (lv.full_name, lv.uuid) == ("vgren/renamed", row["lv_uuid"])
    assert one(lvm, "lv", "lv_uuid", "vgren/renamed")["lv_uuid"] == row["lv_uuid"]
    lv = api.lvchange("vgren/renamed", add_tags=["t2"], del_tags=["t1"], permission="r")
    row = one(lvm, "lv", "lv_tags,lv_attr", "vgren/renamed")
    assert lv.tags == ["t2"] and row["lv_tags"] == "t2"
    assert lv.attr == row["lv_attr"] and lv.attr[1] == "r"  # read-only
    lv = api.lvchange("vgren/renamed", permission="rw")
    assert lv.attr[1] == "w" == one(lvm, "lv", "lv_attr", "vgren/renamed")["lv_attr"][1]
    lv = api.lvresize("vgren/renamed", 20 * MiB)
    assert lv.size == int(one(lvm, "lv", "lv_size", "vgren/renamed")["lv_size"]) == 20 * MiB
    with pytest.raises(InvalidRequest) as refused:
        api.lvresize("vgren/renamed", 8 * MiB)
    assert refused.value.data["field"] == "force"
    assert one(lvm, "lv", "lv_size", "vgren/renamed")["lv_size"] == str(20 * MiB)
    lv = api.lvresize("vgren/renamed", 8 * MiB, force=True)
    assert lv.size == int(one(lvm, "lv", "lv_size", "vgren/renamed")["lv_size"]) == 8 * MiB

    # PVs: flags, tags, size
    pv = api.pvchange(d1, allocatable=False, add_tags=["slow"])
    row = one(lvm, "pv", "pv_attr,pv_tags", d1)
    assert isinstance(pv, PV) and pv.allocatable is False and pv.attr == row["pv_attr"]
    assert row["pv_attr"][0] != "a" and pv.tags == ["slow"] == [row["pv_tags"]]
    pv = api.pvresize(d2, size=32 * MiB)
    assert pv.size == int(one(lvm, "pv", "pv_size", d2)["pv_size"]) <= 32 * MiB
    pv = api.pvresize(d2)  # back to the whole device
    assert pv.size == int(one(lvm, "pv", "pv_size", d2)["pv_size"]) == pv.dev_size == 64 * MiB

    # jobs: a change that outlives wait=0, collected by id
    ref = api.lvcreate("vgren", "later", size=4 * MiB, wait=0)
    assert isinstance(ref, JobRef)
    job = finished(api, ref)
    assert isinstance(job, Job) and (job.id, job.method, job.state) == (ref.id, "lvcreate",
                                                                         "succeeded")
    assert job.result["uuid"] == one(lvm, "lv", "lv_uuid", "vgren/later")["lv_uuid"]
    assert ref.id in [j.id for j in api.jobs()] and all(isinstance(j, Job) for j in api.jobs())
    assert api.job_cancel(ref.id).state == "succeeded"  # finished: nothing to stop
    moved = api.pvmove(d1, destination=d0)  # always a job; d1 holds no extents
    assert isinstance(moved, JobRef)
    job = finished(api, moved)
    assert (job.method, job.state) == ("pvmove", "failed")
    assert job.error is not None and job.error["data"]["name"] == "LvmFailed"
    with pytest.raises(NotFound):
        api.job_status("1-999999")
    # shared VGs: none here (no lvmlockd): nothing to start or stop
    assert api.lockstart() == {"started": []} and api.lockstop() == {"stopped": []}

    # reads with filters, against LVM's report
    assert sorted(pv.name for pv in api.pvs(vg="vgren")) == sorted([d0, d1])
    assert [pv.name for pv in api.pvs(names=[d2])] == [d2]
    assert [vg.name for vg in api.vgs(names=["vgren"])] == ["vgren"]
    assert api.vgs(select="vg_name=nothere") == []
    lvs = {lv.full_name: lv.uuid for lv in api.lvs(vg="vgren")}
    assert lvs == {r["lv_full_name"]: r["lv_uuid"]
                   for r in lvm.report("lv", "lv_full_name,lv_uuid", "vgren")}
    assert [lv.full_name for lv in api.lvs(tags=["t2"])] == ["vgren/renamed"]
    assert [lv.name for lv in api.lvs(names=["vgren/later"], select="lv_size>0")] == ["later"]
    with pytest.raises(NotFound) as missing:
        api.lvs(names=["vgren/nope"])
    assert missing.value.data["object_name"] == "vgren/nope"
    report = api.report(vg="vgren")
    assert set(report) == {"pvs", "vgs", "lvs"}
    assert [vg.uuid for vg in report["vgs"]] == [one(lvm, "vg", "vg_uuid", "vgren")["vg_uuid"]]
    assert {lv.full_name: lv.uuid for lv in report["lvs"]} == lvs
    assert sorted(pv.name for pv in report["pvs"]) == sorted([d0, d1])
    assert all(isinstance(pv, PV) for pv in report["pvs"])
    whole = api.report()
    assert sorted(pv.name for pv in whole["pvs"]) == sorted([d0, d1, d2])

    # activation: LVM skips it when the kernel has no device-mapper (active unknown)
    active = True if rig.has_device_mapper() else None
    assert api.lvchange("vgren/later", activate=True).active is active
    assert isinstance(api.vgchange("vgren", activate=False), VG)

    # removals
    assert api.lvremove("vgren/later") == {"removed": ["vgren/later"]}
    assert lvm.report("lv", "lv_name", "vgren") == [{"lv_name": "renamed"}]

    # a manager's needs (issue 12): new fields, batches, refresh, vgck, scan_devices
    b1 = api.lvcreate("vgren", "b1", size=4 * MiB, wipe_signatures=False, devices=[d0])
    assert b1.segments == [{"lv_start": 0, "extents": 1, "pvs": [
        {"name": d0, "start": int(one(lvm, "lv", "seg_pe_ranges", "vgren/b1")
                                  ["seg_pe_ranges"].split(":")[1].split("-")[0])}]}]
    api.lvcreate("vgren", "b2", size=4 * MiB)
    batch = api.lvchange(lvs=["vgren/b2", "vgren/b1"], add_tags=["IU_a&44&b", "MD_7"])
    assert [lv.full_name for lv in batch] == ["vgren/b2", "vgren/b1"]  # as named
    assert all(isinstance(lv, LV) and lv.tags == ["IU_a&44&b", "MD_7"] for lv in batch)
    assert {r["lv_tags"] for r in lvm.report("lv", "lv_tags", "vgren/b1", "vgren/b2")} == \
        {"IU_a&44&b,MD_7"}
    assert api.lvchange("vgren/b1", refresh=True).full_name == "vgren/b1"
    assert api.vgck("vgren") == {"ok": True, "log": []}
    (vg,) = api.vgs(names=["vgren"], scan_devices=[d0, d1])
    assert sorted(vg.pvs) == sorted([d0, d1]) and vg.mda_size > 0
    pv = api.pvchange(d1, metadata_ignore=True)
    assert (pv.mda_used_count, pv.vg_uuid) == (0, vg.uuid)
    assert one(lvm, "pv", "pv_mda_used_count", d1)["pv_mda_used_count"] == "0"
    assert api.lvremove(lvs=["vgren/b1", "vgren/b2"]) == {"removed": ["vgren/b1", "vgren/b2"]}
    assert lvm.report("lv", "lv_name", "vgren") == [{"lv_name": "renamed"}]
    with pytest.raises(InvalidRequest):
        api.vgremove("vgren")  # it holds an LV
    assert api.vgremove("vgren", force=True) == {"removed": ["vgren"]}
    assert lvm.report("vg", "vg_name") == []
    assert api.pvremove([d0, d1, d2]) == {"removed": [d0, d1, d2]}
    assert lvm.report("pv", "pv_name") == []

    # subscribed at the start: the changes were announced
    objects = [o for note in api.notifications() for o in rig.named(note["params"]["objects"])]
    assert {"type": "vg", "name": "vgapi"} in objects
    assert {"type": "lv", "name": "vgren/renamed"} in objects


# ---- the asyncio client's retry rule ------------------------------------------------------

class Peer:
    """A Unix-socket peer that reads what one connection sends (until it pauses) and hangs
    up without answering, for the first ``hang_ups`` connections; later ones get ``[]``
    for a read and ``{"removed": [...]}`` for a change. Every request's ``request_id``
    is recorded."""

    def __init__(self, path: str, hang_ups: int) -> None:
        self.path, self.hang_ups = path, hang_ups
        self.received: list[list[str]] = []
        self.request_ids: list[str | None] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        methods: list[str] = []
        self.received.append(methods)
        answer = len(self.received) > self.hang_ups
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), None if answer else 0.3)
                if not line:
                    break
                request = json.loads(line)
                methods.append(request["method"])
                self.request_ids.append(request.get("params", {}).get("request_id"))
                if answer:
                    result: Any = [] if request["method"] == "vgs" else {"removed": ["vg0/x"]}
                    writer.write(json.dumps({"jsonrpc": "2.0", "id": request["id"],
                                             "result": result}).encode() + b"\n")
        except TimeoutError:
            pass  # everything sent has arrived: hang up
        writer.close()


def test_async_client_retries_a_read_and_a_change_once(tmp_path: Path) -> None:
    """Requests in flight on a connection that breaks: each is sent once more on a new
    connection and gets its answer there; the change with the same request_id (the
    daemon runs it once: tests/test_stream.py). A call whose retry breaks as well fails;
    for a change its error says the outcome is unknown."""
    path = str(tmp_path / "hangup.sock")

    async def main() -> None:
        peer = Peer(path, hang_ups=1)
        async with await asyncio.start_unix_server(peer.serve, path):
            async with AsyncClient(path, timeout=30) as c:
                read, change = await asyncio.gather(
                    c.vgs(), c.lvremove("vg0/x"), return_exceptions=True)
        assert read == []  # answered on the second connection
        assert change == {"removed": ["vg0/x"]}
        assert sorted(peer.received[0]) == sorted(peer.received[1]) == ["lvremove", "vgs"]
        ids = [i for i in peer.request_ids if i is not None]
        assert len(ids) == 2 and ids[0] == ids[1]  # the change, twice, with one id

        peer = Peer(path + "2", hang_ups=99)
        async with await asyncio.start_unix_server(peer.serve, peer.path):
            async with AsyncClient(peer.path, timeout=30) as c:
                with pytest.raises(ConnectionFailed) as lost:
                    await c.vgs()
                assert "may or may not" not in lost.value.message
                with pytest.raises(ConnectionFailed, match="may or may not have happened"):
                    await c.lvremove("vg0/x")
        assert peer.received == [["vgs"], ["vgs"], ["lvremove"], ["lvremove"]]

    asyncio.run(main())


def test_a_timeout_fails_that_call_alone_and_is_never_retried(tmp_path: Path) -> None:
    """A peer that answers everything but ``vgs`` and ``vgremove``: past ``timeout`` each
    of those fails alone (ConnectionFailed, sent once: a retry would double the wait; the
    change's outcome is unknown); a call in flight beside it on the same connection, and
    later calls, are answered (asyncio: same connection; blocking: a new one, since its
    old one may still carry the late answer)."""
    path = str(tmp_path / "slow.sock")
    received: list[str] = []
    connections: list[int] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while line := await reader.readline():
            request = json.loads(line)
            received.append(request["method"])
            if request["method"] not in ("vgs", "vgremove"):
                writer.write(json.dumps({"jsonrpc": "2.0", "id": request["id"],
                                         "result": {}}).encode() + b"\n")

    async def main() -> None:
        async with await asyncio.start_unix_server(peer, path):
            async with AsyncClient(path, timeout=0.3) as c:
                late, other = await asyncio.gather(c.vgs(), c.ping(), return_exceptions=True)
                assert isinstance(late, ConnectionFailed) and other == {}
                assert "no answer from lvmsuperd to vgs within 0.3 s" in late.message
                assert "may or may not" not in late.message
                with pytest.raises(ConnectionFailed, match="may or may not have happened"):
                    await c.vgremove("vg0")
                assert await c.ping() == {}
            assert received == ["vgs", "ping", "vgremove", "ping"] and len(connections) == 1
            received.clear()
            await asyncio.get_running_loop().run_in_executor(None, blocking)

    def blocking() -> None:
        with Client(path, timeout=0.3) as c:
            with pytest.raises(ConnectionFailed, match="no answer from lvmsuperd to vgs"):
                c.vgs()
            assert c.ping() == {}
        assert received == ["vgs", "ping"] and len(connections) == 3

    asyncio.run(main())


# ---- the asyncio client on D-Bus -----------------------------------------------------------

ASYNC_AS_USER = """\
import asyncio, json
from lvmsuper.client import AsyncClient, LvmSuperError

async def main():
    out = []
    async with AsyncClient(transport="dbus") as c:  # the system bus: our private one
        for call in (c.ping(), c.vgs(), c.lvcreate("vgab", "mine", size=2**20)):
            try:
                result = await call
            except LvmSuperError as e:
                out.append([type(e).__name__, e.data.get("required")])
                continue
            if isinstance(result, list):
                result = [vg.name for vg in result]
            out.append(["ok", getattr(result, "full_name", result)])
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.system
def test_async_client_over_dbus(dd: rig.Daemon, bus: Bus, lvm: rig.Sandbox) -> None:
    """The asyncio client on its own event loop: many calls in flight on one bus
    connection, the same typed results and exceptions as over the socket, Changed
    signals in its notifications queue, polkit deciding for unprivileged callers."""
    lvm.lvm("pvcreate", *lvm.loops[:2])
    lvm.lvm("vgcreate", "vgab", lvm.loops[0])
    lvm.lvm("lvcreate", "-n", "keep", "-L", "4m", "--addtag", "k", "vgab")

    async def main() -> None:
        async with AsyncClient(transport="dbus", bus_address=bus.address, timeout=60) as c, \
                AsyncClient(dd.socket) as s:
            reads = [("pvs", {}), ("pvs", {"vg": "vgab"}), ("vgs", {}),
                     ("vgs", {"names": ["vgab"]}), ("lvs", {}), ("lvs", {"tags": ["k"]})]
            over_dbus = await asyncio.gather(*(getattr(c, m)(**kw) for m, kw in reads))
            over_socket = await asyncio.gather(*(getattr(s, m)(**kw) for m, kw in reads))
            assert over_dbus == over_socket and over_dbus[4][0].tags == ["k"]
            assert await c.report() == await s.report()
            assert await c.version() == await s.version()

            errors = []
            for client in (c, s):
                with pytest.raises(NotFound) as nf:
                    await client.lvs(names=["vgab/nope"])
                errors.append((nf.value.message, nf.value.data))
            assert errors[0] == errors[1] and errors[0][1]["object_name"] == "vgab/nope"
            with pytest.raises(InvalidRequest) as bad:
                await c.lvcreate("vgab", "--config", size=MiB)
            assert bad.value.data["field"] == "name"
            with pytest.raises(LvmFailed):
                await c.lvcreate("vgab", "huge", size=2**40)

            position = await c.subscribe()
            assert set(position) == {"boot", "seq"}
            lv = await s.lvcreate("vgab", "seen", size=MiB)
            while True:  # (earlier tests' changes by hand may be told first, as external)
                note = await asyncio.wait_for(c.notifications.get(), 10)
                assert note["method"] == "changed"
                if note["params"].get("source") == "lvmsuper":
                    break
            assert {"type": "lv", "name": "vgab/seen"} in rig.named(note["params"]["objects"])
            assert lv == (await c.lvs(names=["vgab/seen"]))[0]

            ref = await c.lvremove("vgab/seen", wait=0)
            assert isinstance(ref, JobRef)
            for _ in range(1500):
                if (job := await c.job_status(ref.id)).state != "running":
                    break
                await asyncio.sleep(0.02)
            assert job.result == {"removed": ["vgab/seen"]}

    asyncio.run(main())
    assert [r["lv_name"] for r in lvm.report("lv", "lv_name", "vgab")] == ["keep"]

    env = {"DBUS_SYSTEM_BUS_ADDRESS": bus.address, "PYTHONDONTWRITEBYTECODE": "1"}
    out = {}
    for user in (ADMIN, OUT):
        proc = rig.run_as(user, [str(rig.VENV_BIN / "python"), "-c", ASYNC_AS_USER], env=env)
        assert proc.returncode == 0, proc.stderr
        out[user] = json.loads(proc.stdout)
    assert out[ADMIN] == [["ok", {}], ["ok", ["vgab"]], ["ok", "vgab/mine"]]
    assert out[OUT] == [["PermissionDenied", "query"], ["PermissionDenied", "query"],
                        ["PermissionDenied", "manage"]]


def test_async_client_dbus_unreachable_is_connection_failed(tmp_path: Path) -> None:
    async def main() -> None:
        c = AsyncClient(transport="dbus", bus_address=f"unix:path={tmp_path}/no-bus-here")
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            await c.ping()
        with pytest.raises(ValueError):
            AsyncClient(transport="carrier-pigeon")

    asyncio.run(main())


@pytest.mark.system
def test_readme_async_example_runs(daemon: rig.Daemon, lvm: rig.Sandbox) -> None:
    """The README's asyncio example (its second Python block), as written."""
    readme = (rig.REPO / "README.md").read_text()
    blocks = readme.split("```python\n")
    code = blocks[2][:blocks[2].index("```")]
    assert "AsyncClient" in code
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgdemo", lvm.loops[0])
    proc = rig.python_as(ADMIN, code, daemon.socket)
    assert proc.returncode == 0, proc.stderr
    assert "vgdemo" in proc.stdout
