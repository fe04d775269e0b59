"""System tier: real lvmsuperd, real LVM on loop devices, real unprivileged users.

What the caller gets is always compared with what LVM itself reports when run directly
as root, never with what the daemon says about itself.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

import rig
from rig import GROUP_ALL, ctl, python_as

pytestmark = pytest.mark.system

ADMIN, QUERY, MANAGE, OUT = "lvmst-admin", "lvmst-query", "lvmst-manage", "lvmst-out"
MiB = 2**20


def call_as(user: str, daemon: rig.Daemon, method: str, **params: object) -> dict[str, object]:
    """One call through the Python client as ``user``: {"result": ...} or {"error": ...}."""
    code = (
        "import json, sys\n"
        "from lvmsuper.client import Client, LvmSuperError\n"
        "from lvmsuper.client.models import to_wire\n"
        f"params = json.loads({json.dumps(json.dumps(params))})\n"
        "try:\n"
        "    with Client() as c:\n"
        f"        out = {{'result': to_wire(c.call({method!r}, **params))}}\n"
        "except LvmSuperError as e:\n"
        "    out = {'error': e.name, 'message': e.message, 'data': e.data,\n"
        "           'type': type(e).__name__}\n"
        "print(json.dumps(out))\n")
    proc = python_as(user, code, daemon.socket)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def ok(user: str, daemon: rig.Daemon, method: str, **params: object) -> Any:
    """The result of a call that must succeed."""
    out = call_as(user, daemon, method, **params)
    assert "result" in out, (method, params, out)
    return out["result"]


def test_socket_has_configured_mode_and_group(daemon: rig.Daemon) -> None:
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert st.st_gid == rig.gid_of(GROUP_ALL)


def test_socket_is_private_from_bind_to_chmod(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's own bind (supervisor/transports/unix.py bind_socket) creates the socket under
    umask 0177: owner-only from the moment it exists, through chown, until the chmod to
    the configured mode. Observed with hooks on bind, chown and chmod."""
    from lvmsuper.supervisor.transports.unix import bind_socket

    path = str(tmp_path / "run" / "d.sock")
    seen: list[tuple[str, int, int]] = []  # (step, umask in effect, socket mode)
    real_bind, real_chown, real_chmod = socket.socket.bind, os.chown, os.chmod

    def umask_now() -> int:
        mask = os.umask(0o077)
        os.umask(mask)
        return mask

    def mode_now() -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    def bind(self: socket.socket, address: Any) -> None:
        mask = umask_now()
        real_bind(self, address)
        if address == path:
            seen.append(("bind", mask, mode_now()))

    def chown(target: Any, uid: int, gid: int) -> None:
        if target == path:
            seen.append(("chown", umask_now(), mode_now()))
        real_chown(target, uid, gid)

    def chmod(target: Any, mode: int) -> None:
        if target == path:
            seen.append(("chmod", umask_now(), mode_now()))
        real_chmod(target, mode)

    monkeypatch.setattr(socket.socket, "bind", bind)
    monkeypatch.setattr(os, "chown", chown)
    monkeypatch.setattr(os, "chmod", chmod)
    before = umask_now()
    sock = bind_socket(path, 0o660, os.getgid())
    try:
        assert [step for step, _, _ in seen] == ["bind", "chown", "chmod"], seen
        assert seen[0][1] == 0o177, f"umask at bind: {seen[0][1]:o}"
        for step, _, mode in seen:
            assert mode == 0o600, f"socket mode {mode:o} at {step}"  # before the chmod
        assert mode_now() == 0o660 and os.stat(path).st_gid == os.getgid()
        assert umask_now() == before  # the daemon's umask is put back
    finally:
        sock.close()


