"""lv_open on the host tier (real LVM on loop devices, no device-mapper: no LV is ever
active here): who may open, what policy refuses, hostile names and modes, an LV renamed
or removed while the open waits for its VG's lock, the audit, and that the daemon keeps
no descriptor. Real I/O through a passed descriptor is tests/dm/test_dm_lv_open.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import rig
from lvmsuper.client import (Client, InvalidRequest, LvmSuperError, NotFound,
                             PermissionDenied)

pytestmark = pytest.mark.system
MiB = 2**20
ADMIN, QUERY, MANAGE, OUT = "lvmst-admin", "lvmst-query", "lvmst-manage", "lvmst-out"


@pytest.fixture
def vg(lvm: rig.Sandbox) -> Iterator[str]:
    lvm.lvm("pvcreate", *lvm.loops[:2])
    lvm.lvm("vgcreate", "vgopen", *lvm.loops[:2])
    lvm.lvm("lvcreate", "--yes", "-L", "4m", "-n", "data", "vgopen")
    yield "vgopen"


def audit_lines(daemon: rig.Daemon, method: str = "lv_open") -> list[str]:
    return [line for line in daemon.log().splitlines() if f"audit: {method} " in line]


def refused(client: Client, **params: Any) -> LvmSuperError:
    with pytest.raises(LvmSuperError) as err:
        client.call("lv_open", **params)
    return err.value


# ---- who may open --------------------------------------------------------------------

@pytest.mark.parametrize("user", [QUERY, MANAGE, OUT])
def test_without_the_open_role_permission_denied(daemon: rig.Daemon, vg: str,
                                                 user: str) -> None:
    """query, manage (no open) and no group at all: PermissionDenied naming the role,
    before LVM is asked anything; audited as refused, with the mode."""
    client = rig.client_as(user, daemon.socket)
    with client:
        err = refused(client, lv=f"{vg}/data", mode="r")
    assert isinstance(err, PermissionDenied), err
    assert err.data["required"] == "open"
    line = audit_lines(daemon)[-1]
    assert "result=PermissionDenied" in line and '"mode": "r"' in line, line


def test_member_of_the_open_group_reaches_the_lv(daemon: rig.Daemon, vg: str) -> None:
    """The same call by a member of [access] open gets past the role check to the LV
    itself (inactive here: InvalidRequest), so the refusals above are the role's."""
    with rig.client_as(ADMIN, daemon.socket) as client:
        err = refused(client, lv=f"{vg}/data", mode="rw")
    assert isinstance(err, InvalidRequest) and "activate it first" in err.message, err


def test_open_role_is_its_own_group_list(sandbox: rig.Sandbox, users: object, vg: str) -> None:
    """``[access] open`` is a list of its own: the manage group does not imply it, and
    naming a group there grants it (here to the manage-only user)."""
    with rig.running(sandbox, "openrole", access={"open": [rig.GROUP_MANAGE]}) as d:
        with rig.client_as(MANAGE, d.socket) as client:
            err = refused(client, lv=f"{vg}/data", mode="r")
        assert isinstance(err, InvalidRequest), err  # past the role: the LV is inactive
        with rig.client_as(ADMIN, d.socket) as client:
            err = refused(client, lv=f"{vg}/data", mode="r")
        assert isinstance(err, PermissionDenied) and err.data["required"] == "open", err


# ---- policy and the LV ------------------------------------------------------------------

def test_protected_vg_permission_denied(sandbox: rig.Sandbox, users: object, vg: str) -> None:
    with rig.running(sandbox, "openprot", policy={"protected_vgs": [vg],
                                                  "devices": list(sandbox.loops)}) as d:
        with rig.client_as(ADMIN, d.socket) as client:
            err = refused(client, lv=f"{vg}/data", mode="r")
        assert isinstance(err, PermissionDenied), err
        assert err.data["required"] == "policy" and err.data["object_name"] == vg
        line = audit_lines(d)[-1]
        assert "result=PermissionDenied" in line and '"mode": "r"' in line, line


