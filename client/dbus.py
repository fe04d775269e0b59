"""lvmsuper over D-Bus: the names, the one JSON <-> D-Bus typing rule, and the client side.

Rule: dbus-next is imported lazily, inside functions, so ``lvmsuper.client`` imports
with the standard library alone and only ``transport="dbus"`` needs dbus-next.
The daemon's adapter (``supervisor/transports/dbus.py``) uses the same names and typing functions,
so both ends type every value identically by construction.

The typing rule (JSON value -> D-Bus type; nulls are left out, recursively)::

    true/false        b         string        s
    integer           x (int64; t when it only fits uint64)
    float             d         object        a{sv}
    list of strings   as        list of ints  ax      (an empty list: as)
    list of objects   aa{sv}    list of bools ab      anything else: av

A method takes one ``a{sv}`` (the JSON params) and returns ``aa{sv}`` (methods in
``LIST_METHODS``) or ``a{sv}``. A change that outlived its ``wait`` returns its job
answer ``{"job": id}``; from a list method it comes as a one-element list. Errors are
``org.lvmsuper.Error.<Name>`` with the body ``(s message, a{sv} data)``. ``LvOpen``'s
result carries its ``fd`` as a UNIX_FD (``h``, an index among the message's
descriptors); the client hands that descriptor over and closes any other it receives.

A subscribed client delivers a ``Changed`` signal only when its sender is the current
unique-name owner of ``BUS_NAME`` (followed through NameOwnerChanged from the bus
itself): anyone on the bus can send a signal to our connection directly, past any
match rule, with our path and interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Coroutine
from functools import cache
from typing import Any, TypeVar

from ._core import _LIST_OF, _ONE_OF, BATCH_OF, READ_METHODS, call_timeout
from .errors import (ERRORS_BY_NAME, ConnectionFailed, InvalidRequest, LvmSuperError,
                     PermissionDenied)
from .models import LV, PV, VG, Model
from .passing import OPENS, close_fds, received

__all__ = ["BUS_NAME", "OBJECT_PATH", "INTERFACE", "ERROR_PREFIX", "LIST_METHODS",
           "member_name", "signature_of", "to_dbus", "from_dbus", "params_to_dbus",
           "result_to_dbus", "result_from_dbus", "error_from_dbus", "AsyncDbusTransport",
           "DbusTransport"]

BUS_NAME = "org.lvmsuper.Supervisor1"
OBJECT_PATH = "/org/lvmsuper/Supervisor1"
INTERFACE = "org.lvmsuper.Supervisor1"
ERROR_PREFIX = "org.lvmsuper.Error."
CHANGED_MATCH = (f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',"
                 f"interface='{INTERFACE}',member='Changed'")
BUS_DAEMON = "org.freedesktop.DBus"
OWNER_MATCH = (f"type='signal',sender='{BUS_DAEMON}',path='/org/freedesktop/DBus',"
               f"interface='{BUS_DAEMON}',member='NameOwnerChanged',arg0='{BUS_NAME}'")

# Methods whose result is a JSON list (D-Bus aa{sv}); every other method returns a{sv}.
LIST_METHODS = frozenset({"pvs", "vgs", "lvs", "pvcreate", "jobs"})

_PREFIXES = ("pv", "vg", "lv", "job")
# Bus errors meaning "the daemon is not there (any more)".
_UNREACHABLE = {"org.freedesktop.DBus.Error.ServiceUnknown",
                "org.freedesktop.DBus.Error.NameHasNoOwner",
                "org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected",
                "org.freedesktop.DBus.Error.Timeout", "org.freedesktop.DBus.Error.TimedOut",
                "org.freedesktop.DBus.Error.NoServer"}
T = TypeVar("T")


def member_name(method: str) -> str:
    """The D-Bus member of a JSON method: ``pvcreate`` -> ``PvCreate``, ``job_status`` ->
    ``JobStatus``, ``pvs`` -> ``Pvs``, ``report`` -> ``Report``."""
    parts = method.split("_")
    if len(parts) == 1:
        for prefix in _PREFIXES:
            rest = method[len(prefix):]
            if method.startswith(prefix) and rest not in ("", "s"):
                parts = [prefix, rest]
                break
    return "".join(part.capitalize() for part in parts)


# ---- the typing rule (pure, apart from building dbus-next Variants) --------------------

def signature_of(value: Any) -> str:
    """The D-Bus type of a JSON value under the typing rule (TypeError if it has none)."""
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        if -2**63 <= value < 2**63:
            return "x"
        if 0 <= value < 2**64:
            return "t"
        raise TypeError(f"integer {value} does not fit 64 bits")
    if isinstance(value, float):
        return "d"
    if isinstance(value, str):
        if "\0" in value:
            raise TypeError("D-Bus strings cannot contain NUL")
        return "s"
    if isinstance(value, dict):
        return "a{sv}"
    if isinstance(value, (list, tuple)):
        kinds = {signature_of(item) for item in value if item is not None}
        if not kinds:
            return "as"
        if len(kinds) == 1 and (kind := kinds.pop()) in ("s", "x", "b", "a{sv}"):
            return "a" + kind
        return "av"
    raise TypeError(f"{type(value).__name__} has no D-Bus type")


def to_dbus(value: Any) -> Any:
    """``value`` in the shape dbus-next marshals for ``signature_of(value)``."""
    if isinstance(value, dict):
        variant = _dbus_next().Variant
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object key {key!r} is not a string")
            if item is not None:
                out[key] = variant(signature_of(item), to_dbus(item))
        return out
    if isinstance(value, (list, tuple)):
        items = [item for item in value if item is not None]
        if signature_of(items) == "av":
            variant = _dbus_next().Variant
            return [variant(signature_of(item), to_dbus(item)) for item in items]
        return [to_dbus(item) for item in items]
    signature_of(value)  # raises for what has no D-Bus type
    return value


def from_dbus(value: Any) -> Any:
    """A received D-Bus value (Variants unwrapped) as plain JSON; ValueError for what
    JSON cannot hold (byte arrays, non-string object keys)."""
    variant = _dbus_next().Variant
    if isinstance(value, variant):
        return from_dbus(value.value)
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("dictionaries must have string keys (a{sv})")
        return {key: from_dbus(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_dbus(item) for item in value]
    if isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"D-Bus values of Python type {type(value).__name__} are not supported "
                     "(byte arrays and file descriptors have no JSON form)")


def params_to_dbus(params: dict[str, Any]) -> dict[str, Any]:
    """JSON params as the ``a{sv}`` argument (nulls left out, like absent keys); a value
    D-Bus cannot carry is ``InvalidRequest`` naming its parameter."""
    variant = _dbus_next().Variant
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        try:
            out[key] = variant(signature_of(value), to_dbus(value))
        except TypeError as exc:
            raise InvalidRequest(f"{key}: cannot be sent over D-Bus: {exc}",
                                 field=key) from None
    return out


def result_to_dbus(method: str, result: Any) -> tuple[str, Any]:
    """(signature, value) of a method's reply: aa{sv} for LIST_METHODS, else a{sv}."""
    if method in LIST_METHODS:
        items = [result] if isinstance(result, dict) else result  # a job answer
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise TypeError(f"{method} returned {type(result).__name__}, not a list of objects")
        return "aa{sv}", [to_dbus(item) for item in items]
    if not isinstance(result, dict):
        raise TypeError(f"{method} returned {type(result).__name__}, not an object")
    return "a{sv}", to_dbus(result)


