"""What LVM would find, in a few kilobytes: the fingerprint that proves a cached report
fresh.

Rules:
- Pure reading, never a write, and never a result: the on-disk format is parsed only
  as far as change detection needs (where a label's metadata areas are, and that each
  header is one LVM wrote); reports always come from LVM itself.
- Everything a report shows that can change is covered: for every block device the
  kernel lists with a size (``/proc/partitions``: the set, device numbers and exact
  sizes), its label sectors and the header of each of its metadata areas (``raw_locn``
  offset, size, checksum: every commit moves them), read with ``O_DIRECT``; device-
  mapper's devices with their open count, flags and status (the way LVM reads
  ``data_percent``, ``metadata_percent``, activation and ``open``); the kernel's uevent
  sequence number (a device that came and went, or an activation undone, still moved
  it); and LVM's configuration files.
- Anything this module does not recognise (another label type, a bad metadata-area
  header, a read error, a device node that is not the device) raises ``Unknown``: the
  caller then runs LVM. A device the daemon may not open is recorded with its errno
  (LVM, running with the daemon's rights, cannot open it either).
- LVM's own LVs (device-mapper uuid ``LVM-``) are never opened: an open would show in
  their ``open`` field. LVM does not scan them unless ``devices/scan_lvs`` is set; the
  caller checks that setting.
- Only devices of the block types LVM knows (lib/device/device-types.h, matched by
  /proc/devices' name of their major) are read, as LVM reads no others (a CD drive is
  not read: reading an empty one fails). With ``all_types`` (LVM's ``devices/types``
  adds types) every device is read.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Fingerprint", "Unknown", "Label", "MdaHeader", "take", "parse_label",
           "parse_mda_header", "label_sectors", "lvm_crc", "config_state", "block_majors",
           "LVM_TYPES", "read_device", "new_buffers", "SECTOR"]

SECTOR = 512
LABEL_SCAN_SECTORS = 4        # LVM looks for its label in the first four sectors
HEAD = 8192                   # first read of a device: label sectors and a 4 KiB mda header
BLOCK = 4096                  # O_DIRECT alignment good for 512- and 4096-byte sectors
LABEL_ID = b"LABELONE"
LABEL_TYPE = b"LVM2 001"
INITIAL_CRC = 0xF597A6CF
FMTT_MAGIC = b"\040\114\126\115\062\040\170\133\065\101\045\162\060\116\052\076"
FMTT_VERSION = 1
ID_LEN = 32
MAX_AREAS = 16                # more than LVM ever writes: a list longer than this is foreign
BLKGETSIZE64 = 0x80081272

# device-mapper's ioctl interface (linux/dm-ioctl.h): struct dm_ioctl is 312 bytes
_DM_SIZE = 312
_DM_LIST_DEVICES = (3 << 30) | (_DM_SIZE << 16) | (0xFD << 8) | 2
_DM_TABLE_STATUS = (3 << 30) | (_DM_SIZE << 16) | (0xFD << 8) | 12
_DM_BUFFER_FULL = 1 << 8
_DM_NOFLUSH = 1 << 11        # a thin pool's status without committing its metadata
_DM_MAX_BUFFER = 4 << 20
_NOT_THERE = {errno.ENOENT, errno.ENODEV, errno.ENXIO}
# LVM's known block device types (lib/device/device-types.h, LVM 2.03)
LVM_TYPES = frozenset({
    "sd", "ide", "md", "loop", "ramdisk", "device-mapper", "mdp", "dasd", "dac960", "nbd",
    "ida", "cciss", "ubd", "ataraid", "drbd", "rbd", "emcpower", "power2", "i2o_block",
    "iseries/vd", "gnbd", "aoe", "xvd", "vdisk", "ps3disk", "virtblk", "mmc", "blkext",
    "fio", "mtip32xx", "vtms", "skd", "scm", "bcache", "nvme", "zvol", "VxDMP", "zram"})
# a device LVM cannot open either: recorded, not unknown
_UNREADABLE = {errno.EPERM, errno.EACCES, errno.ENOENT, errno.ENXIO, errno.ENODEV,
               errno.ENOMEDIUM}


class Unknown(Exception):
    """The fingerprint cannot be taken, or shows something unfamiliar: run LVM."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Label:
    sector: int                                  # where it was found (0-3)
    pv_uuid: str
    device_size: int
    data_areas: tuple[tuple[int, int], ...]      # (offset, size) in bytes
    metadata_areas: tuple[tuple[int, int], ...]  # (offset, size): where mda headers are
    raw: bytes                                   # the whole label sector