def test_etc_restored_restores_also_when_a_test_fails(tmp_path: Path) -> None:
    """rig.etc_restored, which every test touching /etc uses, puts a file back byte for
    byte with its mode and owner, and removes one it did not find, when the body fails."""
    kept, made = tmp_path / "kept", tmp_path / "made"
    kept.write_bytes(b"account required pam_unix.so\n")
    os.chmod(kept, 0o640)
    with pytest.raises(RuntimeError):
        with rig.etc_restored(str(kept), str(made)):
            with open(kept, "ab") as fh:
                fh.write(b"account requisite pam_deny.so\n")
            os.chmod(kept, 0o666)
            made.write_text("x")
            raise RuntimeError("the test failed here")
    assert kept.read_bytes() == b"account required pam_unix.so\n"
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o640
    assert not made.exists()


def test_walkthrough_as_unprivileged_user_matches_lvm(daemon: rig.Daemon,
                                                      lvm: rig.Sandbox) -> None:
    d0, d1 = lvm.loops[0], lvm.loops[1]
    pvs = ok(ADMIN, daemon, "pvcreate", devices=[d0, d1])
    assert [p["name"] for p in pvs] == [d0, d1]  # type: ignore[index]
    direct = {p["pv_name"]: p for p in lvm.report("pv", "pv_name,pv_uuid,pv_size")}
    for pv in pvs:  # type: ignore[union-attr]
        assert pv["uuid"] == direct[pv["name"]]["pv_uuid"]
        assert pv["size"] == int(direct[pv["name"]]["pv_size"]) and pv["vg"] is None
    vg = ok(ADMIN, daemon, "vgcreate", name="vgwalk", devices=[d0, d1],
                 tags=["owner=test"])
    assert vg["name"] == "vgwalk" and vg["pv_count"] == 2 and vg["tags"] == ["owner=test"]  # type: ignore[index]
    assert lvm.report("vg", "vg_uuid", "vgwalk")[0]["vg_uuid"] == vg["uuid"]  # type: ignore[index]

    # 2 MiB + 13 bytes rounds up to one whole 4 MiB extent
    lv = ok(ADMIN, daemon, "lvcreate", vg="vgwalk", name="data", size=2 * MiB + 13,
                 tags=["a", "b=c"])
    assert lv["full_name"] == "vgwalk/data" and lv["size"] == 4 * MiB  # type: ignore[index]
    assert lv["tags"] == ["a", "b=c"] and lv["devices"] == [d0]  # type: ignore[index]
    direct_lv = lvm.report("lv", "lv_uuid,lv_size,lv_tags", "vgwalk/data")[0]
    assert (direct_lv["lv_uuid"], int(direct_lv["lv_size"])) == (lv["uuid"], lv["size"])  # type: ignore[index]

    listed = ok(QUERY, daemon, "lvs", vg="vgwalk")
    assert [x["full_name"] for x in listed] == ["vgwalk/data"]  # type: ignore[index, union-attr]
    assert ok(QUERY, daemon, "lvs", tags=["b=c"]) == listed
    assert ok(QUERY, daemon, "lvs", tags=["zzz"]) == []

    grown = ok(ADMIN, daemon, "lvresize", lv="vgwalk/data", size=10 * MiB)
    assert grown["size"] == 12 * MiB  # type: ignore[index]
    refused = call_as(ADMIN, daemon, "lvresize", lv="vgwalk/data", size=4 * MiB)
    assert refused["error"] == "InvalidRequest" and refused["data"]["field"] == "force"  # type: ignore[index]
    assert int(lvm.report("lv", "lv_size", "vgwalk/data")[0]["lv_size"]) == 12 * MiB
    shrunk = call_as(ADMIN, daemon, "lvresize", lv="vgwalk/data", size=4 * MiB, force=True)
    assert shrunk["result"]["size"] == 4 * MiB  # type: ignore[index]

    extents = ok(ADMIN, daemon, "lvcreate", vg="vgwalk", name="rest",
                      extents="50%FREE")
    free_after = int(lvm.report("vg", "vg_free", "vgwalk")[0]["vg_free"])
    assert extents["size"] == free_after or abs(extents["size"] - free_after) <= 4 * MiB  # type: ignore[index]

    report = ok(QUERY, daemon, "report", vg="vgwalk")
    assert {x["full_name"] for x in report["lvs"]} == {"vgwalk/data", "vgwalk/rest"}  # type: ignore[index]
    assert [g["name"] for g in report["vgs"]] == ["vgwalk"]  # type: ignore[index]

    assert ok(ADMIN, daemon, "lvremove", lv="vgwalk/rest") == {
        "removed": ["vgwalk/rest"]}
    held = call_as(ADMIN, daemon, "vgremove", vg="vgwalk")
    assert held["error"] == "InvalidRequest"
    assert ok(ADMIN, daemon, "vgremove", vg="vgwalk", force=True) == {
        "removed": ["vgwalk"]}
    assert lvm.report("vg", "vg_name") == []
    assert ok(ADMIN, daemon, "pvremove", devices=[d0, d1]) == {
        "removed": [d0, d1]}
    assert lvm.report("pv", "pv_name") == []


