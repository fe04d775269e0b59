"""Pure argv builders: the pinned output settings are always there and win over the
site's lvm.conf, and every caller value lands in a slot of its own."""

from __future__ import annotations

import pytest

from lvmsuper.supervisor.lvm import argv as lvmcmd
from lvmsuper.supervisor.lvm.argv import (LV_FIELDS, PV_FIELDS, VG_FIELDS, change_argv,
                                        fullreport_argv, pinned_config, report_argv,
                                        size_arg)

PINS = ('prefix=""', "command_names=0", "report_command_log=1", "compact_output=0",
        'list_item_separator=","', "mark_hidden_devices=0")


@pytest.mark.parametrize(("kind", "fields"), [("pv", PV_FIELDS), ("vg", VG_FIELDS),
                                              ("lv", LV_FIELDS)])
def test_report_argv_layout(kind: str, fields: tuple[str, ...]) -> None:
    argv = report_argv(kind)
    assert argv[0] == f"{kind}s"
    assert argv[1] == "--config"
    assert argv[2] == pinned_config(None)
    assert argv[argv.index("-o") + 1] == ",".join(fields)
    i = argv.index("--reportformat")
    assert argv[i:i + 6] == ["--reportformat", "json", "--units", "b", "--nosuffix",
                             "--binary"]
    assert "--select" not in argv


def test_pinned_config_without_extra_has_every_pin() -> None:
    config = pinned_config(None)
    for pin in PINS:
        assert pin in config
    assert pinned_config("") == config


def test_site_extra_config_goes_first_and_pins_last() -> None:
    extra = 'devices { filter=["a|/dev/loop.*|","r|.*|"] } log { prefix="  LVM: " }'
    config = pinned_config(extra)
    assert config.startswith(extra + " ")
    assert config.endswith(pinned_config(None))
    # The site's own log/prefix comes before ours, so LVM's last-wins keeps ours.
    assert config.index('prefix="  LVM: "') < config.rindex('prefix=""')


def test_extra_config_reaches_every_command_as_one_argv_element() -> None:
    extra = 'global { use_aio=0 }'
    for argv in (report_argv("pv", extra_config=extra),
                 fullreport_argv(extra_config=extra),
                 change_argv("vgcreate", ["vg0", "/dev/loop0"], extra_config=extra)):
        assert argv[1] == "--config"
        assert argv[2] == pinned_config(extra)
        assert argv.count("--config") == 1


def test_select_is_one_argv_element_and_names_are_trailing() -> None:
    select = 'lv_name=~"^data" && lv_size > 1g'
    argv = report_argv("lv", names=["vg0/lv0", "vg1/lv1"], select=select)
    i = argv.index("--select")
    assert argv[i + 1] == select
    assert argv[-2:] == ["vg0/lv0", "vg1/lv1"]
    assert argv.index("-o") < i


def test_names_come_after_every_option() -> None:
    argv = report_argv("pv", names=["/dev/loop0"])
    assert argv[-1] == "/dev/loop0"
    assert argv[-3] == "-o"


def test_fullreport_argv() -> None:
    argv = fullreport_argv(vg="vg0")
    assert argv[:2] == ["fullreport", "--config"]
    assert argv[-1] == "vg0"
    # the VG subreport without pv_name (a VG's PVs come from the PV subreport)
    assert argv[argv.index("-o") + 1] == ",".join(lvmcmd.VG_ONLY_FIELDS)
    assert "pv_name" in VG_FIELDS and "pv_name" not in lvmcmd.VG_ONLY_FIELDS
    i = argv.index("lv", argv.index("--configreport"))
    assert argv[i - 1] == "--configreport"
    assert argv[i + 2] == ",".join(lvmcmd.LV_ONLY_FIELDS)
    # Segment fields are reported by the seg subreport only, never the lv one.
    assert "segtype" not in lvmcmd.LV_ONLY_FIELDS and "devices" not in lvmcmd.LV_ONLY_FIELDS
    assert fullreport_argv()[-1] == "pvseg_start"


def test_change_argv() -> None:
    argv = change_argv("lvcreate", ["-n", "lv0", "-L", "8192s", "vg0"])
    assert argv[:3] == ["lvcreate", "--config", pinned_config(None)]
    assert argv[3:5] == ["--reportformat", "json"]
    assert argv[5:] == ["-n", "lv0", "-L", "8192s", "vg0"]


@pytest.mark.parametrize(("size", "expected"), [
    (1, "1s"), (511, "1s"), (512, "1s"), (513, "2s"), (1024, "2s"),
    (2 * 2**20, "4096s"), (2 * 2**20 + 13, "4097s"), (2**63 - 1, f"{2**54}s")])
def test_size_arg_rounds_up_to_sectors(size: int, expected: str) -> None:
    assert size_arg(size) == expected


def test_scan_devices_are_one_devices_option_each() -> None:
    devs = ["/dev/loop1", "/dev/loop2"]
    for argv in (report_argv("lv", names=["vg0"], scan=devs), fullreport_argv(scan=devs),
                 change_argv("lvremove", ["vg0/a"], scan=devs), lvmcmd.vgck_argv("vg0", scan=devs)):
        i = argv.index("--devices")
        assert argv[i:i + 4] == ["--devices", "/dev/loop1", "--devices", "/dev/loop2"]
        assert argv.count("--devices") == 2
    assert "--devices" not in report_argv("lv") and "--devices" not in fullreport_argv()
    assert lvmcmd.vgck_argv("vg0")[-1] == "vg0"
