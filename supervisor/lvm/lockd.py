"""lvmlockd and sanlock, asked what LVM's own reports do not say: which lockspaces this
host has started (and which it lost), and which host holds an LV's lease.

Rules: these are LVM's and sanlock's own tools, run like LVM (an argv list, the
environment built from scratch, stdin /dev/null, killed past a time limit: they only
read). Their raw output is parsed here and nowhere else: ``lvmlockctl --info --dump``
prints lvmlockd's state as ``key=value`` lines; ``sanlock direct read_leader`` prints a
lease's leader record as ``key value`` lines. On a host without lvmlockd (no socket)
nothing runs and nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field

from .runner import SAFE_PATH, lvm_environment

__all__ = ["Lockd", "LockInfo", "parse_info", "parse_leader", "LOCKD_SOCKET"]

log = logging.getLogger("lvmsuperd.lockd")

LOCKD_SOCKET = "/run/lvm/lvmlockd.socket"
TIMEOUT = 15.0
_LV_LOCK_ARGS = re.compile(r"^\d+\.\d+\.\d+:(\d+)$")


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Lockspaces lvmlockd has here, by VG name: started, and lost (killed: sanlock
    could not renew the lease; no lock in the VG can be had until it is started again)."""

    started: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    host_id: dict[str, int] = field(default_factory=dict)


def _fields(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def parse_info(text: str) -> LockInfo:
    """``lvmlockctl --info --dump``: one ``info=ls`` line per lockspace, with its VG name
    and the flags ``kill_vg`` (lost: sanlock's kill path ran) and ``drop_vg``."""
    started: list[str] = []
    lost: list[str] = []
    host_id: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("info=ls "):
            continue
        f = _fields(line)
        vg = f.get("vg_name", "")
        if not vg:
            continue
        if f.get("kill_vg", "0") != "0" or f.get("drop_vg", "0") != "0":
            lost.append(vg)
        elif f.get("create_done", "1") == "1" and f.get("thread_stop", "0") == "0":
            started.append(vg)
        if f.get("host_id", "").isdigit():
            host_id[vg] = int(f["host_id"])
    return LockInfo(sorted(started), sorted(lost), host_id)


def parse_leader(text: str) -> int | None:
    """The host id holding a sanlock lease, from ``sanlock direct read_leader``: its
    ``owner_id``, unless the lease is free (``timestamp 0``, as a release leaves it)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        values.setdefault(key, value.strip())
    owner, stamp = values.get("owner_id", ""), values.get("timestamp", "")
    if not owner.isdigit() or not stamp.isdigit() or int(stamp) == 0 or int(owner) == 0:
        return None
    return int(owner)


def _dm_name(vg: str, lv: str) -> str:
    """device-mapper's name of vg/lv: each ``-`` in a name doubled, joined by ``-``."""
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


class Lockd:
    def __init__(self, lockctl: str | None = None, sanlock: str | None = None,
                 system_dir: str | None = None, socket: str = LOCKD_SOCKET) -> None:
        self.lockctl = lockctl or shutil.which("lvmlockctl", path=SAFE_PATH)
        self.sanlock = sanlock or shutil.which("sanlock", path=SAFE_PATH)
        self.socket = socket
        self.env = lvm_environment(system_dir)
        # lvmlockctl --dump binds one fixed abstract socket name: one at a time
        self._one = asyncio.Lock()
        self._lost_seen: set[str] = set()

    @property
    def present(self) -> bool:
        """lvmlockd runs here (its socket is there) and its tool is installed."""
        return self.lockctl is not None and os.path.exists(self.socket)

    async def _run(self, argv: Sequence[str]) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.env, close_fds=True,
            start_new_session=True, cwd="/")
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning("%s did not answer within %g s; killed", argv[0], TIMEOUT)
            return -1, ""
        return proc.returncode or 0, out.decode("utf-8", "replace")

    async def info(self) -> LockInfo:
        """The lockspaces of this host (none without lvmlockd). A lockspace found lost
        for the first time is logged."""
        if not self.present:
            return LockInfo()
        assert self.lockctl is not None
        async with self._one:
            rc, out = await self._run([self.lockctl, "--info", "--dump"])
        if rc != 0:
            log.warning("lvmlockctl --info failed (exit %d): lockspaces unknown", rc)
            return LockInfo()
        info = parse_info(out)
        for vg in set(info.lost) - self._lost_seen:
            log.error("the lockspace of VG %s is lost (sanlock could not renew its lease): "
                      "changes in it are refused until lockstart succeeds", vg)
        self._lost_seen = set(info.lost)
        return info

    async def drop(self, vg: str) -> None:
        """Clears a lost lockspace's locks (``lvmlockctl --drop``), so that it can be
        started again."""
        if self.present:
            assert self.lockctl is not None
            async with self._one:
                await self._run([self.lockctl, "--drop", vg])

    async def holder(self, vg: str, lv: str, lv_uuid: str, lock_args: str | None) -> int | None:
        """The host id holding ``vg/lv``'s lease, read from the VG's lease area (the
        hidden ``lvmlock`` LV) at the offset in the LV's lock_args; None when it cannot
        be told."""
        found = _LV_LOCK_ARGS.match(lock_args or "")
        if self.sanlock is None or found is None:
            return None
        resource = f"lvm_{vg}:{lv_uuid}:/dev/mapper/{_dm_name(vg, 'lvmlock')}:{found.group(1)}"
        _, out = await self._run([self.sanlock, "direct", "read_leader", "-r", resource])
        return parse_leader(out)
