"""LVM as typed calls: argv builders + runner + parsers, and LVM failures as errors.

A read runs under ``[lvm] timeout`` and is killed past it; a change runs to completion.
Every failure carries argv, rc, LVM's structured log entries and a stderr excerpt.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from lvmsuper.client.errors import InUse, LockConflict, LvmFailed, LvmOutputInvalid
from lvmsuper.client.models import LV, PV, VG

from . import argv as lvmcmd
from .report import (LvDevice, LvmDocument, excerpt, lv_devices_from, lvs_from, parse_document,
                     pvs_from, vgs_from)
from .runner import RunResult

__all__ = ["Lvm", "Runner", "FullReport", "in_use", "lock_conflict", "NO_GLOBAL_LOCK"]

log = logging.getLogger("lvmsuperd.lvm")


class Runner(Protocol):
    async def run(self, args: Sequence[str], *, timeout: float | None,
                  on_line: Callable[[str], None] | None = None) -> RunResult: ...


FullReport = tuple[list[PV], list[VG], list[LV]]

_LOG_KEYS = {"log_type": "type", "log_context": "context",
             "log_object_type": "object_type", "log_object_name": "object_name",
             "log_object_group": "object_group", "log_message": "message",
             "log_errno": "errno", "log_ret_code": "ret_code"}


def _log_entries(doc_log: list[dict[str, str]]) -> list[dict[str, Any]]:
    """LVM's command log without the per-object status lines."""
    return [{new: entry.get(old, "") for old, new in _LOG_KEYS.items()}
            for entry in doc_log if entry.get("log_type") != "status"]


# LVM 2.03's words for "refused: it is open" (lvremove, lvchange -an, lvreduce, vgchange -an)
_IN_USE = (re.compile(r"Logical volume (\S+?) (?:contains a filesystem )?in use"),
           re.compile(r"LV (\S+?) (?:is already )?in use"),
           re.compile(r"LV (\S+?) has open \d+ snapshot"))
_VG_IN_USE = re.compile(r'Can\'t deactivate volume group "([^"]+)" with \d+ open')


def in_use(message: str) -> tuple[str, str] | None:
    """(object_type, object_name) when LVM refused because a device is open."""
    for pattern in _IN_USE:
        if match := pattern.search(message):
            return "lv", match.group(1).rstrip(".:")
    if match := _VG_IN_USE.search(message):
        return "vg", match.group(1)
    return None


# lvmlockd's refusals, as LVM 2.03 words them (lib/locking/lvmlockd.c): another host
# holds the lock, or this host's lockspace lost its sanlock leases (the VG is "killed")
_LOCKED = (re.compile(r"LV locked by other host: (\S+)"),
           re.compile(r"VG (\S+) lock failed: held by other host"),
           re.compile(r"VG (\S+) lock failed: storage (?:errors|failed) for sanlock leases"),
           re.compile(r"(Global) lock failed: held by other host"),
           re.compile(r"(Global) lock failed: storage (?:errors|failed) for sanlock leases"))
# use_lvmlockd=1 and no shared VG yet: there is no global lock to take (the first shared
# VG is made by vgcreate --shared straight on its devices, which creates it)
NO_GLOBAL_LOCK = "Global lock failed: check that global lockspace is started"


def lock_conflict(message: str) -> tuple[str, str] | None:
    """(object_type, object_name) when lvmlockd refused a lock another host holds (or
    that this host lost): ``lv``, ``vg`` or ``global``."""
    for pattern in _LOCKED:
        if match := pattern.search(message):
            name = match.group(1).rstrip(".:")
            kind = "global" if name == "Global" else "lv" if "/" in name else "vg"
            return kind, ("global" if kind == "global" else name)
    return None


