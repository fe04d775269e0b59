"""The rest of the operation set on real LVM (host tier, no device-mapper): every result
is checked against what LVM reports when run directly as root."""

from __future__ import annotations

import dataclasses
import string
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

import rig
from lvmsuper.client import (LV, PV, VG, AlreadyExists, Client, InvalidRequest, LvmFailed,
                             LvmSuperError, NotFound, PermissionDenied)
from lvmsuper.client.models import to_wire
from lvmsuper.supervisor.lvm.argv import LV_FIELDS, PV_FIELDS, VG_FIELDS

pytestmark = pytest.mark.system
MiB = 2**20
ALL_TAG_CHARS = "Az09_+.-/=!:&#"
# every character of LVM's tag charset (A-Z a-z 0-9 _ + . - / = ! : & #), not leading "-"
FULL_TAG = string.ascii_uppercase + string.ascii_lowercase + string.digits + "_+.-/=!:&#"
ADMIN, MANAGE = "lvmst-admin", "lvmst-manage"


@pytest.fixture
def client(daemon: rig.Daemon, lvm: rig.Sandbox) -> Client:
    lvm.lvm("pvcreate", *lvm.loops[:3])
    lvm.lvm("vgcreate", "vgops", lvm.loops[0], lvm.loops[1])
    c = Client(daemon.socket)
    return c


def test_tags_round_trip_on_pv_vg_lv(client: Client, lvm: rig.Sandbox) -> None:
    tag = "t" + ALL_TAG_CHARS
    pv = client.call("pvchange", device=lvm.loops[0], add_tags=[tag, "x"])
    assert pv.tags == sorted([tag, "x"]) or set(pv.tags) == {tag, "x"}
    assert set(lvm.report("pv", "pv_tags", lvm.loops[0])[0]["pv_tags"].split(",")) == {tag, "x"}
    pv = client.call("pvchange", device=lvm.loops[0], del_tags=["x"])
    assert pv.tags == [tag]
    vg = client.call("vgchange", vg="vgops", add_tags=[tag])
    assert vg.tags == [tag] and lvm.report("vg", "vg_tags", "vgops")[0]["vg_tags"] == tag
    client.lvcreate("vgops", "tagged", size=MiB)
    lv = client.call("lvchange", lv="vgops/tagged", add_tags=["IU_abc", tag])
    assert set(lv.tags) == {"IU_abc", tag}
    assert [x.full_name for x in client.lvs(tags=["IU_abc"])] == ["vgops/tagged"]
    lv = client.call("lvchange", lv="vgops/tagged", del_tags=["IU_abc"])
    assert lv.tags == [tag]
    with pytest.raises(InvalidRequest) as err:
        client.call("lvchange", lv="vgops/tagged")
    assert err.value.data["field"] == "activate"


def test_vgextend_vgreduce_and_allocatable(client: Client, lvm: rig.Sandbox) -> None:
    vg = client.call("vgextend", vg="vgops", devices=[lvm.loops[2]])
    assert vg.pv_count == 3 and lvm.report("pv", "vg_name", lvm.loops[2])[0]["vg_name"] == "vgops"
    pv = client.call("pvchange", device=lvm.loops[2], allocatable=False)
    assert pv.allocatable is False
    assert lvm.report("pv", "pv_attr", lvm.loops[2])[0]["pv_attr"][0] != "a"
    vg = client.call("vgreduce", vg="vgops", devices=[lvm.loops[2]])
    assert vg.pv_count == 2 and lvm.report("pv", "vg_name", lvm.loops[2])[0]["vg_name"] == ""
    with pytest.raises(InvalidRequest):
        client.call("vgreduce", vg="vgops")
    with pytest.raises(NotFound):
        client.call("vgextend", vg="nosuch", devices=[lvm.loops[2]])


def test_renames(client: Client, lvm: rig.Sandbox) -> None:
    client.lvcreate("vgops", "old", size=MiB)
    lv = client.call("lvrename", lv="vgops/old", new_name="new")
    assert lv.full_name == "vgops/new" and lvm.report("lv", "lv_name", "vgops/new")
    client.lvcreate("vgops", "other", size=MiB)
    with pytest.raises(AlreadyExists):
        client.call("lvrename", lv="vgops/other", new_name="new")
    vg = client.call("vgrename", vg="vgops", new_name="vgren")
    assert vg.name == "vgren" and lvm.report("vg", "vg_name") == [{"vg_name": "vgren"}]
    with pytest.raises(NotFound):
        client.call("vgrename", vg="vgops", new_name="vgx")


