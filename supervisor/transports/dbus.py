"""The D-Bus transport: the service core on the system bus, every call authorized by polkit.

Rules: this is the only daemon module that imports dbus-next. It decodes a call (the
``a{sv}`` argument -> JSON params, the message sender -> ``Caller``), calls the core
with ``PolkitAuthority``, and encodes the result or the error with the typing rule of
``lvmsuper.client.dbus``. One message handler answers every method call that reaches
this connection and never raises, so dbus-next's own reply paths (which put Python
tracebacks into error replies) are never used: a bug reaches the caller only as
``org.lvmsuper.Error.Internal`` with a request id, the traceback goes to the log.

Every call is admitted into the peer table (``peers.py``) as it is dispatched: beyond
``[limits] max_calls_per_peer`` calls in flight from one peer (root too) it is answered
``Busy`` at once, before any task, credentials lookup or polkit check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import uuid
from collections.abc import Callable
from typing import Any

from dbus_next import introspection as intr
from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import (ArgDirection, BusType, MessageFlag, MessageType, NameFlag,
                                 RequestNameReply)
from dbus_next.errors import AuthError, DBusError
from dbus_next.message import Message
from dbus_next.signature import Variant

from lvmsuper.client.dbus import (BUS_NAME, ERROR_PREFIX, INTERFACE, LIST_METHODS,
                                  OBJECT_PATH, from_dbus, member_name, result_to_dbus, to_dbus)
from lvmsuper.client.errors import (Busy, Internal, InvalidRequest, LvmSuperError,
                                    PermissionDenied)

from ..core.auth import Caller, Details, Role, process_name
from ..core.scopes import VgScope
from ..config import Config, ConfigError
from ..core.methods import METHODS
from ..core.opening import Handoff
from ..core.service import Service
from .peers import Peer, PeerTable

__all__ = ["start_dbus", "DbusTransport", "DbusUnavailable", "PolkitAuthority",
           "introspection_xml", "dbus_methods"]

log = logging.getLogger("lvmsuperd.dbus")

CONNECT_TIMEOUT = 10.0
POLKIT_TIMEOUT = 25.0  # flags 0: polkit answers without asking anyone; this is a hang guard
STOP_GRACE = 2.0  # replies still being computed at shutdown get this long
DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
POLKIT = ("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
          "org.freedesktop.PolicyKit1.Authority")
GONE_MATCH = ("type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
              "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg2=''")
POLKIT_DETAILS = ("method", "vg", "lv", "devices")  # passed on every check, "" if none
E_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
E_UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
E_UNKNOWN_PROPERTY = "org.freedesktop.DBus.Error.UnknownProperty"


class DbusUnavailable(ConfigError):
    """``[dbus] enabled = true`` but the bus cannot be reached or the name not owned."""


def dbus_methods() -> dict[str, str]:
    """D-Bus member -> core method, for every method in the table. ``Subscribe`` there
    needs no stream (``Changed`` is a signal to every listener): it tells the daemon the
    caller listens, so that changes made outside lvmsuper are watched for it too."""
    members = {member_name(name): name for name in METHODS}
    assert len(members) == len(METHODS), "member name clash"
    return members


async def _call(bus: Any, target: tuple[str, str, str], member: str, signature: str,
                body: list[Any]) -> Any:
    """A method call; raises DBusError for an error reply."""
    reply: Any = await bus.call(Message(destination=target[0], path=target[1],
                                   interface=target[2], member=member, signature=signature,
                                   body=body))
    if reply.message_type == MessageType.ERROR:
        raise DBusError(reply.error_name,  # type: ignore[no-untyped-call]
                        str(reply.body[0]) if reply.body else "")
    return reply.body


class PolkitAuthority:
    """Asks polkit, per call, whether the sender may use the role's action
    ``org.lvmsuper.<role>`` (no interactive authorization: a challenge is a no). Root
    is always allowed (polkit would allow it too); when polkit cannot answer, only
    root is. Every check passes the details ``method``, ``vg``, ``lv`` and ``devices``
    (comma-separated; empty when the call names none), and a change is checked once
    more for each further VG its plan touches (``vg`` = that VG), so a rules file can
    scope a group to VGs (``action.lookup("vg")``). ``[[access.scope]]`` is the
    socket's: on D-Bus the rules decide (``scope`` is None)."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.broken: str | None = None  # the last polkit failure, logged once

    def scope(self, caller: Caller, role: Role) -> VgScope | None:
        return None

    async def allowed(self, caller: Caller, role: Role, details: Details) -> bool:
        if caller.uid == 0:
            return True
        if caller.bus_name is None:
            return False
        subject = ["system-bus-name", {"name": Variant("s", caller.bus_name)}]
        asked = {key: str(details.get(key, "")) for key in POLKIT_DETAILS}
        try:
            body = await asyncio.wait_for(
                _call(self.bus, POLKIT, "CheckAuthorization", "(sa{sv})sa{ss}us",
                      [subject, f"org.lvmsuper.{role}", asked, 0, ""]), POLKIT_TIMEOUT)
            authorized, _challenge, _details = body[0]
        except Exception as exc:  # unreachable, erroring, hanging: fail closed
            problem = (f"{exc.type}: {exc.text}" if isinstance(exc, DBusError)
                       else f"{type(exc).__name__}: {exc}")
            if problem != self.broken:
                log.warning("polkit cannot authorize (%s); D-Bus callers other than root "
                            "are refused until it can", problem)
                self.broken = problem
            return False
        if self.broken is not None:
            log.info("polkit answers again")
            self.broken = None
        return bool(authorized)


