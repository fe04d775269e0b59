"""LVM 2.03.16 JSON in, typed models out; anything else is LvmOutputInvalid quoting the
offending line (the seed incident: a PAM ``Last login:`` line before the report)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lvmsuper.client.errors import LvmOutputInvalid
from lvmsuper.client.models import LV, PV, VG
from lvmsuper.supervisor.lvm.argv import LV_FIELDS, LV_ONLY_FIELDS, PV_FIELDS, SEG_FIELDS, VG_FIELDS
from lvmsuper.supervisor.lvm.report import lvs_from, parse_document, pvs_from, vgs_from

# `lvm pvs --reportformat json --units b --nosuffix --binary -o <PV_FIELDS>` on two 1 GiB
# loop devices in vg0 (4 MiB extents) and one orphan PV with tags.
PVS_JSON = """\
{
    "report": [
        {
            "pv": [
                {"pv_name":"/dev/loop0", "pv_uuid":"Ee8iHf-0Vtq-1cI0-SI1A-Jm9Q-qIdx-3Cpwv4", "vg_name":"vg0", "pv_size":"1069547520", "pv_free":"532676608", "pv_used":"536870912", "dev_size":"1073741824", "pe_start":"1048576", "pv_pe_count":"255", "pv_pe_alloc_count":"128", "pv_allocatable":"1", "pv_exported":"0", "pv_missing":"0", "pv_tags":"", "pv_mda_count":"1", "pv_mda_free":"519168", "pv_attr":"a--", "vg_uuid":"i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW", "pv_mda_used_count":"1", "vg_tags":"prod,site=ams"},
                {"pv_name":"/dev/loop1", "pv_uuid":"kq3Vts-WJcG-oHd3-xYz1-8sJp-Lm2Q-4bNm7c", "vg_name":"vg0", "pv_size":"1069547520", "pv_free":"796917760", "pv_used":"272629760", "dev_size":"1073741824", "pe_start":"1048576", "pv_pe_count":"255", "pv_pe_alloc_count":"65", "pv_allocatable":"1", "pv_exported":"0", "pv_missing":"0", "pv_tags":"", "pv_mda_count":"1", "pv_mda_free":"519168", "pv_attr":"a--", "vg_uuid":"i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW", "pv_mda_used_count":"1", "vg_tags":"prod,site=ams"},
                {"pv_name":"/dev/loop2", "pv_uuid":"0N7mYB-sg3H-Kf2c-Wd9e-1QxP-nRv4-Tz8uJa", "vg_name":"", "pv_size":"1073741824", "pv_free":"1073741824", "pv_used":"0", "dev_size":"1073741824", "pe_start":"0", "pv_pe_count":"0", "pv_pe_alloc_count":"0", "pv_allocatable":"0", "pv_exported":"0", "pv_missing":"0", "pv_tags":"ssd,rack=4", "pv_mda_count":"1", "pv_mda_free":"520192", "pv_attr":"---", "vg_uuid":"", "pv_mda_used_count":"0", "vg_tags":""}
            ]
        }
    ]
    ,
    "log": [
    ]
}
"""

VGS_JSON = """\
{
    "report": [
        {
            "vg": [
                {"vg_name":"vg0", "vg_uuid":"i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW", "vg_size":"2139095040", "vg_free":"1329594368", "vg_extent_size":"4194304", "vg_extent_count":"510", "vg_free_count":"317", "pv_count":"2", "lv_count":"4", "snap_count":"0", "vg_seqno":"7", "vg_permissions":"writeable", "vg_extendable":"1", "vg_exported":"0", "vg_partial":"0", "vg_shared":"0", "vg_lock_type":"", "vg_lock_args":"", "vg_systemid":"", "vg_tags":"prod,site=ams", "vg_mda_count":"2", "vg_mda_free":"519168", "vg_attr":"wz--n-", "vg_mda_size":"1044480", "pv_name":"/dev/loop0"},
                {"vg_name":"vg0", "vg_uuid":"i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW", "vg_size":"2139095040", "vg_free":"1329594368", "vg_extent_size":"4194304", "vg_extent_count":"510", "vg_free_count":"317", "pv_count":"2", "lv_count":"4", "snap_count":"0", "vg_seqno":"7", "vg_permissions":"writeable", "vg_extendable":"1", "vg_exported":"0", "vg_partial":"0", "vg_shared":"0", "vg_lock_type":"", "vg_lock_args":"", "vg_systemid":"", "vg_tags":"prod,site=ams", "vg_mda_count":"2", "vg_mda_free":"519168", "vg_attr":"wz--n-", "vg_mda_size":"1044480", "pv_name":"/dev/loop1"},
                {"vg_name":"vgro", "vg_uuid":"Xc1mN2-aB3d-Ef4g-Hi5j-Kl6m-No7p-Qr8sTu", "vg_size":"1069547520", "vg_free":"1069547520", "vg_extent_size":"4194304", "vg_extent_count":"255", "vg_free_count":"255", "pv_count":"1", "lv_count":"0", "snap_count":"0", "vg_seqno":"1", "vg_permissions":"read-only", "vg_extendable":"0", "vg_exported":"1", "vg_partial":"1", "vg_shared":"1", "vg_lock_type":"sanlock", "vg_lock_args":"1.0.0:lvmlock", "vg_systemid":"host1", "vg_tags":"", "vg_mda_count":"1", "vg_mda_free":"519168", "vg_attr":"r-xzps", "vg_mda_size":"1044480", "pv_name":"/dev/loop3"}
            ]
        }
    ]
    ,
    "log": [
    ]
}
"""

# `lvm lvs ... -o <LV_FIELDS>`: lv0 has two segments (one row each), lv1 is read-only
# on a kernel without device-mapper (lv_active "unknown"), pool and thin1 are thin.
LVS_JSON = """\
{
    "report": [
        {
            "lv": [
                {"lv_name":"lv0", "vg_name":"vg0", "lv_full_name":"vg0/lv0", "lv_uuid":"3d2sBc-lzUS-0GNQ-vJ8H-8n1M-VaJ5-Gc1d3P", "lv_path":"/dev/vg0/lv0", "lv_size":"805306368", "segtype":"linear", "lv_active":"active", "origin":"", "pool_lv":"", "data_percent":"", "metadata_percent":"", "devices":"/dev/loop0(0)", "lv_tags":"db,prod", "lv_attr":"-wi-a-----", "lv_device_open":"1", "lv_lockargs":"", "seg_start_pe":"0", "seg_size_pe":"128", "vg_tags":"prod,site=ams"},
                {"lv_name":"lv0", "vg_name":"vg0", "lv_full_name":"vg0/lv0", "lv_uuid":"3d2sBc-lzUS-0GNQ-vJ8H-8n1M-VaJ5-Gc1d3P", "lv_path":"/dev/vg0/lv0", "lv_size":"805306368", "segtype":"linear", "lv_active":"active", "origin":"", "pool_lv":"", "data_percent":"", "metadata_percent":"", "devices":"/dev/loop1(0)", "lv_tags":"db,prod", "lv_attr":"-wi-a-----", "lv_device_open":"1", "lv_lockargs":"", "seg_start_pe":"128", "seg_size_pe":"64", "vg_tags":"prod,site=ams"},
                {"lv_name":"lv1", "vg_name":"vg0", "lv_full_name":"vg0/lv1", "lv_uuid":"pQ9rSt-Uv0w-Xy1z-Ab2C-De3F-Gh4I-Jk5LmN", "lv_path":"/dev/vg0/lv1", "lv_size":"4194304", "segtype":"linear", "lv_active":"unknown", "origin":"", "pool_lv":"", "data_percent":"", "metadata_percent":"", "devices":"/dev/loop1(64)", "lv_tags":"", "lv_attr":"-ri-------", "lv_device_open":"-1", "lv_lockargs":"", "seg_start_pe":"0", "seg_size_pe":"1", "vg_tags":"prod,site=ams"},
                {"lv_name":"pool", "vg_name":"vg0", "lv_full_name":"vg0/pool", "lv_uuid":"Zz1yXw-Vu2t-Sr3q-Po4n-Ml5k-Ji6h-Gf7eDc", "lv_path":"", "lv_size":"104857600", "segtype":"thin-pool", "lv_active":"", "origin":"", "pool_lv":"", "data_percent":"12.50", "metadata_percent":"10.94", "devices":"pool_tdata(0)", "lv_tags":"", "lv_attr":"twi---tz--", "lv_device_open":"0", "lv_lockargs":"", "seg_start_pe":"0", "seg_size_pe":"1", "vg_tags":"prod,site=ams"},
                {"lv_name":"thin1", "vg_name":"vg0", "lv_full_name":"vg0/thin1", "lv_uuid":"Aa1bBc-Cd2d-Ee3f-Fg4g-Hh5i-Ij6j-Kk7lLm", "lv_path":"/dev/vg0/thin1", "lv_size":"1073741824", "segtype":"thin", "lv_active":"", "origin":"", "pool_lv":"pool", "data_percent":"0.00", "metadata_percent":"", "devices":"", "lv_tags":"", "lv_attr":"Vwi---tz--", "lv_device_open":"0", "lv_lockargs":"", "seg_start_pe":"0", "seg_size_pe":"1", "vg_tags":"prod,site=ams"}
            ]
        }
    ]
    ,
    "log": [
    ]
}
"""

# `lvm fullreport`: one report entry per VG; LV rows without segment fields and a seg
# subreport joined by lv_uuid.
FULLREPORT_JSON = """\
{
    "report": [
        {
            "vg": [
                {"vg_name":"vg0", "vg_uuid":"i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW", "vg_size":"2139095040", "vg_free":"1329594368", "vg_extent_size":"4194304", "vg_extent_count":"510", "vg_free_count":"317", "pv_count":"2", "lv_count":"1", "snap_count":"0", "vg_seqno":"7", "vg_permissions":"writeable", "vg_extendable":"1", "vg_exported":"0", "vg_partial":"0", "vg_shared":"0", "vg_lock_type":"", "vg_lock_args":"", "vg_systemid":"", "vg_tags":"", "vg_mda_count":"2", "vg_mda_free":"519168", "vg_attr":"wz--n-", "vg_mda_size":"1044480"}
            ]
            ,
            "pv": [
                {"pv_name":"/dev/loop0", "pv_uuid":"Ee8iHf-0Vtq-1cI0-SI1A-Jm9Q-qIdx-3Cpwv4", "vg_name":"vg0", "pv_size":"1069547520", "pv_free":"532676608", "pv_used":"536870912", "dev_size":"1073741824", "pe_start":"1048576", "pv_pe_count":"255", "pv_pe_alloc_count":"128", "pv_allocatable":"1", "pv_exported":"0", "pv_missing":"0", "pv_tags":"", "pv_mda_count":"1", "pv_mda_free":"519168", "pv_attr":"a--", "vg_uuid":"i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW", "pv_mda_used_count":"1", "vg_tags":"prod,site=ams"},
                {"pv_name":"/dev/loop1", "pv_uuid":"kq3Vts-WJcG-oHd3-xYz1-8sJp-Lm2Q-4bNm7c", "vg_name":"vg0", "pv_size":"1069547520", "pv_free":"796917760", "pv_used":"272629760", "dev_size":"1073741824", "pe_start":"1048576", "pv_pe_count":"255", "pv_pe_alloc_count":"65", "pv_allocatable":"1", "pv_exported":"0", "pv_missing":"0", "pv_tags":"", "pv_mda_count":"1", "pv_mda_free":"519168", "pv_attr":"a--", "vg_uuid":"i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW", "pv_mda_used_count":"1", "vg_tags":"prod,site=ams"}
            ]
            ,
            "lv": [
                {"lv_name":"lv0", "vg_name":"vg0", "lv_full_name":"vg0/lv0", "lv_uuid":"3d2sBc-lzUS-0GNQ-vJ8H-8n1M-VaJ5-Gc1d3P", "lv_path":"/dev/vg0/lv0", "lv_size":"805306368", "lv_active":"unknown", "origin":"", "pool_lv":"", "data_percent":"", "metadata_percent":"", "lv_tags":"", "lv_attr":"-wi-------", "lv_device_open":"-1", "lv_lockargs":"", "vg_tags":"prod,site=ams"}
            ]
            ,
            "pvseg": [
                {"pvseg_start":"0"},
                {"pvseg_start":"128"},
                {"pvseg_start":"0"},
                {"pvseg_start":"64"}
            ]
            ,
            "seg": [
                {"lv_uuid":"3d2sBc-lzUS-0GNQ-vJ8H-8n1M-VaJ5-Gc1d3P", "segtype":"linear", "devices":"/dev/loop1(0)", "seg_start_pe":"0", "seg_size_pe":"128"},
                {"lv_uuid":"3d2sBc-lzUS-0GNQ-vJ8H-8n1M-VaJ5-Gc1d3P", "segtype":"linear", "devices":"/dev/loop0(0)", "seg_start_pe":"128", "seg_size_pe":"64"}
            ]
        }
        ,
        {
            "vg": [
                {"vg_name":"vg1", "vg_uuid":"Xc1mN2-aB3d-Ef4g-Hi5j-Kl6m-No7p-Qr8sTu", "vg_size":"1069547520", "vg_free":"1069547520", "vg_extent_size":"4194304", "vg_extent_count":"255", "vg_free_count":"255", "pv_count":"1", "lv_count":"0", "snap_count":"0", "vg_seqno":"1", "vg_permissions":"writeable", "vg_extendable":"1", "vg_exported":"0", "vg_partial":"0", "vg_shared":"0", "vg_lock_type":"", "vg_lock_args":"", "vg_systemid":"", "vg_tags":"", "vg_mda_count":"1", "vg_mda_free":"519168", "vg_attr":"wz--n-", "vg_mda_size":"1044480"}
            ]
            ,
            "pv": [
                {"pv_name":"/dev/loop2", "pv_uuid":"0N7mYB-sg3H-Kf2c-Wd9e-1QxP-nRv4-Tz8uJa", "vg_name":"vg1", "pv_size":"1069547520", "pv_free":"1069547520", "pv_used":"0", "dev_size":"1073741824", "pe_start":"1048576", "pv_pe_count":"255", "pv_pe_alloc_count":"0", "pv_allocatable":"1", "pv_exported":"0", "pv_missing":"0", "pv_tags":"", "pv_mda_count":"1", "pv_mda_free":"519168", "pv_attr":"a--", "vg_uuid":"Xc1mN2-aB3d-Ef4g-Hi5j-Kl6m-No7p-Qr8sTu", "pv_mda_used_count":"1", "vg_tags":""}
            ]
            ,
            "lv": [
            ]
            ,
            "pvseg": [
                {"pvseg_start":"0"}
            ]
            ,
            "seg": [
            ]
        }
    ]
    ,
    "log": [
    ]
}
"""

# LVM 2.03.16 (Debian 12), a failed fullreport: note the trailing comma before "]" in
# the log (fixed upstream in 2.03.24).
QUIRK_JSON = r"""{
    "report": [
        {
            "pv": [
                {"pv_name":"/dev/loop2"}
            ]
        }
    ]
    ,
    "log": [
        {"log_seq_num":"3", "log_type":"error", "log_context":"processing", "log_object_type":"vg", "log_object_name":"vg0", "log_object_id":"i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW", "log_object_group":"", "log_object_group_id":"", "log_message":"Subreport of type \"lv\" for VG vg0 contains columns which lead to change of report type. Add these columns to proper subreport type.", "log_errno":"-1", "log_ret_code":"0"},
        {"log_seq_num":"4", "log_type":"status", "log_context":"processing", "log_object_type":"vg", "log_object_name":"vg0", "log_object_id":"i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW", "log_object_group":"", "log_object_group_id":"", "log_message":"failure", "log_errno":"-1", "log_ret_code":"5"},
    ]
}
"""

# A failed change command (e.g. vgcreate) prints only its command log.
CHANGE_LOG_JSON = r"""{
    "log": [
        {"log_seq_num":"1", "log_type":"error", "log_context":"processing", "log_object_type":"pv", "log_object_name":"/dev/loop0", "log_object_id":"", "log_object_group":"", "log_object_group_id":"", "log_message":"Physical volume '/dev/loop0' is already in volume group 'vg0'", "log_errno":"-1", "log_ret_code":"0"},
        {"log_seq_num":"2", "log_type":"status", "log_context":"processing", "log_object_type":"cmd", "log_object_name":"", "log_object_id":"", "log_object_group":"", "log_object_group_id":"", "log_message":"failure", "log_errno":"-1", "log_ret_code":"5"}
    ]
}
"""

LAST_LOGIN = "Last login: Fri Dec 28 21:41:33 EST 2018"
ARGV = ["/usr/sbin/lvm", "pvs", "--reportformat", "json"]


def _quirk_with_message(message_json: str) -> str:
    """The quirk document whose first log message is ``message_json`` (JSON-escaped)."""
    old = ('"Subreport of type \\"lv\\" for VG vg0 contains columns which lead to change '
           'of report type. Add these columns to proper subreport type."')
    assert old in QUIRK_JSON
    return QUIRK_JSON.replace(old, f'"{message_json}"')


def _invalid(stdout: str, **ctx: Any) -> LvmOutputInvalid:
    with pytest.raises(LvmOutputInvalid) as info:
        parse_document(stdout, **ctx)
    return info.value


# ---- the recordings themselves ---------------------------------------------------

def test_recordings_use_exactly_the_requested_fields() -> None:
    doc = parse_document(PVS_JSON)
    assert all(tuple(row) == PV_FIELDS for row in doc.reports["pv"])
    assert all(tuple(row) == VG_FIELDS for row in parse_document(VGS_JSON).reports["vg"])
    assert all(tuple(row) == LV_FIELDS for row in parse_document(LVS_JSON).reports["lv"])
    full = parse_document(FULLREPORT_JSON)
    assert all(tuple(row) == LV_ONLY_FIELDS for row in full.reports["lv"])
    assert all(tuple(row) == SEG_FIELDS for row in full.reports["seg"])


# ---- parse_document ------------------------------------------------------------

def test_pvs_document() -> None:
    doc = parse_document(PVS_JSON)
    assert [r["pv_name"] for r in doc.reports["pv"]] == ["/dev/loop0", "/dev/loop1",
                                                         "/dev/loop2"]
    assert doc.log == []


def test_fullreport_rows_are_merged_over_vgs() -> None:
    doc = parse_document(FULLREPORT_JSON)
    assert [r["vg_name"] for r in doc.reports["vg"]] == ["vg0", "vg1"]
    assert [r["pv_name"] for r in doc.reports["pv"]] == ["/dev/loop0", "/dev/loop1",
                                                         "/dev/loop2"]
    assert len(doc.reports["seg"]) == 2
    assert len(doc.reports["pvseg"]) == 5


def test_lvm_2_03_16_trailing_comma_in_log_is_tolerated() -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(QUIRK_JSON)  # the recording really is invalid JSON
    doc = parse_document(QUIRK_JSON)
    assert doc.reports == {"pv": [{"pv_name": "/dev/loop2"}]}
    assert len(doc.log) == 2
    assert doc.log[0]["log_message"] == (
        'Subreport of type "lv" for VG vg0 contains columns which lead to change of '
        'report type. Add these columns to proper subreport type.')
    assert doc.log[1]["log_ret_code"] == "5"
    assert doc.log[1]["log_message"] == "failure"


def test_comma_bracket_inside_a_log_message_survives_the_quirk_fix() -> None:
    text = "Selection syntax error at 'tags={a, ]' (use , ] or , } to end lists)."
    doc = parse_document(_quirk_with_message(text))
    assert doc.log[0]["log_message"] == text
    assert len(doc.log) == 2


def test_comma_bracket_inside_an_escaped_quote_survives_the_quirk_fix() -> None:
    # LVM quotes names with \"...\" in its messages; the ", ]" between them is text.
    doc = parse_document(_quirk_with_message(r'Volume group \"vg0, ]\" not found.'))
    assert doc.log[0]["log_message"] == 'Volume group "vg0, ]" not found.'
    assert len(doc.log) == 2


def test_single_escaped_quote_in_a_message_with_the_quirk() -> None:
    # One \" in a message must not flip the fixer's idea of "inside a string": the
    # trailing comma before the log's "]" has to be dropped all the same.
    doc = parse_document(_quirk_with_message(r'Invalid character \" in name.'))
    assert doc.log[0]["log_message"] == 'Invalid character " in name.'
    assert len(doc.log) == 2


def test_escaped_backslash_before_closing_quote_with_the_quirk() -> None:
    doc = parse_document(_quirk_with_message(r'path C:\\, ]x\\'))
    assert doc.log[0]["log_message"] == "path C:\\, ]x\\"


def test_command_log_only_document() -> None:
    doc = parse_document(CHANGE_LOG_JSON)
    assert doc.reports == {}
    assert [e["log_type"] for e in doc.log] == ["error", "status"]
    assert "already in volume group" in doc.log[0]["log_message"]


def test_seed_incident_last_login_line_before_the_report() -> None:
    err = _invalid(LAST_LOGIN + "\n" + PVS_JSON, argv=ARGV, rc=0, stderr="")
    assert err.data["line"] == LAST_LOGIN
    assert err.data["argv"] == ARGV
    assert err.data["rc"] == 0
    assert LAST_LOGIN in err.message
    assert err.data["stdout"].startswith(LAST_LOGIN)


def test_blank_lines_before_the_report_are_not_junk() -> None:
    doc = parse_document("\n\n" + PVS_JSON)
    assert len(doc.reports["pv"]) == 3


def test_truncated_document_names_the_line_where_it_breaks() -> None:
    half = PVS_JSON[:len(PVS_JSON) // 2]
    err = _invalid(half, argv=ARGV, rc=0)
    assert err.data["line"]
    assert err.data["line"] == half.splitlines()[-1]
    assert err.data["argv"] == ARGV


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.75, 0.9])
def test_any_truncation_is_lvm_output_invalid(cut: float) -> None:
    _invalid(PVS_JSON[:int(len(PVS_JSON) * cut)])


@pytest.mark.parametrize("stdout", ["", "\n", "   \n\n"])
def test_empty_output(stdout: str) -> None:
    err = _invalid(stdout, argv=ARGV, rc=5)
    assert err.data["line"] == ""
    assert err.data["rc"] == 5
    assert "empty" in err.message


def test_json_array_document() -> None:
    err = _invalid('[\n    {"report": []}\n]\n')
    assert err.data["line"] == "["


def test_json_scalar_document() -> None:
    assert _invalid("42\n").data["line"] == "42"


def test_trailing_junk_after_the_document() -> None:
    junk = "  WARNING: Not using device /dev/loop3 for PV xyz."
    err = _invalid(PVS_JSON + junk + "\n")
    assert err.data["line"] == junk


def test_second_document_after_the_first_is_junk() -> None:
    err = _invalid(PVS_JSON + PVS_JSON)
    assert err.data["line"] == "{"


@pytest.mark.parametrize("stdout", [
    '{\n    "report": {"pv": []}\n}\n',
    '{\n    "report": [["x"]]\n}\n',
    '{\n    "report": [{"pv": ["/dev/loop0"]}]\n}\n',
    '{\n    "report": [],\n    "log": "failed"\n}\n',
])
def test_wrong_shapes_are_lvm_output_invalid(stdout: str) -> None:
    _invalid(stdout)


# ---- typed models ---------------------------------------------------------------

def test_pvs_from_types() -> None:
    pvs = pvs_from(parse_document(PVS_JSON).reports["pv"])
    assert all(type(p) is PV for p in pvs)
    p0, _, orphan = pvs
    assert p0 == PV(name="/dev/loop0", uuid="Ee8iHf-0Vtq-1cI0-SI1A-Jm9Q-qIdx-3Cpwv4",
                    vg="vg0", size=1069547520, free=532676608, used=536870912,
                    dev_size=1073741824, pe_start=1048576, pe_count=255,
                    pe_alloc_count=128, allocatable=True, exported=False, missing=False,
                    tags=[], mda_count=1, mda_free=519168, attr="a--",
                    vg_uuid="i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW", mda_used_count=1)
    assert orphan.vg is None and orphan.vg_uuid is None and orphan.mda_used_count == 0
    assert orphan.tags == ["ssd", "rack=4"]
    assert orphan.allocatable is False
    # The wire form is plain JSON with ints and bools.
    wire = json.loads(json.dumps(orphan.to_wire()))
    assert wire["size"] == 1073741824 and wire["allocatable"] is False


def test_vgs_from_types() -> None:
    vg0, vgro = vgs_from(parse_document(VGS_JSON).reports["vg"])
    assert vg0 == VG(name="vg0", uuid="i4UR65-Q3CJ-331z-dYdq-yPFH-yoWp-2IACYW",
                     size=2139095040, free=1329594368, extent_size=4194304,
                     extent_count=510, free_count=317, pv_count=2, lv_count=4,
                     snap_count=0, seqno=7, writable=True, resizable=True, exported=False,
                     partial=False, shared=False, lock_type=None, lock_args=None, system_id=None,
                     tags=["prod", "site=ams"], mda_count=2, mda_free=519168,
                     attr="wz--n-", mda_size=1044480, pvs=["/dev/loop0", "/dev/loop1"])
    assert vgro.pvs == ["/dev/loop3"]
    assert (vgro.writable, vgro.resizable, vgro.exported, vgro.partial, vgro.shared) == \
        (False, False, True, True, True)
    assert vgro.lock_type == "sanlock" and vgro.system_id == "host1"
    assert vgro.lock_args == "1.0.0:lvmlock" and vg0.lock_args is None
    assert vgro.tags == []


def test_lvs_from_merges_segments_and_types_fields() -> None:
    lvs = lvs_from(parse_document(LVS_JSON).reports["lv"])
    assert [lv.full_name for lv in lvs] == ["vg0/lv0", "vg0/lv1", "vg0/pool", "vg0/thin1"]
    lv0, lv1, pool, thin1 = lvs
    assert all(type(lv) is LV for lv in lvs)
    assert lv0 == LV(name="lv0", vg="vg0", full_name="vg0/lv0",
                     uuid="3d2sBc-lzUS-0GNQ-vJ8H-8n1M-VaJ5-Gc1d3P", path="/dev/vg0/lv0",
                     size=805306368, segtype="linear", active=True, permissions="rw",
                     origin=None, pool=None, data_percent=None, metadata_percent=None,
                     devices=["/dev/loop0", "/dev/loop1"], tags=["db", "prod"],
                     attr="-wi-a-----", open=True, segments=[
                         {"lv_start": 0, "extents": 128,
                          "pvs": [{"name": "/dev/loop0", "start": 0}]},
                         {"lv_start": 128, "extents": 64,
                          "pvs": [{"name": "/dev/loop1", "start": 0}]}])
    assert (lv1.open, pool.open) == (None, False)  # "-1": no device-mapper to ask
    assert lv1.segments == [{"lv_start": 0, "extents": 1,
                             "pvs": [{"name": "/dev/loop1", "start": 64}]}]
    assert thin1.segments == [{"lv_start": 0, "extents": 1, "pvs": []}]
    assert lv1.active is None  # "unknown": the kernel has no device-mapper
    assert lv1.permissions == "r"
    assert lv1.devices == ["/dev/loop1"]
    assert pool.path is None
    assert pool.active is False
    assert pool.data_percent == 12.5 and pool.metadata_percent == 10.94
    assert pool.segtype == "thin-pool"
    assert thin1.pool == "pool"
    assert thin1.devices == []
    assert thin1.data_percent == 0.0 and thin1.metadata_percent is None


def _lv_row(**over: str) -> dict[str, str]:
    row = dict(parse_document(LVS_JSON).reports["lv"][0])
    row.update(over)
    return row


def test_devices_without_repeats_in_order() -> None:
    rows = [_lv_row(devices="/dev/loop1(0),/dev/loop0(10)"),
            _lv_row(devices="/dev/loop1(200),/dev/loop2(0)")]
    (lv,) = lvs_from(rows)
    assert lv.devices == ["/dev/loop1", "/dev/loop0", "/dev/loop2"]


@pytest.mark.parametrize(("attr", "permissions"), [
    ("-wi-a-----", "rw"), ("-ri-a-----", "r"), ("-Ri-a-----", "r"), ("owi-aos---", "rw"),
    ("swi-a-s---", "rw")])
def test_permissions_from_lv_attr(attr: str, permissions: str) -> None:
    (lv,) = lvs_from([_lv_row(lv_attr=attr)])
    assert lv.permissions == permissions
    assert lv.attr == attr


@pytest.mark.parametrize(("raw", "active"), [("active", True), ("", False),
                                             ("unknown", None)])
def test_active(raw: str, active: bool | None) -> None:
    (lv,) = lvs_from([_lv_row(lv_active=raw)])
    assert lv.active is active


def test_lvs_from_fullreport_joins_segments_by_uuid() -> None:
    doc = parse_document(FULLREPORT_JSON)
    (lv,) = lvs_from(doc.reports["lv"], doc.reports["seg"])
    assert lv.full_name == "vg0/lv0"
    assert lv.segtype == "linear"
    assert lv.devices == ["/dev/loop1", "/dev/loop0"]  # segment order
    assert lv.active is None and lv.permissions == "rw" and lv.open is None
    assert lv.segments == [{"lv_start": 0, "extents": 128,
                            "pvs": [{"name": "/dev/loop1", "start": 0}]},
                           {"lv_start": 128, "extents": 64,
                            "pvs": [{"name": "/dev/loop0", "start": 0}]}]


def test_lvs_from_fullreport_lv_without_segments() -> None:
    doc = parse_document(FULLREPORT_JSON)
    (lv,) = lvs_from(doc.reports["lv"], [])
    assert lv.name == "lv0" and lv.devices == [] and lv.segtype == ""
    assert lv.segments == []


def test_segments_in_lv_order_with_every_pv_of_a_striped_segment() -> None:
    rows = [_lv_row(seg_start_pe="10", seg_size_pe="4", devices="/dev/loop2(7)"),
            _lv_row(seg_start_pe="0", seg_size_pe="10",
                    devices="/dev/loop0(0),/dev/loop1(20)")]
    (lv,) = lvs_from(rows)
    assert lv.segments == [
        {"lv_start": 0, "extents": 10, "pvs": [{"name": "/dev/loop0", "start": 0},
                                                {"name": "/dev/loop1", "start": 20}]},
        {"lv_start": 10, "extents": 4, "pvs": [{"name": "/dev/loop2", "start": 7}]}]


@pytest.mark.parametrize("value", ["", "x", "1.5"])
def test_a_non_numeric_segment_field_is_invalid_output(value: str) -> None:
    with pytest.raises(LvmOutputInvalid) as info:
        lvs_from([_lv_row(seg_start_pe=value)], argv=ARGV, rc=0)
    assert "segment" in info.value.message and info.value.data["argv"] == ARGV


def test_fullreport_pvs_and_vgs() -> None:
    doc = parse_document(FULLREPORT_JSON)
    assert [p.vg for p in pvs_from(doc.reports["pv"])] == ["vg0", "vg0", "vg1"]
    assert [v.lv_count for v in vgs_from(doc.reports["vg"])] == [1, 0]
    # a VG's PVs come from the PV subreport (no second LVM run)
    vgs = vgs_from(doc.reports["vg"], pvs_from(doc.reports["pv"]))
    assert [(v.name, v.pvs, v.mda_size) for v in vgs] == [
        ("vg0", ["/dev/loop0", "/dev/loop1"], 1044480), ("vg1", ["/dev/loop2"], 1044480)]


@pytest.mark.parametrize(("field", "value"), [
    ("lv_size", "805306368B"), ("lv_size", "768.00m"), ("lv_size", ""),
    ("data_percent", "n/a")])
def test_non_numeric_lv_value_is_invalid_output(field: str, value: str) -> None:
    with pytest.raises(LvmOutputInvalid) as info:
        lvs_from([_lv_row(**{field: value})], argv=ARGV, rc=0)
    assert field in info.value.message
    assert info.value.data["argv"] == ARGV
    assert value in info.value.data["line"]


def test_non_numeric_pv_size_is_invalid_output() -> None:
    row = dict(parse_document(PVS_JSON).reports["pv"][0], pv_size="1.00g")
    with pytest.raises(LvmOutputInvalid, match="pv_size"):
        pvs_from([row])


@pytest.mark.parametrize("value", ["yes", "2", ""])
def test_flag_other_than_0_or_1_is_invalid_output(value: str) -> None:
    row = dict(parse_document(PVS_JSON).reports["pv"][0], pv_allocatable=value)
    with pytest.raises(LvmOutputInvalid, match="pv_allocatable"):
        pvs_from([row])


def test_missing_field_is_invalid_output() -> None:
    row = dict(parse_document(VGS_JSON).reports["vg"][0])
    del row["vg_seqno"]
    with pytest.raises(LvmOutputInvalid, match="vg_seqno"):
        vgs_from([row])


def test_non_string_field_is_invalid_output() -> None:
    row: dict[str, Any] = dict(parse_document(VGS_JSON).reports["vg"][0])
    row["vg_size"] = 2139095040
    with pytest.raises(LvmOutputInvalid, match="vg_size"):
        vgs_from([row])
