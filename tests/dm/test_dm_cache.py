"""Device-mapper tier: the read cache stays fresh where the kernel holds the state.

Activation and deactivation made outside the daemon, an LV opened and closed, writes
that move a thin pool's and a thin volume's ``data_percent`` and a snapshot's: after
each, reads through the daemon are compared whole with LVM's direct report taken right
after (tests/freshness.py), then read again unchanged (answered from memory: the test
requires hits). A seeded random part (the seed is printed; ``LVMSUPER_FRESH_SEED``
replays it) mixes these.
"""

from __future__ import annotations

import os
import random
import secrets
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import rig
from freshness import Freshness
from test_dm_daemon import write

MiB = 2**20


@pytest.fixture
def fresh(daemon: rig.Daemon, lvm: rig.Sandbox) -> Iterator[Freshness]:
    value = int(os.environ.get("LVMSUPER_FRESH_SEED") or secrets.randbits(32))
    print(f"\nfreshness seed: LVMSUPER_FRESH_SEED={value}", file=sys.stderr)
    lvm.lvm("pvcreate", "-q", *lvm.loops[:2])
    lvm.lvm("vgcreate", "-q", "vgc", *lvm.loops[:2])
    f = Freshness(lvm, daemon.socket, random.Random(value))
    try:
        yield f
    finally:
        f.close()
        lvm.lvm("vgchange", "-q", "--activate", "n", "vgc", check=False)


def both(f: Freshness, why: str) -> None:
    """lvs and report (PVs, VGs and LVs), compared; then the same again (from memory,
    unchanged). Few reads: every LVM command costs about a second under TCG."""
    for _ in range(2):
        for method in ("lvs", "report"):
            f.check(method, {}, why=why)


def lv(f: Freshness, name: str) -> dict[str, Any]:
    found = [x for x in f.raw.request("lvs")["result"] if x["name"] == name]
    assert found, name
    return found[0]


def test_activation_open_and_dynamic_fields_stay_fresh(fresh: Freshness,
                                                      lvm: rig.Sandbox) -> None:
    f = fresh
    start = f.cache()
    lvm.lvm("lvcreate", "-q", "-n", "lin", "-L", "8m", "vgc")
    both(f, "lvcreate lin (active)")
    assert lv(f, "lin")["active"] is True
    lvm.lvm("lvchange", "-q", "-an", "vgc/lin")
    both(f, "deactivated lin outside")
    assert lv(f, "lin")["active"] is False
    lvm.lvm("lvchange", "-q", "-ay", "vgc/lin")
    both(f, "activated lin outside")
    fd = os.open("/dev/vgc/lin", os.O_RDONLY)
    try:
        both(f, "lin opened")
        assert lv(f, "lin")["open"] is True
    finally:
        os.close(fd)
    both(f, "lin closed")
    assert lv(f, "lin")["open"] is False

    lvm.lvm("lvcreate", "-q", "--type", "thin-pool", "-n", "pool", "-L", "16m", "vgc")
    lvm.lvm("lvcreate", "-q", "--type", "thin", "-n", "thin", "-V", "64m",
            "--thinpool", "pool", "vgc")
    both(f, "thin pool and volume")
    before = lv(f, "thin")["data_percent"]
    write("/dev/vgc/thin", b"x" * MiB, 8 * MiB)
    both(f, "1 MiB written to the thin volume")
    after = lv(f, "thin")
    assert after["data_percent"] > before, (before, after)

    lvm.lvm("lvcreate", "-q", "-s", "-n", "snap", "-L", "4m", "vgc/lin")
    both(f, "snapshot of lin")
    snap = lv(f, "snap")["data_percent"]
    write("/dev/vgc/lin", b"y" * MiB)
    both(f, "origin written under the snapshot")
    assert lv(f, "snap")["data_percent"] > snap

    for step in range(int(os.environ.get("LVMSUPER_FRESH_STEPS", "5"))):
        what = f.rng.choice(["deactivate", "activate", "write", "nothing"])
        name = f.rng.choice(["lin", "thin"])
        if what == "deactivate":
            lvm.lvm("lvchange", "-q", "-an", f"vgc/{name}", check=False)
        elif what == "activate":
            lvm.lvm("lvchange", "-q", "-ay", f"vgc/{name}", check=False)
        elif what == "write" and os.path.exists(f"/dev/vgc/{name}"):
            write(f"/dev/vgc/{name}", b"z" * 65536, f.rng.randrange(0, 60) * MiB // 8)
        both(f, f"step {step}: {what} {name}")

    end = f.cache()
    summary = f"dm freshness: {f.reads} reads compared, cache {end}, from {start}"
    print(summary, file=sys.stderr)
    results = os.environ.get("LVMSUPER_DM_RESULTS")
    if results:
        with open(os.path.join(results, "cache-fresh.txt"), "a") as fh:
            fh.write(summary + "\n" + "".join(s + "\n" for s in f.stale))
    assert not f.stale, f"{len(f.stale)} stale answers; first:\n{f.stale[0]}"
    assert end["hits"] - start["hits"] > f.reads // 8, "too few reads from memory"