class DbusTransport:
    def __init__(self, service: Service, bus: Any, where: str) -> None:
        self.service = service
        self.bus = bus  # a connected dbus_next.aio.MessageBus (Any: dbus-next is half-typed)
        self.where = where
        self.authority = PolkitAuthority(bus)
        self.members = dbus_methods()
        self.xml = introspection_xml(self.members)
        self.tasks: set[asyncio.Task[None]] = set()
        self.peers = PeerTable(service.config.max_calls_per_peer, service.stats)
        self.listeners: set[str] = set()  # bus peers that called Subscribe
        self._unsubscribe: Callable[[], None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        # lv_open: whether this bus carries descriptors, and those on their way out
        self.fds = bool(getattr(bus, "_negotiate_unix_fd", False))
        self.passing: set[Handoff] = set()

    async def start(self) -> None:
        """Answers calls from now on, then owns the name (so no call finds it unready)."""
        self.bus.add_message_handler(self._on_message)
        await _call(self.bus, DBUS, "AddMatch", "s", [GONE_MATCH])
        reply = await self.bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise DbusUnavailable(f"{BUS_NAME} is already owned on {self.where} "
                                  "(another lvmsuperd?)")
        # Every Changed signal goes out; the bus peers that called Subscribe (and are
        # still on the bus) are the ones the watcher reads LVM for
        _, _, self._unsubscribe = self.service.subscribe(self._changed,
                                                         active=lambda: bool(self.listeners))
        self._watch = asyncio.create_task(self._watch_bus())
        self.service.transports.append("dbus")

    async def stop_accepting(self) -> None:
        """Gives up the name: callers of org.lvmsuper.Supervisor1 no longer reach us."""
        if self.bus.connected:
            try:
                await asyncio.wait_for(self.bus.release_name(BUS_NAME), 1.0)
            except Exception as exc:
                log.debug("releasing %s: %s", BUS_NAME, exc)

    async def stop(self) -> None:
        """Lets calls in progress answer (briefly), then leaves the bus."""
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=STOP_GRACE)
        for task in list(self.tasks):
            task.cancel()
        self.peers.clear()  # the cancelled calls, when they end, find nothing to remove
        if "dbus" in self.service.transports:
            self.service.transports.remove("dbus")
        self.bus.remove_message_handler(self._on_message)
        if self.bus.connected:
            self.bus.disconnect()
        self._drop_passing()
        if self._watch is not None:  # ends when the bus reports the disconnect
            await asyncio.wait([self._watch], timeout=1.0)
            self._watch.cancel()

    async def _watch_bus(self) -> None:
        problem = ""
        try:  # shielded: cancelling this watch must not cancel the bus's own future
            await asyncio.shield(self.bus.wait_for_disconnect())
        except Exception as exc:
            problem = f" ({exc})"
        if not self._stopping:
            log.error("lost the connection to %s%s: serving the socket only", self.where,
                      problem)
        self._drop_passing()
        if "dbus" in self.service.transports:
            self.service.transports.remove("dbus")

    # ---- every incoming message --------------------------------------------------------

    def _on_message(self, msg: Message) -> Message | bool:
        """Claims and answers every method call; never raises (dbus-next would send the
        caller a traceback). No descriptor sent to us is kept: lvmsuperd takes none."""
        if msg.unix_fds:
            _close_all(msg.unix_fds)
            msg.unix_fds = []
        try:
            if msg.message_type == MessageType.SIGNAL:
                self._on_signal(msg)
                return False
            if msg.message_type != MessageType.METHOD_CALL:
                return False  # replies to our own calls: dbus-next routes them
            return self._dispatch(msg)
        except Exception:
            try:
                return self._reply(msg, self._error(msg, self._internal(msg.member)))
            except Exception:  # not even an error reply can be built: say nothing
                log.exception("cannot answer a D-Bus call")
                return True

    def _dispatch(self, msg: Message) -> Message | bool:
        iface, member = msg.interface, msg.member
        if iface == "org.freedesktop.DBus.Peer":
            if member == "Ping":
                return self._reply(msg, Message.new_method_return(msg))
            if member == "GetMachineId":
                return self._reply(msg, Message.new_method_return(msg, "s", [_machine_id()]))
        elif iface in ("org.freedesktop.DBus.Introspectable", None) and member == "Introspect":
            xml = self.xml if msg.path == OBJECT_PATH else _parent_xml(msg.path)
            if xml is not None:
                return self._reply(msg, Message.new_method_return(msg, "s", [xml]))
            return self._reply(msg, _error(msg, E_UNKNOWN_OBJECT, f"no object {msg.path}"))
        if msg.path != OBJECT_PATH:
            return self._reply(msg, _error(msg, E_UNKNOWN_OBJECT, f"no object {msg.path}"))
        if iface == "org.freedesktop.DBus.Properties":
            if member == "GetAll":
                return self._reply(msg, Message.new_method_return(msg, "a{sv}", [{}]))
            return self._reply(msg, _error(msg, E_UNKNOWN_PROPERTY,
                                           f"{INTERFACE} has no properties"))
        name = self.members.get(member or "") if iface in (INTERFACE, None) else None
        if name is None:
            return self._reply(msg, _error(msg, E_UNKNOWN_METHOD,
                                           f"no method {member} in {iface} at {msg.path}"))
        if msg.signature != "a{sv}":
            bad = InvalidRequest(f"{member} takes one a{{sv}} (the parameters), not "
                                 f"'{msg.signature}'", field="params")
            return self._reply(msg, self._error(msg, bad))
        sender = msg.sender
        if sender is None:
            denied = PermissionDenied("the call has no sender",
                                      required=str(METHODS[name].role))
            return self._reply(msg, self._error(msg, denied))
        peer = self.peers.admit(sender)
        if peer is None:
            busy = Busy(f"too many calls in flight from this bus connection "
                        f"(max_calls_per_peer = {self.peers.max_calls}); retry later",
                        retry_after=1)
            return self._reply(msg, self._error(msg, busy))
        task = asyncio.create_task(self._serve(msg, name, peer))
        self.tasks.add(task)
        # A done callback, not a finally: it runs also for a task cancelled before it
        # started (at shutdown), so no count is ever left behind.
        task.add_done_callback(lambda t: self._finished(t, sender, peer))
        return True

    def _finished(self, task: asyncio.Task[None], sender: str, peer: Peer) -> None:
        self.tasks.discard(task)
        self.peers.finished(sender, peer)

    def _reply(self, msg: Message, reply: Message) -> Message | bool:
        return True if msg.flags & MessageFlag.NO_REPLY_EXPECTED else reply

    async def _serve(self, msg: Message, name: str, peer: Peer) -> None:
        handoff: Handoff | None = None  # lv_open's descriptor: ours until sent
        try:
            try:
                params = from_dbus(msg.body[0])
            except ValueError as exc:
                raise InvalidRequest(f"{msg.member}: {exc}", field="params") from None
            if name == "lv_open" and not self.fds:
                raise InvalidRequest(f"{self.where} does not carry file descriptors; use "
                                     "the socket for lv_open", field="params")
            caller = await self._caller(msg.sender, peer, METHODS[name].role)
            result = await self.service.call(caller, name, params, self.authority)
            if isinstance(result, Handoff):
                handoff = result
                reply = _with_fd(msg, handoff)
            else:
                if name == "subscribe" and msg.sender and not peer.gone:
                    self.listeners.add(msg.sender)  # until it leaves the bus
                    if self.service.on_subscribe is not None:
                        self.service.on_subscribe(False)
                signature, value = result_to_dbus(name, result)
                reply = Message.new_method_return(msg, signature, [value])
        except LvmSuperError as exc:
            reply = self._error(msg, exc)
        except Exception:
            reply = self._error(msg, self._internal(name))
        try:
            if msg.flags & MessageFlag.NO_REPLY_EXPECTED or peer.gone:
                return  # nobody to answer
            try:
                self._send(reply, handoff)  # marshals now: what cannot be encoded raises
                handoff = None  # closed once the reply is written
            except Exception:
                try:
                    self._send(self._error(msg, self._internal(name)))
                except Exception:  # the bus is gone: nobody to answer
                    log.exception("cannot answer %s on D-Bus", name)
        finally:
            if handoff is not None:
                handoff.close()

    def _send(self, message: Message, handoff: Handoff | None = None) -> None:
        # A write that fails later means the bus is gone (logged by _watch_bus); the
        # callback only keeps asyncio from reporting the future's exception as lost.
        # A descriptor sent along is closed when the write is done (or failed), or
        # with the bus connection if it never gets there.
        sent = self.bus.send(message)
        if handoff is not None:
            self.passing.add(handoff)
        sent.add_done_callback(lambda fut: self._sent(fut, handoff))

    def _sent(self, fut: asyncio.Future[Any], handoff: Handoff | None) -> None:
        if handoff is not None:
            self.passing.discard(handoff)
            handoff.close()
        if not fut.cancelled():
            fut.exception()

    def _drop_passing(self) -> None:
        for handoff in list(self.passing):
            handoff.close()
        self.passing.clear()

    def _internal(self, name: str | None) -> Internal:
        request_id = uuid.uuid4().hex[:12]
        log.exception("internal error in the D-Bus transport, %s (request id %s)", name,
                      request_id)
        return Internal(f"internal error (request id {request_id}); details are in the "
                        "daemon's log", request_id=request_id)

    def _error(self, msg: Message, exc: LvmSuperError) -> Message:
        """``org.lvmsuper.Error.<Name>``, body (message, data): the socket's error data."""
        try:
            data = to_dbus(exc.data)
        except TypeError:
            data = {}
        try:
            return Message(message_type=MessageType.ERROR, reply_serial=msg.serial,
                           destination=msg.sender, error_name=ERROR_PREFIX + exc.name,
                           signature="sa{sv}", body=[exc.message, data])
        except Exception:  # e.g. a message that is not valid UTF-8
            return _error(msg, ERROR_PREFIX + exc.name, exc.name)

    # ---- callers -------------------------------------------------------------------------

    async def _caller(self, sender: str | None, peer: Peer, role: Role) -> Caller:
        """The sender as the bus daemon knows it (credentials taken at its connect),
        looked up once while the peer has an entry."""
        assert sender is not None  # _dispatch answers a call without a sender
        creds = peer.creds
        if creds is None:
            try:
                (found,) = await _call(self.bus, DBUS, "GetConnectionCredentials", "s",
                                       [sender])
            except DBusError as exc:
                # Most likely it left already, perhaps before we saw its call (then no
                # NameOwnerChanged is still to come for it): never keep its entry.
                self.peers.left(sender)
                raise PermissionDenied(f"the caller cannot be identified: {exc.text}",
                                       required=str(role)) from None
            uid, pid = found["UnixUserID"].value, found["ProcessID"].value
            groups = frozenset(found["UnixGroupIDs"].value) if "UnixGroupIDs" in found \
                else frozenset()
            creds = peer.creds = (uid, _primary_gid(uid), pid, groups)
        uid, gid, pid, groups = creds
        return Caller(uid=uid, gid=gid, pid=pid, comm=process_name(pid), groups=groups,
                      transport="dbus", bus_name=sender)

    def _on_signal(self, msg: Message) -> None:
        if (msg.member == "NameOwnerChanged" and msg.sender == DBUS[0]
                and msg.signature == "sss" and not msg.body[2]):
            self.peers.left(msg.body[0])  # now, or with its last call
            self.listeners.discard(msg.body[0])

    def _changed(self, params: dict[str, Any]) -> None:
        """The ``Changed`` signal: each entry carries the notification's ``seq``,
        ``boot`` and ``source`` besides its object's keys."""
        if self.bus.connected:
            stream = {k: params[k] for k in ("seq", "boot", "source")}
            self._send(Message.new_signal(OBJECT_PATH, INTERFACE, "Changed", "aa{sv}", [
                [to_dbus({**o, **stream}) for o in params["objects"]]]))