def test_roles_from_groups(daemon: rig.Daemon, lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgroles", lvm.loops[0])
    before = lvm.state()
    out = call_as(OUT, daemon, "pvs")
    assert out["error"] == "PermissionDenied" and out["data"] == {"required": "query"}
    assert ok(QUERY, daemon, "vgs")[0]["name"] == "vgroles"  # type: ignore[index]
    denied = call_as(QUERY, daemon, "lvcreate", vg="vgroles", name="x", size=MiB)
    assert denied["error"] == "PermissionDenied" and denied["data"] == {"required": "manage"}
    assert lvm.state() == before
    made = call_as(MANAGE, daemon, "lvcreate", vg="vgroles", name="x", size=MiB)
    assert made["result"]["full_name"] == "vgroles/x"  # type: ignore[index]
    # manage may grow but not remove or shrink (destroy)
    assert call_as(MANAGE, daemon, "lvremove", lv="vgroles/x")["error"] == "PermissionDenied"
    shrink = call_as(MANAGE, daemon, "lvresize", lv="vgroles/x", size=MiB // 2, force=True)
    assert shrink["error"] == "PermissionDenied" and shrink["data"] == {"required": "destroy"}
    assert lvm.report("lv", "lv_name", "vgroles/x")
    assert ok(ADMIN, daemon, "lvremove", lv="vgroles/x")
    # root is always allowed, whatever the groups say
    assert call_as("root", daemon, "ping") == {"result": {}}


def test_policy_devices_and_protected_vgs(sandbox: rig.Sandbox, users: object,
                                          lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[2])
    lvm.lvm("vgcreate", "vgkeep", lvm.loops[2])
    d = rig.Daemon(sandbox, "policy", policy={"devices": [lvm.loops[0], lvm.loops[2]],
                                               "protected_vgs": ["vgkeep"]}).start()
    try:
        before = lvm.state()
        denied = call_as(ADMIN, d, "pvcreate", devices=[lvm.loops[1]])
        assert denied["error"] == "PermissionDenied" and denied["data"]["field"] == "devices"  # type: ignore[index]
        for method, params in [("lvcreate", {"vg": "vgkeep", "name": "x", "size": MiB}),
                               ("vgremove", {"vg": "vgkeep", "force": True}),
                               ("vgcreate", {"name": "vgkeep", "devices": [lvm.loops[0]]}),
                               # existing PVs: outside the globs, or in a protected VG
                               ("pvchange", {"device": lvm.loops[1], "add_tags": ["x"]}),
                               ("pvresize", {"device": lvm.loops[2]}),
                               ("pvchange", {"device": lvm.loops[2], "allocatable": False}),
                               ("pvmove", {"source": lvm.loops[2]})]:
            out = call_as(ADMIN, d, method, **params)
            assert out.get("error") == "PermissionDenied", (method, params, out)
        assert lvm.state() == before
        assert ok(ADMIN, d, "pvcreate", devices=[lvm.loops[0]])
    finally:
        d.stop()


def test_not_found_and_already_exists(daemon: rig.Daemon, lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgerr", lvm.loops[0])
    lvm.lvm("lvcreate", "-n", "one", "-L", "4m", "vgerr")
    cases = [
        ("lvs", {"vg": "nosuch"}, "NotFound", ("vg", "nosuch")),
        ("lvs", {"names": ["vgerr/none"]}, "NotFound", ("lv", "vgerr/none")),
        ("vgs", {"names": ["nosuch"]}, "NotFound", ("vg", "nosuch")),
        ("lvcreate", {"vg": "nosuch", "name": "x", "size": MiB}, "NotFound", ("vg", "nosuch")),
        ("lvcreate", {"vg": "vgerr", "name": "one", "size": MiB}, "AlreadyExists",
         ("lv", "vgerr/one")),
        ("vgcreate", {"name": "vgerr", "devices": [lvm.loops[1]]}, "AlreadyExists",
         ("vg", "vgerr")),
        ("lvremove", {"lv": "vgerr/none"}, "NotFound", ("lv", "vgerr/none")),
        ("lvresize", {"lv": "vgerr/none", "size": MiB}, "NotFound", ("lv", "vgerr/none")),
    ]
    before = lvm.state()
    for method, params, error, (kind, name) in cases:
        out = call_as(ADMIN, daemon, method, **params)
        assert out.get("error") == error, (method, params, out)
        assert out["data"] == {"object_type": kind, "object_name": name}, (method, out)
    assert lvm.state() == before
    # not enough space: LVM's own reason, with its structured log
    out = call_as(ADMIN, daemon, "lvcreate", vg="vgerr", name="big", size=2**40)
    assert out["error"] == "LvmFailed"
    assert "insufficient free space" in out["message"]  # type: ignore[operator]
    data = out["data"]
    assert data["rc"] == 5 and data["argv"][1] == "lvcreate"  # type: ignore[index]
    assert any(e["type"] == "error" and e["object_name"] == "vgerr" for e in data["log"])  # type: ignore[index]


def test_seed_scenario_hostile_pam(daemon: rig.Daemon, lvm: rig.Sandbox) -> None:
    """sudo's account stack fails (an expired or locked account, say): `sudo -n lvm pvs`
    fails for the user, while lvmsuper gives the same user clean typed PVs."""
    rig.need_system(os.path.exists("/usr/bin/sudo"), "needs sudo")
    lvm.lvm("pvcreate", lvm.loops[0], lvm.loops[1])
    sudoers = "/etc/sudoers.d/lvmsuper-test"
    pam = "/etc/pam.d/sudo"
    assert not os.path.exists(sudoers), f"{sudoers} is left over from another run"
    pam_before = Path(pam).read_bytes()
    pam_stat = os.stat(pam)
    # etc_restored puts both files back (and removes the sudoers drop-in) in a finally:
    # also when an assertion below fails.
    with rig.etc_restored(pam, sudoers):
        with open(sudoers, "w") as fh:
            fh.write(f'Defaults:{ADMIN} env_keep += "LVM_SYSTEM_DIR"\n'
                     f"{ADMIN} ALL=(root) NOPASSWD: {rig.LVM}\n")
        os.chmod(sudoers, 0o440)
        env = {"LVM_SYSTEM_DIR": str(lvm.system_dir)}
        argv = ["sudo", "-n", rig.LVM, "pvs", "--noheadings", "-o", "pv_name"]
        works = rig.run_as(ADMIN, argv, env)
        assert works.returncode == 0, works.stderr
        assert set(works.stdout.split()) == {lvm.loops[0], lvm.loops[1]}
        with open(pam, "a") as fh:
            fh.write("account requisite pam_deny.so\n")
        broken = rig.run_as(ADMIN, argv, env)
        assert broken.returncode != 0 and lvm.loops[0] not in broken.stdout
        typed = ok(ADMIN, daemon, "pvs")
        assert sorted(p["name"] for p in typed) == sorted(lvm.loops[:2])  # type: ignore[union-attr]
        assert all(isinstance(p["size"], int) and p["vg"] is None for p in typed)  # type: ignore[union-attr]
    after = os.stat(pam)
    assert Path(pam).read_bytes() == pam_before, "/etc/pam.d/sudo not restored byte for byte"
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid) == \
        (stat.S_IMODE(pam_stat.st_mode), pam_stat.st_uid, pam_stat.st_gid)
    assert not os.path.exists(sudoers)


def test_cli_tables_json_and_exit_codes(daemon: rig.Daemon, lvm: rig.Sandbox) -> None:
    d0 = lvm.loops[0]
    made = ctl(ADMIN, daemon.socket, "pvcreate", d0)
    assert made.returncode == 0 and d0 in made.stdout and "PSize" in made.stdout
    assert ctl(ADMIN, daemon.socket, "vgcreate", "vgcli", d0).returncode == 0
    lv = ctl(ADMIN, daemon.socket, "lvcreate", "vgcli", "web", "--size", "10M")
    assert lv.returncode == 0 and "12.00MiB" in lv.stdout, lv.stdout + lv.stderr
    table = ctl(QUERY, daemon.socket, "lvs")
    assert table.returncode == 0
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:4] == ["LV", "VG", "Attr", "LSize"] and row.split()[:2] == ["web", "vgcli"]
    as_json = json.loads(ctl(QUERY, daemon.socket, "lvs", "--json").stdout)
    assert as_json[0]["size"] == 12 * MiB
    status = ctl(QUERY, daemon.socket, "status")
    assert status.returncode == 0 and "requests:" in status.stdout
    assert max(len(line) for line in status.stdout.splitlines()) <= 80
    st = json.loads(ctl(QUERY, daemon.socket, "status", "--json").stdout)
    for key in ("version", "pid", "uptime", "lvm_version", "transports", "clients",
                "requests", "latency_ms", "jobs", "last_errors"):
        assert key in st
    assert st["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    err = ctl(ADMIN, daemon.socket, "lvcreate", "vgcli", "web", "--size", "1M")
    assert err.returncode == 1 and "AlreadyExists" in err.stderr
    assert ctl(ADMIN, daemon.socket, "lvcreate", "vgcli").returncode == 2
    assert ctl(ADMIN, daemon.socket, "lvcreate", "vgcli", "x", "--size", "ten").returncode == 2
    gone = rig.run_as(ADMIN, [str(rig.VENV_BIN / "lvmsuperctl"), "--socket",
                              str(lvm.dir / "none.sock"), "ping"])
    assert gone.returncode == 3 and "cannot connect" in gone.stderr


def test_unix_permissions_gate_the_socket(sandbox: rig.Sandbox, users: object) -> None:
    d = rig.Daemon(sandbox, "strict", server={"socket_mode": "0660"}).start()
    try:
        assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o660
        assert ctl(ADMIN, d.socket, "ping").returncode == 0
        assert ctl(OUT, d.socket, "ping").returncode == 3
    finally:
        d.stop()


def test_readme_python_example_runs(daemon: rig.Daemon, lvm: rig.Sandbox) -> None:
    readme = (rig.REPO / "README.md").read_text()
    start = readme.index("```python\n") + len("```python\n")
    code = readme[start:readme.index("```", start)]
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgdemo", lvm.loops[0])
    proc = python_as(ADMIN, code, daemon.socket)
    assert proc.returncode == 0, proc.stderr
    assert "vgdemo" in proc.stdout
    assert lvm.report("lv", "lv_name", "vgdemo") == [], "the example cleans up after itself"
