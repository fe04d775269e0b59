"""Delegation scoped to VGs (``[[access.scope]]``), against a caller who tries to get out.

Real lvmsuperd on real LVM (the sandbox's loop devices), real unprivileged users on
connections they made. The scoped user (lvmst-manage: its groups are in no global
``[access]`` list here) has every role, but only on VGs named ``sd-*`` or tagged
``DOMAIN``; lvmst-admin is unscoped (a global list). The world:

- ``sd-a`` (in scope by name) on loop0 with LV ``lv1``;
- ``dom1`` (in scope by its tag ``DOMAIN``) on loop1 with LV ``dl``;
- ``other`` (out of scope, tagged ``keep``) on loop2 with LV ``olv``;
- loop3: free, allowed by ``[policy] devices``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import rig
from lvmsuper.client import Client
from lvmsuper.client.errors import InvalidRequest, LvmSuperError, NotFound, PermissionDenied
from lvmsuper.supervisor.core.auth import Role
from lvmsuper.supervisor.core.methods import METHODS

pytestmark = pytest.mark.system

MiB = 2**20
SCOPED, ADMIN = "lvmst-manage", "lvmst-admin"
TAG = "DOMAIN"
ALL_ROLES = ["query", "manage", "destroy", "open"]
# every group of the test users is global only through GROUP_ALL
ACCESS = {"query": [rig.GROUP_ALL], "manage": [rig.GROUP_ALL], "destroy": [rig.GROUP_ALL],
          "open": [rig.GROUP_ALL]}


def scope_toml(group: str = rig.GROUP_MANAGE, roles: list[str] | None = None,
               vgs: list[str] | None = None, tags: list[str] | None = None) -> str:
    return ("\n[[access.scope]]\n" f"group = {json.dumps(group)}\n"
            f"roles = {json.dumps(roles or ALL_ROLES)}\n"
            f"vgs = {json.dumps(['sd-*'] if vgs is None else vgs)}\n"
            f"vg_tags = {json.dumps([TAG] if tags is None else tags)}\n")


@contextlib.contextmanager
def scoped_daemon(sandbox: rig.Sandbox, name: str, scopes: str | None = None,
                  **sections: dict[str, Any]) -> Iterator[rig.Daemon]:
    d = rig.Daemon(sandbox, name, access=ACCESS, **sections)
    with open(d.config_path, "a") as fh:
        fh.write(scope_toml() if scopes is None else scopes)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def as_user(user: str, d: rig.Daemon) -> Client:
    return rig.client_as(user, d.socket)  # type: ignore[no-any-return]


def build_world(box: rig.Sandbox) -> None:
    l0, l1, l2, _ = box.loops
    box.lvm("pvcreate", l0, l1, l2)
    box.lvm("vgcreate", "sd-a", l0)
    box.lvm("vgcreate", "--addtag", TAG, "dom1", l1)
    box.lvm("vgcreate", "--addtag", "keep", "other", l2)
    for vg, lv in (("sd-a", "lv1"), ("dom1", "dl"), ("other", "olv")):
        box.lvm("lvcreate", "-an", "-Zn", "-n", lv, "-L", "8m", vg)


def full_state(box: rig.Sandbox) -> dict[str, Any]:
    """Everything LVM says of the sandbox, as root (one row per PV, VG and LV
    segment, with seqnos, UUIDs, sizes, tags and attributes)."""
    return {"pv": box.report("pv", "pv_name,pv_uuid,vg_name,pv_size,pv_free,pv_tags,pv_attr"),
            "vg": box.report("vg", "vg_name,vg_uuid,vg_seqno,vg_tags,vg_attr,vg_free"),
            "lv": box.report("lv", "lv_full_name,lv_uuid,lv_size,lv_tags,lv_attr,devices")}


def outcome(c: Client, method: str, params: dict[str, Any]) -> Any:
    try:
        return c.call(method, **params)
    except LvmSuperError as exc:
        return exc


# ---- every change method on objects outside the scope ------------------------------------

def hostile_cases(box: rig.Sandbox, job: str) -> dict[str, list[dict[str, Any]]]:
    """Per method, calls that reach outside the scope (``sd-*`` or tag DOMAIN)."""
    l0, l1, l2, l3 = box.loops
    return {
        "pvcreate": [{"devices": [l2]}],                         # a PV of "other"
        "pvremove": [{"devices": [l2]}],
        "pvresize": [{"device": l2}],
        "pvchange": [{"device": l2, "add_tags": ["mine"]},
                     {"device": l2, "allocatable": False}],
        "pvmove": [{"source": l2}, {"source": l0, "destination": l2}],
        "vgcreate": [{"name": "outside", "devices": [l3]},      # a name outside
                     {"name": "sd-x", "devices": [l2]},         # from another VG's PV
                     {"name": "notag", "devices": [l3], "tags": ["keep"]}],
        "vgremove": [{"vg": "other", "force": True}],
        "vgextend": [{"vg": "other", "devices": [l3]},
                     {"vg": "sd-a", "devices": [l2]}],           # another VG's PV
        "vgreduce": [{"vg": "other", "devices": [l2]}, {"vg": "other", "missing": True}],
        "vgrename": [{"vg": "other", "new_name": "sd-stolen"},  # into the scope
                     {"vg": "sd-a", "new_name": "escaped"}],     # out of it
        "vgchange": [{"vg": "other", "add_tags": [TAG]},          # tag itself into scope
                     {"vg": "other", "activate": False},
                     {"vg": "dom1", "del_tags": [TAG]},           # tag itself out of it
                     {"vg": "dom1", "del_tags": [TAG], "add_tags": ["x"]}],
        "lvcreate": [{"vg": "other", "name": "x", "size": 4 * MiB},
                     {"vg": "other", "name": "snap", "type": "snapshot", "origin": "olv",
                      "size": 4 * MiB},
                     {"vg": "sd-a", "name": "x", "size": 4 * MiB, "devices": [l2]}],
        "lvrename": [{"lv": "other/olv", "new_name": "x"}],
        "lvchange": [{"lv": "other/olv", "add_tags": ["x"]},
                     {"lvs": ["other/olv"], "activate": False},
                     {"lv": "other/olv", "permission": "r"}],
        "lvremove": [{"lv": "other/olv"}, {"lvs": ["other/olv"]}],
        "lvresize": [{"lv": "other/olv", "size": 16 * MiB},
                     {"lv": "other/olv", "size": 4 * MiB, "force": True}],
        "job_cancel": [{"job": job}],                            # root's job on "other"
        # out of scope comes before "not active" (no LV is active on the host tier)
        "lv_open": [{"lv": "other/olv", "mode": "r"},
                    {"lv": "other/olv", "mode": "rw", "shared": True}],
        "lockstart": [{"vg": "other"}, {}],                      # {}: every shared VG
        "lockstop": [{"vg": "other"}, {}],
    }


def test_every_change_method_outside_the_scope_is_refused_and_changes_nothing(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """Every method that needs a role beyond ``query`` (from the method table: a method
    added later fails here until it has a hostile case), called by the scoped user on
    objects outside its scope: PermissionDenied, and LVM's whole report unchanged."""
    build_world(lvm)
    with scoped_daemon(sandbox, "hostile") as d:
        with Client(d.socket) as root:
            job = root.call("vgchange", vg="other", add_tags=["rootjob"], wait=30)
            jobs = [j for j in root.jobs() if j.method == "vgchange"]
            assert jobs, "root's change left a job"
        cases = hostile_cases(lvm, jobs[0].id)
        beyond_query = {n for n, m in METHODS.items() if m.role != Role.QUERY}
        assert beyond_query <= set(cases), \
            f"no hostile case for {sorted(beyond_query - set(cases))}: add one"
        before = full_state(lvm)
        got: dict[str, list[Any]] = {}
        with as_user(SCOPED, d) as c:
            for method, calls in cases.items():
                got[method] = [outcome(c, method, params) for params in calls]
            assert c.ping() == {}
        wrong = {m: [o if not isinstance(o, LvmSuperError) else f"{o.name}: {o.message}"
                     for o in outs if not isinstance(o, PermissionDenied)]
                 for m, outs in got.items()}
        assert not any(wrong.values()), wrong
        assert full_state(lvm) == before
        assert job is not None
        # the unscoped user, on the same daemon, still changes what it likes
        with as_user(ADMIN, d) as admin:
            assert sorted(admin.vgchange("other", add_tags=["admin"]).tags) == \
                ["admin", "keep", "rootjob"]
            assert admin.lvcreate("other", "byadmin", size=4 * MiB).vg == "other"
            assert admin.vgrename("sd-a", "escaped").name == "escaped"