def _error(msg: Message, name: str, text: str) -> Message:
    return Message.new_error(msg, name, text)


def _with_fd(msg: Message, handoff: Handoff) -> Message:
    """lv_open's reply: the result's ``fd`` is a UNIX_FD (``h``), index 0 of the one
    descriptor the message carries."""
    result = handoff.wire()
    body = {**to_dbus({k: v for k, v in result.items() if k != "fd"}),
            "fd": Variant("h", result["fd"])}
    return Message.new_method_return(msg, "a{sv}", [body], unix_fds=[handoff.fd])


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _primary_gid(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return -1


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="ascii") as fh:
                return fh.read().strip()
        except OSError:
            continue
    return "0" * 32


# ---- introspection -------------------------------------------------------------------

def introspection_xml(members: dict[str, str]) -> str:
    """The object's interfaces: ours (one method per core method, the Changed signal)
    and the standard ones this module answers."""
    methods = [intr.Method(member, in_args=[_arg("a{sv}", ArgDirection.IN, "params")],
                           out_args=[_arg("aa{sv}" if name in LIST_METHODS else "a{sv}",
                                           ArgDirection.OUT, "result")])
               for member, name in sorted(members.items())]
    ours = intr.Interface(INTERFACE, methods=methods, signals=[
        intr.Signal("Changed", [intr.Arg("aa{sv}", name="objects")])])
    node = intr.Node.default(OBJECT_PATH)
    node.interfaces = [i for i in node.interfaces
                       if i.name != "org.freedesktop.DBus.ObjectManager"] + [ours]
    return str(node.tostring())


