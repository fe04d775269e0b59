"""The read cache's freshness check, shared by the host tier (tests/test_cache_fresh.py)
and the device-mapper tier (tests/dm/test_dm_cache.py).

Every daemon answer is compared with a direct LVM report taken right after it: the
very argv the daemon would run, by a fresh ``lvm`` process (exec, no shell, no cache),
parsed by the daemon's own parser, so every field is compared. Nothing else changes
the sandbox between the two, so the answer must equal the report: an answer from
memory that missed a change shows as a difference.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import lvmdirect
import rig

__all__ = ["Freshness", "blind_daemon_code"]


@dataclass
class Freshness:
    box: rig.Sandbox
    socket: str
    rng: random.Random
    reads: int = 0
    stale: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.raw = rig.Raw(self.socket)
        self.lvm = lvmdirect.direct_lvm(rig.LVM, str(self.box.system_dir))

    def close(self) -> None:
        self.raw.close()

    def direct(self, method: str, params: dict[str, Any]) -> Any:
        return lvmdirect.report(self.lvm, method, params)

    def check(self, method: str, params: dict[str, Any] | None = None, *,
              why: str = "") -> bool:
        """One daemon read, then LVM's direct report; False (and noted) if they differ."""
        params = params or {}
        answer = self.raw.request(method, params)
        expected = self.direct(method, params)
        self.reads += 1
        got = answer["result"] if "result" in answer else {"failed": answer["error"]}
        if "failed" in expected and "failed" in got:
            return True
        if got == expected:
            return True
        self.stale.append(f"{method} {json.dumps(params)} after {why}:\n"
                          f"  daemon: {json.dumps(got, sort_keys=True)[:1500]}\n"
                          f"  LVM:    {json.dumps(expected, sort_keys=True)[:1500]}")
        return False

    def vg_names(self) -> list[str]:
        return [r["vg_name"] for r in self.box.report("vg", "vg_name")]

    def read_some(self, why: str) -> None:
        """One to three reads of random kinds (each compared)."""
        for _ in range(self.rng.randint(1, 3)):
            method = self.rng.choice(["pvs", "vgs", "lvs", "lvs", "report"])
            params: dict[str, Any] = {}
            vgs = self.vg_names()
            if method in ("lvs", "report") and vgs and self.rng.random() < 0.4:
                params["vg"] = self.rng.choice(vgs)
            self.check(method, params, why=why)

    def cache(self) -> dict[str, Any]:
        return self.raw.request("status")["result"]["cache"]  # type: ignore[no-any-return]


def blind_daemon_code(config: str) -> str:
    """lvmsuperd with a deliberately unsound fingerprint: metadata-area headers and
    labels unread (so a commit by another process goes unseen). For proving the check
    catches a stale answer."""
    return (
        "import sys\n"
        "from lvmsuper.supervisor.lvm import fingerprint as fp\n"
        "real = fp.read_device\n"
        "def blind(path, dev=None, buffers=None):\n"
        "    part = real(path, dev, buffers)\n"
        "    return part if part[1] == 'cannot open' else (*part[:2], None, ())\n"
        "fp.read_device = blind\n"
        "from lvmsuper.supervisor.daemon import main\n"
        f"sys.exit(main(['--config', {config!r}]))\n")
