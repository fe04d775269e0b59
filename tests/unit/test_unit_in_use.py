"""LVM refusing because an LV is open becomes ``InUse`` (a kind of ``LvmFailed``) naming
the LV, from LVM's own words in its JSON log or on stderr; any other failure stays a
plain ``LvmFailed``. And a narrowed scan reaches every argv the ``Lvm`` builds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence

import pytest

from lvmsuper.client.errors import InUse, LvmFailed
from lvmsuper.supervisor.lvm.calls import Lvm, in_use
from lvmsuper.supervisor.lvm.runner import RunResult


@pytest.mark.parametrize(("message", "found"), [
    ("Logical volume vg0/lv1 in use.", ("lv", "vg0/lv1")),
    ("Logical volume vg0/lv1 contains a filesystem in use.", ("lv", "vg0/lv1")),
    ("LV vg0/lv1 in use: not deactivating", ("lv", "vg0/lv1")),
    ("LV vg0/lv1 has open 1 snapshot(s), not deactivating.", ("lv", "vg0/lv1")),
    ('Can\'t deactivate volume group "vg0" with 2 open logical volume(s)', ("vg", "vg0")),
    ("Volume group \"vg0\" not found", None),
    ("Physical volume \"/dev/loop0\" still in use", None),
])
def test_lvm_words_for_in_use(message: str, found: tuple[str, str] | None) -> None:
    assert in_use(message) == found


class Fake:
    def __init__(self, rc: int, stdout: str, stderr: str = "") -> None:
        self.answer = (rc, stdout, stderr)
        self.argvs: list[list[str]] = []

    async def run(self, args: Sequence[str], *, timeout: float | None,
                  on_line: Callable[[str], None] | None = None) -> RunResult:
        self.argvs.append(list(args))
        rc, out, err = self.answer
        return RunResult(("/sbin/lvm", *args), rc, out, err, 0.001)


def _log(message: str) -> str:
    return json.dumps(indent=2, obj={"log": [
        {"log_type": "error", "log_message": message, "log_object_name": "vg0/lv1"},
        {"log_type": "status", "log_message": "failure", "log_ret_code": "5"}]})


def test_an_open_lv_is_in_use_from_the_json_log() -> None:
    fake = Fake(5, _log("Logical volume vg0/lv1 in use."))
    with pytest.raises(InUse) as info:
        asyncio.run(Lvm(fake, timeout=5, extra_config=None).change("lvremove", ["vg0/lv1"]))
    err = info.value
    assert isinstance(err, LvmFailed) and err.name == "InUse"
    assert (err.data["object_type"], err.data["object_name"]) == ("lv", "vg0/lv1")
    assert err.data["rc"] == 5 and err.data["log"][0]["message"].endswith("in use.")


def test_in_use_from_stderr_without_a_json_log() -> None:
    fake = Fake(5, "", "  Logical volume vg0/lv1 in use.\n")
    with pytest.raises(InUse):
        asyncio.run(Lvm(fake, timeout=5, extra_config=None).change("lvchange", ["vg0/lv1"],
                                                                   json_log=False))


def test_other_failures_stay_lvm_failed() -> None:
    fake = Fake(5, _log("Volume group \"vg0\" not found"))
    with pytest.raises(LvmFailed) as info:
        asyncio.run(Lvm(fake, timeout=5, extra_config=None).change("lvremove", ["vg0/lv1"]))
    assert type(info.value) is LvmFailed


def test_a_scoped_lvm_adds_devices_to_every_command_and_the_plain_one_none() -> None:
    fake = Fake(0, json.dumps({"report": [{"lv": []}], "log": []}, indent=2))
    plain = Lvm(fake, timeout=5, extra_config=None)
    assert plain.scoped(()) is plain
    scoped = plain.scoped(["/dev/loop1", "/dev/loop2"])

    async def go() -> None:
        await scoped.lvs(["vg0"])
        await scoped.change("lvremove", ["vg0/a"])
        await scoped.vgck("vg0")
        await plain.lvs(["vg0"])
    asyncio.run(go())
    for argv in fake.argvs[:3]:
        assert [a for a, b in zip(argv, argv[1:]) if a == "--devices"] == ["--devices"] * 2
        assert "/dev/loop1" in argv and "/dev/loop2" in argv
    assert "--devices" not in fake.argvs[3]


def test_in_use_over_dbus_is_the_same_class_with_its_data() -> None:
    from lvmsuper.client.dbus import ERROR_PREFIX, error_from_dbus, to_dbus
    err = InUse("LVM lvremove failed: Logical volume vg0/lv1 in use.", object_type="lv",
                object_name="vg0/lv1", rc=5, argv=["lvm", "lvremove"], log=[])
    back = error_from_dbus(ERROR_PREFIX + err.name, [err.message, to_dbus(err.data)],
                           "lvremove")
    assert type(back) is InUse and back.message == err.message
    assert back.data["object_name"] == "vg0/lv1" and back.data["rc"] == 5
