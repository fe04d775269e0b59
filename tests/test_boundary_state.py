"""The privilege boundary as a state machine: random sequences of valid and hostile
calls, by a user of each role on a connection that user made, against one real
lvmsuperd on real LVM (the sandbox's loop devices).

After every step, whatever the step was:
- the protected VG (its PV, LV and tags) and the out-of-policy device (an orphan PV)
  are exactly as they were, in LVM's own report (names, UUIDs, sizes, tags, seqno) and
  byte for byte in their first MiB (label and metadata area), read as root;
- a caller without the role the call needs got ``PermissionDenied`` and LVM is exactly
  as before the step; a refusal (any error other than ``LvmFailed`` that does not say
  ``completed``) changed nothing either;
- every answer is a result or a typed error other than ``Internal``;
- the daemon still answers ``ping`` on every connection.

Hypothesis prints the failing sequence of steps (and, with ``print_blob``, the
``@reproduce_failure`` line to replay it).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, rule,
                                 run_state_machine_as_test)

import rig
from lvmsuper.client import Client
from lvmsuper.client.errors import (ERRORS_BY_NAME, AlreadyExists, Busy, ConnectionFailed,
                                    Internal, InvalidRequest, LvmFailed, LvmSuperError,
                                    NotFound, PermissionDenied)
from lvmsuper.supervisor.core.auth import Role
from lvmsuper.supervisor.core.methods import METHODS

pytestmark = pytest.mark.system

MiB = 2**20
ROOT, ADMIN, QUERY, MANAGE, OUT = "root", "lvmst-admin", "lvmst-query", "lvmst-manage", \
    "lvmst-out"
ROLES: dict[str, frozenset[str]] = {
    ROOT: frozenset({"query", "manage", "destroy", "open"}),
    ADMIN: frozenset({"query", "manage", "destroy", "open"}),
    QUERY: frozenset({"query"}),
    MANAGE: frozenset({"query", "manage"}),
    OUT: frozenset(),
}
PROTECTED = "vgprot"
VG_NAMES = ("vga", "vgb")
LV_NAMES = ("lv1", "lv2")
TAGS = ("t1", "t2", "owner:x")
READS = ("ping", "version", "status", "pvs", "vgs", "lvs", "report", "jobs")
# the roles, from the method table itself (a method added later is covered too)
DESTROY = frozenset(n for n, m in METHODS.items() if m.role == Role.DESTROY)
QUERY_METHODS = frozenset(n for n, m in METHODS.items() if m.role == Role.QUERY)
PD: frozenset[type[LvmSuperError]] = frozenset({PermissionDenied})
PD_IR: frozenset[type[LvmSuperError]] = frozenset({PermissionDenied, InvalidRequest})
# errors that say "nothing was done" (LVM did not run, or ran and changed nothing);
# LvmFailed is not among them: LVM is not transactional and may bump a seqno
REFUSALS = (PermissionDenied, InvalidRequest, NotFound, AlreadyExists, Busy)

PV_FIELDS = ("pv_name,pv_uuid,pv_size,dev_size,pe_start,pv_pe_count,pv_pe_alloc_count,"
             "pv_tags,pv_attr,vg_name,vg_uuid,vg_seqno,vg_size,vg_free,vg_extent_size,"
             "pv_count,lv_count,vg_tags,vg_attr")
LV_FIELDS = "lv_full_name,lv_uuid,vg_uuid,lv_size,seg_count,lv_tags,lv_attr,devices"


# ---- what LVM says, as root -------------------------------------------------------------

@dataclass(frozen=True)
class State:
    pvs: tuple[tuple[tuple[str, str], ...], ...]  # one row per PV, with its VG's fields
    lvs: tuple[tuple[tuple[str, str], ...], ...]  # one row per LV segment

    def rows(self, kind: str) -> list[dict[str, str]]:
        return [dict(row) for row in (self.pvs if kind == "pv" else self.lvs)]

    @property
    def vgs(self) -> list[str]:
        return sorted({r["vg_name"] for r in self.rows("pv") if r["vg_name"]})

    @property
    def lv_sizes(self) -> dict[str, int]:
        return {r["lv_full_name"]: int(r["lv_size"]) for r in self.rows("lv")}

    def vg_of(self, dev: str) -> str | None:
        for r in self.rows("pv"):
            if r["pv_name"] == dev:
                return r["vg_name"] or ""
        return None  # not a PV


def _rows(raw: list[dict[str, str]]) -> tuple[tuple[tuple[str, str], ...], ...]:
    return tuple(sorted(tuple(sorted(r.items())) for r in raw))


def snapshot(box: rig.Sandbox) -> State:
    return State(_rows(box.report("pv", PV_FIELDS)), _rows(box.report("lv", LV_FIELDS)))


def first_mib(dev: str) -> str:
    """SHA-256 of the device's first MiB (label, metadata area), read with O_DIRECT as
    LVM writes it, so no page cache stands between."""
    buf = mmap.mmap(-1, MiB)  # page-aligned, as O_DIRECT wants
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        n = os.readv(fd, [buf])
    finally:
        os.close(fd)
    return hashlib.sha256(buf[:n]).hexdigest()


# ---- the world the machine runs in (module scope) -----------------------------------------

@dataclass
class World:
    box: rig.Sandbox
    daemon: rig.Daemon
    prot_dev: str         # the protected VG's PV (allowed by [policy] devices!)
    out_dev: str          # not in [policy] devices: an orphan PV
    free_devs: list[str]  # in policy: where the state evolves
    link_dir: str         # root-owned, under /dev
    shm_link: str         # world-writable /dev/shm -> out_dev
    links: dict[str, str] = field(default_factory=dict)  # name -> path in link_dir
    baseline: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(sandbox: rig.Sandbox, users: object) -> Iterator[World]:
    box = sandbox
    prot_dev, free1, free2, out_dev = box.loops[:4]
    link_dir = f"/dev/lvmsuper-state-{os.getpid()}"
    shm_link = f"/dev/shm/lvmsuper-state-{os.getpid()}"
    os.mkdir(link_dir, 0o755)
    daemon: rig.Daemon | None = None
    try:
        links = {"out": out_dev, "free": free1, "prot": prot_dev}
        for name, target in links.items():
            os.symlink(target, f"{link_dir}/{name}")
        os.symlink(out_dev, shm_link)
        box.wipe()
        daemon = rig.Daemon(box, "state", policy={
            "devices": [prot_dev, free1, free2], "protected_vgs": [PROTECTED]}).start()
        yield World(box, daemon, prot_dev, out_dev, [free1, free2], link_dir, shm_link,
                    {k: f"{link_dir}/{k}" for k in links})
    finally:
        try:
            if daemon is not None:
                daemon.stop()
        finally:
            if os.path.lexists(shm_link):
                os.unlink(shm_link)
            shutil.rmtree(link_dir, ignore_errors=True)
            box.wipe()


# ---- one step's record --------------------------------------------------------------------

@dataclass
class Step:
    user: str
    method: str
    params: dict[str, Any]
    needs: str                         # the role this call needs
    result: Any = None
    error: LvmSuperError | None = None
    allowed: frozenset[type[LvmSuperError]] | None = None  # hostile: only these errors

    def __str__(self) -> str:
        got = f"{type(self.error).__name__}: {self.error.message}" if self.error else \
            f"result {str(self.result)[:200]}"
        return f"{self.user} {self.method} {self.params} -> {got}"


def role_needed(method: str, params: dict[str, Any], state: State) -> str:
    """The role a call needs: the method table's, or destroy for what destroys data
    (``wipe=true``, a shrink with ``force=true`` of an existing LV)."""
    if method in QUERY_METHODS:
        return "query"
    if METHODS[method].role == Role.OPEN:
        return "open"
    if method in DESTROY or params.get("wipe") is True:
        return "destroy"
    if method == "lvresize" and params.get("force") is True:
        size = state.lv_sizes.get(str(params.get("lv")))
        if size is not None and isinstance(params.get("size"), int) and params["size"] < size:
            return "destroy"
    return "manage"


# ---- the machine -----------------------------------------------------------------------------

USERS_ALL = st.sampled_from([ROOT, ADMIN, QUERY, MANAGE, OUT])
# valid changes mostly by those who may make them, so that state evolves
USERS_VALID = st.sampled_from([ADMIN, ADMIN, ROOT, MANAGE, MANAGE, QUERY, OUT])


class BoundaryMachine(RuleBasedStateMachine):
    world: World  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.clients: dict[str, Client] = {}
        self.state: State | None = None
        self.step: Step | None = None
        self.jobs: list[tuple[str, str]] = []  # (job id, owner)

    # ---- set-up and tear-down ----------------------------------------------------------

    @initialize()
    def start(self) -> None:
        w = self.world
        self.clients = {u: self._connect(u) for u in ROLES}
        self._settle()
        if not w.baseline or self._protected() != w.baseline:
            self._rebuild()  # first run, or a failed example changed them: anew
        else:
            self._reset_free()
        self.state = snapshot(w.box)

    def _connect(self, user: str) -> Client:
        c: Client = Client(self.world.daemon.socket) if user == ROOT else \
            rig.client_as(user, self.world.daemon.socket)
        c.timeout = 120
        c.connect()
        assert c._sock is not None
        c._sock.settimeout(120)  # a hung daemon fails the test instead of hanging it
        return c

    def _rebuild(self) -> None:
        w = self.world
        w.box.wipe()
        w.box.lvm("pvcreate", w.prot_dev, w.out_dev)
        w.box.lvm("vgcreate", "--addtag", "keep_me", "--addtag", "owner:root", PROTECTED,
                  w.prot_dev)
        w.box.lvm("lvcreate", "-an", "-Zn", "-n", "keep", "-L", "8m", "--addtag", "data",
                  PROTECTED)
        w.baseline.clear()
        w.baseline.update(self._protected())
        assert w.baseline["vg"] and w.baseline["lv"] and len(w.baseline["pv"]) == 2

    def _reset_free(self) -> None:
        """Back to the protected VG and the orphan only (what the last example made goes)."""
        w = self.world
        state = snapshot(w.box)
        for vg in state.vgs:
            if vg != PROTECTED:
                w.box.lvm("vgremove", "--force", "--force", "--yes", vg, check=False)
        pvs = [d for d in w.free_devs if state.vg_of(d) is not None]
        if pvs:
            w.box.lvm("pvremove", "--force", "--force", "--yes", *pvs, check=False)
        left = snapshot(w.box)
        assert left.vgs == [PROTECTED] and all(left.vg_of(d) is None for d in w.free_devs), \
            f"the sandbox could not be reset: {left}"

    def teardown(self) -> None:
        for c in self.clients.values():
            c.close()

    # ---- what must hold ----------------------------------------------------------------

    def _protected(self) -> dict[str, Any]:
        """The protected VG and the out-of-policy device, as LVM and the disks say."""
        w = self.world
        state = snapshot(w.box)
        uuids = {r["vg_uuid"] for r in state.rows("pv") if r["vg_name"] == PROTECTED}
        uuids |= {w.baseline.get("uuid", "")}
        pv = [r for r in state.rows("pv") if r["pv_name"] in (w.prot_dev, w.out_dev)
              or (r["vg_uuid"] in uuids and r["vg_uuid"]) or r["vg_name"] == PROTECTED]
        lv = [r for r in state.rows("lv") if r["vg_uuid"] in uuids
              or r["lv_full_name"].startswith(PROTECTED + "/")]
        vg = sorted({(r["vg_name"], r["vg_uuid"], r["vg_seqno"], r["vg_tags"], r["vg_size"])
                     for r in pv if r["vg_uuid"]})
        return {"pv": pv, "lv": lv, "vg": vg,
                "uuid": next((r["vg_uuid"] for r in pv if r["vg_name"] == PROTECTED), ""),
                "disk": {d: first_mib(d) for d in (w.prot_dev, w.out_dev)}}

    @invariant()
    def the_boundary_holds(self) -> None:
        if self.state is None:
            return
        w = self.world
        self._settle()  # a change answered with a job has finished
        before, after = self.state, snapshot(w.box)
        step, self.step = self.step, None
        assert self._protected() == w.baseline, f"outside policy changed after: {step}"
        if step is not None:
            if step.error is not None:
                kind = type(step.error)
                assert kind in ERRORS_BY_NAME.values() and kind not in (
                    Internal, ConnectionFailed), f"untyped or internal: {step}"
                if isinstance(step.error, REFUSALS) and not step.error.data.get("completed"):
                    assert after == before, f"a refusal changed LVM: {step}"
            if step.needs not in ROLES[step.user]:
                assert isinstance(step.error, PermissionDenied), \
                    f"needs {step.needs}, yet: {step}"
                assert after == before, f"a caller without the role changed LVM: {step}"
            elif step.allowed is not None:
                assert step.error is not None and type(step.error) in step.allowed, \
                    f"hostile call not refused as expected ({step.allowed}): {step}"
        for user, c in self.clients.items():
            if "query" in ROLES[user]:
                assert c.request("ping", {}) == {}, user
            else:
                try:
                    c.request("ping", {})
                    raise AssertionError(f"{user} may ping without the query role")
                except PermissionDenied:
                    pass
        self.state = after

    def _settle(self) -> None:
        deadline = time.monotonic() + 60
        root = self.clients[ROOT]
        while any(j["state"] == "running" for j in root.request("jobs", {})):
            assert time.monotonic() < deadline, "a job ran for over 60 s"
            time.sleep(0.05)

    # ---- calling ----------------------------------------------------------------------

    def _call(self, user: str, method: str, params: dict[str, Any],
              allowed: frozenset[type[LvmSuperError]] | None = None) -> Step:
        assert self.state is not None
        step = Step(user, method, params, role_needed(method, params, self.state),
                    allowed=allowed)
        try:
            step.result = self.clients[user].request(method, params)
        except LvmSuperError as exc:
            step.error = exc
        if isinstance(step.result, dict) and set(step.result) == {"job"}:
            self.jobs.append((str(step.result["job"]), user))
        self.step = step
        return step

    # ---- targets, from what LVM reports now ------------------------------------------------

    def _vgs(self) -> list[str]:
        assert self.state is not None
        return sorted({*(v for v in self.state.vgs if v != PROTECTED), *VG_NAMES})

    def _lvs(self) -> list[str]:
        assert self.state is not None
        have = [n for n in self.state.lv_sizes if not n.startswith(PROTECTED + "/")]
        return sorted({*have, *(f"{vg}/{lv}" for vg in VG_NAMES[:1] for lv in LV_NAMES)})

    def _dev(self, data: st.DataObject) -> str:
        """An in-policy device, by its path or through the root-owned link to it."""
        w = self.world
        return data.draw(st.sampled_from([*w.free_devs, w.links["free"]]))

    def _devs(self, data: st.DataObject) -> list[str]:
        w = self.world
        chosen = data.draw(st.sampled_from([[0], [1], [0, 1], [1, 0]]))
        first = data.draw(st.sampled_from([w.free_devs[0], w.links["free"]]))
        return [first if i == 0 else w.free_devs[1] for i in chosen]

    def _tags(self, data: st.DataObject) -> dict[str, Any]:
        key = data.draw(st.sampled_from(["add_tags", "del_tags"]))
        return {key: data.draw(st.lists(st.sampled_from(TAGS), min_size=1, max_size=2,
                                        unique=True))}

    def _valid(self, method: str, data: st.DataObject) -> dict[str, Any]:
        """Parameters for ``method`` within policy (the objects may or may not exist)."""
        w = self.world

        def vg() -> str:
            return data.draw(st.sampled_from(self._vgs()))

        def lv() -> str:
            return data.draw(st.sampled_from(self._lvs()))

        def size() -> int:
            return data.draw(st.sampled_from([4 * MiB, 8 * MiB, 12 * MiB]))

        p: dict[str, Any]
        if method == "pvcreate":
            p = {"devices": self._devs(data)}
        elif method == "pvremove":
            p = {"devices": self._devs(data)}
        elif method == "pvresize":
            p = {"device": self._dev(data)}
            if data.draw(st.booleans()):
                p["size"] = data.draw(st.sampled_from([32 * MiB, 48 * MiB]))
        elif method == "pvchange":
            p = {"device": self._dev(data)}
            p.update(self._tags(data) if data.draw(st.booleans()) else
                     {"allocatable": data.draw(st.booleans())})
        elif method == "pvmove":
            p = {"source": self._dev(data)}
        elif method == "vgcreate":
            p = {"name": data.draw(st.sampled_from(VG_NAMES)), "devices": self._devs(data)}
            if data.draw(st.booleans()):
                p["tags"] = [data.draw(st.sampled_from(TAGS))]
        elif method == "vgextend":
            p = {"vg": vg(), "devices": [self._dev(data)]}
        elif method == "vgreduce":
            p = {"vg": vg(), "devices": [data.draw(st.sampled_from(w.free_devs))]}
        elif method == "vgremove":
            p = {"vg": vg(), "force": data.draw(st.booleans())}
        elif method == "vgrename":
            p = {"vg": vg(), "new_name": data.draw(st.sampled_from(VG_NAMES))}
        elif method == "vgchange":
            p = {"vg": vg(), **self._tags(data)}
        elif method == "lvcreate":
            p = {"vg": vg(), "name": data.draw(st.sampled_from(LV_NAMES)), "size": size()}
            if data.draw(st.booleans()):
                p["tags"] = [data.draw(st.sampled_from(TAGS))]
        elif method == "lvremove":
            p = {"lv": lv()}
        elif method == "lvrename":
            p = {"lv": lv(), "new_name": data.draw(st.sampled_from(LV_NAMES))}
        elif method == "lvresize":
            p = {"lv": lv(), "size": size()}
            if data.draw(st.booleans()):
                p["force"] = True
        elif method == "lvchange":
            p = {"lv": lv(), **self._tags(data)}
        elif method == "lv_open":
            p = {"lv": lv(), "mode": data.draw(st.sampled_from(["r", "rw"]))}
        elif method in ("vgs", "lvs", "report"):
            p = {} if data.draw(st.booleans()) else (
                {"vg": vg()} if method != "vgs" else {"names": [vg()]})
        elif method == "pvs":
            p = {} if data.draw(st.booleans()) else {"names": [self._dev(data)]}
        elif method == "job_status":
            p = {"job": self._job(data)}
        elif method == "job_cancel":
            p = {"job": self._job(data)}
        else:
            p = {}
        if method in ("pvcreate", "vgcreate", "vgextend") and data.draw(st.booleans()):
            p["wipe"] = True
        if METHODS[method].change and method not in ("pvmove", "job_cancel") and \
                data.draw(st.integers(0, 3)) == 0:
            p["wait"] = 0  # answered with a job; the change runs on
        return p

    def _job(self, data: st.DataObject) -> str:
        known = [j for j, _ in self.jobs]
        return data.draw(st.sampled_from([*known, "1-999999"]))

    # ---- rules: the state evolves ------------------------------------------------------------

    # creations weigh more, so that there is something to change, rename and remove
    CHANGES = ("vgcreate", "vgcreate", "vgcreate", "lvcreate", "lvcreate", "lvcreate",
               "pvcreate", "pvcreate", "pvremove", "pvresize", "pvchange", "pvmove",
               "vgextend", "vgreduce", "vgremove", "vgrename", "vgchange", "lvremove",
               "lvrename", "lvresize", "lvchange")

    @rule(user=USERS_VALID, method=st.sampled_from(CHANGES), data=st.data())
    def change_within_policy(self, user: str, method: str, data: st.DataObject) -> None:
        self._call(user, method, self._valid(method, data))

    @rule(user=USERS_ALL, method=st.sampled_from([*READS, "job_status"]), data=st.data())
    def read(self, user: str, method: str, data: st.DataObject) -> None:
        step = self._call(user, method, self._valid(method, data))
        if "query" in ROLES[user] and method in READS and "names" not in step.params \
                and "vg" not in step.params:
            assert step.error is None, str(step)

    @rule(user=USERS_ALL, data=st.data())
    def job_cancel(self, user: str, data: st.DataObject) -> None:
        job = self._job(data)
        owner = dict(self.jobs).get(job)
        step = self._call(user, "job_cancel", {"job": job})
        if "manage" in ROLES[user] and owner is not None and user not in (owner, ROOT):
            assert isinstance(step.error, PermissionDenied), f"another's job: {step}"
        if job == "1-999999" and "manage" in ROLES[user]:
            assert isinstance(step.error, NotFound), str(step)

    # ---- rules: callers without the role -------------------------------------------------------

    @rule(user=st.sampled_from([OUT, QUERY]), method=st.sampled_from(sorted(METHODS)),
          data=st.data())
    def any_method_without_the_role(self, user: str, method: str, data: st.DataObject) -> None:
        """Every method of the table; parameters valid, or none at all (the role is
        checked before them)."""
        params = self._valid(method, data) if data.draw(st.booleans()) else {}
        self._call(user, method, params)

    @rule(method=st.sampled_from(["pvremove", "vgremove", "vgreduce", "lvremove",
                                  "lvresize", "pvcreate", "vgcreate", "vgextend"]),
          data=st.data())
    def manage_user_destroys(self, method: str, data: st.DataObject) -> None:
        """What destroys data, by a user with manage but not destroy: refused, on objects
        that exist where there are some."""
        assert self.state is not None
        params = self._valid(method, data)
        params.pop("wait", None)
        if method == "lvresize":
            have = [n for n in self.state.lv_sizes if not n.startswith(PROTECTED + "/")]
            if have:
                lv = data.draw(st.sampled_from(have))
                params = {"lv": lv, "size": 4 * MiB, "force": True}
                if self.state.lv_sizes[lv] <= 4 * MiB:
                    params["size"] = MiB  # still a shrink (LVM would round it up)
        elif method in ("pvcreate", "vgcreate", "vgextend"):
            params["wipe"] = True
        step = self._call(MANAGE, method, params)
        if step.needs == "destroy":
            assert isinstance(step.error, PermissionDenied), str(step)

    # ---- rules: hostile, by anyone (root and admin included) ------------------------------------

    def _hostile(self) -> list[tuple[str, dict[str, Any], frozenset[type[LvmSuperError]]]]:
        w = self.world
        assert self.state is not None
        uuid = w.baseline["uuid"]
        free_vg = next((v for v in self.state.vgs if v != PROTECTED), VG_NAMES[0])
        free_pv = w.free_devs[0]
        prot_lv = f"{PROTECTED}/keep"
        cases: list[tuple[str, dict[str, Any], frozenset[type[LvmSuperError]]]] = [
            # the protected VG by its name
            ("vgchange", {"vg": PROTECTED, "add_tags": ["mine"]}, PD),
            ("vgchange", {"vg": PROTECTED, "del_tags": ["keep_me"]}, PD),
            ("vgchange", {"vg": PROTECTED, "activate": False}, PD),
            ("vgrename", {"vg": PROTECTED, "new_name": "vgstolen"}, PD),
            ("vgremove", {"vg": PROTECTED, "force": True}, PD),
            ("vgreduce", {"vg": PROTECTED, "missing": True}, PD),
            ("vgreduce", {"vg": PROTECTED, "devices": [w.prot_dev]}, PD),
            ("vgextend", {"vg": PROTECTED, "devices": [free_pv]}, PD),
            ("lvcreate", {"vg": PROTECTED, "name": "evil", "size": 4 * MiB}, PD),
            ("lvresize", {"lv": prot_lv, "size": 16 * MiB}, PD),
            ("lvresize", {"lv": prot_lv, "size": 4 * MiB, "force": True}, PD),
            ("lvremove", {"lv": prot_lv}, PD),
            ("lvrename", {"lv": prot_lv, "new_name": "gone"}, PD),
            ("lvchange", {"lv": prot_lv, "add_tags": ["mine"]}, PD),
            ("lvchange", {"lv": prot_lv, "permission": "r"}, PD),
            # onto it: its name as a new name
            ("vgcreate", {"name": PROTECTED, "devices": [free_pv]}, PD),
            ("vgrename", {"vg": free_vg, "new_name": PROTECTED}, PD),
            # its PV, directly and through a root-owned link
            ("pvchange", {"device": w.prot_dev, "add_tags": ["mine"]}, PD),
            ("pvchange", {"device": w.links["prot"], "allocatable": False}, PD),
            ("pvresize", {"device": w.prot_dev}, PD),
            ("pvresize", {"device": w.prot_dev, "size": 32 * MiB}, PD),
            ("pvmove", {"source": w.prot_dev}, PD),
            ("pvmove", {"source": free_pv, "destination": w.prot_dev}, PD),
            ("pvremove", {"devices": [w.links["prot"]]}, PD),
            ("vgreduce", {"vg": free_vg, "devices": [w.prot_dev]}, PD),
            ("vgcreate", {"name": "vgevil", "devices": [w.prot_dev]}, PD),
            ("vgextend", {"vg": free_vg, "devices": [w.links["prot"]], "wipe": True}, PD),
            ("pvcreate", {"devices": [w.prot_dev]}, frozenset({AlreadyExists, PermissionDenied})),
            # its PV as an allocation target of another VG's LV: LVM refuses it
            ("lvcreate", {"vg": free_vg, "name": "evil", "size": 4 * MiB,
                          "devices": [w.prot_dev]},
             frozenset({LvmFailed, NotFound, PermissionDenied})),
        ]
        for alias in (uuid, uuid.replace("-", "")):  # by UUID, with and without dashes
            cases += [
                ("vgchange", {"vg": alias, "add_tags": ["mine"]}, PD_IR),
                ("vgrename", {"vg": alias, "new_name": "vgstolen"}, PD_IR),
                ("vgremove", {"vg": alias, "force": True}, PD_IR),
                ("vgextend", {"vg": alias, "devices": [free_pv]}, PD_IR),
                ("vgreduce", {"vg": alias, "missing": True}, PD_IR),
                ("lvcreate", {"vg": alias, "name": "evil", "size": 4 * MiB}, PD_IR),
                ("lvchange", {"lv": f"{alias}/keep", "add_tags": ["mine"]}, PD_IR),
                ("lvremove", {"lv": f"{alias}/keep"}, PD_IR),
                ("lvresize", {"lv": f"{alias}/keep", "size": 16 * MiB}, PD_IR),
                ("lvrename", {"lv": f"{alias}/keep", "new_name": "gone"}, PD_IR),
                ("vgrename", {"vg": free_vg, "new_name": alias}, PD_IR),
            ]
        # the out-of-policy device: directly, through /dev/shm, through a root-owned link
        for dev in (w.out_dev, w.shm_link, w.links["out"]):
            cases += [
                ("pvcreate", {"devices": [dev]}, PD),
                ("pvcreate", {"devices": [free_pv, dev], "wipe": True}, PD),
                ("vgcreate", {"name": "vgevil", "devices": [dev]}, PD),
                ("vgextend", {"vg": free_vg, "devices": [dev]}, PD),
                ("pvchange", {"device": dev, "add_tags": ["mine"]}, PD),
                ("pvresize", {"device": dev, "size": 32 * MiB}, PD),
                ("pvremove", {"devices": [dev]}, PD),
                ("pvmove", {"source": dev}, PD),
                ("vgreduce", {"vg": free_vg, "devices": [dev]}, PD),
            ]
        return cases

    @rule(user=USERS_ALL, data=st.data())
    def hostile(self, user: str, data: st.DataObject) -> None:
        method, params, allowed = data.draw(st.sampled_from(self._hostile()))
        self._call(user, method, params, allowed)


def test_the_boundary_holds_whatever_the_sequence(world: World) -> None:
    BoundaryMachine.world = world
    run_state_machine_as_test(BoundaryMachine, settings=settings(
        max_examples=int(os.environ.get("LVMSUPER_STATE_EXAMPLES", "25")),
        stateful_step_count=15, deadline=None, derandomize=False, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                               HealthCheck.data_too_large]))
