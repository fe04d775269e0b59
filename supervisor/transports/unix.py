"""The Unix-socket transport: decode lines, identify the peer, call the core, encode.

Rules: the caller's identity is SO_PEERCRED, taken once at accept (a caller whose groups
change must reconnect). Requests on one connection run concurrently (pipelining, at
most MAX_PIPELINED at once) and answer in completion order. Backpressure: once a
connection has ``[limits] max_pending_bytes`` of answers unsent, no further request of
it is read or started until they drain, so a peer that does not read holds at most that
plus MAX_PIPELINED answers in the daemon; a subscriber whose unsent notifications pass
the limit is disconnected (logged). A bad line
(invalid JSON or over the size limit) is answered and ends the connection; any other
bad request is answered and the connection stays. On shutdown, requests already read
are answered and then the connection ends, unanswered requests unread: clients retry
them on a new connection (systemd's socket keeps it for the next daemon). A connection
with nothing in flight
that completes no request for ``[limits] connection_idle_timeout`` seconds is closed
(a slow or silent peer cannot pin a connection slot); subscribers are exempt. A
subscriber whose ``query`` role is scoped (``[[access.scope]]``) is told only of the
objects of its VGs.
An answer that hands over a descriptor (lv_open) carries it as SCM_RIGHTS on the first
byte of its own line, sent once every byte before it has left the buffer; the daemon
closes its copy as soon as that byte is sent, or the connection is gone.
"""

from __future__ import annotations

import array
import asyncio
import logging
import os
import socket
from typing import Any

from lvmsuper.client.errors import Busy, InvalidRequest, LvmSuperError
from lvmsuper.client.protocol import (BadLine, LineCodec, encode_error, encode_result,
                                      parse_request)

from ..core.auth import GroupAuthority, Role, peer_caller
from ..core.opening import Handoff
from ..core.service import Service

__all__ = ["SocketServer", "bind_socket", "SocketInUse"]

log = logging.getLogger("lvmsuperd.socket")

MAX_PIPELINED = 64  # per connection; beyond it the server stops reading (backpressure)


class SocketInUse(Exception):
    """Another live daemon answers on the socket path."""