def test_names_that_would_reach_outside_are_refused(sandbox: rig.Sandbox, users: object,
                                                    lvm: rig.Sandbox) -> None:
    """A VG named by its UUID, a snapshot origin in another VG: refused as invalid
    before any policy (LVM would resolve them); nothing changed."""
    build_world(lvm)
    uuid = lvm.report("vg", "vg_uuid", "other")[0]["vg_uuid"]
    with scoped_daemon(sandbox, "names") as d:
        before = full_state(lvm)
        with as_user(SCOPED, d) as c:
            for method, params in [
                    ("vgrename", {"vg": uuid, "new_name": "sd-stolen"}),
                    ("vgrename", {"vg": uuid.replace("-", ""), "new_name": "sd-stolen"}),
                    ("vgchange", {"vg": uuid, "add_tags": [TAG]}),
                    ("vgremove", {"vg": uuid, "force": True}),
                    ("lvcreate", {"vg": "sd-a", "name": "snap", "type": "snapshot",
                                  "origin": "other/olv", "size": 4 * MiB}),
                    ("lvcreate", {"vg": "sd-a", "name": "snap", "type": "snapshot",
                                  "origin": "../other/olv", "size": 4 * MiB})]:
                assert isinstance(outcome(c, method, params), InvalidRequest), (method, params)
        assert full_state(lvm) == before


