"""The fingerprint's parsing, against devices real LVM wrote (loop devices).

What it must get right: where LVM's label and metadata-area headers are (LVM's own
report says: pv_uuid, pe_start, pv_mda_count, dev_size), and that every commit LVM
makes moves a header (lvcreate, a tag, vgrename, pvchange), while reading changes
nothing. A label of another type is Unknown, and so is a header LVM did not write.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Iterator

import pytest

import rig
from lvmsuper.supervisor.lvm import fingerprint as fp

MiB = 2**20


@pytest.fixture
def box(lvm: rig.Sandbox) -> Iterator[rig.Sandbox]:
    yield lvm


def head(dev: str) -> bytes:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return os.pread(fd, fp.HEAD, 0)
    finally:
        os.close(fd)


def part(box: rig.Sandbox, dev: str) -> tuple[object, ...]:
    name = os.path.basename(dev)
    found = fp.take(str(box.system_dir), only=[name]).devices
    assert len(found) == 1 and found[0][0] == name, found
    return found[0]


def test_label_and_headers_where_lvm_says(box: rig.Sandbox) -> None:
    one, two = box.loops[0], box.loops[1]
    box.lvm("pvcreate", "-q", one)
    box.lvm("pvcreate", "-q", "--pvmetadatacopies", "2", two)
    for dev, copies in ((one, 1), (two, 2)):
        row = box.report("pv", "pv_uuid,pe_start,pv_mda_count,dev_size", dev)[0]
        label = fp.parse_label(head(dev))
        assert label is not None
        assert label.pv_uuid == row["pv_uuid"].replace("-", "")
        assert label.device_size == int(row["dev_size"])
        assert len(label.metadata_areas) == int(row["pv_mda_count"]) == copies
        assert label.data_areas[0][0] == int(row["pe_start"])
        size = int(row["dev_size"])
        for offset, length in label.metadata_areas:
            assert 0 < offset < size and offset + length <= size
        if copies == 2:  # the second area at the device's end
            assert label.metadata_areas[1][0] > size - 2 * MiB
        # the fingerprint reads every header, and each is LVM's
        got = part(box, dev)
        assert got[3] == label.raw and len(got[4]) == copies  # type: ignore[arg-type]
        for raw, (offset, _) in zip(got[4], label.metadata_areas):  # type: ignore[arg-type]
            assert fp.parse_mda_header(raw, offset).start == offset


def test_every_commit_moves_the_header(box: rig.Sandbox) -> None:
    one, two = box.loops[0], box.loops[1]
    box.lvm("pvcreate", "-q", "--pvmetadatacopies", "2", one)
    before = part(box, one)
    assert before == part(box, one)  # reading changes nothing
    box.lvm("vgcreate", "-q", "fpvg", one)
    seen = [before, part(box, one)]
    label = fp.parse_label(head(one))
    assert label is not None
    header = fp.parse_mda_header(seen[-1][4][0], label.metadata_areas[0][0])  # type: ignore[index]
    assert header.locations and header.locations[0][1] > 0  # VG metadata is there now
    for step in (["lvcreate", "-q", "-n", "a", "-L", "4m", "fpvg"],
                 ["lvchange", "--addtag", "t1", "fpvg/a"],
                 ["lvrename", "fpvg", "a", "b"],
                 ["lvresize", "-q", "-L", "8m", "fpvg/b"],
                 ["vgchange", "--addtag", "v", "fpvg"],
                 ["vgrename", "fpvg", "fpvg2"],
                 ["pvchange", "--addtag", "p", one],
                 ["lvremove", "-q", "-y", "fpvg2/b"]):
        box.lvm(*step)
        now = part(box, one)
        assert all(now != earlier for earlier in seen), f"{step[0]} did not move it"
        both = fp.parse_mda_header(now[4][1], label.metadata_areas[1][0])  # type: ignore[index]
        assert both.locations, "the second area is written too"
        seen.append(now)
    # a PV that joins a VG is written; one that is removed loses its label
    box.lvm("pvcreate", "-q", two)
    orphan = part(box, two)
    box.lvm("vgextend", "-q", "fpvg2", two)
    assert part(box, two) != orphan
    box.lvm("vgreduce", "-q", "fpvg2", two)
    box.lvm("pvremove", "-q", two)
    assert part(box, two)[3] is None


def test_wipefs_and_resize_show(box: rig.Sandbox) -> None:
    dev = box.loops[0]
    box.lvm("pvcreate", "-q", dev)
    assert part(box, dev)[3] is not None
    subprocess.run(["wipefs", "-q", "-a", dev], check=True, capture_output=True)
    after = part(box, dev)
    assert box.report("pv", "pv_name") == []  # LVM no longer sees a PV there
    assert after[3] is None  # nor does the fingerprint: but what is left of it counts
    assert after[4] == fp.label_sectors(head(dev)) and after[4]


def test_foreign_label_and_header_are_unknown(box: rig.Sandbox) -> None:
    dev = box.loops[0]
    box.lvm("pvcreate", "-q", dev)
    data = bytearray(head(dev))
    label = fp.parse_label(bytes(data))
    assert label is not None
    base = label.sector * fp.SECTOR
    foreign = bytearray(data)
    foreign[base + 24:base + 32] = b"LVM3 001"
    assert fp.parse_label(bytes(foreign)) is None  # its checksum fails: LVM ignores it
    struct.pack_into("<I", foreign, base + 16, fp.lvm_crc(bytes(foreign[base + 20:base + 512])))
    with pytest.raises(fp.Unknown):
        fp.parse_label(bytes(foreign))
    offset = label.metadata_areas[0][0]
    header = bytearray(data[offset:offset + fp.SECTOR])
    fp.parse_mda_header(bytes(header), offset)
    with pytest.raises(fp.Unknown):
        fp.parse_mda_header(bytes(header), offset + 512)  # not where it says it is
    header[5] ^= 0xFF
    with pytest.raises(fp.Unknown):
        fp.parse_mda_header(bytes(header), offset)


def test_the_device_set_and_size_count(box: rig.Sandbox) -> None:
    """A loop device attached, resized and detached changes the fingerprint."""
    image = box.dir / "extra.img"
    with open(image, "wb") as fh:
        fh.truncate(8 * MiB)
    start = fp.take(str(box.system_dir))
    out = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                         capture_output=True, text=True)
    loop = out.stdout.strip()
    try:
        attached = fp.take(str(box.system_dir))
        assert attached != start and attached.differs(start) == "block devices changed"
        assert (os.path.basename(loop), os.major(os.stat(loop).st_rdev),
                ) in {(d[0], d[1][0]) for d in attached.devices}  # type: ignore[index]
        with open(image, "ab") as fh:
            fh.truncate(12 * MiB)
        subprocess.run(["losetup", "-c", loop], check=True)
        resized = fp.take(str(box.system_dir))
        assert resized.differs(attached) == "block devices changed"
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    assert fp.take(str(box.system_dir)) != start  # the uevent count moved on


def test_lvm_config_counts(box: rig.Sandbox) -> None:
    conf = box.system_dir / "lvm.conf"
    before = fp.take(str(box.system_dir))
    saved = conf.read_bytes()
    try:
        conf.write_bytes(saved + b"\n")
        assert fp.take(str(box.system_dir)).differs(before) == "LVM configuration changed"
    finally:
        conf.write_bytes(saved)