@pytest.mark.parametrize("mode", ["r", "rw"])
def test_inactive_lv_invalid_request(daemon: rig.Daemon, vg: str, mode: str) -> None:
    with rig.client_as(ADMIN, daemon.socket) as client:
        err = refused(client, lv=f"{vg}/data", mode=mode, shared=True)
    assert isinstance(err, InvalidRequest), err
    assert "activate it first" in err.message and err.data["field"] == "lv"
    line = audit_lines(daemon)[-1]
    assert "result=InvalidRequest" in line and f'"mode": "{mode}"' in line, line
    assert '"shared": true' in line and "uid=" in line, line


def test_missing_lv_and_vg_not_found(daemon: rig.Daemon, vg: str) -> None:
    with Client(daemon.socket) as client:
        for name in (f"{vg}/nosuch", "novg/data"):
            err = refused(client, lv=name, mode="r")
            assert isinstance(err, NotFound), (name, err)
            assert err.data["object_name"] in (name, name.split("/")[0]), err.data


def _uuid(lvm: rig.Sandbox, kind: str, name: str) -> str:
    return str(lvm.report(kind, f"{kind}_uuid", name)[0][f"{kind}_uuid"])


def hostile_params(lvm: rig.Sandbox, vg: str) -> list[dict[str, Any]]:
    lv_uuid, vg_uuid = _uuid(lvm, "lv", f"{vg}/data"), _uuid(lvm, "vg", vg)
    names = [f"/dev/{vg}/data", f"/dev/mapper/{vg}-data", f"{vg}/../{vg}/data",
             f"../{vg}/data", f"{vg}/..", f"{vg}/.", "../../etc/shadow", f"{vg}/data/",
             f"{vg}/data\n", f"{vg}//data", f"{vg_uuid}/data", f"{vg_uuid.replace('-', '')}/data",
             f"{vg}/{lv_uuid}", f"{vg}/{lv_uuid.replace('-', '')}", f"{vg}", "data",
             f"-{vg}/data", f"{vg}/-data", "@tag/data", f"{vg}/data --yes", "",
             f"{vg}/{'x' * 200}"]
    out: list[dict[str, Any]] = [{"lv": n, "mode": "r"} for n in names]
    out += [{"lv": f"{vg}/data", "mode": m} for m in ("w", "rwx", "R", "RW", "", " r", 1, 0,
                                                       True, None, ["r"], {"r": 1})]
    out += [{"mode": "r"}, {"lv": f"{vg}/data"}, {},
            {"lv": f"{vg}/data", "mode": "rw", "shared": "yes"},
            {"lv": f"{vg}/data", "mode": "rw", "shared": 1},
            {"lv": f"{vg}/data", "mode": "r", "wait": 5},
            {"lv": f"{vg}/data", "mode": "r", "request_id": "abc"},
            {"lv": f"{vg}/data", "mode": "r", "path": f"/dev/{vg}/data"},
            {"lv": [vg, "data"], "mode": "r"}, {"lv": {"vg": vg, "lv": "data"}, "mode": "r"}]
    return out


def test_hostile_names_and_modes_typed_errors_nothing_opened(daemon: rig.Daemon, vg: str,
                                                             lvm: rig.Sandbox) -> None:
    """Paths, ``..``, UUIDs (VG and LV, with and without dashes), options, bad modes,
    missing or extra parameters: each a typed error (InvalidRequest, or NotFound for a
    well-formed name LVM has no LV of), nothing opened, the daemon holds no more
    descriptors than before."""
    params = hostile_params(lvm, vg)
    with Client(daemon.socket) as client:
        refused(client, lv=f"{vg}/data", mode="r")  # warm: LVM's shell and the read slot
        baseline = daemon.steady_fd_count()
        for p in params:
            with pytest.raises(LvmSuperError) as err:
                client.request("lv_open", p)
            assert type(err.value) in (InvalidRequest, NotFound), (p, err.value)
            if type(err.value) is NotFound:  # only names LVM could look up
                assert isinstance(p.get("lv"), str) and "/" in p["lv"], (p, err.value)
        assert daemon.settled_fd_count(baseline) == baseline
    assert [lv["lv_name"] for lv in lvm.report("lv", "lv_name", vg)] == ["data"]