def test_inside_the_scope_the_scoped_user_manages_its_vgs(sandbox: rig.Sandbox, users: object,
                                                          lvm: rig.Sandbox) -> None:
    """What the scope allows works: a VG made inside it by name or by tag, LVs, a rename
    within it, tags changed while the VG stays inside (snapshots need device-mapper:
    the host has none)."""
    build_world(lvm)
    l3 = lvm.loops[3]
    with scoped_daemon(sandbox, "inside") as d:
        with as_user(SCOPED, d) as c:
            assert c.pvcreate([l3])[0].name == l3        # [policy] devices: allowed
            assert c.vgcreate("sd-new", [l3]).name == "sd-new"
            assert c.vgrename("sd-new", "sd-renamed").name == "sd-renamed"
            assert c.vgremove("sd-renamed") == {"removed": ["sd-renamed"]}
            assert c.vgcreate("tagged", [l3], tags=[TAG]).tags == [TAG]
            assert c.vgrename("tagged", "still-tagged").name == "still-tagged"  # tag goes along
            assert sorted(c.vgchange("sd-a", add_tags=["x"]).tags) == ["x"]
            assert c.vgchange("sd-a", del_tags=["x"]).tags == []   # its name keeps it in
            assert c.lvcreate("dom1", "new", size=4 * MiB).name == "new"
            assert c.lvremove("dom1/new") == {"removed": ["dom1/new"]}
    assert {r["vg_name"] for r in lvm.report("vg", "vg_name")} == \
        {"sd-a", "dom1", "other", "still-tagged"}


# ---- reads ---------------------------------------------------------------------------------

def test_reads_show_only_the_scope(sandbox: rig.Sandbox, users: object,
                                   lvm: rig.Sandbox) -> None:
    """pvs, vgs, lvs, report, vgck, jobs, job_status, status: the scoped user sees its
    VGs (by name and by tag) with their PVs and LVs, and the orphan PVs it may use; a VG
    outside named in a read is NotFound, as one that does not exist; the unscoped user
    sees everything, as before."""
    build_world(lvm)
    l0, l1, l2, l3 = lvm.loops
    lvm.lvm("pvcreate", l3)  # an orphan PV on a device [policy] devices allows
    with scoped_daemon(sandbox, "reads") as d:
        with Client(d.socket) as root:
            job = root.call("vgchange", vg="other", add_tags=["rootjob"], wait=30)
            assert job is not None
            root_job = [j for j in root.jobs() if j.method == "vgchange"][0].id
            with pytest.raises(LvmSuperError):  # an error that names "other"
                root.lvcreate("other", "olv", size=4 * MiB)
        with as_user(SCOPED, d) as c:
            assert sorted(v.name for v in c.vgs()) == ["dom1", "sd-a"]
            assert sorted(p.name for p in c.pvs()) == sorted([l0, l1, l3])
            assert sorted(lv.full_name for lv in c.lvs()) == ["dom1/dl", "sd-a/lv1"]
            report = c.report()
            assert sorted(v.name for v in report["vgs"]) == ["dom1", "sd-a"]
            assert sorted(p.name for p in report["pvs"]) == sorted([l0, l1, l3])
            assert sorted(lv.full_name for lv in report["lvs"]) == ["dom1/dl", "sd-a/lv1"]
            assert c.lvs(vg="dom1")[0].full_name == "dom1/dl"
            assert [p.name for p in c.pvs(vg="sd-a")] == [l0]
            assert c.vgck("dom1")["ok"] is True
            for method, params in [("vgs", {"names": ["other"]}), ("lvs", {"vg": "other"}),
                                   ("lvs", {"names": ["other/olv"]}), ("pvs", {"vg": "other"}),
                                   ("pvs", {"names": [l2]}), ("report", {"vg": "other"}),
                                   ("vgck", {"vg": "other"}), ("job_status", {"job": root_job}),
                                   ("vgs", {"names": ["nosuchvg"]}),
                                   ("lvs", {"vg": "nosuchvg"})]:
                assert isinstance(outcome(c, method, params), NotFound), (method, params)
            assert root_job not in [j.id for j in c.jobs()]
            assert c.status()["last_errors"] == []
            seen = json.dumps([c.call(m) for m in ("pvs", "vgs", "lvs", "report", "jobs",
                                                   "status")], default=str)
        assert "other" not in seen and "olv" not in seen and l2 not in seen
        with as_user(ADMIN, d) as admin:  # unscoped: everything, as before
            assert sorted(v.name for v in admin.vgs()) == ["dom1", "other", "sd-a"]
            assert len(admin.pvs()) == 4 and len(admin.lvs()) == 3
            assert admin.vgck("other")["ok"] is True
            assert root_job in [j.id for j in admin.jobs()]
            assert admin.status()["last_errors"]


