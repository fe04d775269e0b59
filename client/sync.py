"""The blocking client: one connection, one request at a time, typed results.

A read whose connection broke is retried once on a new connection; a change is not
(its outcome is unknown), and raises ``ConnectionFailed`` saying so. The connection is
the Unix socket, or with ``transport="dbus"`` the system bus (or ``bus_address``):
same methods, same typed results, same exceptions.
"""

from __future__ import annotations

import itertools
import select
import socket
from typing import Any

from ._core import (BlockingMethods, JobRef, Target, decode, default_socket_path, lost,
                    no_answer, retry_after_loss)
from .dbus import DbusTransport
from .errors import ConnectionFailed
from .protocol import LineCodec, make_request, parse_response

__all__ = ["Client", "JobRef", "default_socket_path"]


class Client(Target, BlockingMethods):
    """``with Client() as lvm: lvm.vgs()``: every daemon method by name (``_core.Methods``),
    any method by ``call(name, **params)``."""

    def __init__(self, socket_path: str | None = None, *, timeout: float | None = None,
                 transport: str = "socket", bus_address: str | None = None) -> None:
        super().__init__(socket_path, timeout, transport)
        self.notifications: list[dict[str, Any]] = []
        self._dbus = (DbusTransport(bus_address, timeout, self.notifications)
                      if transport == "dbus" else None)
        self._sock: socket.socket | None = None
        self._codec = LineCodec(64 * 1024 * 1024)
        self._ids = itertools.count(1)
        self._pending: list[Any] = []

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        if self._dbus is not None:
            self._dbus.connect()
            return
        if self._sock is not None:
            if not self._closed_by_daemon():
                return
            self.close()  # e.g. idle timeout: nothing was sent, so reconnecting is safe
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise ConnectionFailed(f"cannot connect to lvmsuperd at {self.socket_path}: "
                                   f"{exc.strerror or exc}", socket=self.socket_path) from exc
        self._sock = sock
        self._codec = LineCodec(64 * 1024 * 1024)
        self._pending = []

    def _closed_by_daemon(self) -> bool:
        """Whether the daemon hung up. Polled, not peeked with MSG_DONTWAIT: a socket
        with a timeout first waits (up to that timeout) for data, flag or not."""
        assert self._sock is not None
        if not select.select([self._sock], [], [], 0)[0]:
            return False
        try:  # readable: data or EOF is there, so this cannot block
            return self._sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def close(self) -> None:
        if self._dbus is not None:
            self._dbus.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, method: str, **params: Any) -> Any:
        """Calls ``method`` and returns its typed result (or raises its error)."""
        return decode(method, self.request(method, params))

    def request(self, method: str, params: dict[str, Any]) -> Any:
        """Calls ``method`` and returns the raw JSON result."""
        if self._dbus is not None:
            return self._dbus.request(method, params)
        for attempt in (1, 2):
            self.connect()
            try:
                return self._roundtrip(method, params)
            except TimeoutError:  # an OSError too, but no lost connection: no retry
                self.close()  # its late answer must not be read as the next one's
                raise no_answer(method, self.timeout, self.socket_path) from None
            except (OSError, EOFError) as exc:
                self.close()
                if not retry_after_loss(method, attempt):
                    raise lost(method, exc, self.socket_path) from exc
        raise AssertionError("unreachable")

    def _roundtrip(self, method: str, params: dict[str, Any]) -> Any:
        assert self._sock is not None
        rid = next(self._ids)
        self._sock.sendall(LineCodec.encode(make_request(rid, method, params)))
        while True:
            while not self._pending:
                data = self._sock.recv(262144)
                if not data:
                    raise EOFError("the daemon closed the connection")
                self._pending.extend(self._codec.feed(data))
            response = parse_response(self._pending.pop(0))
            if response.method is not None:
                self.notifications.append({"method": response.method,
                                           "params": response.params})
            elif response.id == rid or response.id is None:
                if response.error is not None:
                    raise response.error
                return response.result
