"""The read cache never answers with state older than the request (host tier).

A seeded random walk (the seed is printed; ``LVMSUPER_FRESH_SEED`` replays one,
``LVMSUPER_FRESH_STEPS`` sets its length) changes the sandbox directly with LVM and
the kernel, as another program would (vgcreate, vgremove, vgrename, vgextend, vgreduce,
lvcreate, lvremove, lvrename, lvresize, tags, pvcreate, pvremove, pvchange, wipefs of a
PV, a loop device resized, detached and attached again), now and then through the
daemon too, and between them reads through the daemon, each compared whole with LVM's
direct report taken right after it (tests/freshness.py). Reads in a row with nothing
in between are answered from memory (the test requires hits), so the comparison is
of the cache, not of LVM.

The same walk against a daemon whose fingerprint is blind to labels and metadata-area
headers must find stale answers: the check can fail.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

import rig
from freshness import Freshness, blind_daemon_code

MiB = 2**20
STEPS = int(os.environ.get("LVMSUPER_FRESH_STEPS", "120"))


@pytest.fixture(scope="module")
def box(users: dict[str, list[str]]) -> Iterator[rig.Sandbox]:
    b = rig.Sandbox(count=6, size_mib=64)
    try:
        yield b
    finally:
        b.destroy()


def seed() -> int:
    value = int(os.environ.get("LVMSUPER_FRESH_SEED") or secrets.randbits(32))
    print(f"\nfreshness seed: LVMSUPER_FRESH_SEED={value}", file=sys.stderr)
    return value


class Walk:
    """Random changes to the sandbox, made directly (or through the daemon)."""

    def __init__(self, box: rig.Sandbox, fresh: Freshness) -> None:
        self.box = box
        self.fresh = fresh
        self.rng = fresh.rng
        self.cycled = box.loops[5]  # detached and attached again
        self.grown = box.loops[4]   # resized
        self.attached = True
        self.n = 0

    def lvm(self, *args: str) -> None:
        self.box.lvm(*args, check=False)

    def rows(self, kind: str, fields: str) -> list[dict[str, str]]:
        return self.box.report(kind, fields)

    def devices(self) -> list[str]:
        return [d for d in self.box.loops if d != self.cycled or self.attached]

    def orphans(self) -> list[str]:
        return [r["pv_name"] for r in self.rows("pv", "pv_name,vg_name") if not r["vg_name"]]

    def blank(self) -> list[str]:
        pvs = {r["pv_name"] for r in self.rows("pv", "pv_name")}
        return [d for d in self.devices() if d not in pvs]

    def lvs(self) -> list[str]:
        return [r["lv_full_name"] for r in self.rows("lv", "lv_full_name")]

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def pick(self, items: list[str]) -> str | None:
        return self.rng.choice(items) if items else None

    # each returns what it did, for messages
    def pvcreate(self) -> str:
        dev = self.pick(self.blank())
        if dev:
            subprocess.run(["wipefs", "-q", "-a", dev], capture_output=True)
            self.lvm("pvcreate", "-q", "-y", dev)
        return f"pvcreate {dev}"

    def pvremove(self) -> str:
        dev = self.pick(self.orphans())
        if dev:
            self.lvm("pvremove", "-q", "-y", dev)
        return f"pvremove {dev}"

    def vgcreate(self) -> str:
        free = self.orphans() + self.blank()
        if not free:
            return "vgcreate: no device"
        devs = self.rng.sample(free, min(len(free), self.rng.randint(1, 2)))
        name = self.name("vg")
        for dev in devs:
            subprocess.run(["wipefs", "-q", "-a", dev], capture_output=True)
        self.lvm("vgcreate", "-q", "-y", name, *devs)
        return f"vgcreate {name} {devs}"

    def vgremove(self) -> str:
        vg = self.pick(self.fresh.vg_names())
        if vg:
            self.lvm("vgremove", "-q", "-ff", "-y", vg)
        return f"vgremove {vg}"

    def vgrename(self) -> str:
        vg = self.pick(self.fresh.vg_names())
        if vg:
            self.lvm("vgrename", "-q", vg, self.name("vg"))
        return f"vgrename {vg}"

    def vgextend(self) -> str:
        vg, dev = self.pick(self.fresh.vg_names()), self.pick(self.orphans() + self.blank())
        if vg and dev:
            subprocess.run(["wipefs", "-q", "-a", dev], capture_output=True)
            self.lvm("vgextend", "-q", "-y", vg, dev)
        return f"vgextend {vg} {dev}"

    def vgreduce(self) -> str:
        rows = [r for r in self.rows("pv", "pv_name,vg_name,pv_used")
                if r["vg_name"] and r["pv_used"] == "0"]
        if not rows:
            return "vgreduce: none"
        row = self.rng.choice(rows)
        self.lvm("vgreduce", "-q", row["vg_name"], row["pv_name"])
        return f"vgreduce {row['vg_name']} {row['pv_name']}"

    def lvcreate(self) -> str:
        vg = self.pick(self.fresh.vg_names())
        if vg:
            self.lvm("lvcreate", "-q", "-Wn", "-Zn", "-n", self.name("lv"), "-L", "4m", vg)
        return f"lvcreate in {vg}"

    def lvremove(self) -> str:
        lv = self.pick(self.lvs())
        if lv:
            self.lvm("lvremove", "-q", "-y", lv)
        return f"lvremove {lv}"

    def lvrename(self) -> str:
        lv = self.pick(self.lvs())
        if lv:
            vg, old = lv.split("/")
            self.lvm("lvrename", "-q", vg, old, self.name("lv"))
        return f"lvrename {lv}"

    def lvresize(self) -> str:
        lv = self.pick(self.lvs())
        if lv:
            self.lvm("lvresize", "-q", "-L", "+4m", lv)
        return f"lvresize {lv}"

    def tags(self) -> str:
        what = self.rng.choice(["lv", "vg", "pv"])
        target = self.pick(self.lvs() if what == "lv" else self.fresh.vg_names()
                           if what == "vg" else [r["pv_name"] for r in self.rows("pv", "pv_name")])
        op = self.rng.choice(["--addtag", "--deltag"])
        if target:
            self.lvm(f"{what}change", "-q", op, self.rng.choice(["a", "b"]), target)
        return f"{what}change {op} {target}"

    def pvchange(self) -> str:
        dev = self.pick([r["pv_name"] for r in self.rows("pv", "pv_name,vg_name")
                         if r["vg_name"]])
        if dev:
            self.lvm("pvchange", "-q", "-x", self.rng.choice(["y", "n"]), dev)
        return f"pvchange -x {dev}"

    def wipefs(self) -> str:
        dev = self.pick(self.orphans() if self.rng.random() < 0.7 else
                        [r["pv_name"] for r in self.rows("pv", "pv_name")])
        if dev:
            subprocess.run(["wipefs", "-q", "-a", "-f", dev], capture_output=True)
        return f"wipefs {dev}"

    def removemissing(self) -> str:
        for vg in self.fresh.vg_names():
            self.lvm("vgreduce", "-q", "--removemissing", "--force", vg)
        return "vgreduce --removemissing"

    def resize(self) -> str:
        image = self.box.dir / f"disk{self.box.loops.index(self.grown)}.img"
        size = image.stat().st_size
        if size >= 128 * MiB:
            return "resize: at its limit"
        os.truncate(image, size + 8 * MiB)
        subprocess.run(["losetup", "-c", self.grown], check=True)
        return f"resize {self.grown} to {size + 8 * MiB}"

    def cycle(self) -> str:
        """Detaches the cycled loop (its PV goes missing), or attaches it again."""
        if self.attached:
            subprocess.run(["losetup", "-d", self.cycled], check=True)
            self.attached = False
            return f"detach {self.cycled}"
        self.reattach()
        return f"attach {self.cycled}"

    def reattach(self) -> None:
        image = self.box.dir / f"disk{self.box.loops.index(self.cycled)}.img"
        got = subprocess.run(["losetup", self.cycled, str(image)], capture_output=True)
        if got.returncode != 0:  # another process took that loop meanwhile: a new one
            out = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                                 capture_output=True, text=True).stdout.strip()
            self.box.loops[self.box.loops.index(self.cycled)] = out
            self.cycled = out
            self.box._write_lvm_conf()
        self.attached = True

    def by_daemon(self) -> str:
        vg = self.pick(self.fresh.vg_names())
        if vg:
            self.fresh.raw.request("lvcreate", {"vg": vg, "name": self.name("d"),
                                                "size": 4 * MiB, "zero": False})
        return f"lvcreate in {vg} through the daemon"

    def nothing(self) -> str:
        return "nothing"

    def step(self) -> str:
        ops: list[Callable[[], str]] = [
            self.pvcreate, self.pvremove, self.vgcreate, self.vgcreate, self.vgremove,
            self.vgrename, self.vgextend, self.vgreduce, self.lvcreate, self.lvcreate,
            self.lvremove, self.lvrename, self.lvresize, self.tags, self.tags,
            self.pvchange, self.wipefs, self.removemissing, self.resize, self.cycle,
            self.by_daemon, self.nothing, self.nothing, self.nothing]
        return self.rng.choice(ops)()


def walk(box: rig.Sandbox, socket: str, rng: random.Random, steps: int,
         stop_at_first: bool = False) -> Freshness:
    fresh = Freshness(box, socket, rng)
    w = Walk(box, fresh)
    try:
        fresh.read_some("start")
        for i in range(steps):
            did = w.step()
            fresh.read_some(f"step {i}: {did}")
            fresh.read_some(f"step {i}: {did} (again)")  # unchanged: from memory
            if stop_at_first and fresh.stale:
                break
        return fresh
    finally:
        if not w.attached:
            w.reattach()
        fresh.close()


def empty(box: rig.Sandbox) -> None:
    box.wipe()
    for dev in box.loops:
        subprocess.run(["wipefs", "-q", "-a", "-f", dev], capture_output=True)


def test_every_answer_is_fresh(box: rig.Sandbox) -> None:
    empty(box)
    value = seed()
    with rig.running(box, "fresh") as d:
        fresh = walk(box, d.socket, random.Random(value), STEPS)
        raw = rig.Raw(d.socket)
        cache = raw.request("status")["result"]["cache"]
        raw.close()
    rate = cache["hits"] / max(1, cache["hits"] + cache["misses"])
    print(f"freshness: {fresh.reads} reads compared, cache {cache}, hit rate {rate:.2f}",
          file=sys.stderr)
    assert not fresh.stale, (f"seed {value}: {len(fresh.stale)} stale answers; first:\n"
                             + fresh.stale[0])
    assert cache["hits"] > fresh.reads // 4, "the cache answered too few reads to prove it"
    assert cache["misses"] > 0


def test_the_cache_can_be_turned_off(box: rig.Sandbox) -> None:
    empty(box)
    with rig.running(box, "nocache", lvm={"cache": False}) as d:
        fresh = walk(box, d.socket, random.Random(seed()), 5)
        raw = rig.Raw(d.socket)
        cache = raw.request("status")["result"]["cache"]
        text = rig.ctl(None, d.socket, "status").stdout
        raw.close()
    assert not fresh.stale
    assert cache["hits"] == 0 and cache["enabled"] is False
    assert "cache:" in text and "(off)" in text


def test_status_tells_hits_and_why_a_read_missed(box: rig.Sandbox) -> None:
    empty(box)
    box.lvm("vgcreate", "-q", "vgst", box.loops[0])
    with rig.running(box, "st") as d:
        raw = rig.Raw(d.socket)
        raw.request("lvs")
        raw.request("lvs")
        first = raw.request("status")["result"]["cache"]
        assert first["hits"] >= 1 and first["last_miss"] == "not cached"
        box.lvm("lvcreate", "-q", "-n", "x", "-L", "4m", "vgst")
        assert [lv["name"] for lv in raw.request("lvs")["result"]] == ["x"]
        assert raw.request("status")["result"]["cache"]["last_miss"] == "metadata changed"
        assert "result" in raw.request("lvchange", {"lv": "vgst/x", "add_tags": ["t"]})  # ours
        assert raw.request("lvs")["result"][0]["tags"] == ["t"]
        assert raw.request("status")["result"]["cache"]["last_miss"] == "not cached"
        text = rig.ctl(None, d.socket, "status").stdout
        raw.close()
    assert "cache:" in text and "hits" in text and "last miss: not cached" in text


@pytest.fixture
def blind(box: rig.Sandbox) -> Iterator[str]:
    """A daemon whose fingerprint ignores labels and metadata-area headers."""
    d = rig.Daemon(box, "blind")
    log = open(d.log_path, "ab")
    proc = subprocess.Popen([str(rig.VENV_BIN / "python"), "-c",
                             blind_daemon_code(str(d.config_path))],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"})
    log.close()
    try:
        deadline = time.monotonic() + 10
        while not rig._answers(d.socket):
            assert proc.poll() is None and time.monotonic() < deadline, d.log()
            time.sleep(0.02)
        yield d.socket
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_check_catches_a_blind_fingerprint(box: rig.Sandbox, blind: str) -> None:
    empty(box)
    value = seed()
    fresh = walk(box, blind, random.Random(value), STEPS, stop_at_first=True)
    assert fresh.stale, f"seed {value}: a blind fingerprint went unnoticed"
    daemon_side = fresh.stale[0].split("\n  LVM:")[0]
    assert '"failed"' not in daemon_side, fresh.stale[0]  # an old answer, not an error
    print("the blind build's first stale answer:\n" + fresh.stale[0][:600], file=sys.stderr)
