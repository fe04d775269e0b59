"""Who is calling and what they may do.

Rule: identity comes from the kernel (SO_PEERCRED / SO_PEERGROUPS on the socket, fixed
at connect) or the bus (the message sender on D-Bus), never from a request. Every method
belongs to one role; ``Authority`` answers "may this caller act in this role", per
transport. Answering never touches the user or group database: ``[access]`` group names
are resolved to gids once, when the authority is made at start-up. ``scope`` answers
"on which VGs": None (all of them) unless the caller has the role only through
``[[access.scope]]`` entries.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import grp
import logging
import os
import pwd
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ..config import Config
from .scopes import VgScope

__all__ = ["Role", "Caller", "Authority", "Details", "GroupAuthority", "peer_caller",
           "peer_groups", "process_name"]

log = logging.getLogger("lvmsuperd.auth")

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
NGROUPS_MAX = 65536  # Linux's limit on supplementary groups


class Role(enum.StrEnum):
    QUERY = "query"
    MANAGE = "manage"
    DESTROY = "destroy"
    OPEN = "open"  # lv_open: a descriptor of an LV's device


@dataclass(frozen=True, slots=True)
class Caller:
    uid: int
    gid: int
    pid: int
    comm: str
    groups: frozenset[int] = frozenset()
    transport: str = "socket"
    bus_name: str | None = None


# What a call acts on ("method", "vg", "lv", "devices"): polkit's details
Details = Mapping[str, str]


class Authority(Protocol):
    async def allowed(self, caller: Caller, role: Role, details: Details) -> bool: ...

    def scope(self, caller: Caller, role: Role) -> VgScope | None: ...


class GroupAuthority:
    """Roles from ``[access]`` group lists; root is always allowed; the caller's primary
    and supplementary groups (as the kernel reports them) count. The names are resolved
    here, once: a slow NSS never blocks the event loop per request, and a group made or
    removed later takes effect at the next start."""

    def __init__(self, config: Config) -> None:
        names = {Role.QUERY: config.access_query, Role.MANAGE: config.access_manage,
                 Role.DESTROY: config.access_destroy, Role.OPEN: config.access_open}
        gids: dict[str, int | None] = {}
        for name in sorted({n for group in names.values() for n in group} |
                           {s.group for s in config.access_scopes}):
            try:
                gids[name] = grp.getgrnam(name).gr_gid
            except KeyError:
                # A configured group that does not exist admits nobody.
                log.warning("[access] names group %r, which does not exist: it admits "
                            "nobody (until it is created and the daemon restarted)", name)
                gids[name] = None
        self.gids: dict[str, frozenset[int]] = {
            role: frozenset(g for n in group if (g := gids[n]) is not None)
            for role, group in names.items()}
        # [[access.scope]]: (gid, roles, globs, tags), for groups that exist
        self.scopes = [(gid, frozenset(s.roles), s.vgs, frozenset(s.vg_tags))
                       for s in config.access_scopes if (gid := gids[s.group]) is not None]
        self.devices = config.policy_devices

    async def allowed(self, caller: Caller, role: Role, details: Details) -> bool:
        """The role, on some VGs at least (``scope`` says which)."""
        if caller.uid == 0:
            return True
        groups = caller.groups | {caller.gid}
        return not self.gids.get(role, frozenset()).isdisjoint(groups) or \
            any(gid in groups and str(role) in roles for gid, roles, _, _ in self.scopes)

    def scope(self, caller: Caller, role: Role | str) -> VgScope | None:
        """None: the role on every VG (root, or a global [access] list grants it).
        Else the union of the caller's scopes that grant it (empty: no VG at all)."""
        groups = caller.groups | {caller.gid}
        # (a StrEnum hashes as its string: "open", a role of another branch, works too)
        if caller.uid == 0 or not self.gids.get(role, frozenset()).isdisjoint(groups):
            return None
        globs: list[str] = []
        tags: set[str] = set()
        for gid, roles, vgs, vg_tags in self.scopes:
            if gid in groups and str(role) in roles:
                globs += vgs
                tags |= vg_tags
        return VgScope(tuple(dict.fromkeys(globs)), frozenset(tags), self.devices)


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def _groups_of(uid: int, gid: int) -> frozenset[int]:
    try:
        return frozenset(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except KeyError:
        return frozenset()


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """SO_PEERGROUPS, however many groups: Python's ``getsockopt`` caps the buffer at
    1024 bytes (256 groups), so this calls libc's, with the size the kernel asks for when
    it answers ERANGE. OSError when the kernel cannot tell (before 4.13)."""
    getsockopt = ctypes.CDLL(None, use_errno=True).getsockopt
    size = 256 * 4
    while True:
        buf = ctypes.create_string_buffer(size)
        length = ctypes.c_uint32(size)  # socklen_t
        if getsockopt(sock.fileno(), socket.SOL_SOCKET, SO_PEERGROUPS, buf,
                      ctypes.byref(length)) == 0:
            count = min(length.value, size) // 4
            return frozenset(struct.unpack(f"{count}I", buf.raw[:count * 4]))
        err = ctypes.get_errno()
        if err != errno.ERANGE or size >= NGROUPS_MAX * 4:
            raise OSError(err, os.strerror(err))
        # The kernel wrote the length it needs; should it not have, double.
        size = min(max(length.value, size * 2), NGROUPS_MAX * 4)


def peer_caller(sock: socket.socket) -> Caller:
    """The peer of a connected Unix socket, as the kernel saw it at connect time (a
    caller whose groups change must reconnect to be seen with them)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    try:
        groups = peer_groups(sock)
    except OSError:
        groups = _groups_of(uid, gid)  # kernels before 4.13
    return Caller(uid=uid, gid=gid, pid=pid, comm=process_name(pid), groups=groups)
