"""Caller values are checked before any argv exists: nothing can become an option, a
second argument or a path outside /dev, and every refusal names the field."""

from __future__ import annotations

import math
import os
import stat
from typing import Any, Callable

import pytest

from lvmsuper.client.errors import InvalidRequest, PermissionDenied
from lvmsuper.supervisor.core import validate as v


def _rejects(check: Callable[[Any, str], Any], value: Any, field: str = "fieldname") -> \
        InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        check(value, field)
    err = info.value
    assert err.name == "InvalidRequest"
    assert err.code == -32602
    assert err.message.startswith(err.data["field"])
    return err


def _rejects_field(check: Callable[[Any, str], Any], value: Any,
                   field: str = "fieldname") -> None:
    assert _rejects(check, value, field).data["field"] == field


# ---- VG and LV names -------------------------------------------------------------

VALID_NAMES = ["vg0", "VG_data", "a", "a.b", "a-b", "a+b", "_x", "+x", ".x", "x..y",
               "0", "n" * 127]
BAD_NAMES = ["", "-x", "--config", "-", "vg\n", "vg\nx", "vg\0", "vg/x", "/", "vg x",
             " vg", ".", "..", "n" * 128, "vg\uff10", "v\u0430", "vg\t", "vg$", "vg'",
             "vg*", "vg:x", "vg@", "é"]


@pytest.mark.parametrize("check", [v.vg_name, v.lv_name], ids=["vg", "lv"])
@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names(check: Callable[[Any, str], str], name: str) -> None:
    assert check(name, "name") == name


@pytest.mark.parametrize("check", [v.vg_name, v.lv_name], ids=["vg", "lv"])
@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names(check: Callable[[Any, str], str], name: str) -> None:
    _rejects_field(check, name, "new_name")


@pytest.mark.parametrize("check", [v.vg_name, v.lv_name], ids=["vg", "lv"])
@pytest.mark.parametrize("value", [None, 5, True, ["vg0"], {"a": 1}, b"vg0"])
def test_names_must_be_strings(check: Callable[[Any, str], str], value: Any) -> None:
    _rejects_field(check, value, "vg")


@pytest.mark.parametrize("name", ["snapshot", "snapshot0", "pvmove0", "pvmove",
                                  "lv_tmeta", "_tmeta", "x_tdata_y", "lv_rimage_0",
                                  "lv_rmeta_1", "lv_mlog", "lv_mimage_0", "lv_cdata",
                                  "lv_cmeta", "lv_corig", "lv_cpool", "lv_cvol",
                                  "lv_imeta", "lv_iorig", "lv_pmspare", "lv_vdata",
                                  "lv_vorigin", "lv_wcorig"])
def test_lv_reserved_names(name: str) -> None:
    _rejects_field(v.lv_name, name, "name")


@pytest.mark.parametrize("name", ["snapshot", "pvmove0", "vg_tmeta"])
def test_lv_reserved_words_are_fine_for_vgs(name: str) -> None:
    assert v.vg_name(name, "name") == name


@pytest.mark.parametrize("name", ["mysnapshot", "lv_pvmove", "tmeta", "lv_meta"])
def test_lv_names_merely_containing_reserved_words_elsewhere(name: str) -> None:
    assert v.lv_name(name, "name") == name


# ---- lv_path ---------------------------------------------------------------------

def test_lv_path_ok() -> None:
    assert v.lv_path("vg0/lv0", "lv") == ("vg0", "lv0")


@pytest.mark.parametrize("value", ["vg", "vg/lv/x", "/lv", "vg/", "vg/-x", "-vg/lv",
                                   "vg/..", "vg/snapshot1", "vg//lv", "vg/lv\n", "",
                                   None, ["vg", "lv"]])
def test_lv_path_rejected(value: Any) -> None:
    _rejects_field(v.lv_path, value, "lv")


# ---- size, extents, extent_size, positive_int ----------------------------------

@pytest.mark.parametrize("value", [1, 4096, 2**63 - 1])
def test_size_ok(value: int) -> None:
    assert v.size(value, "size") == value
    assert v.MAX_SIZE == 2**63 - 1