def test_many_refusals_leave_no_descriptor(daemon: rig.Daemon, vg: str) -> None:
    """The daemon's own /proc/<pid>/fd count is back at its baseline after many refused
    opens, on one connection and on many."""
    with Client(daemon.socket) as client:
        refused(client, lv=f"{vg}/data", mode="rw")
        baseline = daemon.steady_fd_count()
        for i in range(60):
            refused(client, lv=f"{vg}/data", mode=("r", "rw")[i % 2], shared=bool(i % 3))
            refused(client, lv=f"{vg}/nosuch", mode="r")
            refused(client, lv=f"/dev/{vg}/data", mode="r")
        assert daemon.settled_fd_count(baseline) == baseline
    for _ in range(20):
        with Client(daemon.socket) as other:
            refused(other, lv=f"{vg}/data", mode="r")
    assert daemon.settled_fd_count(baseline - 1) == baseline - 1  # ours is closed too


# ---- renamed or removed while waiting for the VG's lock --------------------------------

@pytest.mark.parametrize("change", ["lvrename", "lvremove"])
def test_lv_renamed_or_removed_while_the_open_waits(sandbox: rig.Sandbox, users: object,
                                                    vg: str, change: str) -> None:
    """A slow change holds the VG's lock; an lv_open of the LV it renames (removes)
    waits for the lock, then looks again under it: NotFound, nothing opened, and the
    look happened after the change ended."""
    name = f"slow{change}"
    fake = rig.fake_lvm(sandbox, name, slow={change: 2.0})
    with rig.running(sandbox, name, lvm={"binary": fake}) as d:
        manager = Client(d.socket)
        done: dict[str, Any] = {}

        def slow_change() -> None:
            try:
                if change == "lvrename":
                    done["result"] = manager.lvrename(f"{vg}/data", "renamed")
                else:
                    done["result"] = manager.lvremove(f"{vg}/data")
            except BaseException as exc:  # reported by the assertion below
                done["error"] = exc

        thread = threading.Thread(target=slow_change)
        with manager, rig.client_as(ADMIN, d.socket) as opener:
            opener.vgs()  # the read cache opens the kernel files it keeps open
            baseline = d.steady_fd_count()
            thread.start()
            deadline = time.monotonic() + 10
            while not any(c[:2] == ("start", change) for c in rig.calls(sandbox, name)):
                assert time.monotonic() < deadline, rig.calls(sandbox, name)
                time.sleep(0.02)
            started = time.monotonic()
            err = refused(opener, lv=f"{vg}/data", mode="rw")
            waited = time.monotonic() - started
            thread.join(30)
            assert "error" not in done, done
            assert isinstance(err, NotFound), err
            assert err.data["object_name"] == f"{vg}/data"
            assert waited > 0.5, waited  # it waited for the lock
            log = rig.calls(sandbox, name)
            end = log.index(("end", change, f"{vg}/data" if change == "lvremove"
                             else "renamed"))
            looks = [i for i, c in enumerate(log) if c[:2] == ("start", "lvs")
                     and c[2] == f"{vg}/data"]
            assert looks and min(looks) > end, log  # looked under the lock, after it
            assert d.settled_fd_count(baseline) == baseline
        lines = audit_lines(d)
        assert "result=NotFound" in lines[-1] and '"mode": "rw"' in lines[-1], lines


def test_audit_record_carries_caller_method_and_mode(daemon: rig.Daemon, vg: str) -> None:
    with rig.client_as(ADMIN, daemon.socket) as client:
        refused(client, lv=f"{vg}/data", mode="rw", shared=True)
    line = audit_lines(daemon)[-1]
    params = json.loads(line.split(" params=", 1)[1].rsplit(" result=", 1)[0])
    assert params == {"lv": f"{vg}/data", "mode": "rw", "shared": True}, line
    assert f"uid={rig.as_user(ADMIN)['user']}" in line, line