def test_pvresize_after_the_device_grew(client: Client, lvm: rig.Sandbox) -> None:
    dev = lvm.loops[2]
    before = client.pvs(names=[dev])[0].size
    image = lvm.dir / "disk2.img"
    with open(image, "r+b") as fh:
        fh.truncate(96 * MiB)
    subprocess.run(["losetup", "--set-capacity", dev], check=True)
    try:
        pv = client.call("pvresize", device=dev)
        assert pv.size > before and pv.size == int(lvm.report("pv", "pv_size", dev)[0]["pv_size"])
        pv = client.call("pvresize", device=dev, size=80 * MiB)
        assert pv.size <= 80 * MiB
    finally:
        lvm.lvm("pvresize", "--yes", "--setphysicalvolumesize", "64m", dev, check=False)
        with open(image, "r+b") as fh:
            fh.truncate(64 * MiB)
        subprocess.run(["losetup", "--set-capacity", dev], check=True)


def test_lvcreate_options(client: Client, lvm: rig.Sandbox) -> None:
    striped = client.lvcreate("vgops", "striped", size=8 * MiB, stripes=2,
                              stripe_size=64 * 1024)
    assert striped.segtype == "striped" and sorted(striped.devices) == sorted(lvm.loops[:2])
    placed = client.lvcreate("vgops", "placed", size=4 * MiB, devices=[lvm.loops[1]],
                             contiguous=True)
    assert placed.devices == [lvm.loops[1]]
    assert lvm.report("lv", "devices", "vgops/placed")[0]["devices"].startswith(lvm.loops[1])
    with pytest.raises(InvalidRequest) as err:
        client.lvcreate("vgops", "snap", size=MiB, type="snapshot")
    assert err.value.data["field"] == "origin"
    with pytest.raises(InvalidRequest):
        client.lvcreate("vgops", "thin1", type="thin", pool="pool")


def test_device_mapper_operations_fail_typed_on_this_kernel(client: Client,
                                                            lvm: rig.Sandbox) -> None:
    """Without device-mapper in the kernel LVM refuses these; the caller gets LvmFailed
    with LVM's reason, and nothing is left half-made (the real thing runs in the
    device-mapper tier)."""
    if rig.has_device_mapper():
        pytest.skip("this kernel has device-mapper: covered by the device-mapper tier")
    client.lvcreate("vgops", "origin", size=4 * MiB)

    def objects() -> dict[str, object]:  # LVM may bump vg_seqno while rolling back
        state = lvm.state()
        return {**state, "vg": [{k: v for k, v in vg.items() if k != "vg_seqno"}
                                for vg in state["vg"]]}
    before = objects()
    for params in ({"name": "pool", "size": 8 * MiB, "type": "thin-pool"},
                   {"name": "snap", "size": 4 * MiB, "type": "snapshot", "origin": "origin"}):
        with pytest.raises(LvmFailed) as err:
            client.lvcreate("vgops", **params)
        assert err.value.data["argv"][1] == "lvcreate" and err.value.data["rc"] != 0
        assert "device-mapper" in err.value.message, err.value.message  # LVM's real reason
        assert objects() == before
    # LVM skips activation when the kernel has none and says so: active is unknown
    assert client.call("lvchange", lv="vgops/origin", activate=True).active is None


def test_cli_covers_the_operations(client: Client, daemon: rig.Daemon,
                                   lvm: rig.Sandbox) -> None:
    def ctl(*args: str) -> str:
        out = rig.ctl("lvmst-admin", daemon.socket, *args)
        assert out.returncode == 0, out.stderr
        return out.stdout
    assert "vgops" in ctl("vgextend", "vgops", lvm.loops[2]).split()
    ctl("lvcreate", "vgops", "cli", "--size", "4M", "--stripes", "2", "--stripe-size", "64K")
    assert "IU_x" in ctl("lvchange", "vgops/cli", "--addtag", "IU_x")
    ctl("pvchange", lvm.loops[2], "--allocatable", "n")
    assert lvm.report("pv", "pv_attr", lvm.loops[2])[0]["pv_attr"][0] != "a"
    assert "renamed" in ctl("lvrename", "vgops/cli", "renamed")
    assert "vgnew" in ctl("vgrename", "vgops", "vgnew")
    assert lvm.report("lv", "lv_full_name,lv_tags") == [
        {"lv_full_name": "vgnew/renamed", "lv_tags": "IU_x"}]
    assert "vgnew" in ctl("vgreduce", "vgnew", lvm.loops[2])