@pytest.mark.parametrize("value", [0, -1, 2**63, 2**64, True, False, 1.5, 1.0, "10",
                                   "10G", None, [1], math.inf, math.nan])
def test_size_rejected(value: Any) -> None:
    _rejects_field(v.size, value, "size")


@pytest.mark.parametrize(("value", "expected"), [
    (5, "5"), (1, "1"), (2**32 - 1, str(2**32 - 1)), ("50%FREE", "50%FREE"),
    ("100%VG", "100%VG"), ("1%FREE", "1%FREE"), ("100%FREE", "100%FREE")])
def test_extents_ok(value: Any, expected: str) -> None:
    assert v.extents(value, "extents") == expected


@pytest.mark.parametrize("value", [
    "0%FREE", "101%VG", "999%VG", "50%PVS", "50%ORIGIN", "50%free", "050%FREE",
    "5", "", "%FREE", "50%", "50%FREE\n", "+5", "-5", "-1%VG", " 5%VG",
    -1, 0, 2**32, True, 1.5, None, [5]])
def test_extents_rejected(value: Any) -> None:
    _rejects_field(v.extents, value, "extents")


@pytest.mark.parametrize("value", [1024, 4 * 2**20, 16 * 2**30])
def test_extent_size_ok(value: int) -> None:
    assert v.extent_size(value, "extent_size") == value


@pytest.mark.parametrize("value", [512, 3 * 2**20, 32 * 2**30, 0, -4096, True, "4M",
                                   4194304.0])
def test_extent_size_rejected(value: Any) -> None:
    _rejects_field(v.extent_size, value, "extent_size")


def test_positive_int() -> None:
    assert v.positive_int(2, "stripes") == 2
    _rejects_field(v.positive_int, 0, "stripes")
    _rejects_field(v.positive_int, True, "stripes")
    _rejects_field(v.positive_int, 2**31, "stripes")


# ---- tags ------------------------------------------------------------------------

def test_tags_full_lvm_charset() -> None:
    tags = ["ABCXYZ", "abcxyz", "0123456789", "_", "+", ".", "a-b", "/", "=", "!", ":",
            "&", "#", "owner=vdsm/pool:1&x#2!", "t" * 128]
    assert v.tags(tags, "tags") == tags


def test_empty_tag_list_is_fine() -> None:
    assert v.tags([], "add_tags") == []


def test_up_to_64_tags() -> None:
    assert len(v.tags([f"t{i}" for i in range(64)], "tags")) == 64


def test_more_than_64_tags_rejected() -> None:
    _rejects_field(v.tags, [f"t{i}" for i in range(65)], "tags")


@pytest.mark.parametrize("tag", ["-lead", "has space", "a,b", "@tag", "a\nb", "t" * 129,
                                 "", "a\0", "t\u00e9", "a*", "a;b", "$x", "a'b", "~"])
def test_bad_tag_rejected_naming_the_element(tag: str) -> None:
    err = _rejects(v.tags, ["ok", tag], "add_tags")
    assert err.data["field"] == "add_tags[1]"


@pytest.mark.parametrize("value", ["tag", None, {"t": 1}, 5])
def test_tags_must_be_a_list(value: Any) -> None:
    _rejects_field(v.tags, value, "tags")


def test_tag_must_be_a_string() -> None:
    err = _rejects(v.tags, [5], "del_tags")
    assert err.data["field"] == "del_tags[0]"


# ---- boolean, wait, select, choice, job_id --------------------------------------

def test_boolean() -> None:
    assert v.boolean(True, "force") is True
    assert v.boolean(False, "force") is False
    for value in (1, 0, "true", None):
        _rejects_field(v.boolean, value, "force")


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (1.5, 1.5), (86400, 86400.0)])
def test_wait_ok(value: Any, expected: float) -> None:
    assert v.wait(value, "wait") == expected


@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf, -math.inf, True, "1",
                                   None, 86401])
def test_wait_rejected(value: Any) -> None:
    _rejects_field(v.wait, value, "wait")


def test_select_ok_kept_verbatim() -> None:
    text = 'lv_name=~"^data" && lv_size>1g || tags={a,b}'
    assert v.select(text, "select") == text