def _arg(signature: str, direction: ArgDirection, name: str) -> Any:
    return intr.Arg(signature, direction, name)  # type: ignore[arg-type]  # (annotated as a list)


def _parent_xml(path: str | None) -> str | None:
    """Introspection of /, /org and /org/lvmsuper: a node with the next step as child."""
    if path is None or not OBJECT_PATH.startswith(path.rstrip("/") + "/"):
        return None
    child = OBJECT_PATH[len(path.rstrip("/")) + 1:].split("/")[0]
    return _node_with_child(path, child)


def _node_with_child(path: str, child: str) -> str:
    node = intr.Node.default(path)
    node.interfaces = [i for i in node.interfaces
                       if i.name in ("org.freedesktop.DBus.Introspectable",
                                     "org.freedesktop.DBus.Peer")]
    node.nodes.append(intr.Node(child, is_root=False))
    return str(node.tostring())


# ---- start-up --------------------------------------------------------------------------

async def _connect(system: bool, address: str) -> Any:
    """A bus connection that carries file descriptors (lv_open) when the bus can; one
    without them otherwise (lv_open is then refused on it)."""
    for fds in (True, False):
        bus = (MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=fds) if system
               else MessageBus(bus_address=address, negotiate_unix_fd=fds))
        try:
            return await asyncio.wait_for(bus.connect(), CONNECT_TIMEOUT)
        except AuthError:
            if not fds:
                raise
            log.warning("the bus refuses file descriptors: lv_open is refused on D-Bus")
    raise AssertionError("unreachable")