def test_finished_jobs_are_kept_for_the_configured_time(sandbox: rig.Sandbox, users: object,
                                                         lvm: rig.Sandbox) -> None:
    lvm.lvm("pvcreate", lvm.loops[0])
    lvm.lvm("vgcreate", "vgjob", lvm.loops[0])
    d = rig.Daemon(sandbox, "keep", jobs={"keep": 1}).start()
    try:
        with Client(d.socket) as c:
            ref = c.lvcreate("vgjob", "kept", size=MiB, wait=0)
            for _ in range(100):
                if c.call("job_status", job=ref.id).state == "succeeded":
                    break
                time.sleep(0.02)
            assert c.call("job_status", job=ref.id).result["full_name"] == "vgjob/kept"
            time.sleep(1.3)
            with pytest.raises(NotFound):
                c.call("job_status", job=ref.id)
    finally:
        d.stop()


# ---- what LVM reports afterwards is exactly what the call returned ----------------------

def _flag(value: str) -> bool:
    assert value in ("0", "1"), f"not a binary flag: {value!r}"
    return value == "1"


def _items(value: str) -> list[str]:
    return [item for item in value.split(",") if item]


def _devices(value: str) -> list[str]:
    """``/dev/loop0(0),/dev/loop1(7)``: the devices, in order, each once."""
    out: list[str] = []
    for item in _items(value):
        name = item.split("(", 1)[0]
        if name not in out:
            out.append(name)
    return out


def _active(value: str) -> bool | None:
    assert value in ("active", "", "unknown"), f"unexpected lv_active {value!r}"
    return {"active": True, "": False}.get(value)  # "unknown": no device-mapper


def _none_if_empty(value: str) -> str | None:
    return value or None


Conv = Callable[[str], Any]
# The result objects' keys -> (LVM report field, conversion), written out here on their
# own (not taken from supervisor/lvm/report.py), so a conversion bug there cannot hide.
EXPECTED: dict[str, dict[str, tuple[str, Conv]]] = {
    "pv": {"name": ("pv_name", str), "uuid": ("pv_uuid", str),
           "vg": ("vg_name", _none_if_empty), "size": ("pv_size", int),
           "free": ("pv_free", int), "used": ("pv_used", int), "dev_size": ("dev_size", int),
           "pe_start": ("pe_start", int), "pe_count": ("pv_pe_count", int),
           "pe_alloc_count": ("pv_pe_alloc_count", int),
           "allocatable": ("pv_allocatable", _flag), "exported": ("pv_exported", _flag),
           "missing": ("pv_missing", _flag), "tags": ("pv_tags", _items),
           "mda_count": ("pv_mda_count", int), "mda_free": ("pv_mda_free", int),
           "attr": ("pv_attr", str), "vg_uuid": ("vg_uuid", _none_if_empty),
           "mda_used_count": ("pv_mda_used_count", int)},
    "vg": {"name": ("vg_name", str), "uuid": ("vg_uuid", str), "size": ("vg_size", int),
           "free": ("vg_free", int), "extent_size": ("vg_extent_size", int),
           "extent_count": ("vg_extent_count", int), "free_count": ("vg_free_count", int),
           "pv_count": ("pv_count", int), "lv_count": ("lv_count", int),
           "snap_count": ("snap_count", int), "seqno": ("vg_seqno", int),
           "writable": ("vg_permissions", {"writeable": True, "read-only": False}.__getitem__),
           "resizable": ("vg_extendable", _flag), "exported": ("vg_exported", _flag),
           "partial": ("vg_partial", _flag), "shared": ("vg_shared", _flag),
           "lock_type": ("vg_lock_type", _none_if_empty),
           "lock_args": ("vg_lock_args", _none_if_empty),
           "system_id": ("vg_systemid", _none_if_empty), "tags": ("vg_tags", _items),
           "mda_count": ("vg_mda_count", int), "mda_free": ("vg_mda_free", int),
           "attr": ("vg_attr", str), "mda_size": ("vg_mda_size", int),
           "pvs": ("pv_name", lambda name: [name])},  # one row per PV: all of them
    "lv": {"name": ("lv_name", str), "vg": ("vg_name", str),
           "full_name": ("lv_full_name", str), "uuid": ("lv_uuid", str),
           "path": ("lv_path", _none_if_empty), "size": ("lv_size", int),
           "segtype": ("segtype", str), "active": ("lv_active", _active),
           "permissions": ("lv_attr", lambda attr: {"w": "rw", "r": "r"}[attr[1]]),
           "origin": ("origin", _none_if_empty), "pool": ("pool_lv", _none_if_empty),
           "data_percent": ("data_percent", lambda v: float(v) if v else None),
           "metadata_percent": ("metadata_percent", lambda v: float(v) if v else None),
           "devices": ("devices", _devices), "tags": ("lv_tags", _items),
           "attr": ("lv_attr", str),
           "open": ("lv_device_open", {"1": True, "0": False, "-1": None}.__getitem__),
           "lock_args": ("lv_lockargs", _none_if_empty),
           "segments": ("seg_start_pe", lambda start: [])},  # from the rows, below
}
# report fields read for a key mapped above from another field, or for no key (vg_tags:
# a scoped caller's read is filtered by its VG's tags)
AUX = {"pv": {"vg_tags"}, "vg": set(), "lv": {"seg_size_pe", "vg_tags"}}


def _segment(row: dict[str, str]) -> dict[str, Any]:
    """``devices`` "/dev/loop0(5),/dev/loop1(0)": each PV and its first extent."""
    pvs = [{"name": item[:item.index("(")], "start": int(item[item.index("(") + 1:-1])}
           for item in row["devices"].split(",") if item]
    return {"lv_start": int(row["seg_start_pe"]), "extents": int(row["seg_size_pe"]),
            "pvs": pvs}
DAEMON_FIELDS = {"pv": PV_FIELDS, "vg": VG_FIELDS, "lv": LV_FIELDS}
KIND = {PV: "pv", VG: "vg", LV: "lv"}


def lvm_reports(sandbox: rig.Sandbox, kind: str, name: str) -> dict[str, Any]:
    """One PV/VG/LV as LVM run directly as root reports it, with the daemon's fields."""
    from lvmsuper.supervisor.lvm.report import parse_document  # the pure JSON reader

    mapping = EXPECTED[kind]
    assert {field for field, _ in mapping.values()} | AUX[kind] == set(DAEMON_FIELDS[kind])
    out = sandbox.lvm(f"{kind}s", "--reportformat", "json", "--units", "b", "--nosuffix",
                      "--binary", "-o", ",".join(DAEMON_FIELDS[kind]), name).stdout
    rows = parse_document(out).reports.get(kind, [])
    assert rows, f"LVM reports no {kind} {name}"
    obj = {key: conv(rows[0][field]) for key, (field, conv) in mapping.items()}
    for row in rows[1:]:
        if kind == "vg":  # a VG has one row per PV
            assert row["vg_uuid"] == obj["uuid"]
            obj["pvs"] += [row["pv_name"]]
            continue
        # an LV has one row per segment; its devices are all of them
        assert row["lv_uuid"] == obj["uuid"]
        obj["devices"] += [d for d in _devices(row["devices"]) if d not in obj["devices"]]
    if kind == "lv":
        obj["segments"] = sorted((_segment(row) for row in rows),
                                 key=lambda seg: seg["lv_start"])
    attr = obj["attr"]
    if kind == "pv":  # the flags agree with LVM's own attr string too
        assert (obj["allocatable"], obj["exported"], obj["missing"]) == (
            attr[0] == "a", attr[1] == "x", attr[2] == "m"), obj
    elif kind == "vg":
        assert (obj["writable"], obj["resizable"], obj["exported"], obj["partial"]) == (
            attr[0] == "w", attr[1] == "z", attr[2] == "x", attr[3] == "p"), obj
    return obj


T = TypeVar("T")


def as_lvm_reports(sandbox: rig.Sandbox, returned: T) -> T:
    """Asserts that every field of ``returned`` (a PV, VG or LV a call gave back) is what
    LVM itself reports for that object now, value and JSON type; returns it."""
    kind = KIND[type(returned)]
    got = to_wire(returned)
    name = got["full_name"] if kind == "lv" else got["name"]
    want = lvm_reports(sandbox, kind, name)
    assert set(got) == set(want), (kind, name, set(got) ^ set(want))
    diff = {key: (got[key], want[key]) for key in want
            if got[key] != want[key] or type(got[key]) is not type(want[key])}
    assert not diff, f"{kind} {name}: returned vs LVM's report: {diff}"
    return returned


@pytest.fixture
def admin(daemon: rig.Daemon, lvm: rig.Sandbox) -> Iterator[Client]:
    """A client whose connection lvmst-admin made (all roles), on an emptied sandbox."""
    c = rig.client_as(ADMIN, daemon.socket)
    try:
        yield c
    finally:
        c.close()


def test_every_change_returns_what_lvm_then_reports(admin: Client, lvm: rig.Sandbox) -> None:
    d0, d1, d2, d3 = lvm.loops

    def check(obj: Any) -> Any:
        return as_lvm_reports(lvm, obj)

    pvs = admin.pvcreate([d0, d1, d2])
    assert [pv.name for pv in pvs] == [d0, d1, d2]
    for pv in pvs:
        assert check(pv).vg is None
    # the check itself catches a wrong value and a right value of the wrong JSON type
    for wrong in (dataclasses.replace(pvs[0], pe_start=pvs[0].pe_start + 1),
                  dataclasses.replace(pvs[0], allocatable=int(pvs[0].allocatable)),
                  dataclasses.replace(pvs[0], tags=["x"])):
        with pytest.raises(AssertionError):
            check(wrong)
    pv = check(admin.pvresize(d2, size=40 * MiB))
    assert pv.size <= 40 * MiB < pv.dev_size == 64 * MiB
    pv = check(admin.pvresize(d2))  # back to the whole device
    assert pv.size == pv.dev_size == 64 * MiB

    ext = 8 * MiB
    vg = check(admin.vgcreate("vgx", [d0, d1], extent_size=ext, tags=[FULL_TAG, "site=a"]))
    assert (vg.extent_size, vg.pv_count, sorted(vg.tags)) == (ext, 2,
                                                               sorted([FULL_TAG, "site=a"]))
    uuid = vg.uuid
    vg = check(admin.vgextend("vgx", [d2]))
    assert vg.pv_count == 3 and vg.extent_count == 3 * 7  # 64 MiB - 1 MiB pe_start
    pv = check(admin.pvchange(d0, allocatable=False))
    assert pv.allocatable is False and pv.vg == "vgx"
    pv = check(admin.pvchange(d0, allocatable=True))
    assert pv.allocatable is True
    pv = check(admin.pvchange(d1, add_tags=[FULL_TAG, "x"]))
    assert sorted(pv.tags) == sorted([FULL_TAG, "x"])
    pv = check(admin.pvchange(d1, del_tags=["x"]))
    assert pv.tags == [FULL_TAG]
    vg = check(admin.vgchange("vgx", add_tags=["site=b"], del_tags=["site=a"]))
    assert sorted(vg.tags) == sorted([FULL_TAG, "site=b"])
    vg = check(admin.vgchange("vgx", del_tags=[FULL_TAG]))
    assert vg.tags == ["site=b"]

    lv = check(admin.lvcreate("vgx", "bysize", size=2 * MiB + 13))
    assert lv.size == ext  # 2 MiB + 13 B rounds up to one whole extent
    lv = check(admin.lvcreate("vgx", "byext", extents=2))
    assert lv.size == 2 * ext and lv.segtype == "linear"
    lv = check(admin.lvcreate("vgx", "striped", size=2 * ext, stripes=2,
                              stripe_size=64 * 1024))
    assert lv.segtype == "striped" and len(lv.devices) == 2
    lv = check(admin.lvcreate("vgx", "placed", size=ext, contiguous=True, devices=[d2]))
    assert lv.devices == [d2]
    lv = check(admin.lvcreate("vgx", "tagged", extents=1, tags=[FULL_TAG, "IU_1"]))
    assert sorted(lv.tags) == sorted([FULL_TAG, "IU_1"])
    free = int(lvm.report("vg", "vg_free_count", "vgx")[0]["vg_free_count"])
    lv = check(admin.lvcreate("vgx", "half", extents="50%FREE"))
    assert lv.size // ext in (free // 2, -(-free // 2)), (lv.size, free)

    lv = check(admin.lvresize("vgx/bysize", 3 * ext))
    assert lv.size == 3 * ext
    lv = check(admin.lvresize("vgx/bysize", ext + 1, force=True))
    assert lv.size == 2 * ext  # a shrink rounds up to whole extents too
    lv = check(admin.lvrename("vgx/byext", "renamed"))
    assert lv.full_name == "vgx/renamed"
    lv = check(admin.lvchange("vgx/renamed", permission="r"))
    assert lv.permissions == "r"
    lv = check(admin.lvchange("vgx/renamed", permission="rw"))
    assert lv.permissions == "rw"
    lv = check(admin.lvchange("vgx/renamed", add_tags=[FULL_TAG, "y"]))
    assert sorted(lv.tags) == sorted([FULL_TAG, "y"])
    lv = check(admin.lvchange("vgx/renamed", del_tags=[FULL_TAG]))
    assert lv.tags == ["y"]
    assert [x.full_name for x in admin.lvs(tags=[FULL_TAG])] == ["vgx/tagged"]

    vg = check(admin.vgextend("vgx", [d3]))  # d3 is no PV yet: vgextend initialises it
    assert vg.pv_count == 4 and check(admin.pvs(names=[d3])[0]).vg == "vgx"
    vg = check(admin.vgreduce("vgx", devices=[d3]))
    assert vg.pv_count == 3 and check(admin.pvs(names=[d3])[0]).vg is None
    vg = check(admin.vgrename("vgx", "vgy"))
    assert (vg.name, vg.uuid, vg.lv_count) == ("vgy", uuid, 6)
    lvs = admin.lvs(vg="vgy")
    assert sorted(x.name for x in lvs) == ["bysize", "half", "placed", "renamed", "striped",
                                           "tagged"]
    for lv in lvs:
        assert check(lv).vg == "vgy"


# ---- vgreduce missing=true ------------------------------------------------------------------

def test_vgreduce_missing_removes_a_pv_lvm_cannot_see(admin: Client, lvm: rig.Sandbox) -> None:
    d0, d1 = lvm.loops[:2]
    lvm.lvm("pvcreate", d0, d1)
    lvm.lvm("vgcreate", "vgmiss", d0, d1)
    lvm.lvm("lvcreate", "--name", "keep", "--size", "4m", "vgmiss", d0)
    uuid1 = lvm.report("pv", "pv_uuid", d1)[0]["pv_uuid"]
    conf = (lvm.system_dir / "lvm.conf").read_bytes()
    with lvm.hidden(d1):
        (vg,) = admin.vgs(names=["vgmiss"])
        assert (vg.partial, vg.pv_count) == (True, 2), vg
        as_lvm_reports(lvm, vg)
        pvs = admin.pvs(vg="vgmiss")
        assert sorted(pv.missing for pv in pvs) == [False, True], pvs
        assert d1 not in [pv.name for pv in pvs]
        vg = as_lvm_reports(lvm, admin.vgreduce("vgmiss", missing=True))
        assert (vg.pv_count, vg.partial, vg.lv_count) == (1, False, 1), vg
        assert [pv.name for pv in admin.pvs(vg="vgmiss")] == [d0]
    assert (lvm.system_dir / "lvm.conf").read_bytes() == conf
    # LVM sees d1 again: LVM 2.03.16 treats it as an "outdated PV" (its label still names
    # the VG, with older metadata) and leaves it out of every report until
    # `vgck --updatemetadata` wipes that; the daemon shows exactly that.
    (vg,) = admin.vgs(names=["vgmiss"])
    assert (vg.pv_count, vg.partial) == (1, False)
    as_lvm_reports(lvm, vg)
    # (with the daemon's fields: `pvs -o pv_name` alone, which needs no VG metadata,
    # still lists d1)
    assert [row["pv_name"] for row in lvm.report("pv", ",".join(PV_FIELDS))] == [d0]
    outdated = lvm.lvm("pvs", d1, check=False)
    assert outdated.returncode == 5 and f"outdated PV {d1}" in outdated.stderr, outdated.stderr
    assert [pv.name for pv in admin.pvs()] == [d0]
    with pytest.raises(NotFound) as err:
        admin.pvs(names=[d1])
    assert err.value.data == {"object_type": "pv", "object_name": d1}
    lvm.lvm("vgck", "--updatemetadata", "vgmiss")  # what LVM's warning tells one to do
    assert lvm.report("pv", "pv_name,vg_name,pv_uuid", d1) == [
        {"pv_name": d1, "vg_name": "", "pv_uuid": uuid1}]  # now an orphan PV
    pv = as_lvm_reports(lvm, admin.pvs(names=[d1])[0])
    assert (pv.vg, pv.uuid, pv.pe_alloc_count) == (None, uuid1, 0)


# ---- roles: manage may create and grow; removing, reducing, shrinking need destroy ----------

def test_destroy_role_is_needed_to_remove_reduce_and_shrink(daemon: rig.Daemon,
                                                            lvm: rig.Sandbox) -> None:
    d0, d1, d2, d3 = lvm.loops
    lvm.lvm("pvcreate", d0, d1, d2, d3)
    lvm.lvm("vgcreate", "vgrole", d0, d1, d2)
    for name in ("grown", "shrunk", "victim"):
        lvm.lvm("lvcreate", "--name", name, "--size", "8m", "vgrole", d0)

    def size(lv: str) -> int:
        return int(lvm.report("lv", "lv_size", f"vgrole/{lv}")[0]["lv_size"])

    def lvs() -> set[str]:
        return {row["lv_full_name"] for row in lvm.report("lv", "lv_full_name")}

    manage, admin = rig.client_as(MANAGE, daemon.socket), rig.client_as(ADMIN, daemon.socket)
    try:
        # manage (and admin) may create and grow
        manage.call("lvcreate", vg="vgrole", name="bymanage", size=4 * MiB)
        admin.call("lvcreate", vg="vgrole", name="byadmin", size=4 * MiB)
        assert {"vgrole/bymanage", "vgrole/byadmin"} <= lvs()
        manage.call("lvresize", lv="vgrole/grown", size=12 * MiB)
        assert size("grown") == 12 * MiB
        admin.call("lvresize", lv="vgrole/grown", size=16 * MiB)
        assert size("grown") == 16 * MiB

        destroying: list[tuple[str, dict[str, Any], Callable[[], bool]]] = [
            ("lvresize", {"lv": "vgrole/shrunk", "size": 4 * MiB, "force": True},
             lambda: size("shrunk") == 4 * MiB),
            ("lvremove", {"lv": "vgrole/victim"}, lambda: "vgrole/victim" not in lvs()),
            ("vgreduce", {"vg": "vgrole", "devices": [d2]},
             lambda: lvm.report("pv", "vg_name", d2) == [{"vg_name": ""}]),
            ("pvremove", {"devices": [d3]},
             lambda: d3 not in {r["pv_name"] for r in lvm.report("pv", "pv_name")}),
            ("vgremove", {"vg": "vgrole", "force": True},
             lambda: lvm.report("vg", "vg_name") == []),
        ]
        for method, params, done in destroying:
            before = lvm.state()
            with pytest.raises(PermissionDenied) as denied:
                manage.call(method, **params)
            assert denied.value.data["required"] == "destroy", (method, denied.value.data)
            assert lvm.state() == before, f"{method} refused, yet LVM changed"
            assert not done()
            admin.call(method, **params)
            assert done(), f"{method} as admin did not happen"
            assert lvm.state() != before
    finally:
        manage.close()
        admin.close()


# ---- NotFound and AlreadyExists, on every method where they apply ----------------------