@dataclass(frozen=True, slots=True)
class MdaHeader:
    start: int
    size: int
    locations: tuple[tuple[int, int, int, int], ...]  # raw_locn (offset, size, checksum, flags)
    raw: bytes                                         # the header sector as read


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Compared whole; the parts tell why two differ."""
    devices: tuple[tuple[object, ...], ...]    # (name, dev, size, label, mda headers)
    dm_devices: tuple[tuple[object, ...], ...]  # (name, uuid, dev, open, flags)
    dm_status: tuple[bytes, ...]                # each device's table status, same order
    config: tuple[tuple[object, ...], ...]      # LVM's configuration files (stat)
    uevents: bytes                              # the kernel's uevent sequence number
    labels: int = 0                              # PV labels seen (for status)

    def differs(self, other: Fingerprint) -> str:
        """Why ``other`` is not this one, in a few words."""
        if self.config != other.config:
            return "LVM configuration changed"
        if [d[:3] for d in self.devices] != [d[:3] for d in other.devices]:
            return "block devices changed"
        if self.devices != other.devices:
            return "metadata changed"
        if self.dm_devices != other.dm_devices:
            return "device-mapper devices changed"
        if self.dm_status != other.dm_status:
            return "dynamic fields (device-mapper status)"
        if self.uevents != other.uevents:
            return "kernel device event"
        return "same"


# ---- the on-disk format: only what change detection needs -----------------------------

def _locations(data: bytes, at: int, limit: int) -> tuple[list[tuple[int, int]], int]:
    """A NULL-terminated list of ``disk_locn`` (offset, size) at ``at``; and where it ends."""
    found: list[tuple[int, int]] = []
    while True:
        if at + 16 > limit or len(found) > MAX_AREAS:
            raise Unknown("a PV label's area list does not end in its sector")
        offset, size = struct.unpack_from("<QQ", data, at)
        at += 16
        if offset == 0:
            return found, at
        found.append((offset, size))


def lvm_crc(data: bytes, initial: int = INITIAL_CRC) -> int:
    """LVM's checksum (lib/misc/crc.c): CRC-32 from ``initial``, no final inversion."""
    return zlib.crc32(data, initial ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def label_sectors(head: bytes) -> tuple[bytes, ...]:
    """The raw sectors among the first four that start with LVM's label id."""
    return tuple(bytes(head[s * SECTOR:(s + 1) * SECTOR]) for s in range(LABEL_SCAN_SECTORS)
                 if len(head) >= (s + 1) * SECTOR
                 and head[s * SECTOR:s * SECTOR + 8] == LABEL_ID)


def parse_label(head: bytes) -> Label | None:
    """The LVM label in the first four sectors of ``head`` (None: there is none that LVM
    would use: a label whose checksum fails is ignored, as LVM ignores it). ``Unknown``
    for a label of another type or one whose lists run off its sector."""
    for sector in range(LABEL_SCAN_SECTORS):
        base = sector * SECTOR
        if len(head) < base + SECTOR:
            break
        if head[base:base + 8] != LABEL_ID:
            continue
        raw = bytes(head[base:base + SECTOR])
        sector_xl, crc, offset = struct.unpack_from("<QII", raw, 8)
        if sector_xl != sector or crc != lvm_crc(raw[20:]):
            continue  # LVM: "label checksum incorrect" (e.g. wipefs erased its type)
        if raw[24:32] != LABEL_TYPE:
            raise Unknown(f"label of type {raw[24:32]!r} in sector {sector}")
        if not 32 <= offset <= SECTOR - ID_LEN - 8:
            raise Unknown(f"label in sector {sector} does not describe itself")
        uuid = raw[offset:offset + ID_LEN].decode("ascii", "replace")
        (device_size,) = struct.unpack_from("<Q", raw, offset + ID_LEN)
        data, at = _locations(raw, offset + ID_LEN + 8, SECTOR)
        mdas, _ = _locations(raw, at, SECTOR)
        return Label(sector, uuid, device_size, tuple(data), tuple(mdas), raw)
    return None


def parse_mda_header(raw: bytes, start: int) -> MdaHeader:
    """A metadata area's header, as LVM wrote it at byte ``start``; ``Unknown`` if not."""
    if len(raw) < SECTOR:
        raise Unknown(f"metadata area header at {start} is cut short")
    if raw[4:20] != FMTT_MAGIC:
        raise Unknown(f"no metadata area header at {start} (magic)")
    version, hdr_start, size = struct.unpack_from("<IQQ", raw, 20)
    if version != FMTT_VERSION or hdr_start != start:
        raise Unknown(f"metadata area header at {start}: version {version}, "
                      f"start {hdr_start}")
    locations: list[tuple[int, int, int, int]] = []
    at = 40
    while True:
        if at + 24 > SECTOR or len(locations) > MAX_AREAS:
            raise Unknown(f"metadata area header at {start}: location list runs off")
        offset, length, checksum, flags = struct.unpack_from("<QQII", raw, at)
        at += 24
        if offset == 0:
            break
        locations.append((offset, length, checksum, flags))
    return MdaHeader(hdr_start, size, tuple(locations), bytes(raw[:SECTOR]))


# ---- reading devices ------------------------------------------------------------------

class _Buffers:
    """Page-aligned buffers for O_DIRECT (mmap'd memory is page-aligned); the block
    majors' names, read again whenever the uevent count moved (a driver came or went);
    the kernel's text files kept open (a read at offset 0 makes them afresh); labels
    already parsed, by their bytes."""

    def __init__(self) -> None:
        self.head = mmap.mmap(-1, HEAD)
        self.extra = mmap.mmap(-1, HEAD)
        self.majors: dict[int, str] = {}
        self.majors_at: bytes | None = None
        self.files: dict[str, int] = {}
        self.labels: dict[bytes, Label | None] = {}

    def text(self, path: str) -> bytes:
        """The whole of a /proc or /sys file, now."""
        try:
            fd = self.files.get(path)
            if fd is None:
                fd = self.files[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            chunks = [os.pread(fd, 65536, 0)]
            while len(chunks[-1]) == 65536:
                chunks.append(os.pread(fd, 65536, 65536 * len(chunks)))
            return b"".join(chunks)
        except OSError as exc:
            raise Unknown(f"{path}: {exc.strerror}") from None

    def label(self, head: bytes) -> Label | None:
        """``parse_label`` of ``head``, remembered by its label sectors' bytes."""
        key = head[:LABEL_SCAN_SECTORS * SECTOR]
        if key not in self.labels:
            if len(self.labels) > 4096:
                self.labels.clear()
            self.labels[key] = parse_label(key)
        return self.labels[key]


def _pread(fd: int, buf: mmap.mmap, length: int, offset: int, path: str) -> bytes:
    try:
        got = os.preadv(fd, [memoryview(buf)[:length]], offset)
    except OSError as exc:
        raise Unknown(f"{path}: read at {offset} failed: {exc.strerror}") from None
    return bytes(buf[:got])


def read_device(path: str, dev: tuple[int, int] | None = None,
                buffers: _Buffers | None = None) -> tuple[object, ...]:
    """One device's part: (dev, size, label sector, mda header sectors), or (dev, errno)
    when it cannot be opened for a reason LVM would share."""
    bufs = buffers or _Buffers()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in _UNREADABLE:
            return (dev, "cannot open", exc.errno)
        raise Unknown(f"{path}: cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if dev is not None and rdev != dev:
            raise Unknown(f"{path} is device {rdev[0]}:{rdev[1]}, not {dev[0]}:{dev[1]}")
        try:
            size = struct.unpack("<Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))[0]
        except OSError as exc:
            raise Unknown(f"{path}: size unknown: {exc.strerror}") from None
        head = _pread(fd, bufs.head, HEAD, 0, path)
        label = bufs.label(head)
        if label is None:  # what looks like a label, though LVM ignores it, still counts
            return (rdev, size, None, label_sectors(head))
        headers: list[bytes] = []
        for offset, _length in label.metadata_areas:
            if offset + SECTOR <= len(head):
                raw = head[offset:offset + SECTOR]
            else:
                aligned = offset - offset % BLOCK
                block = _pread(fd, bufs.extra, HEAD, aligned, path)
                raw = block[offset - aligned:offset - aligned + SECTOR]
            headers.append(parse_mda_header(raw, offset).raw)
        return (rdev, size, label.raw, tuple(headers))
    finally:
        os.close(fd)


def block_majors(raw: bytes | None = None) -> dict[int, str]:
    """Block device majors and their driver's name (/proc/devices)."""
    if raw is None:
        try:
            with open("/proc/devices", "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise Unknown(f"/proc/devices: {exc.strerror}") from None
    text = raw.decode("ascii", "replace")
    _, _, block = text.partition("Block devices:")
    majors = {}
    for line in block.splitlines():
        number, _, name = line.strip().partition(" ")
        if number.isdigit():
            majors[int(number)] = name.strip()
    return majors


def _partitions(raw: bytes) -> list[tuple[str, tuple[int, int]]]:
    """The block devices with a size, as the kernel lists them (/proc/partitions)."""
    text = raw.decode("ascii", "replace")
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) == 4:
            found.append((fields[3], (int(fields[0]), int(fields[1]))))
    return found


# ---- device-mapper ----------------------------------------------------------------------

def _dm_ioctl(fd: int, request: int, name: bytes = b"", flags: int = 0) -> bytearray:
    size = 16384
    while True:
        buf = bytearray(size)
        struct.pack_into("<IIIIII", buf, 0, 4, 0, 0, size, _DM_SIZE, 0)
        struct.pack_into("<I", buf, 28, flags)
        buf[48:48 + len(name)] = name
        try:
            fcntl.ioctl(fd, request, buf, True)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # gone between the list and the status
                raise Unknown("a device-mapper device went away") from None
            raise Unknown(f"device-mapper ioctl failed: {exc.strerror}") from None
        if not struct.unpack_from("<I", buf, 28)[0] & _DM_BUFFER_FULL:
            return buf
        if size >= _DM_MAX_BUFFER:
            raise Unknown("device-mapper's answer is too large")
        size *= 4


def _dm() -> tuple[list[tuple[object, ...]], list[bytes], set[tuple[int, int]]]:
    """Device-mapper's devices (name, uuid, dev, open count, flags), their status, and
    which of them are LVM's LVs."""
    try:
        fd = os.open("/dev/mapper/control", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _NOT_THERE:  # no device-mapper: there are no LVs to look at
            return [("no device-mapper", exc.errno)], [], set()
        raise Unknown(f"/dev/mapper/control: {exc.strerror}") from None
    try:
        listing = _dm_ioctl(fd, _DM_LIST_DEVICES)
        end, start = struct.unpack_from("<II", listing, 12)  # data_size, data_start
        names: list[bytes] = []
        at = start
        while at + 12 <= end:
            dev, nxt = struct.unpack_from("<QI", listing, at)
            if dev == 0 and nxt == 0 and at == start:
                break  # no devices
            name = bytes(listing[at + 12:listing.index(0, at + 12)])
            names.append(name)
            if not nxt:
                break
            at += nxt
        devices: list[tuple[object, ...]] = []
        status: list[bytes] = []
        lvs: set[tuple[int, int]] = set()
        for name in sorted(names):
            buf = _dm_ioctl(fd, _DM_TABLE_STATUS, name, _DM_NOFLUSH)
            _targets, open_count, flags, _event = struct.unpack_from("<IiII", buf, 20)
            (dev,) = struct.unpack_from("<Q", buf, 40)
            uuid = bytes(buf[176:buf.index(0, 176)])
            data_size, data_start = struct.unpack_from("<II", buf, 12)
            number = (os.major(dev), os.minor(dev))
            devices.append((name, uuid, number, open_count, flags & ~_DM_NOFLUSH))
            status.append(bytes(buf[data_start:data_size]))
            if uuid.startswith(b"LVM-"):
                lvs.add(number)
        return devices, status, lvs
    finally:
        os.close(fd)


# ---- the whole ------------------------------------------------------------------------

def config_state(system_dir: str) -> tuple[tuple[object, ...], ...]:
    """LVM's configuration files and devices file, by stat: an edit changes them."""
    state: list[tuple[object, ...]] = []
    for name in ("lvm.conf", "lvmlocal.conf", "devices", "devices/system.devices"):
        path = os.path.join(system_dir, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            state.append((name, None))
            continue
        except OSError as exc:
            raise Unknown(f"{path}: {exc.strerror}") from None
        state.append((name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(state)


def take(system_dir: str, buffers: _Buffers | None = None,
         only: Sequence[str] | None = None, all_types: bool = False) -> Fingerprint:
    """The fingerprint now. ``only``: device names to look at (tests); ``all_types``:
    read devices of every type, not only LVM's known ones."""
    bufs = buffers or _Buffers()
    uevents = bufs.text("/sys/kernel/uevent_seqnum")
    if bufs.majors_at != uevents:
        bufs.majors, bufs.majors_at = block_majors(bufs.text("/proc/devices")), uevents
    config = config_state(system_dir)
    dm_devices, dm_status, lvs = _dm()
    devices: list[tuple[object, ...]] = []
    labels = 0
    for name, dev in _partitions(bufs.text("/proc/partitions")):
        if only is not None and name not in only:
            continue
        if dev in lvs:
            devices.append((name, dev, "lv"))  # LVM's own LV: never opened
            continue
        kind = bufs.majors.get(dev[0])
        if kind is None:
            raise Unknown(f"{name}: major {dev[0]} is not in /proc/devices")
        if not all_types and kind not in LVM_TYPES:
            devices.append((name, dev, "type", kind))  # LVM does not read it either
            continue
        part = read_device("/dev/" + name.replace("!", "/"), dev, bufs)
        labels += isinstance(part[2], bytes)
        devices.append((name, *part))
    return Fingerprint(tuple(devices), tuple(dm_devices), tuple(dm_status), config,
                       uevents, labels)


def new_buffers() -> _Buffers:
    return _Buffers()