@pytest.mark.parametrize("value", ["a\nb", "a\0b", "a\rb", "", "x" * 4097, None, 5])
def test_select_rejected(value: Any) -> None:
    _rejects_field(v.select, value, "select")


def test_choice() -> None:
    check = v.choice("r", "rw")
    assert check("rw", "permission") == "rw"
    _rejects_field(check, "w", "permission")
    _rejects_field(check, None, "permission")


@pytest.mark.parametrize("value", ["1700000000-1", "0-0"])
def test_job_id_ok(value: str) -> None:
    assert v.job_id(value, "job") == value


@pytest.mark.parametrize("value", ["", "abc", "1-", "-1", "1-2-3", "../1-2", "1-2\n", 12,
                                   None, "1" * 21 + "-1"])
def test_job_id_rejected(value: Any) -> None:
    _rejects_field(v.job_id, value, "job")


# ---- device paths ---------------------------------------------------------------

@pytest.mark.parametrize("path", ["/dev/loop0", "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4",
                                  "/dev/mapper/vg0-lv0", "/dev/disk/by-path/pci-0000:00:1f.2-ata-1"])
def test_device_path_ok(path: str) -> None:
    assert v.device_path(path, "device") == path


@pytest.mark.parametrize("path", ["dev/loop0", "/dev/../etc/shadow", "/etc/shadow",
                                  "/dev//loop0", "/dev/loop0/", "-/dev/x", "/dev/",
                                  "/dev", "/dev/.", "/dev/./loop0", "/dev/loop0\n",
                                  "/dev/loop 0", "/dev/loop0\0", "", "--config",
                                  "/devx/loop0", None, 0])
def test_device_path_rejected(path: Any) -> None:
    _rejects_field(v.device_path, path, "device")


def test_device_char_device_rejected() -> None:
    err = _rejects(v.device, "/dev/null", "devices[0]")
    assert err.data["field"] == "devices[0]"
    assert "not a block device" in err.message


def test_device_nonexistent_rejected() -> None:
    err = _rejects(v.device, "/dev/nonexistent-lvmsuper", "device")
    assert err.data["field"] == "device"
    assert "does not exist" in err.message


def test_device_syntax_checked_before_the_filesystem() -> None:
    _rejects_field(v.device, "/dev/../etc/shadow", "device")


def _a_block_device() -> str | None:
    try:
        names = sorted(os.listdir("/dev"))
    except OSError:
        return None
    for name in names:
        path = f"/dev/{name}"
        try:
            if stat.S_ISBLK(os.stat(path).st_mode) and not os.path.islink(path):
                return path
        except OSError:
            continue
    return None


def test_device_block_device_accepted() -> None:
    path = _a_block_device()
    if path is None:
        pytest.skip("this machine has no block device under /dev")
    resolved = v.device(path, "device")
    assert (resolved.given, resolved.real) == (path, path)
    assert resolved.rdev == os.stat(path).st_rdev


def test_device_through_a_directory_others_can_write_is_refused() -> None:
    """/dev/shm is world-writable inside /dev: whatever a user puts there (a symlink to
    somebody's disk) is refused before it is even looked at."""
    for check in (v.device, v.existing_pv):
        with pytest.raises(PermissionDenied) as info:
            check("/dev/shm/pv", "device")
        assert "/dev/shm" in info.value.message and info.value.data["field"] == "device"


def test_existing_pv_keeps_a_path_to_nothing() -> None:
    gone = v.existing_pv("/dev/nonexistent-lvmsuper", "device")
    assert (gone.real, gone.rdev) == ("/dev/nonexistent-lvmsuper", None)


@pytest.mark.parametrize("name", ["qwYqZP-2Bn3-iYe3-7Tk8-7L0T-tsC1-AEdsnb",
                                  "qwYqZP2Bn3iYe37Tk87L0TtsC1AEdsnbxx"[:32],
                                  "q-w-YqZP2Bn3iYe37Tk87L0TtsC1AEdsnb"])