def test_not_found_and_already_exists_everywhere(admin: Client, lvm: rig.Sandbox) -> None:
    d0, d1, d2, d3 = lvm.loops  # d0: vgnf, d1: vgother, d2: an orphan PV, d3: no PV
    lvm.lvm("pvcreate", d0, d1, d2)
    lvm.lvm("vgcreate", "vgnf", d0)
    lvm.lvm("vgcreate", "vgother", d1)
    for name in ("one", "two"):
        lvm.lvm("lvcreate", "--name", name, "--size", "4m", "vgnf")
    nf, ae = NotFound, AlreadyExists
    no_vg, no_lv = ("vg", "nosuchvg"), ("lv", "vgnf/nosuch")
    cases: list[tuple[str, dict[str, Any], type[LvmSuperError], tuple[str, str]]] = [
        ("pvs", {"names": [d3]}, nf, ("pv", d3)),
        ("vgs", {"names": ["nosuchvg"]}, nf, no_vg),
        ("lvs", {"names": ["vgnf/nosuch"]}, nf, no_lv),
        ("lvs", {"vg": "nosuchvg"}, nf, no_vg),
        ("report", {"vg": "nosuchvg"}, nf, no_vg),
        ("pvremove", {"devices": [d3]}, nf, ("pv", d3)),
        ("pvresize", {"device": d3}, nf, ("pv", d3)),
        ("pvresize", {"device": d3, "size": 32 * MiB}, nf, ("pv", d3)),
        ("pvchange", {"device": d3, "add_tags": ["t"]}, nf, ("pv", d3)),
        ("pvchange", {"device": d3, "allocatable": False}, nf, ("pv", d3)),
        ("vgremove", {"vg": "nosuchvg"}, nf, no_vg),
        ("vgremove", {"vg": "nosuchvg", "force": True}, nf, no_vg),
        ("vgchange", {"vg": "nosuchvg", "add_tags": ["t"]}, nf, no_vg),
        ("vgextend", {"vg": "nosuchvg", "devices": [d2]}, nf, no_vg),
        ("vgreduce", {"vg": "nosuchvg", "devices": [d2]}, nf, no_vg),
        ("vgreduce", {"vg": "nosuchvg", "missing": True}, nf, no_vg),
        ("vgrename", {"vg": "nosuchvg", "new_name": "vgnew"}, nf, no_vg),
        ("lvremove", {"lv": "vgnf/nosuch"}, nf, no_lv),
        ("lvresize", {"lv": "vgnf/nosuch", "size": 8 * MiB}, nf, no_lv),
        ("lvrename", {"lv": "vgnf/nosuch", "new_name": "other"}, nf, no_lv),
        ("lvchange", {"lv": "vgnf/nosuch", "add_tags": ["t"]}, nf, no_lv),
        ("lvchange", {"lv": "vgnf/nosuch", "permission": "r"}, nf, no_lv),
        ("lvcreate", {"vg": "nosuchvg", "name": "x", "size": MiB}, nf, no_vg),
        ("lvcreate", {"vg": "vgnf", "name": "snap", "size": 4 * MiB, "type": "snapshot",
                      "origin": "nosuch"}, nf, no_lv),
        ("lvcreate", {"vg": "vgnf", "name": "thin", "type": "thin", "pool": "nopool",
                      "virtual_size": 8 * MiB}, nf, ("lv", "vgnf/nopool")),
        ("job_status", {"job": "1-999999"}, nf, ("job", "1-999999")),
        ("job_cancel", {"job": "1-999999"}, nf, ("job", "1-999999")),
        ("vgcreate", {"name": "vgnf", "devices": [d2]}, ae, ("vg", "vgnf")),
        ("vgrename", {"vg": "vgnf", "new_name": "vgother"}, ae, ("vg", "vgother")),
        ("lvcreate", {"vg": "vgnf", "name": "one", "size": MiB}, ae, ("lv", "vgnf/one")),
        ("lvcreate", {"vg": "vgnf", "name": "one", "extents": 1}, ae, ("lv", "vgnf/one")),
        ("lvrename", {"lv": "vgnf/one", "new_name": "two"}, ae, ("lv", "vgnf/two")),
        ("pvcreate", {"devices": [d0]}, ae, ("pv", d0)),  # a PV in a VG
    ]
    wrong: list[str] = []
    for method, params, error, (kind, name) in cases:
        before = lvm.state()
        try:
            result = admin.call(method, **params)
        except LvmSuperError as exc:
            if type(exc) is not error or exc.data != {"object_type": kind,
                                                      "object_name": name}:
                wrong.append(f"{method} {params}: {exc.name} {exc.data} {exc.message!r}")
        else:
            wrong.append(f"{method} {params}: no error, returned {to_wire(result)!r:.200}")
        after = lvm.state()
        if after != before:
            wrong.append(f"{method} {params}: LVM changed: {before} -> {after}")
    assert not wrong, "\n".join(wrong)


def test_pvcreate_of_an_existing_orphan_pv_is_already_exists(admin: Client,
                                                             lvm: rig.Sandbox) -> None:
    """LVM 2.03.16's own pvcreate re-initialises an orphan PV without a word (a new UUID);
    through the daemon that is AlreadyExists, and the PV stays as it was."""
    d0, d1 = lvm.loops[:2]
    lvm.lvm("pvcreate", d0)
    before = lvm.state()
    for devices in ([d0], [d1, d0]):  # alone, and after a device that is no PV yet
        with pytest.raises(AlreadyExists) as err:
            admin.pvcreate(devices)
        assert err.value.data == {"object_type": "pv", "object_name": d0}
        assert lvm.state() == before, devices
