"""The asyncio client: one connection, many requests in flight, typed results.

Same contract as ``Client``: same exceptions, same decoding, reads retried once on a
new connection, changes never retried.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from ._core import lost, retry_after_loss, decode, default_socket_path
from .errors import ConnectionFailed
from .models import LV, PV, VG
from .protocol import LineCodec, make_request, parse_response

__all__ = ["AsyncClient"]


class AsyncClient:
    def __init__(self, socket_path: str | None = None) -> None:
        self.socket_path = socket_path or default_socket_path()
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
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
        async with self._lock:
            if self._writer is not None:
                return
            try:
                reader, writer = await asyncio.open_unix_connection(self.socket_path,
                                                                    limit=2**20)
            except OSError as exc:
                raise ConnectionFailed(f"cannot connect to lvmsuperd at {self.socket_path}: "
                                       f"{exc.strerror or exc}",
                                       socket=self.socket_path) from exc
            self._writer = writer
            self._reader_task = asyncio.create_task(self._read(reader))

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()
        self._writer = self._reader_task = None

    async def _read(self, reader: asyncio.StreamReader) -> None:
        codec = LineCodec(64 * 1024 * 1024)
        try:
            while data := await reader.read(262144):
                for message in codec.feed(data):
                    response = parse_response(message)
                    if response.method is not None:
                        self.notifications.put_nowait({"method": response.method,
                                                       "params": response.params})
                        continue
                    future = self._waiting.pop(response.id, None)
                    if future is None or future.done():
                        continue
                    if response.error is not None:
                        future.set_exception(response.error)
                    else:
                        future.set_result(response.result)
        except (OSError, ValueError):
            pass
        finally:
            self._writer = None
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(EOFError("the daemon closed the connection"))
            self._waiting.clear()

    async def call(self, method: str, **params: Any) -> Any:
        return decode(method, await self.request(method, params))

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        for attempt in (1, 2):
            await self.connect()
            try:
                return await self._roundtrip(method, params)
            except (OSError, EOFError) as exc:
                await self.close()
                if not retry_after_loss(method, attempt):
                    raise lost(method, exc, self.socket_path) from exc
        raise AssertionError("unreachable")

    async def _roundtrip(self, method: str, params: dict[str, Any]) -> Any:
        writer = self._writer
        if writer is None:
            raise EOFError("not connected")
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        writer.write(LineCodec.encode(make_request(rid, method, params)))
        await writer.drain()
        return await future

    async def ping(self) -> dict[str, Any]:
        return await self.call("ping")  # type: ignore[no-any-return]

    async def status(self) -> dict[str, Any]:
        return await self.call("status")  # type: ignore[no-any-return]

    async def pvs(self, **filters: Any) -> list[PV]:
        return await self.call("pvs", **filters)  # type: ignore[no-any-return]

    async def vgs(self, **filters: Any) -> list[VG]:
        return await self.call("vgs", **filters)  # type: ignore[no-any-return]

    async def lvs(self, **filters: Any) -> list[LV]:
        return await self.call("lvs", **filters)  # type: ignore[no-any-return]