class Lvm:
    def __init__(self, runner: Runner, *, timeout: float, extra_config: str | None,
                 scan: Sequence[str] = ()) -> None:
        self.runner = runner
        self.timeout = timeout
        self.extra_config = extra_config
        self.scan = tuple(scan)  # LVM's --devices for every command (empty: all)

    def scoped(self, scan: Sequence[str]) -> Lvm:
        """This LVM with its device scan limited to ``scan`` (itself when empty)."""
        if not scan:
            return self
        return Lvm(self.runner, timeout=self.timeout, extra_config=self.extra_config,
                   scan=scan)

    async def _run(self, args: list[str], *, change: bool,
                   on_line: Callable[[str], None] | None = None) -> LvmDocument:
        result = await self.runner.run(args, timeout=None if change else self.timeout,
                                       on_line=on_line)
        ctx: dict[str, Any] = {"argv": list(result.argv), "rc": result.rc,
                               "stderr": excerpt(result.stderr)}
        if result.truncated:
            raise LvmOutputInvalid(f"LVM output exceeded the daemon's limit; "
                                   f"rc {result.rc}", line="", **ctx)
        if result.rc < 0:
            raise LvmFailed(f"LVM was killed by signal {-result.rc}", log=[], **ctx)
        if result.rc != 0:
            raise self._failure(result, ctx)
        if on_line is not None or "--reportformat" not in args:
            return LvmDocument({}, [])  # progress or plain text, not a JSON report
        try:
            return parse_document(result.stdout, **ctx)
        except LvmOutputInvalid:
            if not change:
                raise
            # LVM made the change (exit 0): text it printed around its log must not
            # turn a change that happened into a failure
            log.warning("LVM %s succeeded but its log was not JSON: %s", args[0],
                        excerpt(result.stdout))
            return LvmDocument({}, [])

    @staticmethod
    def _failure(result: RunResult, ctx: dict[str, Any]) -> LvmFailed:
        try:
            entries = _log_entries(parse_document(result.stdout, **ctx).log)
        except LvmOutputInvalid:
            entries = []  # e.g. a command-line error: LVM printed no JSON at all
        errors = [e["message"] for e in entries if e["type"] == "error"]
        lines = [ln.strip() for ln in result.stderr.splitlines()
                 if ln.strip() and "Activation disabled" not in ln]
        reason = errors[0] if errors else (lines[-1] if lines else f"exit code {result.rc}")
        message = (f"LVM {result.argv[1] if len(result.argv) > 1 else ''} failed: "
                   f"{reason}")
        for text in [*errors, *lines]:
            if (found := in_use(text)) is not None:
                return InUse(message, object_type=found[0], object_name=found[1],
                             log=entries, **ctx)
            if (found := lock_conflict(text)) is not None:
                # the holder's host id: filled in by whoever can ask sanlock (service)
                return LockConflict(message, object_type=found[0], object_name=found[1],
                                    log=entries, **ctx)
        if any(NO_GLOBAL_LOCK in text for text in [*errors, *lines]):
            message += (" (no shared VG exists yet, so there is no global lock: create the "
                        "first shared VG with vgcreate shared=true straight on its devices, "
                        "or start the lockspace of an existing one with lockstart)")
        return LvmFailed(message, log=entries, **ctx)

    async def pvs(self, names: Sequence[str] = (), select: str | None = None) -> list[PV]:
        doc = await self._run(lvmcmd.report_argv("pv", names=names, select=select,
                                                 extra_config=self.extra_config,
                                                 scan=self.scan), change=False)
        return pvs_from(doc.reports.get("pv", []), **doc.context)

    async def vgs(self, names: Sequence[str] = (), select: str | None = None) -> list[VG]:
        doc = await self._run(lvmcmd.report_argv("vg", names=names, select=select,
                                                 extra_config=self.extra_config,
                                                 scan=self.scan), change=False)
        return vgs_from(doc.reports.get("vg", []), **doc.context)

    async def lvs(self, names: Sequence[str] = (), select: str | None = None) -> list[LV]:
        doc = await self._run(lvmcmd.report_argv("lv", names=names, select=select,
                                                 extra_config=self.extra_config,
                                                 scan=self.scan), change=False)
        return lvs_from(doc.reports.get("lv", []), **doc.context)

    async def lv_devices(self, names: Sequence[str]) -> list[LvDevice]:
        """Where the named LVs' devices are (``lv_open``)."""
        doc = await self._run(lvmcmd.report_argv("lv", names=names,
                                                 extra_config=self.extra_config,
                                                 scan=self.scan,
                                                 fields=lvmcmd.LV_DEVICE_FIELDS), change=False)
        return lv_devices_from(doc.reports.get("lv", []), **doc.context)

    async def poll(self) -> list[dict[str, str]]:
        """PVs with their VG and its seqno, as LVM's raw report rows (the watcher's
        cheap poll: one run, whatever the number of LVs)."""
        doc = await self._run(lvmcmd.poll_argv(extra_config=self.extra_config), change=False)
        return [dict(row) for row in doc.reports.get("pv", [])]

    async def fullreport(self, vg: str | None = None) -> FullReport:
        doc = await self._run(lvmcmd.fullreport_argv(vg=vg, extra_config=self.extra_config,
                                                     scan=self.scan),
                              change=False)
        pvs = pvs_from(doc.reports.get("pv", []), **doc.context)
        vgs = vgs_from(doc.reports.get("vg", []), pvs, **doc.context)
        lvs = lvs_from(doc.reports.get("lv", []), doc.reports.get("seg", []), **doc.context)
        return pvs, vgs, lvs

    async def change(self, command: str, args: Sequence[str], *,
                     json_log: bool = True) -> LvmDocument:
        """Runs a mutating command to completion (never killed). ``json_log=False`` for
        the lvcreate variants that refuse ``--reportformat`` (snapshots, thin)."""
        return await self._run(lvmcmd.change_argv(command, args, extra_config=self.extra_config,
                                                  json_log=json_log, scan=self.scan),
                               change=True)

    async def vgck(self, vg: str) -> tuple[bool, list[dict[str, Any]]]:
        """LVM's consistency check of ``vg``: (it passed, LVM's log entries). A VG that
        LVM cannot find also fails it: the caller tells that apart from its report."""
        try:
            doc = await self._run(lvmcmd.vgck_argv(vg, extra_config=self.extra_config,
                                                   scan=self.scan), change=False)
        except LvmFailed as exc:
            return False, list(exc.data.get("log", []))
        return True, _log_entries(doc.log)

    async def pvmove(self, args: Sequence[str], on_line: Callable[[str], None]) -> None:
        """pvmove with progress lines (``-i``) fed to ``on_line``; never killed."""
        await self._run(lvmcmd.change_argv("pvmove", args, extra_config=self.extra_config,
                                           json_log=False, scan=self.scan), change=True,
                        on_line=on_line)

    async def scan_settings(self) -> tuple[bool, bool] | None:
        """What LVM scans, as it runs for the daemon: (``devices/scan_lvs`` is set,
        ``devices/types`` adds device types); None when LVM does not say."""
        result = await self.runner.run(
            lvmcmd.config_argv("devices/scan_lvs", "devices/types",
                               extra_config=self.extra_config), timeout=self.timeout)
        lines = [ln.strip() for ln in result.stdout.splitlines() if ln.strip()]
        if result.rc != 0 or not lines or lines[0] not in ("scan_lvs=0", "scan_lvs=1"):
            return None
        return lines[0] == "scan_lvs=1", any(ln.startswith("types=") for ln in lines[1:])

    async def version(self) -> str:
        """LVM's version line, e.g. ``2.03.16(2) (2022-05-18)``."""
        result = await self.runner.run(["version"], timeout=self.timeout)
        for line in result.stdout.splitlines():
            key, _, value = line.strip().partition(":")
            if key == "LVM version" and value.strip():
                return value.strip()
        raise LvmOutputInvalid("LVM's version output has no 'LVM version:' line",
                               argv=list(result.argv), rc=result.rc,
                               line=result.stdout.splitlines()[0] if result.stdout else "",
                               stdout=excerpt(result.stdout), stderr=excerpt(result.stderr))