def bind_socket(path: str, mode: int, gid: int) -> socket.socket:
    """Binds ``path`` with ``mode`` and group ``gid``; replaces a stale socket file but
    refuses (SocketInUse) when something is listening there."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody listens
        else:
            raise SocketInUse(f"another lvmsuperd is already serving {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never world-accessible, not even between bind and chmod
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chown(path, 0 if os.geteuid() == 0 else -1, gid)
    os.chmod(path, mode)
    sock.listen(128)
    return sock


class SocketServer:
    def __init__(self, service: Service, sock: socket.socket) -> None:
        self.service = service
        self.sock = sock
        self.authority = GroupAuthority(service.config)
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.sock.setblocking(False)
        self.server = await asyncio.start_unix_server(self._accept, sock=self.sock,
                                                      limit=64 * 1024)
        self.service.transports.append("socket")

    async def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        stats = self.service.stats
        # The limit counts this socket's connections only: bus peers (anyone on the
        # bus may call, polkit decides later) must not be able to lock socket users out.
        if len(self.connections) >= self.service.config.max_connections:
            busy = Busy(f"too many connections (max_connections = "
                        f"{self.service.config.max_connections}); retry later", retry_after=1)
            writer.write(LineCodec.encode(encode_error(None, busy)))
            await _close(writer)
            return
        self.connections.add(task)
        stats.clients += 1
        try:
            await Connection(self, reader, writer).serve()
        finally:
            stats.clients -= 1
            self.connections.discard(task)


class Connection:
    def __init__(self, server: SocketServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.service = server.service
        self.reader = reader
        self.writer = writer
        self.caller = peer_caller(writer.get_extra_info("socket"))
        self.codec = LineCodec(self.service.config.max_request_bytes)
        self.pending: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(MAX_PIPELINED)
        self.unsubscribe: Any = None
        self.position: dict[str, Any] = {}
        self.idle_timeout = self.service.config.connection_idle_timeout
        self.idle_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.max_pending = self.service.config.max_pending_bytes
        writer.transport.set_write_buffer_limits(high=self.max_pending)

    async def serve(self) -> None:
        self._arm_idle()
        try:
            while not self.codec.broken and not self.service.stopping:
                data = await self.reader.read(65536)
                if not data:
                    break
                for message in self.codec.feed(data):
                    if isinstance(message, BadLine):
                        self.send(encode_error(None, message.error))
                        break
                    self._disarm_idle()  # a complete request: the peer is not idle
                    await self.writer.drain()  # answers unsent past the limit: wait
                    await self.slots.acquire()
                    if self.service.stopping:
                        # Shutting down (checked once its turn came, as the stop may
                        # begin while it waits): what was asked before is answered,
                        # then the connection ends; this request is not started, so the
                        # client retries it on a new connection (the next daemon's).
                        self.slots.release()
                        await asyncio.gather(*self.pending, return_exceptions=True)
                        break
                    task = asyncio.create_task(self.handle(message))
                    self.pending.add(task)
                    task.add_done_callback(self._done)
                # A peer that does not read its answers is not read from either: its
                # answers wait in a bounded buffer, not in the daemon's memory.
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self._disarm_idle()
            if self.unsubscribe is not None:
                self.unsubscribe()
            # Requests still running are reads or waits on jobs: a change runs on in its
            # job whatever happens here.
            for task in self.pending:
                task.cancel()
            await _close(self.writer)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.pending.discard(task)
        self.slots.release()
        if not self.pending:
            self._arm_idle()

    # ---- idle connections ----------------------------------------------------------
    # Partial bytes do not count as activity: a peer that trickles half a line forever
    # is as idle as a silent one.

    def _arm_idle(self) -> None:
        self._disarm_idle()
        if self.idle_timeout > 0 and not (self.pending or self.closed or self.unsubscribe):
            loop = asyncio.get_running_loop()
            self.idle_timer = loop.call_later(self.idle_timeout, self._close_idle)

    def _disarm_idle(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _close_idle(self) -> None:
        self.idle_timer = None
        if self.pending or self.unsubscribe is not None or self.writer.is_closing():
            return
        log.info("closing connection of uid %d (pid %d, %s): no request for %g s "
                 "([limits] connection_idle_timeout)", self.caller.uid, self.caller.pid,
                 self.caller.comm, self.idle_timeout)
        # Nothing is in flight, so nothing is lost; abort() also frees a peer that
        # stopped reading its answers. The reader then sees EOF and serve() ends.
        self.writer.transport.abort()

    async def handle(self, message: Any) -> None:
        rid = message.get("id") if isinstance(message, dict) else None
        try:
            request = parse_request(message)
            rid = request.id
            # taken: serve() reads no request once the stop has begun (see there)
            result = await self.service.call(self.caller, request.method, request.params,
                                             self.server.authority, encoded=True,
                                             taken=True)
            if isinstance(result, Handoff):  # lv_open: the descriptor rides on the line
                with result:
                    await self.send_fd(encode_result(rid, result.wire()), result.fd)
                return
            if request.method == "subscribe":  # answered with the position, then replay
                since = request.params.get("since") if isinstance(request.params, dict) \
                    else None
                if self.service.baseline_ready is not None:
                    await self.service.baseline_ready()  # then every later change is told
                replay = self.subscribe(since)
                self.send(encode_result(rid, self.position))
                for params in replay:
                    self.notify(params)
                return
            self.send(encode_result(rid, result))
        except LvmSuperError as exc:
            if isinstance(exc, InvalidRequest) and "id" in exc.data:
                rid = exc.data["id"]
            self.send(encode_error(rid if isinstance(rid, (int, str)) else None, exc))

    def subscribe(self, since: Any) -> list[dict[str, Any]]:
        """From now on this connection also gets a ``changed`` notification per change;
        returns what it missed since ``since`` (validated by the core)."""
        if self.unsubscribe is not None:
            self.unsubscribe()
        self._disarm_idle()  # a subscriber waits for notifications: never idle
        self.position, replay, self.unsubscribe = self.service.subscribe(
            self.notify, since, scope=self.server.authority.scope(self.caller, Role.QUERY))
        return replay

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(LineCodec.encode(message))

    async def send_fd(self, message: dict[str, Any], fd: int) -> None:
        """``message``'s line with ``fd`` as SCM_RIGHTS on its first byte, so the peer
        gets the descriptor with exactly this line: sent on the socket itself once every
        byte written before it has left the buffer (the rest of the line, if the kernel
        takes only part, through the buffer after it). The caller closes ``fd`` when
        this returns: sent, or the connection is gone (or dropped it)."""
        data = LineCodec.encode(message)
        transport = self.writer.transport
        try:
            if self.writer.is_closing():
                return
            raw = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
        except (OSError, AttributeError):
            return  # the connection is gone
        try:
            raw.setblocking(False)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            while True:
                if self.writer.is_closing():
                    return
                if transport.get_write_buffer_size() == 0:
                    try:
                        sent = raw.sendmsg([data], rights, socket.MSG_NOSIGNAL)
                        break
                    except (BlockingIOError, InterruptedError):
                        pass  # the peer reads slowly: its socket buffer is full
                    except OSError:
                        return  # the peer is gone
                await asyncio.sleep(0.005)
        finally:
            raw.close()  # a duplicate: closing it leaves the connection open
        if sent < len(data):
            self.send_bytes(data[sent:])

    def send_bytes(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def notify(self, params: dict[str, Any]) -> None:
        """A ``changed`` notification; a subscriber that leaves them unread past the
        limit is dropped rather than buffered without end."""
        if self.writer.transport.get_write_buffer_size() >= self.max_pending:
            if not self.writer.is_closing():
                log.warning("dropping subscriber uid %d (pid %d, %s): %d bytes of "
                            "notifications unread ([limits] max_pending_bytes)",
                            self.caller.uid, self.caller.pid, self.caller.comm,
                            self.writer.transport.get_write_buffer_size())
                self.writer.transport.abort()
            return
        self.send({"jsonrpc": "2.0", "method": "changed", "params": params})


async def _close(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass
