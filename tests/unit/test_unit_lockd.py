"""lvmlockd and sanlock as lvmsuper reads them: lvmlockd's refusals in LVM's words become
``LockConflict`` naming the object; ``lvmlockctl --info --dump`` gives the lockspaces
started and lost here; ``sanlock direct read_leader`` the holder's host id; a change in
a VG whose lockspace is lost is refused. Real processes: small scripts standing in for
lvmlockctl and sanlock, printing what those tools print."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lvmsuper.client.errors import LockConflict, LvmFailed
from lvmsuper.supervisor.config import Config
from lvmsuper.supervisor.core.service import Service
from lvmsuper.supervisor.lvm.calls import Lvm, lock_conflict
from lvmsuper.supervisor.lvm.lockd import Lockd, parse_info, parse_leader
from lvmsuper.supervisor.lvm.runner import RunResult

INFO = """info=structs client=1 ...
info=client pid=812 fd=9 pi=0 id=1 name=lvchange
info=ls ls_name=lvm_svg vg_name=svg vg_uuid=Xc1mN2aB3dEf4gHi5jKl6mNo7pQr8sTu vg_sysid=. vg_args=1.0.0:lvmlock lm_type=sanlock host_id=2 create_fail=0 create_done=1 thread_work=0 thread_stop=0 thread_done=0 kill_vg=0 drop_vg=0 sanlock_gl_dup=0
info=r name=VGLK type=vg mode=un sh_count=0 version=3
info=ls ls_name=lvm_gone vg_name=gone vg_uuid=Ab1cDe2fGh3iJk4lMn5oPq6rSt7uVw8x vg_sysid=. vg_args=1.0.0:lvmlock lm_type=sanlock host_id=2 create_fail=0 create_done=1 thread_work=0 thread_stop=0 thread_done=0 kill_vg=1 drop_vg=0 sanlock_gl_dup=0
"""
LEADER_HELD = """magic 0x6152010
version 0x30002
flags 0x0
sector_size 512
num_hosts 2000
max_hosts 2000
owner_id 1
owner_generation 3
lver 4
space_name lvm_svg
resource_name 3d2sBc-lzUS-0GNQ-vJ8H-8n1M-VaJ5-Gc1d3P
timestamp 4711
checksum 0x1c4a
"""


@pytest.mark.parametrize(("message", "found"), [
    ("LV locked by other host: svg/lv1", ("lv", "svg/lv1")),
    ("VG svg lock failed: held by other host.", ("vg", "svg")),
    ("VG svg lock failed: storage failed for sanlock leases", ("vg", "svg")),
    ("VG svg lock failed: storage errors for sanlock leases", ("vg", "svg")),
    ("Global lock failed: held by other host.", ("global", "global")),
    ("Global lock failed: check that global lockspace is started", None),
    ("Failed to lock logical volume svg/lv1.", None),
    ("Logical volume svg/lv1 in use.", None),
])
def test_lvmlockd_words_for_a_lock_held_elsewhere(message: str,
                                                  found: tuple[str, str] | None) -> None:
    assert lock_conflict(message) == found


class Fake:
    def __init__(self, rc: int, stdout: str, stderr: str = "") -> None:
        self.answer = (rc, stdout, stderr)

    async def run(self, args: object, *, timeout: float | None,
                  on_line: object = None) -> RunResult:
        rc, out, err = self.answer
        return RunResult(("/sbin/lvm", *args), rc, out, err, 0.001)  # type: ignore[misc]


def _log(*messages: str) -> str:
    entries = [{"log_type": "error", "log_message": m} for m in messages]
    entries.append({"log_type": "status", "log_message": "failure", "log_ret_code": "5"})
    return json.dumps({"log": entries}, indent=2)


def test_lvm_exit_5_locked_by_other_host_is_a_lock_conflict() -> None:
    fake = Fake(5, _log("LV locked by other host: svg/lv1", "Failed to lock logical "
                        "volume svg/lv1."))
    with pytest.raises(LockConflict) as info:
        asyncio.run(Lvm(fake, timeout=5, extra_config=None).change(
            "lvchange", ["--activate", "ey", "svg/lv1"]))
    err = info.value
    assert isinstance(err, LvmFailed) and err.name == "LockConflict"
    assert (err.data["object_type"], err.data["object_name"]) == ("lv", "svg/lv1")
    assert err.data["rc"] == 5 and "holder" not in err.data  # the service asks sanlock


def test_the_global_lock_trap_says_how_out() -> None:
    fake = Fake(5, _log("Global lock failed: check that global lockspace is started"))
    with pytest.raises(LvmFailed) as info:
        asyncio.run(Lvm(fake, timeout=5, extra_config=None).change("pvcreate", ["/dev/vda"]))
    assert type(info.value) is LvmFailed
    assert "vgcreate shared=true" in info.value.message


def test_lvmlockctl_info_started_and_lost() -> None:
    info = parse_info(INFO)
    assert info.started == ["svg"] and info.lost == ["gone"]
    assert info.host_id == {"svg": 2, "gone": 2}
    assert parse_info("").started == [] and parse_info("UN garbage\n").lost == []


def test_sanlock_leader_owner_unless_free() -> None:
    assert parse_leader(LEADER_HELD) == 1
    assert parse_leader(LEADER_HELD.replace("timestamp 4711", "timestamp 0")) is None
    assert parse_leader("read_leader error -5\n") is None


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_lockd_runs_the_tools_it_was_given(tmp_path: Path) -> None:
    args = tmp_path / "args"
    lockctl = _script(tmp_path / "lvmlockctl", f'echo "$@" >> {args}\ncat <<"EOF"\n{INFO}EOF')
    sanlock = _script(tmp_path / "sanlock", f'echo "$@" >> {args}\ncat <<"EOF"\n'
                      f"{LEADER_HELD}EOF")
    socket = tmp_path / "lvmlockd.socket"
    lockd = Lockd(lockctl=lockctl, sanlock=sanlock, socket=str(socket))
    assert not lockd.present  # no lvmlockd socket: nothing runs
    assert asyncio.run(lockd.info()).started == []
    assert not args.exists()
    socket.touch()
    assert asyncio.run(lockd.info()).lost == ["gone"]
    holder = asyncio.run(lockd.holder("s-vg", "lv1", "u-1", "1.0.0:70254592"))
    assert holder == 1
    assert asyncio.run(lockd.holder("svg", "lv1", "u-1", None)) is None  # not shared
    assert args.read_text().splitlines() == [
        "--info --dump", "direct read_leader -r lvm_s-vg:u-1:/dev/mapper/s--vg-lvmlock:70254592"]


def test_a_lost_lockspace_refuses_changes_and_shows_in_status(tmp_path: Path) -> None:
    lockctl = _script(tmp_path / "lvmlockctl", f'cat <<"EOF"\n{INFO}EOF')
    socket = tmp_path / "lvmlockd.socket"
    socket.touch()
    service = Service(Config(lvm_binary="/sbin/lvm"), Lvm(Fake(0, ""), timeout=5,
                                                          extra_config=None))
    service.lockd = Lockd(lockctl=lockctl, socket=str(socket))
    asyncio.run(service.refuse_lost(["svg", "vg0"]))  # started, or not shared: fine
    with pytest.raises(LockConflict) as info:
        asyncio.run(service.refuse_lost(["vg0", "gone"]))
    assert info.value.to_wire()["data"] == {"name": "LockConflict", "object_type": "vg",
                                            "object_name": "gone", "holder": None}
    assert asyncio.run(service.lockspaces()) == {"lockspaces": ["svg"],
                                                 "lost_lockspaces": ["gone"]}