def test_a_scoped_read_runs_lvm_once(sandbox: rig.Sandbox, users: object,
                                     lvm: rig.Sandbox) -> None:
    """Filtering costs no LVM run: a scoped pvs, vgs, lvs and report run one LVM
    command each, as the same unscoped read does (the read cache off: with it, the
    second caller's reads would run none)."""
    build_world(lvm)
    fake = rig.fake_lvm(sandbox, "once")
    with scoped_daemon(sandbox, "once", lvm={"binary": fake, "cache": False}) as d:
        for user in (SCOPED, ADMIN):
            with as_user(user, d) as c:
                for method in ("pvs", "vgs", "lvs", "report"):
                    start = len(rig.calls(sandbox, "once"))
                    c.call(method)
                    ran = [x for x in rig.calls(sandbox, "once")[start:] if x[0] == "start"]
                    assert len(ran) == 1, (user, method, ran)


# ---- the VG's tags change while the change waits for its lock --------------------------------

def test_a_tag_removed_while_the_change_waits_is_seen_under_the_lock(
        sandbox: rig.Sandbox, users: object, lvm: rig.Sandbox) -> None:
    """dom1 is in scope by its tag when the scoped lvcreate is admitted; while it waits
    for dom1's lock (held by root's slow change), the tag goes (LVM run directly): under
    the lock the change is refused, PermissionDenied, and nothing of it is made."""
    build_world(lvm)
    slow = rig.fake_lvm(sandbox, "retag", slow={"lvcreate": 3})
    with scoped_daemon(sandbox, "retag", lvm={"binary": slow}) as d:
        with Client(d.socket) as root, as_user(SCOPED, d) as c:
            first = threading.Thread(target=lambda: root.lvcreate("dom1", "rootlv",
                                                                  size=4 * MiB))
            first.start()
            _until(lambda: ("start", "lvcreate") in
                   [x[:2] for x in rig.calls(sandbox, "retag")])
            result: dict[str, Any] = {}
            admitted = len(rig.calls(sandbox, "retag"))
            second = threading.Thread(target=lambda: result.update(
                out=outcome(c, "lvcreate", {"vg": "dom1", "name": "mine", "size": 4 * MiB})))
            second.start()
            # admitted: its scope check read the VGs' tags (and found DOMAIN on dom1)
            _until(lambda: ("end", "vgs") in
                   [x[:2] for x in rig.calls(sandbox, "retag")[admitted:]])
            time.sleep(0.3)
            assert second.is_alive()  # waiting for dom1's lock
            lvm.lvm("vgchange", "--deltag", TAG, "dom1")
            first.join(30)
            second.join(30)
    assert isinstance(result["out"], PermissionDenied), result
    assert "dom1" in result["out"].message
    assert sorted(r["lv_full_name"] for r in lvm.report("lv", "lv_full_name", "dom1")) == \
        ["dom1/dl", "dom1/rootlv"]