def result_from_dbus(method: str, value: Any) -> Any:
    """A reply as the JSON result the socket gives, with the nulls of typed results
    restored (the models have one stable key set)."""
    result = from_dbus(value)
    if (method in LIST_METHODS and method not in READ_METHODS and len(result) == 1
            and set(result[0]) == {"job"}):
        return result[0]
    if method in _LIST_OF:
        return [_with_nulls(_LIST_OF[method], item) for item in result]
    if method in BATCH_OF and set(result) == {"lvs"}:
        return {"lvs": [_with_nulls(BATCH_OF[method], item) for item in result["lvs"]]}
    if method in _ONE_OF and set(result) != {"job"}:
        return _with_nulls(_ONE_OF[method], result)
    if method == "report":
        return {key: [_with_nulls(model, item) for item in result.get(key, [])]
                for key, model in (("pvs", PV), ("vgs", VG), ("lvs", LV))}
    return result


def _with_nulls(model: type[Model], data: dict[str, Any]) -> dict[str, Any]:
    out = {f.name: None for f in dataclasses.fields(model)}
    out.update(data)
    return out


def _unknown_outcome(text: str, method: str) -> str:
    if method in READ_METHODS:
        return text
    return text + "; the change may or may not have happened: check with a read or 'jobs'"


def error_from_dbus(error_name: str, body: list[Any], method: str) -> LvmSuperError:
    """An error reply as the client's exception: ``org.lvmsuper.Error.X`` -> class X."""
    message = str(body[0]) if body and isinstance(body[0], str) else error_name
    if error_name.startswith(ERROR_PREFIX):
        cls = ERRORS_BY_NAME.get(error_name[len(ERROR_PREFIX):], LvmSuperError)
        exc = cls(message)
        if len(body) > 1 and isinstance(body[1], dict):
            try:
                exc.data.update({k: v for k, v in from_dbus(body[1]).items() if v is not None})
            except ValueError:
                pass
        return exc
    if error_name in _UNREACHABLE:
        if error_name.endswith(("NoReply", "Disconnected")):
            message = _unknown_outcome(message, method)
        return ConnectionFailed(f"lvmsuperd on D-Bus: {message}", dbus_error=error_name)
    if error_name == "org.freedesktop.DBus.Error.AccessDenied":
        return PermissionDenied(f"the bus refused the call: {message}", dbus_error=error_name)
    if error_name in ("org.freedesktop.DBus.Error.UnknownMethod",
                      "org.freedesktop.DBus.Error.InvalidArgs"):
        return InvalidRequest(message, dbus_error=error_name)
    return LvmSuperError(f"{error_name}: {message}", dbus_error=error_name)


