"""The error hierarchy survives the wire: a caller catches the class the daemon raised."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lvmsuper.client import errors
from lvmsuper.client.errors import (ERRORS_BY_NAME, Internal, InvalidRequest, LvmSuperError,
                                    error_from_wire)

SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "InvalidRequest": {"field": "size"},
    "PermissionDenied": {"required": "destroy"},
    "NotFound": {"object_type": "lv", "object_name": "vg0/lv9"},
    "AlreadyExists": {"object_type": "vg", "object_name": "vg0"},
    "LvmFailed": {"argv": ["lvm", "vgcreate", "vg0", "/dev/loop0"], "rc": 5,
                  "log": [{"log_type": "error", "log_message": "x"}], "stderr": "warn"},
    "LvmOutputInvalid": {"argv": ["lvm", "pvs"], "rc": 0,
                         "line": "Last login: Fri Dec 28 21:41:33 EST 2018",
                         "stdout": "...", "stderr": ""},
    "Timeout": {"argv": ["lvm", "pvs"], "timeout": 60.0},
    "Busy": {"retry_after": 0.5},
    "InUse": {"object_type": "lv", "object_name": "vg0/lv1", "argv": ["lvm", "lvremove"],
              "rc": 5, "log": []},
    "LockConflict": {"object_type": "lv", "object_name": "svg/lv1", "holder": 1,
                     "argv": ["lvm", "lvchange"], "rc": 5, "log": []},
    "Internal": {},
    "ConnectionFailed": {"socket": "/run/lvmsuper/lvmsuper.sock"},
}


def test_every_documented_error_name_exists() -> None:
    documented = {"InvalidRequest", "PermissionDenied", "NotFound", "AlreadyExists",
                  "LvmFailed", "LvmOutputInvalid", "Timeout", "Busy", "Internal"}
    assert documented <= set(ERRORS_BY_NAME)
    assert set(ERRORS_BY_NAME) == set(SAMPLE_DATA)


@pytest.mark.parametrize("name", sorted(ERRORS_BY_NAME))
def test_roundtrip_through_the_wire(name: str) -> None:
    cls = ERRORS_BY_NAME[name]
    assert cls.name == name
    assert issubclass(cls, LvmSuperError)
    err = cls(f"{name} happened", **SAMPLE_DATA[name])
    wire = json.loads(json.dumps(err.to_wire()))
    assert wire["data"]["name"] == name
    assert wire["code"] == cls.wire_code
    back = error_from_wire(wire)
    assert type(back) is cls
    assert back.message == f"{name} happened"
    assert str(back) == f"{name} happened"
    assert back.data == SAMPLE_DATA[name]
    assert back.code == err.code


def test_wire_codes_are_distinct_per_class() -> None:
    codes = [cls.wire_code for cls in ERRORS_BY_NAME.values()]
    assert len(codes) == len(set(codes))


def test_explicit_code_survives() -> None:
    err = InvalidRequest("bad json", code=-32700)
    back = error_from_wire(err.to_wire())
    assert type(back) is InvalidRequest and back.code == -32700


def test_none_data_values_are_left_out() -> None:
    err = InvalidRequest("x", field=None)
    assert err.to_wire() == {"code": -32602, "message": "x",
                             "data": {"name": "InvalidRequest"}}


def test_unknown_name_maps_to_base_class() -> None:
    back = error_from_wire({"code": -32077, "message": "from the future",
                            "data": {"name": "QuotaExceeded", "limit": 3}})
    assert type(back) is LvmSuperError
    assert back.message == "from the future"
    assert back.data == {"limit": 3}
    assert back.code == -32077


def test_missing_data_maps_to_base_class() -> None:
    back = error_from_wire({"code": -32000, "message": "plain"})
    assert type(back) is LvmSuperError
    assert back.message == "plain"


@pytest.mark.parametrize("error", [None, "boom", 42, ["x"]])
def test_malformed_error_is_internal(error: Any) -> None:
    back = error_from_wire(error)
    assert type(back) is Internal
    assert "malformed" in back.message


@pytest.mark.parametrize("key", ["code", "message"])
def test_data_member_named_like_a_constructor_argument_does_not_crash(key: str) -> None:
    # A daemon's data may carry any keys; decoding must still give an LvmSuperError
    # (here a NotFound), never a TypeError escaping from the client.
    back = error_from_wire({"code": -32002, "message": "gone",
                            "data": {"name": "NotFound", key: "x"}})
    assert isinstance(back, LvmSuperError)
    assert back.message == "gone"


def test_all_is_complete() -> None:
    public = {n for n, v in vars(errors).items()
              if isinstance(v, type) and issubclass(v, LvmSuperError)}
    assert public <= set(errors.__all__)