def _until(ready: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ---- change notifications ------------------------------------------------------------------

def test_a_scoped_subscriber_is_told_only_of_its_vgs(sandbox: rig.Sandbox, users: object,
                                                     lvm: rig.Sandbox) -> None:
    """Changes in "other" (by root through the daemon, and by LVM directly) never reach
    the scoped subscriber; a change in sd-a does; the unscoped subscriber gets both. A
    replay (``since``) is filtered the same way."""
    build_world(lvm)
    with scoped_daemon(sandbox, "notify", events={"poll_interval": 1}) as d:
        with as_user(SCOPED, d) as c, as_user(ADMIN, d) as admin, Client(d.socket) as root:
            position = c.subscribe()
            admin.subscribe()
            root.vgchange("other", add_tags=["n1"])
            lvm.lvm("lvcreate", "-an", "-Zn", "-n", "ext", "-L", "4m", "other")
            rig.wait_for_change(admin, "lv", "other/ext", timeout=10)
            root.vgchange("sd-a", add_tags=["n2"])
            params, _ = rig.wait_for_change(c, "vg", "sd-a", timeout=10)
            rig.wait_for_change(admin, "vg", "sd-a", timeout=10)
            seen = [params]
            with pytest.raises(Exception):
                while True:
                    seen.append(c.next_notification(timeout=1.5))
        with as_user(SCOPED, d) as again:
            again.subscribe(since=position)
            replay = [again.next_notification(timeout=5)]
            with pytest.raises(Exception):
                while True:
                    replay.append(again.next_notification(timeout=1))
    for notes in (seen, replay):
        names = [o["name"] for p in notes for o in p.get("objects", [])]
        assert names and all(not n.startswith("other") and n != lvm.loops[2] for n in names), \
            notes
    assert {"type": "vg", "name": "sd-a"} in rig.named(replay[0]["objects"])


# ---- the configuration -----------------------------------------------------------------------

@pytest.mark.parametrize("body,key", [
    ('[[access.scope]]\ngroup = "g"\nroles = ["query", "admin"]\nvgs = ["a"]\n',
     "access.scope[0].roles"),
    ('[[access.scope]]\ngroup = "g"\nroles = ["query"]\nvgs = ["a"]\n'
     '[[access.scope]]\ngroup = "g"\nroles = []\nvgs = ["a"]\n', "access.scope[1].roles"),
    ('[[access.scope]]\ngroup = "g"\nroles = ["query"]\nvgs = ["sd-[a"]\n',
     "access.scope[0].vgs"),
    ('[[access.scope]]\ngroup = "g"\nroles = ["query"]\nvgs = ["a/b"]\n',
     "access.scope[0].vgs"),
    ('[[access.scope]]\ngroup = "g"\nroles = ["query"]\nvg_tags = ["-x"]\n',
     "access.scope[0].vg_tags"),
    ('[[access.scope]]\ngroup = "g"\nroles = ["query"]\n', "access.scope[0].vgs"),
    ('[[access.scope]]\ngroup = "g"\nroles = ["query"]\nvgs = []\nvg_tags = []\n',
     "access.scope[0].vgs"),
    ('[[access.scope]]\ngroup = "g"\nroles = ["query"]\nvgs = ["a"]\nvg = ["b"]\n',
     "access.scope[0].vg"),
    ('[[access.scope]]\nroles = ["query"]\nvgs = ["a"]\n', "access.scope[0].group"),
    ('[[access.scope]]\ngroup = ""\nroles = ["query"]\nvgs = ["a"]\n',
     "access.scope[0].group"),
    ('[access]\nscope = "vdsm"\n', "access.scope"),
])
def test_check_config_names_the_bad_scope_key(sandbox: rig.Sandbox, body: str,
                                             key: str) -> None:
    path = sandbox.dir / "scope-bad.toml"
    path.write_text('[server]\nsocket_group = "root"\n' + body)
    out = subprocess.run([str(rig.VENV_BIN / "lvmsuperd"), "--config", str(path),
                          "--check-config"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out
    assert f"{key} " in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_check_config_accepts_scopes_and_warns_of_a_missing_group(sandbox: rig.Sandbox) -> None:
    path = sandbox.dir / "scope-good.toml"
    path.write_text('[server]\nsocket_group = "root"\n[access]\nquery = ["root"]\n'
                    'manage = ["root"]\ndestroy = ["root"]\n' +
                    scope_toml("root", ["query", "open"], ["sd-*", "[ab]?x"], ["RHAT_sd"]) +
                    scope_toml("no-such-group-scope", ["manage"], [], ["t"]))
    out = subprocess.run([str(rig.VENV_BIN / "lvmsuperd"), "--config", str(path),
                          "--check-config"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout
    assert "no-such-group-scope" in out.stderr  # admits nobody, said at start
