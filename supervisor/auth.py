"""Who is calling and what they may do.

Rule: identity comes from the kernel (SO_PEERCRED / SO_PEERGROUPS on the socket) or the
bus (the message sender on D-Bus), never from a request. Every method belongs to one
role; ``Authority`` answers "may this caller act in this role", per transport.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Protocol

from .config import Config

__all__ = ["Role", "Caller", "Authority", "GroupAuthority", "peer_caller", "process_name"]

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


class Role(enum.StrEnum):
    QUERY = "query"
    MANAGE = "manage"
    DESTROY = "destroy"


@dataclass(frozen=True, slots=True)
class Caller:
    uid: int
    gid: int
    pid: int
    comm: str
    groups: frozenset[int] = frozenset()
    transport: str = "socket"
    bus_name: str | None = None


class Authority(Protocol):
    async def allowed(self, caller: Caller, role: Role) -> bool: ...


class GroupAuthority:
    """Roles from ``[access]`` group lists; root is always allowed; the caller's primary
    and supplementary groups (as the kernel reports them) count."""

    def __init__(self, config: Config) -> None:
        self.groups = {Role.QUERY: config.access_query, Role.MANAGE: config.access_manage,
                       Role.DESTROY: config.access_destroy}

    async def allowed(self, caller: Caller, role: Role) -> bool:
        if caller.uid == 0:
            return True
        member_of = caller.groups | {caller.gid}
        for name in self.groups[role]:
            try:
                if grp.getgrnam(name).gr_gid in member_of:
                    return True
            except KeyError:
                continue  # a configured group that does not exist admits nobody
        return False


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


def peer_caller(sock: socket.socket) -> Caller:
    """The peer of a connected Unix socket, as the kernel saw it at connect time."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    try:
        # Python caps the buffer at 1024 bytes: 256 groups, more than NGROUPS in practice.
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
        groups = frozenset(struct.unpack(f"{len(raw) // 4}I", raw))
    except OSError:
        groups = _groups_of(uid, gid)  # kernels before 4.13, or more than 256 groups
    return Caller(uid=uid, gid=gid, pid=pid, comm=process_name(pid), groups=groups)
