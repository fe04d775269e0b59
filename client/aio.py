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
from typing import Any

from ._core import AsyncMethods, Target, decode, lost, no_answer, retry_after_loss
from .dbus import AsyncDbusTransport
from .errors import ConnectionFailed
from .protocol import LineCodec, make_request, parse_response

__all__ = ["AsyncClient"]


class AsyncClient(Target, AsyncMethods):
    """``async with AsyncClient() as lvm: await lvm.vgs()``: every daemon method by name
    (``_core.Methods``), any method by ``await call(name, **params)``. ``timeout``
    bounds each call: past it, that call alone raises ``ConnectionFailed`` (not retried;
    the connection and the other calls on it go on)."""

    def __init__(self, socket_path: str | None = None, *, timeout: float | None = None,
                 transport: str = "socket", bus_address: str | None = None) -> None:
        super().__init__(socket_path, timeout, transport)
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._dbus = (AsyncDbusTransport(bus_address, timeout, self.notifications.put_nowait)
                      if transport == "dbus" else None)
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

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
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.socket_path, limit=2**20), self.timeout)
            except OSError as exc:  # TimeoutError included
                raise ConnectionFailed(f"cannot connect to lvmsuperd at {self.socket_path}: "
                                       f"{exc.strerror or exc}",
                                       socket=self.socket_path) from exc
            self._writer, self._waiting = writer, {}
            self._reader_task = asyncio.create_task(self._read(reader, writer, self._waiting))

    async def close(self) -> None:
        if self._dbus is not None:
            await self._dbus.close()
        task, writer = self._reader_task, self._writer
        self._writer = self._reader_task = None
        if writer is not None:
            writer.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # its requests have failed when close() returns

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    waiting: dict[int, asyncio.Future[Any]]) -> None:
        """Answers the requests of one connection; when it ends, fails those still
        waiting (a new connection has its own ``waiting``)."""
        codec = LineCodec(64 * 1024 * 1024)
        try:
            while data := await reader.read(262144):
                for message in codec.feed(data):
                    response = parse_response(message)
                    if response.method is not None:
                        self.notifications.put_nowait({"method": response.method,
                                                       "params": response.params})
                        continue
                    future = waiting.pop(response.id, None)
                    if future is None or future.done():
                        continue
                    if response.error is not None:
                        future.set_exception(response.error)
                    else:
                        future.set_result(response.result)
        except (OSError, ValueError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            for future in waiting.values():
                if not future.done():
                    future.set_exception(EOFError("the daemon closed the connection"))
            waiting.clear()

    async def call(self, method: str, **params: Any) -> Any:
        """Calls ``method`` and returns its typed result (or raises its error)."""
        return decode(method, await self.request(method, params))

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        """Calls ``method`` and returns the raw JSON result."""
        if self._dbus is not None:
            return await self._dbus.request(method, params)
        for attempt in (1, 2):
            await self.connect()
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
        writer, waiting = self._writer, self._waiting
        if writer is None:
            raise EOFError("not connected")
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiting[rid] = future
        try:
            writer.write(LineCodec.encode(make_request(rid, method, params)))
            await writer.drain()
            try:
                return await asyncio.wait_for(future, self.timeout)
            except TimeoutError:  # an OSError too: caught here, not as a lost connection
                raise no_answer(method, self.timeout, self.socket_path) from None
        finally:
            waiting.pop(rid, None)  # a late answer is dropped