# ---- the CLI ---------------------------------------------------------------------------

def test_cli_lv_open_refusals_and_usage(daemon: rig.Daemon, vg: str) -> None:
    """``lvmsuperctl lv-open``: the daemon's refusal is exit 1 and the command never
    runs; a missing command or a bad mode is a usage error (2)."""
    run = ("--", "sh", "-c", "echo ran")
    out = rig.ctl(ADMIN, daemon.socket, "lv-open", f"{vg}/data", "--mode", "r", *run)
    assert out.returncode == 1 and "activate it first" in out.stderr, out
    assert "ran" not in out.stdout
    out = rig.ctl(QUERY, daemon.socket, "lv-open", f"{vg}/data", "--mode", "rw", *run)
    assert out.returncode == 1 and "PermissionDenied" in out.stderr, out
    assert "ran" not in out.stdout
    out = rig.ctl(ADMIN, daemon.socket, "lv-open", f"{vg}/data", "--mode", "r")
    assert out.returncode == 2 and "needs a command" in out.stderr, out
    out = rig.ctl(ADMIN, daemon.socket, "lv-open", f"{vg}/data", "--mode", "w", *run)
    assert out.returncode == 2 and "ran" not in out.stdout, out
    out = rig.ctl(ADMIN, daemon.socket, "lv-open", f"/dev/{vg}/data", "--mode", "r", *run)
    assert out.returncode == 1 and "InvalidRequest" in out.stderr, out


# ---- the whole path with a descriptor, on the host ---------------------------------------
# The host has no device-mapper, so no LV is ever active here. To carry a descriptor end
# to end on this tier anyway, a fake lvm answers the daemon's device query of vgopen/data
# (lv_kernel_major/minor) with a spare loop device of the sandbox, as if the LV were
# active on it; every other LVM command is the real one. The daemon then does exactly
# what it does for an active LV: sysfs name, O_NOFOLLOW open, fstat check, SCM_RIGHTS.
# tests/dm/test_dm_lv_open.py does the same on real device-mapper LVs.

def fake_active(sandbox: rig.Sandbox, name: str, vg: str, loop: str) -> str:
    st = os.stat(loop)
    size = int(subprocess.run(["blockdev", "--getsize64", loop], capture_output=True,
                                  text=True, check=True).stdout)
    row = {"lv_full_name": f"{vg}/data", "lv_path": f"/dev/{vg}/data", "lv_active": "active",
           "lv_kernel_major": str(os.major(st.st_rdev)),
           "lv_kernel_minor": str(os.minor(st.st_rdev)), "lv_size": str(size)}
    doc = "{\n" + json.dumps({"report": [{"lv": [row]}]})[1:]
    return rig.fake_lvm(sandbox, name, before=(
        'case "$*" in *lv_kernel_major*) printf \'%s\\n\' \'' + doc + '\'; exit 0;; esac'))


@pytest.fixture
def spare(vg: str, lvm: rig.Sandbox) -> Iterator[str]:
    """A loop device of the sandbox that is no PV, zeroed where the tests write."""
    loop = lvm.loops[3]
    with open(loop, "r+b", buffering=0) as dev:
        dev.write(bytes(2 * MiB))
    yield loop


PATTERN = bytes(range(256)) * 256  # 64 KiB


