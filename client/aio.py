"""The asyncio client: one connection, many requests in flight, typed results.

Same contract as ``Client``: same methods, same exceptions, same decoding, reads
retried once on a new connection, changes never retried; over the Unix socket, or with
``transport="dbus"`` over the system bus (or ``bus_address``) on the caller's own event
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator
from typing import Any

from ._core import (DEFAULT_TIMEOUT, RESUME_PAUSES, AsyncMethods, Target, call_timeout,
                    decode, lost, next_position, no_answer, retry_after_loss, with_request_id)
from .dbus import AsyncDbusTransport
from .errors import Busy, ConnectionFailed
from .passing import FdLineCodec, close_fds, received, recv_with_fds
from .protocol import LineCodec, make_request, parse_response

__all__ = ["AsyncClient"]


class AsyncClient(Target, AsyncMethods):
    """``async with AsyncClient() as lvm: await lvm.vgs()``: every daemon method by name
    (``_core.Methods``), any method by ``await call(name, **params)``. ``timeout``
    (seconds, default ``DEFAULT_TIMEOUT``; ``None``: forever) bounds connecting and each
    call: past it, that call alone raises ``ConnectionFailed`` (not retried; the
    connection and the other calls on it go on)."""

    def __init__(self, socket_path: str | None = None, *,
                 timeout: float | None = DEFAULT_TIMEOUT,
                 transport: str = "socket", bus_address: str | None = None) -> None:
        super().__init__(socket_path, timeout, transport)
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._dbus = (AsyncDbusTransport(bus_address, timeout, self.notifications.put_nowait)
                      if transport == "dbus" else None)
        # the connection: a plain socket, read with recvmsg (answers may carry
        # descriptors), written one request at a time (``_sending``)
        self._writer: socket.socket | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._sending = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._dbus is not None:
            await self._dbus.connect()
            return
        async with self._lock:
            if self._writer is not None:
                return
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(asyncio.get_running_loop().sock_connect(
                    sock, self.socket_path), self.timeout)
            except OSError as exc:  # TimeoutError included
                sock.close()
                raise ConnectionFailed(f"cannot connect to lvmsuperd at {self.socket_path}: "
                                       f"{exc.strerror or exc}",
                                       socket=self.socket_path) from exc
            except BaseException:
                sock.close()
                raise
            self._writer, self._waiting = sock, {}
            self._reader_task = asyncio.create_task(self._read(sock, self._waiting))

    async def close(self) -> None:
        if self._dbus is not None:
            await self._dbus.close()
        task, sock = self._reader_task, self._writer
        self._writer = self._reader_task = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # its requests have failed when close() returns
        if sock is not None:
            sock.close()  # after its reader left the event loop

    async def _read(self, sock: socket.socket,
                    waiting: dict[int, asyncio.Future[Any]]) -> None:
        """Answers the requests of one connection; when it ends, fails those still
        waiting (a new connection has its own ``waiting``). An answer's descriptors go
        with it to its caller; any other is closed."""
        codec = FdLineCodec(64 * 1024 * 1024, check_depth=False)
        try:
            while True:
                data, fds = await _recv(sock)
                if not data:
                    close_fds(fds)
                    break
                for message, fds in codec.feed(data, fds):
                    response = parse_response(message)
                    future = None if response.method is not None else \
                        waiting.pop(response.id, None)
                    if response.method is not None:
                        self.notifications.put_nowait({"method": response.method,
                                                       "params": response.params})
                    if future is None or future.done() or response.error is not None:
                        close_fds(fds)
                    if future is None or future.done():
                        continue
                    if response.error is not None:
                        future.set_exception(response.error)
                    else:
                        future.set_result((response.result, fds))
        except (OSError, ValueError):
            pass
        finally:
            codec.close()
            if self._writer is sock:
                self._writer = None
            sock.close()  # out of the event loop already (``_recv``)
            for future in waiting.values():
                if not future.done():
                    future.set_exception(EOFError("the daemon closed the connection"))
            waiting.clear()

    async def call(self, method: str, **params: Any) -> Any:
        """Calls ``method`` and returns its typed result (or raises its error)."""
        return decode(method, await self.request(method, params), params)

    async def changes(self, since: dict[str, Any] | None = None
                      ) -> AsyncIterator[dict[str, Any]]:
        """``Client.changes`` as an async iterator: every ``changed`` notification's
        params, resuming after a lost connection or a daemon restart, a ``reset``
        marker when the daemon no longer holds what was missed."""
        position = since
        failures = 0
        while True:
            try:
                while not self.notifications.empty():
                    self.notifications.get_nowait()
                answer = await self.subscribe(**({"since": position} if position else {}))
                position = position or answer
                subscribed, failures = self._writer, 0
                while True:
                    params = await self._next_notification(subscribed)
                    position = next_position(params, position)
                    yield params
            except (ConnectionFailed, Busy):  # Busy: max_connections reached; later
                await self.close()
                await asyncio.sleep(RESUME_PAUSES[min(failures, len(RESUME_PAUSES) - 1)])
                failures += 1

    async def _next_notification(self, subscribed: Any) -> dict[str, Any]:
        """The next notification; ConnectionFailed once the subscribed connection is
        gone (or another call of this client replaced it with an unsubscribed one)."""
        while True:
            try:  # asyncio.timeout: 3.11's wait_for() can drop the caller's cancel
                async with asyncio.timeout(0.5):
                    note = await self.notifications.get()
                return dict(note["params"])
            except TimeoutError:
                gone = (self._dbus is not None and not self._dbus.connected) or \
                    (self._dbus is None and self._writer is not subscribed)
                if gone and self.notifications.empty():
                    raise ConnectionFailed("the connection to lvmsuperd ended") from None

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        """Calls ``method`` and returns the raw JSON result."""
        params = with_request_id(method, params)
        if self._dbus is not None:
            return await self._dbus.request(method, params)
        for attempt in (1, 2):
            try:
                await self.connect()
            except ConnectionFailed as exc:
                if attempt == 1:
                    raise  # nothing was sent
                raise lost(method, exc, self.socket_path) from exc  # the first may have run
            writer = self._writer
            try:
                return await self._roundtrip(method, params)
            except (OSError, EOFError) as exc:
                if self._writer is writer:  # not one that another request made since
                    await self.close()
                if not retry_after_loss(method, attempt):
                    raise lost(method, exc, self.socket_path) from exc
        raise AssertionError("unreachable")

    async def _roundtrip(self, method: str, params: dict[str, Any]) -> Any:
        sock, waiting = self._writer, self._waiting
        if sock is None:
            raise EOFError("not connected")
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        waiting[rid] = future
        taken = False
        try:
            async with self._sending:  # one request's bytes at a time
                await loop.sock_sendall(sock, LineCodec.encode(make_request(rid, method,
                                                                            params)))
            limit = call_timeout(self.timeout, method, params)
            try:
                result, fds = await asyncio.wait_for(future, limit)
            except TimeoutError:  # an OSError too: caught here, not as a lost connection
                raise no_answer(method, limit, self.socket_path) from None
            taken = True
            return received(method, result, fds)
        finally:
            waiting.pop(rid, None)  # a late answer is dropped
            if not taken and future.done() and not future.cancelled() \
                    and future.exception() is None:
                close_fds(future.result()[1])  # answered as the caller gave up


async def _recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One read of a non-blocking socket, with its descriptors, once it is readable."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return recv_with_fds(sock, 262144)
        except (BlockingIOError, InterruptedError):
            pass
        readable: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)
        loop.add_reader(sock.fileno(), ready)
        try:
            await readable
        finally:
            loop.remove_reader(sock.fileno())