def test_vg_name_in_the_form_of_a_uuid_is_refused(name: str) -> None:
    """LVM reads such an argument as a VG UUID (vgrename, vgchange ...): a caller could
    name a protected VG without its name."""
    err = _rejects(v.vg_name, name, "vg")
    assert "UUID" in err.message
    assert v.vg_name("vg_" + name, "vg") == "vg_" + name  # not 32 alphanumerics: a name


def test_devices_numbers_each_element_and_refuses_duplicates() -> None:
    err = _rejects(v.devices, ["/dev/null"], "devices")
    assert err.data["field"] == "devices[0]"
    _rejects_field(v.devices, [], "devices")
    _rejects_field(v.devices, "/dev/loop0", "devices")
    path = _a_block_device()
    if path is not None:
        _rejects_field(v.devices, [path, path], "devices")


def test_string_list_of_names_each_element() -> None:
    check = v.string_list_of(v.vg_name)
    assert check(["vg0", "vg1"], "names") == ["vg0", "vg1"]
    err = _rejects(check, ["vg0", "-x"], "names")
    assert err.data["field"] == "names[1]"
    _rejects_field(check, [], "names")


# ---- a manager's needs (issue 12) ------------------------------------------------------

def test_vdsm_tags_pass_and_many_per_call() -> None:
    """vdsm keeps domain metadata in tags: ``MDT_KEY=VALUE`` with ``&NN&`` escapes, and
    volume links ``IU_``/``PU_``/``MD_``."""
    tags = ["MDT_POOL_DESCRIPTION=a&44&b&32&c", "MDT_LEASETIMESEC=60", "RHAT_storage_domain",
            "MDT__SHA_CKSUM=0123abc", "IU_0a1b-2c3d", "PU_00000000-0000-0000-0000-000000000000",
            "MD_7", "MDT_ROLE=Regular", "MDT_PV0=pv:x&44&uuid:y&44&pestart:0"]
    assert v.tags((tags * 8)[:64], "add_tags") == (tags * 8)[:64]  # 64 in one call


def test_lv_paths_one_vg_each_once_naming_the_bad_element() -> None:
    assert v.lv_paths(["vg0/a", "vg0/b"], "lvs") == [("vg0", "a"), ("vg0", "b")]
    assert _rejects(v.lv_paths, ["vg0/a", "vg1/b"], "lvs").data["field"] == "lvs[1]"
    assert _rejects(v.lv_paths, ["vg0/a", "vg0/b", "vg0/a"], "lvs").data["field"] == "lvs[2]"
    assert _rejects(v.lv_paths, ["vg0/a", "vg0/-x"], "lvs").data["field"] == "lvs[1]"
    assert _rejects(v.lv_paths, ["vg0/a", 3], "lvs").data["field"] == "lvs[1]"
    _rejects_field(v.lv_paths, [], "lvs")
    _rejects_field(v.lv_paths, "vg0/a", "lvs")
    _rejects_field(v.lv_paths, [f"vg0/l{i}" for i in range(257)], "lvs")
    assert len(v.lv_paths([f"vg0/l{i}" for i in range(256)], "lvs")) == 256


@pytest.mark.parametrize("value", [3, -1, "2", 2.0, True, None])
def test_metadata_copies_0_to_2(value: Any) -> None:
    _rejects_field(v.metadata_copies, value, "metadata_copies")
    assert [v.metadata_copies(n, "m") for n in (0, 1, 2)] == [0, 1, 2]


def test_scan_devices_are_block_devices_under_dev() -> None:
    assert _rejects(v.scan_devices, ["/dev/null"], "scan_devices").data["field"] == \
        "scan_devices[0]"  # a character device
    _rejects_field(v.scan_devices, [], "scan_devices")
    assert _rejects(v.scan_devices, ["/etc/passwd"], "scan_devices").data["field"] == \
        "scan_devices[0]"
    with pytest.raises(PermissionDenied):
        v.scan_devices(["/dev/shm/x"], "scan_devices")
    path = _a_block_device()
    if path is not None:
        assert [d.real for d in v.scan_devices([path], "scan_devices")] == [path]
        _rejects_field(v.scan_devices, [path, path], "scan_devices")
