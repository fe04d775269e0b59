"""LVM's own report of what a daemon read answers: the very argv the daemon would run,
by a fresh ``lvm`` process (exec: no shell, no cache), parsed by the daemon's own
parser, in wire form. Shared by the read cache's freshness checks on this host
(tests/freshness.py) and in the cluster tier's guests (tests/cluster/agent.py, which
has only the installed package), so both compare every field the same way."""

from __future__ import annotations

import asyncio
from typing import Any

from lvmsuper.client.models import to_wire
from lvmsuper.supervisor.lvm.calls import Lvm
from lvmsuper.supervisor.lvm.runner import ExecRunner

__all__ = ["direct_lvm", "report"]


def direct_lvm(binary: str, system_dir: str | None) -> Lvm:
    return Lvm(ExecRunner(binary, system_dir=system_dir), timeout=120, extra_config=None)


async def _report(lvm: Lvm, method: str, params: dict[str, Any]) -> Any:
    if method == "pvs":
        return await lvm.pvs()
    if method == "vgs":
        return await lvm.vgs()
    if method == "lvs":
        return await lvm.lvs([params["vg"]] if "vg" in params else [])
    pvs, vgs, lvs = await lvm.fullreport(params.get("vg"))
    return {"pvs": pvs, "vgs": vgs, "lvs": lvs}


def report(lvm: Lvm, method: str, params: dict[str, Any]) -> Any:
    """LVM's answer to the daemon read ``method`` (pvs, vgs, lvs, report) with
    ``params``, or ``{"failed": …}`` when LVM refuses (the daemon must refuse too)."""
    try:
        return to_wire(asyncio.run(_report(lvm, method, params)))
    except Exception as exc:
        return {"failed": type(exc).__name__}
