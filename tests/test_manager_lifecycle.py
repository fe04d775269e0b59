"""A block storage domain's life, as vdsm lives it through sudo today, played through the
client library by an unprivileged user (issue 12): every step one typed call, nothing
parsed by the caller, each checked against what LVM reports when run directly as root.

Real sizes: vdsm's 128 MiB extents and metadata areas, on two sparse 8 GiB loop devices
of a sandbox of their own (the shared one has 64 MiB devices). The activation parts
(batch activate / refresh / deactivate, InUse of an open LV) need device-mapper: they
are in tests/dm/test_dm_manager.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import rig
from lvmsuper.client.models import LV, PV, VG

pytestmark = pytest.mark.system

MiB, GiB = 2**20, 2**30
USER = "lvmst-admin"  # an unprivileged user in the groups of every role
SD = "sd1a2b3c"  # the domain's VG (vdsm names it by the domain's UUID)
UNREADY, READY = "RHAT_storage_domain_UNREADY", "RHAT_storage_domain"
# vdsm's special LVs and their sizes (blockSD.py), in 128 MiB extents once created
SPECIAL = {"metadata": 128 * MiB, "ids": 8 * MiB, "inbox": 16 * MiB, "outbox": 16 * MiB,
           "leases": 2 * GiB, "xleases": 1 * GiB, "master": 1 * GiB}
# domain metadata as vdsm keeps it in VG tags: MDT_KEY=VALUE, "&NN&" escaping what LVM's
# tag charset lacks (",": &44&, " ": &32&)
DOMAIN_MD = ["MDT_CLASS=Data", "MDT_DESCRIPTION=my&32&domain&44&block", "MDT_VERSION=5",
             "MDT_LEASETIMESEC=60", "MDT_ROLE=Regular", "MDT_SDUUID=sd1a2b3c",
             "MDT_PV0=pv:loop&44&uuid:x&44&pestart:0&44&pecount:62&44&mapoffset:0",
             "MDT__SHA_CKSUM=1f2e3d4c5b6a"]
IMG, IMG2 = "4a5b6c7d-0000-4000-8000-0000000000a1", "4a5b6c7d-0000-4000-8000-0000000000a2"
BLANK = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def big(users: object) -> Iterator[rig.Sandbox]:
    box = rig.Sandbox(count=2, size_mib=8192)  # sparse: no space is taken until written
    try:
        yield box
    finally:
        box.destroy()


@pytest.fixture(scope="module")
def manager(big: rig.Sandbox) -> Iterator[Any]:
    d = rig.Daemon(big, "mgr").start()
    try:
        with rig.client_as(USER, d.socket) as client:
            yield client, d
    finally:
        d.stop()


def row(box: rig.Sandbox, kind: str, fields: str, name: str) -> dict[str, str]:
    (found,) = box.report(kind, fields, name)
    return found


def test_a_block_storage_domain_from_creation_to_removal(big: rig.Sandbox,
                                                         manager: Any) -> None:
    c, daemon = manager
    d0, d1 = big.loops

    # PVs with vdsm's metadata layout: two 128 MiB areas each, ignored ...
    pvs = c.pvcreate([d0, d1], metadata_size=128 * MiB, metadata_copies=2,
                     metadata_ignore=True)
    assert all(isinstance(pv, PV) for pv in pvs)
    assert [(pv.mda_count, pv.mda_used_count) for pv in pvs] == [(2, 0), (2, 0)]
    for dev in (d0, d1):
        r = row(big, "pv", "pv_mda_count,pv_mda_used_count,pv_mda_size", dev)  # bytes
        assert (r["pv_mda_count"], r["pv_mda_used_count"]) == ("2", "0")
        assert int(r["pv_mda_size"]) >= 127 * MiB
    # ... then used on the first PV only (the domain's metadata PV)
    pv = c.pvchange(d0, metadata_ignore=False)
    assert (pv.name, pv.mda_used_count) == (d0, 2)
    assert row(big, "pv", "pv_mda_used_count", d0)["pv_mda_used_count"] == "2"
    assert row(big, "pv", "pv_mda_used_count", d1)["pv_mda_used_count"] == "0"

    # the VG: 128 MiB extents, no autoactivation, not ready yet
    vg = c.vgcreate(SD, [d0, d1], extent_size=128 * MiB, auto_activation=False,
                    tags=[UNREADY])
    assert isinstance(vg, VG) and vg.extent_size == 128 * MiB and vg.tags == [UNREADY]
    assert sorted(vg.pvs) == sorted([d0, d1])
    r = row(big, "vg", "vg_extent_size,vg_autoactivation,vg_tags,vg_mda_size,vg_uuid", SD)
    assert (r["vg_extent_size"], r["vg_autoactivation"], r["vg_tags"]) == \
        (str(128 * MiB), "", UNREADY)
    assert vg.mda_size == int(r["vg_mda_size"]) >= 127 * MiB
    assert all(p.vg_uuid == vg.uuid == r["vg_uuid"] for p in c.pvs(vg=SD))

    # the special LVs; metadata first, on the metadata PV, from its extent 0
    for name, size in SPECIAL.items():
        lv = c.lvcreate(SD, name, size=size, wipe_signatures=False,
                        devices=[d0] if name == "metadata" else None)
        assert isinstance(lv, LV) and lv.size == -(-size // (128 * MiB)) * 128 * MiB
    (md,) = c.lvs(names=[f"{SD}/metadata"])
    assert md.segments == [{"lv_start": 0, "extents": 1, "pvs": [{"name": d0, "start": 0}]}]
    assert row(big, "lv", "seg_pe_ranges", f"{SD}/metadata")["seg_pe_ranges"] == f"{d0}:0-0"
    assert row(big, "lv", "lv_size", f"{SD}/leases")["lv_size"] == str(2 * GiB)

    # domain metadata into VG tags and the ready tag swapped in, in one call
    vg = c.vgchange(SD, add_tags=[*DOMAIN_MD, READY], del_tags=[UNREADY])
    assert sorted(vg.tags) == sorted([*DOMAIN_MD, READY])
    assert sorted(row(big, "vg", "vg_tags", SD)["vg_tags"].split(",")) == \
        sorted([*DOMAIN_MD, READY])

    # a volume chain of three LVs, tagged as vdsm links them
    chain = [f"{SD}/vol{i}" for i in range(3)]
    for i, full in enumerate(chain):
        parent = BLANK if i == 0 else f"vol{i - 1}"
        c.lvcreate(SD, full.split("/")[1], size=1 * GiB, wipe_signatures=False,
                   tags=[f"IU_{IMG}", f"PU_{parent}", f"MD_{i + 1}"])
    assert [lv.name for lv in c.lvs(vg=SD, tags=[f"IU_{IMG}"])] == ["vol0", "vol1", "vol2"]
    # the chain moves to another image: one batch, one LVM run, the VG locked once
    moved = c.lvchange(lvs=chain, del_tags=[f"IU_{IMG}"], add_tags=[f"IU_{IMG2}"])
    assert [lv.full_name for lv in moved] == chain
    for i, (lv, full) in enumerate(zip(moved, chain)):
        assert f"IU_{IMG2}" in lv.tags and f"IU_{IMG}" not in lv.tags
        assert sorted(row(big, "lv", "lv_tags", full)["lv_tags"].split(",")) == sorted(lv.tags)
    assert c.lvs(vg=SD, tags=[f"IU_{IMG}"]) == []
    audited = [ln for ln in daemon.log().splitlines() if "audit: lvchange " in ln]
    assert len(audited) == 1 and all(f'"{full}"' in audited[0] for full in chain), audited

    # an extend (the leaf grows), vgck, and reads limited to the domain's own PVs
    grown = c.lvresize(chain[2], 3 * GiB)
    assert grown.size == 3 * GiB == int(row(big, "lv", "lv_size", chain[2])["lv_size"])
    assert c.vgck(SD) == {"ok": True, "log": []}
    assert big.lvm("vgck", SD, check=False).returncode == 0
    scanned = c.lvs(vg=SD, scan_devices=[d0, d1])
    assert [lv.uuid for lv in scanned] == [lv.uuid for lv in c.lvs(vg=SD)]
    assert len(scanned) == len(SPECIAL) + 3

    # the chain removed in one batch, then the domain
    assert c.lvremove(lvs=chain) == {"removed": chain}
    assert sorted(r["lv_name"] for r in big.report("lv", "lv_name", SD)) == sorted(SPECIAL)
    assert c.vgremove(SD, force=True) == {"removed": [SD]}
    assert big.report("vg", "vg_name") == []
    assert c.pvremove([d0, d1]) == {"removed": [d0, d1]}
    assert big.report("pv", "pv_name") == []
