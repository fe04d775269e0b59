"""LVM as typed calls: argv builders + runner + parsers, and LVM failures as errors.

A read runs under ``[lvm] timeout`` and is killed past it; a change runs to completion.
Every failure carries argv, rc, LVM's structured log entries and a stderr excerpt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from lvmsuper.client.errors import LvmFailed, LvmOutputInvalid
from lvmsuper.client.models import LV, PV, VG

from . import lvmcmd
from .report import LvmDocument, excerpt, lvs_from, parse_document, pvs_from, vgs_from
from .runner import RunResult

__all__ = ["Lvm", "Runner", "FullReport"]


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


class Lvm:
    def __init__(self, runner: Runner, *, timeout: float, extra_config: str | None) -> None:
        self.runner = runner
        self.timeout = timeout
        self.extra_config = extra_config

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
        return parse_document(result.stdout, **ctx)

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
        return LvmFailed(f"LVM {result.argv[1] if len(result.argv) > 1 else ''} failed: "
                         f"{reason}", log=entries, **ctx)

    async def pvs(self, names: Sequence[str] = (), select: str | None = None) -> list[PV]:
        doc = await self._run(lvmcmd.report_argv("pv", names=names, select=select,
                                                 extra_config=self.extra_config), change=False)
        return pvs_from(doc.reports.get("pv", []), **doc.context)

    async def vgs(self, names: Sequence[str] = (), select: str | None = None) -> list[VG]:
        doc = await self._run(lvmcmd.report_argv("vg", names=names, select=select,
                                                 extra_config=self.extra_config), change=False)
        return vgs_from(doc.reports.get("vg", []), **doc.context)

    async def lvs(self, names: Sequence[str] = (), select: str | None = None) -> list[LV]:
        doc = await self._run(lvmcmd.report_argv("lv", names=names, select=select,
                                                 extra_config=self.extra_config), change=False)
        return lvs_from(doc.reports.get("lv", []), **doc.context)

    async def fullreport(self, vg: str | None = None) -> FullReport:
        doc = await self._run(lvmcmd.fullreport_argv(vg=vg, extra_config=self.extra_config),
                              change=False)
        pvs = pvs_from(doc.reports.get("pv", []), **doc.context)
        vgs = vgs_from(doc.reports.get("vg", []), **doc.context)
        lvs = lvs_from(doc.reports.get("lv", []), doc.reports.get("seg", []), **doc.context)
        return pvs, vgs, lvs

    async def change(self, command: str, args: Sequence[str], *,
                     json_log: bool = True) -> LvmDocument:
        """Runs a mutating command to completion (never killed). ``json_log=False`` for
        the lvcreate variants that refuse ``--reportformat`` (snapshots, thin)."""
        return await self._run(lvmcmd.change_argv(command, args, extra_config=self.extra_config,
                                                  json_log=json_log), change=True)

    async def pvmove(self, args: Sequence[str], on_line: Callable[[str], None]) -> None:
        """pvmove with progress lines (``-i``) fed to ``on_line``; never killed."""
        await self._run(lvmcmd.change_argv("pvmove", args, extra_config=self.extra_config,
                                           json_log=False), change=True, on_line=on_line)

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