@cache
def _dbus_next() -> Any:
    try:
        import dbus_next
    except ImportError:
        raise ConnectionFailed("the D-Bus transport needs the dbus-next package "
                               "(pip install 'lvmsuper[dbus]')") from None
    return dbus_next


# ---- the clients' D-Bus connection ----------------------------------------------------

class AsyncDbusTransport:
    """One bus connection on the running event loop: the transport of ``AsyncClient``,
    and of ``Client`` through ``DbusTransport``. A read whose bus connection broke is
    retried once on a new connection; a change never is."""

    def __init__(self, bus_address: str | None, timeout: float | None,
                 notify: Callable[[dict[str, Any]], None]) -> None:
        self.bus_address = None if bus_address in (None, "system") else bus_address
        self.timeout = timeout
        self.notify = notify  # receives each Changed signal as a "changed" notification
        self._bus: Any = None
        self._subscribed = False
        self._owner: str | None = None  # unique name owning BUS_NAME: the only Changed source
        self._owner_changes = 0  # NameOwnerChanged seen, so a late GetNameOwner never wins
        self._last_owner: str | None = None  # a new one after it: the daemon restarted
        self._connecting = asyncio.Lock()  # concurrent first calls share one bus

    @property
    def where(self) -> str:
        return f"the D-Bus at {self.bus_address}" if self.bus_address else "the system bus"

    @property
    def connected(self) -> bool:
        return self._bus is not None and bool(self._bus.connected)

    async def connect(self) -> None:
        async with self._connecting:
            if not self.connected:
                await self._connect()

    async def _connect(self) -> None:
        await self.close()
        dbus_next = _dbus_next()
        try:
            self._bus = await self._new_bus(dbus_next, True)
        except dbus_next.errors.AuthError:  # a bus that carries no descriptors
            try:
                self._bus = await self._new_bus(dbus_next, False)
            except Exception as exc:
                raise ConnectionFailed(f"cannot connect to {self.where}: {exc}") from exc
        except TimeoutError:
            raise ConnectionFailed(f"no answer from {self.where} within {self.timeout} s",
                                   timeout=self.timeout) from None
        except Exception as exc:
            raise ConnectionFailed(f"cannot connect to {self.where}: {exc}") from exc
        self._bus.add_message_handler(self._on_message)
        self._subscribed = False
        self._owner = None

    async def _new_bus(self, dbus_next: Any, fds: bool) -> Any:
        """A connection that receives descriptors (lv_open) if ``fds``."""
        if self.bus_address is None:
            bus = dbus_next.aio.MessageBus(bus_type=dbus_next.BusType.SYSTEM,
                                           negotiate_unix_fd=fds)
        else:
            bus = dbus_next.aio.MessageBus(bus_address=self.bus_address, negotiate_unix_fd=fds)
        return await asyncio.wait_for(bus.connect(), self.timeout)

    async def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None and bus.connected:
            bus.disconnect()
            with contextlib.suppress(Exception):  # how it ended does not matter here
                await asyncio.wait_for(bus.wait_for_disconnect(), 1)

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        """Calls ``method`` and returns its JSON result (or raises its error)."""
        for attempt in (1, 2):
            await self.connect()
            try:
                return await self._request(method, params)
            except ConnectionFailed:
                if method not in READ_METHODS or attempt == 2 or self.connected:
                    raise
                await self.close()
        raise AssertionError("unreachable")

    async def _request(self, method: str, params: dict[str, Any]) -> Any:
        if method == "subscribe":
            return await self._subscribe()
        body = params_to_dbus(params)
        reply = await self._call(_dbus_next().Message(
            destination=BUS_NAME, path=OBJECT_PATH, interface=INTERFACE,
            member=member_name(method), signature="a{sv}", body=[body]), method,
            call_timeout(self.timeout, method, params))
        fds = list(reply.unix_fds or [])
        try:
            result = result_from_dbus(method, reply.body[0])
        except (ValueError, TypeError, IndexError) as exc:
            close_fds(fds)
            raise LvmSuperError(f"malformed {method} reply over D-Bus: {exc}") from exc
        return received(method, result, fds)  # lv_open's fd: the descriptor itself

    async def _call(self, message: Any, method: str, limit: float | None = None) -> Any:
        """One bus call, answered within ``limit`` seconds (default: the timeout)."""
        limit = self.timeout if limit is None else limit
        try:
            reply = await asyncio.wait_for(self._bus.call(message), limit)
        except TimeoutError:
            raise ConnectionFailed(_unknown_outcome(
                f"no answer from lvmsuperd on {self.where} within {limit} s",
                method), timeout=limit) from None
        except Exception as exc:  # the bus connection failed under the call
            raise ConnectionFailed(_unknown_outcome(
                f"D-Bus connection lost during {method}: {exc}", method)) from exc
        if reply.unix_fds and (method not in OPENS or
                               reply.message_type == _dbus_next().MessageType.ERROR):
            close_fds(reply.unix_fds)  # only lv_open's answer hands one over
            reply.unix_fds = []
        if reply.message_type == _dbus_next().MessageType.ERROR:
            raise error_from_dbus(reply.error_name, list(reply.body), method)
        return reply

    async def _subscribe(self) -> dict[str, Any]:
        """``subscribe`` over D-Bus: receive the ``Changed`` signal from now on. The
        ``Subscribe`` call checks the query role, tells the daemon this caller listens
        (so it watches for changes made outside lvmsuper) and answers the stream's
        position; there is no replay on the bus."""
        message = _dbus_next().Message
        reply = await self._call(message(destination=BUS_NAME, path=OBJECT_PATH,
                                         interface=INTERFACE, member="Subscribe",
                                         signature="a{sv}", body=[{}]), "subscribe")
        if not self._subscribed:
            await self._bus_call("AddMatch", OWNER_MATCH)  # first: no owner change missed
            seen = self._owner_changes
            try:
                (owner,) = (await self._bus_call("GetNameOwner", BUS_NAME)).body
            except LvmSuperError:  # no owner right now: NameOwnerChanged will tell
                owner = None
            if self._owner_changes == seen:  # else a newer owner is known already
                self._owner = owner
            self._last_owner = self._last_owner or self._owner
            await self._bus_call("AddMatch", CHANGED_MATCH)
            self._subscribed = True
        return dict(from_dbus(reply.body[0]))  # the stream's position

    async def _bus_call(self, member: str, arg: str) -> Any:
        return await self._call(_dbus_next().Message(
            destination=BUS_DAEMON, path="/org/freedesktop/DBus", interface=BUS_DAEMON,
            member=member, signature="s", body=[arg]), "subscribe")

    def _on_message(self, message: Any) -> None:
        """Passes ``Changed`` signals of the name's owner on like the socket's
        ``changed`` notifications; never claims a message. A descriptor that comes
        with anything but a method's answer is closed at once."""
        if message.message_type != _dbus_next().MessageType.SIGNAL:
            return
        if message.unix_fds:
            close_fds(message.unix_fds)
            message.unix_fds = []
        if (message.member == "NameOwnerChanged" and message.sender == BUS_DAEMON
                and message.signature == "sss" and message.body[0] == BUS_NAME):
            self._owner = message.body[2] or None
            self._owner_changes += 1
            if self._owner is not None:
                if self._subscribed and self._last_owner not in (None, self._owner):
                    # another daemon (a restart): what it missed meanwhile is unknown
                    self.notify({"method": "changed", "params": {"reset": True}})
                self._last_owner = self._owner
            return
        if (message.member == "Changed" and message.interface == INTERFACE
                and message.path == OBJECT_PATH and message.signature == "aa{sv}"
                and self._owner is not None and message.sender == self._owner):
            try:
                entries = from_dbus(message.body[0])
            except ValueError:
                return
            # each entry carries the notification's place in the stream: lifted back
            # to the params, as the socket sends them
            stream = {k: entries[0][k] for k in ("seq", "boot", "source")
                      if entries and k in entries[0]}
            objects = [{k: v for k, v in e.items() if k not in stream} for e in entries]
            self.notify({"method": "changed", "params": {"objects": objects, **stream}})


class DbusTransport:
    """The blocking client's bus connection: an ``AsyncDbusTransport`` driven by a
    private event loop in a daemon thread, so ``Client`` works the same inside and
    outside asyncio programs."""

    def __init__(self, bus_address: str | None, timeout: float | None,
                 notifications: list[dict[str, Any]]) -> None:
        self._conn = AsyncDbusTransport(bus_address, timeout, notifications.append)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def connect(self) -> None:
        try:
            self._run(self._conn.connect())
        except LvmSuperError:
            self.close()
            raise

    def request(self, method: str, params: dict[str, Any]) -> Any:
        return self._run(self._conn.request(method, params))

    def connected(self) -> bool:
        return self._loop is not None and self._conn.connected

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._conn.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5)
        if not loop.is_running():
            loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs ``coro`` on the loop thread (started on first use); its own time limits
        bound the wait."""
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="lvmsuper-dbus",
                                      daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