async def start_dbus(service: Service, config: Config, *,
                     required: bool) -> DbusTransport | None:
    """Serves the core on ``[dbus] bus``. When the bus cannot be reached or the name not
    owned: ``DbusUnavailable`` if ``required``, else one warning line and None."""
    system = config.dbus_bus == "system"
    where = "the system bus" if system else f"the D-Bus at {config.dbus_bus}"
    bus: Any = None
    try:
        bus = await _connect(system, config.dbus_bus)
        transport = DbusTransport(service, bus, where)
        await transport.start()
    except Exception as exc:
        if bus is not None:
            try:
                bus.disconnect()
            except Exception:
                pass
        if isinstance(exc, DbusUnavailable):
            problem = str(exc)
        elif isinstance(exc, DBusError):
            problem = f"cannot own {BUS_NAME} on {where}: {exc.text}"
            if exc.type == "org.freedesktop.DBus.Error.AccessDenied":
                problem += (" (is org.lvmsuper.Supervisor1.conf installed in "
                            "/usr/share/dbus-1/system.d/?)")
        else:
            problem = f"cannot connect to {where}: {exc or type(exc).__name__}"
        if required:
            raise DbusUnavailable(f"dbus.enabled is true but {problem}") from None
        log.warning("not serving D-Bus: %s; serving the socket only", problem)
        return None
    log.info("serving %s on %s", BUS_NAME, where)
    return transport
