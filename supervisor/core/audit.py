"""The audit trail: every change is logged exactly once, with who, what and how it ended
(refused attempts included: their outcome is the error's name).

With journald the record carries structured fields (``LVMSUPER_METHOD``,
``LVMSUPER_CALLER_UID``, ...), so ``journalctl LVMSUPER_METHOD=lvremove`` finds it;
on stderr the same fields are written as ``key=value`` words.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .auth import Caller

__all__ = ["audit", "AUDIT_LOGGER"]

AUDIT_LOGGER = "lvmsuperd.audit"
MAX_PARAMS = 4096  # characters of the parameters kept (a refused request may be huge)


def audit(caller: Caller, method: str, params: dict[str, Any], outcome: str,
          duration_ms: float) -> None:
    fields = {
        "LVMSUPER_METHOD": method,
        "LVMSUPER_CALLER_UID": str(caller.uid),
        "LVMSUPER_CALLER_PID": str(caller.pid),
        "LVMSUPER_CALLER_COMM": caller.comm,
        "LVMSUPER_TRANSPORT": caller.transport,
        "LVMSUPER_RESULT": outcome,
        "LVMSUPER_DURATION_MS": f"{duration_ms:.1f}",
        "LVMSUPER_PARAMS": _shown(params),
    }
    logging.getLogger(AUDIT_LOGGER).info(
        "audit: %s by uid=%d pid=%d comm=%s via %s params=%s result=%s duration_ms=%.1f",
        method, caller.uid, caller.pid, caller.comm, caller.transport, fields["LVMSUPER_PARAMS"],
        outcome,
        duration_ms, extra=fields)


def _shown(params: dict[str, Any]) -> str:
    text = json.dumps(params, sort_keys=True, default=str)
    if len(text) <= MAX_PARAMS:
        return text
    return f"{text[:MAX_PARAMS]}... [{len(text) - MAX_PARAMS} more characters]"
