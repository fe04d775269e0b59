"""Descriptors that come with answer lines (client/passing.py): which line a descriptor
belongs to, that every descriptor not handed to the caller is closed, and the clients
reading a real socket pair where a fake daemon sends lines with SCM_RIGHTS the way
lvmsuperd does (on the first byte of the answer's line)."""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from lvmsuper.client import AsyncClient, Client, InvalidRequest
from lvmsuper.client.passing import FdLineCodec, received


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.fixture
def pipe_fds() -> Iterator[list[int]]:
    """Some real descriptors (pipe ends); whatever the test left open is closed."""
    fds: list[int] = []
    for _ in range(3):
        fds.extend(os.pipe())
    yield fds
    for fd in fds:
        if is_open(fd):
            os.close(fd)


def line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_descriptors_go_to_the_last_line_starting_in_their_chunk(pipe_fds: list[int]) -> None:
    codec = FdLineCodec(1 << 20)
    a, b = pipe_fds[:2]
    # the tail of an earlier line, then the line that carries the descriptor, split
    out = codec.feed(b'{"x": 1}\n{"x"', ())
    assert out == [({"x": 1}, [])]
    out = codec.feed(b': 2}\n{"id": 7, "result', [a])
    assert out == [({"x": 2}, [])]
    out = codec.feed(b'": {"fd": 0}}\n{"id": 8}\n', [b])  # the second on the next line
    assert out == [({"id": 7, "result": {"fd": 0}}, [a]), ({"id": 8}, [b])]


def test_a_bad_line_closes_what_it_carried(pipe_fds: list[int]) -> None:
    codec = FdLineCodec(1 << 20)
    a, b = pipe_fds[:2]
    out = codec.feed(b"not json\n", [a])
    assert len(out) == 1 and out[0][1] == [] and not is_open(a)
    codec.feed(b'{"late": 1}\n', [b])  # a broken stream decodes nothing more
    assert not is_open(b)


def test_received_hands_over_only_lv_opens_indexed_descriptor(pipe_fds: list[int]) -> None:
    a, b, c = pipe_fds[:3]
    assert received("lv_open", {"fd": 1, "path": "/dev/v/l", "size": 1}, [a, b]) == \
        {"fd": b, "path": "/dev/v/l", "size": 1}
    assert is_open(b) and not is_open(a)
    assert received("vgs", [], [c]) == [] and not is_open(c)


@pytest.mark.parametrize("index", [1, -1, "0", None, True])
def test_received_refuses_a_bad_index_and_closes_all(pipe_fds: list[int], index: object) -> None:
    a = pipe_fds[0]
    with pytest.raises(Exception, match="carried no descriptor"):
        received("lv_open", {"fd": index, "path": "p", "size": 0}, [a])
    assert not is_open(a)


class FakeDaemon:
    """Answers each request line on a socket pair: ``lv_open`` with a pipe's read end
    as SCM_RIGHTS on the answer's first byte (after a notification that carries a
    stray descriptor, which the client must close), anything else with an error that
    also carries one."""

    def __init__(self, server: socket.socket, payload: bytes) -> None:
        self.server = server
        self.payload = payload
        self.sent: list[int] = []  # our copies' numbers are closed once sent
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        buf = b""
        while True:
            data = self.server.recv(65536)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                self.answer(json.loads(raw))

    def _send(self, text: bytes, fd: int) -> None:
        self.server.sendmsg([text], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      array.array("i", [fd]))])
        os.close(fd)

    def answer(self, request: dict[str, object]) -> None:
        stray_r, stray_w = os.pipe()
        os.close(stray_w)
        self._send(line({"jsonrpc": "2.0", "method": "changed", "params": {"objects": []}}),
                   stray_r)
        r, w = os.pipe()
        os.write(w, self.payload)
        os.close(w)
        if request["method"] == "lv_open":
            text = line({"jsonrpc": "2.0", "id": request["id"],
                         "result": {"fd": 0, "path": "/dev/v/l", "size": len(self.payload)}})
        else:
            text = line({"jsonrpc": "2.0", "id": request["id"],
                         "error": {"code": -32602, "message": "no",
                                   "data": {"name": "InvalidRequest"}}})
        self._send(text[:5], r)  # the kernel keeps the descriptor on these bytes
        self.server.sendall(text[5:])


def own_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_sync_client_gets_a_file_and_leaks_nothing() -> None:
    client_sock, server = socket.socketpair()
    fake = FakeDaemon(server, b"data of the LV")
    before = own_fds()
    client = Client("/nonexistent")
    client._sock = client_sock
    try:
        for _ in range(20):
            with client.lv_open("v/l", "r") as handle:
                assert handle.mode == "rb" and handle.read() == b"data of the LV"
            with pytest.raises(InvalidRequest):
                client.vgs()
        client.notifications.clear()
        assert own_fds() == before  # strays and the error's descriptor were closed
    finally:
        client.close()
        server.close()
        fake.thread.join(5)


def test_async_client_gets_a_file_and_leaks_nothing(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "fake.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    fakes: list[FakeDaemon] = []

    def accept() -> None:
        conn, _ = listener.accept()
        fakes.append(FakeDaemon(conn, b"async data"))

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()

    async def main() -> None:
        async with AsyncClient(path) as client:
            while not fakes:  # the fake daemon's end of the connection is open too
                await asyncio.sleep(0.01)
            before = own_fds()
            for _ in range(20):
                handle = await client.lv_open("v/l", "rw")
                with handle:
                    assert handle.mode == "rb+" and handle.read() == b"async data"
                with pytest.raises(InvalidRequest):
                    await client.vgs()
            assert own_fds() == before

    try:
        asyncio.run(main())
    finally:
        listener.close()
        acceptor.join(5)
        for fake in fakes:
            fake.server.close()