def test_socket_hands_over_a_working_descriptor(sandbox: rig.Sandbox, users: object, vg: str,
                                                spare: str) -> None:
    """As an unprivileged member of [access] open, in a process of its own: rw writes
    reach the device (read back as root), r reads them and cannot write, a second
    exclusive rw is InUse while shared=True gets in; the daemon's descriptor count is
    back at its baseline after 100 successful opens; every open is audited with its
    mode."""
    fake = fake_active(sandbox, "fakeopen", vg, spare)
    with rig.running(sandbox, "fakeopen", lvm={"binary": fake}) as d:
        with Client(d.socket) as root:
            root.ping()
            baseline = d.steady_fd_count()
            code = (
                "import hashlib, os\n"
                "from lvmsuper.client import Client, InUse\n"
                "c = Client()\n"
                f"f = c.lv_open('{vg}/data', 'rw')\n"
                "print(type(f).__name__, f.mode, os.geteuid() != 0)\n"
                "f.seek(4096); f.write(bytes(range(256)) * 256); f.close()\n"
                f"r = c.lv_open('{vg}/data', 'r'); r.seek(4096)\n"
                "print(hashlib.sha256(r.read(65536)).hexdigest(), r.mode)\n"
                "try:\n    r.write(b'x'); print('wrote')\nexcept OSError:\n    print('refused')\n"
                "r.close()\n"
                f"first = c.lv_open('{vg}/data', 'rw')\n"
                f"try:\n    c.lv_open('{vg}/data', 'rw'); print('twice')\n"
                "except InUse as e:\n    print('InUse', e.data['object_name'])\n"
                f"s = c.lv_open('{vg}/data', 'rw', shared=True); print('shared', s.mode)\n"
                "first.close(); s.close()\n"
                f"for i in range(100):\n    c.lv_open('{vg}/data', ('r', 'rw')[i % 2]).close()\n"
                "print('done')\n")
            out = rig.python_as(ADMIN, code, d.socket)
            assert out.returncode == 0, out.stderr
            lines = out.stdout.splitlines()
            assert lines[0] == "FileIO rb+ True", lines
            assert lines[1] == f"{hashlib.sha256(PATTERN).hexdigest()} rb", lines
            assert lines[2:] == ["refused", f"InUse {vg}/data", "shared rb+", "done"], lines
            with open(spare, "rb") as dev:
                dev.seek(4096)
                assert dev.read(len(PATTERN)) == PATTERN
            assert d.settled_fd_count(baseline) == baseline
        audit = audit_lines(d)
        assert sum("result=ok" in ln for ln in audit) == 104, audit[-3:]
        assert any('"mode": "rw"' in ln and "result=InUse" in ln for ln in audit)
        assert any('"mode": "r"' in ln and "result=ok" in ln for ln in audit)


def test_async_client_and_cli_with_a_descriptor(sandbox: rig.Sandbox, users: object, vg: str,
                                                spare: str) -> None:
    fake = fake_active(sandbox, "fakecli", vg, spare)
    source = sandbox.dir / "pattern"
    source.write_bytes(PATTERN)
    os.chmod(source, 0o644)
    with rig.running(sandbox, "fakecli", lvm={"binary": fake}) as d:
        with Client(d.socket) as root:
            root.ping()
            baseline = d.steady_fd_count()
        # the CLI as the user: dd writes into the descriptor (its stdout), then reads it
        out = rig.ctl(ADMIN, d.socket, "lv-open", f"{vg}/data", "--mode", "rw", "--fd", "1",
                      "--", "dd", f"if={source}", "bs=4096", "seek=1", "conv=notrunc",
                      "status=none")
        assert out.returncode == 0, out.stderr
        with open(spare, "rb") as dev:
            dev.seek(4096)
            assert dev.read(len(PATTERN)) == PATTERN
        out = rig.ctl(ADMIN, d.socket, "lv-open", f"{vg}/data", "--mode", "r", "--", "sh",
                      "-c", "dd bs=4096 skip=1 count=16 status=none | cmp - " + str(source))
        assert out.returncode == 0, (out.stdout, out.stderr)
        out = rig.ctl(ADMIN, d.socket, "lv-open", f"{vg}/data", "--mode", "r", "--fd", "5",
                      "--", "sh", "-c", "test -e /proc/self/fd/5 && exit 7")
        assert out.returncode == 7, out

        async def main() -> bytes:
            from lvmsuper.client import AsyncClient
            async with AsyncClient(d.socket) as client:
                handles = [await client.lv_open(f"{vg}/data", "r") for _ in range(5)]
                data = b""
                for handle in handles:
                    with handle:
                        handle.seek(4096)
                        data = handle.read(len(PATTERN))
                return data

        assert asyncio.run(main()) == PATTERN
        assert d.settled_fd_count(baseline - 1) == baseline - 1  # root's connection closed
