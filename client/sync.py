"""The blocking client: one connection, one request at a time, typed results.

A read whose connection broke is retried once on a new connection; a change is not
(its outcome is unknown), and raises ``ConnectionFailed`` saying so. The connection is
the Unix socket, or with ``transport="dbus"`` the system bus (or ``bus_address``):
same methods, same typed results, same exceptions.
"""

from __future__ import annotations

import itertools
import select
from collections.abc import Iterator
import socket
import time
from typing import Any

from ._core import (DEFAULT_TIMEOUT, RESUME_PAUSES, BlockingMethods, JobRef, Target,
                    call_timeout, decode, default_socket_path, lost, next_position, no_answer,
                    retry_after_loss, with_request_id)
from .dbus import DbusTransport
from .errors import Busy, ConnectionFailed
from .passing import FdLineCodec, close_fds, received, recv_with_fds
from .protocol import LineCodec, make_request, parse_response

__all__ = ["Client", "JobRef", "default_socket_path"]


class Client(Target, BlockingMethods):
    """``with Client() as lvm: lvm.vgs()``: every daemon method by name (``_core.Methods``),
    any method by ``call(name, **params)``. ``timeout`` (seconds, default
    ``DEFAULT_TIMEOUT``; ``None``: forever) bounds connecting and each call."""

    def __init__(self, socket_path: str | None = None, *,
                 timeout: float | None = DEFAULT_TIMEOUT,
                 transport: str = "socket", bus_address: str | None = None) -> None:
        super().__init__(socket_path, timeout, transport)
        self.notifications: list[dict[str, Any]] = []
        self._dbus = (DbusTransport(bus_address, timeout, self.notifications)
                      if transport == "dbus" else None)
        self._sock: socket.socket | None = None
        self._codec = FdLineCodec(64 * 1024 * 1024, check_depth=False)
        self._ids = itertools.count(1)
        self._pending: list[tuple[Any, list[int]]] = []  # (message, its descriptors)

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
        self._drop_pending()
        self._codec = FdLineCodec(64 * 1024 * 1024, check_depth=False)

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
        self._drop_pending()

    def _drop_pending(self) -> None:
        """Forgets what was read and not taken, closing any descriptor in it."""
        for _, fds in self._pending:
            close_fds(fds)
        self._pending = []
        self._codec.close()

    def _receive(self) -> bytes:
        """One read; its lines (with their descriptors) queued in ``_pending``."""
        assert self._sock is not None
        data, fds = recv_with_fds(self._sock, 262144)
        if not data:
            close_fds(fds)
        else:
            self._pending.extend(self._codec.feed(data, fds))
        return data

    def _next(self) -> tuple[Any, list[int]]:
        """The next message read: notifications are queued (their descriptors, which
        none should carry, closed); an answer comes with its descriptors."""
        message, fds = self._pending.pop(0)
        response = parse_response(message)
        if response.method is not None:
            close_fds(fds)
            self.notifications.append({"method": response.method, "params": response.params})
            return response, []
        return response, fds

    def call(self, method: str, **params: Any) -> Any:
        """Calls ``method`` and returns its typed result (or raises its error)."""
        return decode(method, self.request(method, params), params)

    def changes(self, since: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every ``changed`` notification's params, for ever: subscribes (resuming from
        ``since``, a ``{"boot", "seq"}`` position), and after a lost connection or a
        daemon restart connects again and resumes where it was. What the daemon no
        longer holds comes as one ``{"reset": True, "boot", "seq"}``: read everything
        again. Nothing is ever skipped silently."""
        position = since
        failures = 0
        while True:
            try:
                self.notifications.clear()
                answer = self.subscribe(**({"since": position} if position else {}))
                position = position or answer
                subscribed, failures = self._sock, 0
                while True:
                    if self._dbus is None and self._sock is not subscribed:
                        # another call of this client made a new connection (the old
                        # one was lost): that one is not subscribed yet
                        raise ConnectionFailed("reconnected", socket=self.socket_path)
                    params = self.next_notification()
                    position = next_position(params, position)
                    yield params
            except (ConnectionFailed, Busy):  # Busy: max_connections reached; later
                self.close()
                time.sleep(RESUME_PAUSES[min(failures, len(RESUME_PAUSES) - 1)])
                failures += 1

    def next_notification(self, timeout: float | None = None) -> dict[str, Any]:
        """The next ``changed`` notification's params (after a ``subscribe``), waiting
        up to ``timeout`` seconds (None: for ever); ``ConnectionFailed`` if the
        connection ends, ``TimeoutError`` if none came."""
        if self._dbus is not None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self.notifications:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError("no change notification")
                if not self._dbus.connected():
                    raise ConnectionFailed("the bus connection ended")
                time.sleep(0.05)
            return dict(self.notifications.pop(0)["params"])
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.notifications:
            if self._sock is None:
                raise ConnectionFailed("not connected", socket=self.socket_path)
            while not self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("no change notification")
                self._sock.settimeout(left)
                try:
                    data = self._receive()
                except TimeoutError:
                    raise
                except OSError as exc:
                    raise ConnectionFailed(f"connection lost: {exc}",
                                           socket=self.socket_path) from exc
                if not data:
                    raise ConnectionFailed("the daemon closed the connection",
                                           socket=self.socket_path)
            _, fds = self._next()
            close_fds(fds)  # an answer nobody waits for
        return dict(self.notifications.pop(0)["params"])

    def request(self, method: str, params: dict[str, Any]) -> Any:
        """Calls ``method`` and returns the raw JSON result."""
        params = with_request_id(method, params)
        if self._dbus is not None:
            return self._dbus.request(method, params)
        limit = call_timeout(self.timeout, method, params)
        for attempt in (1, 2):
            try:
                self.connect()
            except ConnectionFailed as exc:
                if attempt == 1:
                    raise  # nothing was sent
                raise lost(method, exc, self.socket_path) from exc  # the first may have run
            try:
                return self._roundtrip(method, params, limit)
            except TimeoutError:  # an OSError too, but no lost connection: no retry
                self.close()  # its late answer must not be read as the next one's
                raise no_answer(method, limit, self.socket_path) from None
            except (OSError, EOFError) as exc:
                self.close()
                if not retry_after_loss(method, attempt):
                    raise lost(method, exc, self.socket_path) from exc
        raise AssertionError("unreachable")

    def _roundtrip(self, method: str, params: dict[str, Any], limit: float | None) -> Any:
        """One request and its answer, within ``limit`` seconds in all (notifications
        arriving meanwhile do not extend it)."""
        assert self._sock is not None
        deadline = None if limit is None else time.monotonic() + limit
        rid = next(self._ids)
        self._sock.settimeout(limit)
        self._sock.sendall(LineCodec.encode(make_request(rid, method, params)))
        while True:
            while not self._pending:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    self._sock.settimeout(left)
                if not self._receive():
                    raise EOFError("the daemon closed the connection")
            response, fds = self._next()
            if response.method is None and (response.id == rid or response.id is None):
                if response.error is not None:
                    close_fds(fds)
                    raise response.error
                return received(method, response.result, fds)
            close_fds(fds)  # a late answer to an earlier call
