"""lvmsuperctl without a daemon: size parsing, tables, exit codes 2 and 3."""

from __future__ import annotations

import argparse
import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvmsuper.client.cli import human_size, main, parse_size, table

GiB = 2**30


@pytest.mark.parametrize(("text", "expected"), [
    ("10G", 10 * GiB),
    ("512M", 512 * 2**20),
    ("1.5T", 3 * 2**39),
    ("4096", 4096),
    ("4096B", 4096),
    ("10g", 10 * GiB),
    ("10gb", 10 * GiB),
    ("10GB", 10 * GiB),
    ("1K", 1024),
    (" 2 M ", 2 * 2**20),
    ("1E", 2**60),
])
def test_parse_size_accepts_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("10GiB", 10 * GiB),
    ("512MiB", 512 * 2**20),
    ("10gib", 10 * GiB),
    ("4KiB", 4096),
])
def test_parse_size_accepts_iec_suffixes(text: str, expected: int) -> None:
    # The regex allows an "iB" suffix but matches it against text.upper().
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("9007199254740993", 2**53 + 1),        # through float: 2**53
    ("9223372036854775807", 2**63 - 1),     # the largest size the daemon takes
    ("8E", 2**63),                          # the daemon refuses it; parsing is exact
    ("7.5E", 15 * 2**59),
    ("1.0000000000000001E", 2**60 + 115),   # 2**60 / 10**16 = 115.29; float: 2**60
    ("7.99999999999999999999E", 2**63 - 1),  # float rounds to 8.0: 2**63
    ("8191.999999999999P", 2**63 - 1126),   # float: 2**63 - 1024
    ("1.5G", 3 * 2**29),
    ("0.5K", 512),
    ("1.7B", 1),                            # a fraction of a byte is dropped
    ("1.999", 1),
])
def test_parse_size_is_exact_beyond_float(text: str, expected: int) -> None:
    value = parse_size(text)
    assert value == expected and type(value) is int


_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50,
          "E": 2**60}


@given(whole=st.integers(min_value=0, max_value=10**20),
       fraction=st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=25)),
       unit=st.sampled_from(sorted(_UNITS)), suffix=st.sampled_from(["", "B", "iB", "ib"]))
def test_parse_size_matches_exact_arithmetic(whole: int, fraction: str, unit: str,
                                             suffix: str) -> None:
    text = f"{whole}.{fraction}{unit}{suffix}" if fraction else f"{whole}{unit}{suffix}"
    expected = int(Fraction(f"{whole}.{fraction or 0}") * _UNITS[unit])
    if expected < 1:
        with pytest.raises(argparse.ArgumentTypeError, match="not a positive size"):
            parse_size(text)
    else:
        assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["10X", "-1", "", "0", "0.0001K", "G", "1.2.3G", "10 G B x",
                                  "1e3", "0x10", "1.", ".5", "1,5G", "1_000", "1 000",
                                  "1KK", "10GiBs", "nan", "inf", "+1", "1.5.", "\u0661\u0662",
                                  "1\n2", "1" * 41, "0." + "1" * 41])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(("value", "expected"), [
    (0, "0B"), (1023, "1023B"), (1024, "1.00KiB"), (1536, "1.50KiB"),
    (512 * 2**20, "512.00MiB"), (10 * GiB, "10.00GiB"), (3 * 2**39, "1.50TiB"),
    (2**60, "1024.00PiB"), (None, "-"), ("12", "-"),
])
def test_human_size(value: object, expected: str) -> None:
    assert human_size(value) == expected


def _columns(header: str) -> list[int]:
    return [m.start() for m in re.finditer(r"\S+", header)]


def test_table_columns_line_up() -> None:
    rows = [
        {"name": "/dev/loop0", "vg": "vg0", "attr": "a--", "size": 1069547520,
         "free": 532676608, "tags": ["ssd", "fast"]},
        {"name": "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", "vg": None, "attr": "---",
         "size": 1073741824, "free": 1073741824, "tags": []},
    ]
    lines = table("pv", rows).split("\n")
    assert len(lines) == 3
    starts = _columns(lines[0])
    assert lines[0].split() == ["PV", "VG", "Attr", "PSize", "PFree", "Tags"]
    expected = [
        ["/dev/loop0", "vg0", "a--", "1020.00MiB", "508.00MiB", "ssd,fast"],
        ["/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", "-", "---", "1.00GiB", "1.00GiB", ""],
    ]
    for line, cells in zip(lines[1:], expected):
        padded = line.ljust(200)
        got = [padded[a:b].strip() for a, b in zip(starts, [*starts[1:], 200])]
        assert got == cells
        for start, cell in zip(starts, cells):
            if cell:  # each cell starts exactly at its column, after a blank
                assert padded[start:].startswith(cell)
                assert start == 0 or padded[start - 1] == " "
    assert all(line == line.rstrip() for line in lines)
    # The widest value sets the column: two spaces then the next column.
    assert starts[1] == len("/dev/disk/by-id/wwn-0x5000c500a1b2c3d4") + 2


def test_table_bools_and_empty() -> None:
    out = table("lv", [{"name": "lv0", "vg": "vg0", "attr": "-wi-a-----",
                        "size": 4 * 2**20, "segtype": "linear", "active": True,
                        "devices": ["/dev/loop0"], "tags": []}])
    assert out.split("\n")[1].split() == ["lv0", "vg0", "-wi-a-----", "4.00MiB", "linear",
                                          "yes", "/dev/loop0"]
    assert table("vg", []) == "VG  #PV  #LV  Attr  VSize  VFree  Tags"


def test_no_command_is_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_unknown_command_is_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["lvzap"])
    assert info.value.code == 2


def test_bad_size_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--socket", "/nonexistent/sock", "lvcreate", "vg0", "lv0", "--size", "10X"])
    assert info.value.code == 2
    assert "10X" in capsys.readouterr().err


def test_lvcreate_with_both_size_and_extents_is_usage_error() -> None:
    # neither is fine for the CLI (a thin LV or thin snapshot has no size); the daemon
    # judges that combination, but giving both is always wrong
    with pytest.raises(SystemExit) as info:
        main(["--socket", "/nonexistent/sock", "lvcreate", "vg0", "lv0", "--size", "1G",
              "--extents", "10"])
    assert info.value.code == 2


@pytest.mark.parametrize("params", ["not json", "[1, 2]", '"x"'])
def test_call_with_bad_params_is_exit_2(params: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", "/nonexistent/sock", "call", "ping", params]) == 2
    assert "bad JSON params" in capsys.readouterr().err


def test_missing_socket_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", "/nonexistent/sock", "ping"]) == 3
    captured = capsys.readouterr()
    assert "/nonexistent/sock" in captured.err
    assert captured.out == ""


def test_socket_from_environment_is_used(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LVMSUPER_SOCKET", "/nonexistent/env.sock")
    assert main(["pvs"]) == 3
    assert "/nonexistent/env.sock" in capsys.readouterr().err
