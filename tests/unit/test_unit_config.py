"""The config file: every documented key reaches Config; a typo or a wrong type is a
start-up error naming ``section.key``."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from lvmsuper.supervisor.config import (DEFAULT_SOCKET, Config, ConfigError,
                                        check_socket_group, load_config, parse_config)

FULL_TOML = """
[server]
socket = "/run/test/lvmsuper.sock"
socket_group = "storage"
socket_mode = "0640"
idle_timeout = 30

[lvm]
binary = "/opt/lvm/sbin/lvm"
system_dir = "/etc/lvmsuper/lvm"
timeout = 12.5
extra_config = "devices { use_devicesfile=0 }"
runner = "shell"

[jobs]
keep = 600

[access]
query = ["lvmsuper", "monitoring"]
manage = ["vdsm"]
destroy = []

[policy]
devices = ["/dev/disk/by-id/*", "/dev/loop*"]
protected_vgs = ["rootvg"]

[dbus]
enabled = false
bus = "unix:path=/run/test/bus"

[limits]
max_connections = 16
max_request_bytes = 65536
max_queue = 32
max_parallel = 2
connection_idle_timeout = 90
"""


def test_defaults() -> None:
    config = parse_config({}, "defaults")
    assert config == Config()
    assert (config.socket, config.socket_group, config.socket_mode) == \
        (DEFAULT_SOCKET, "lvmsuper", 0o660)
    assert DEFAULT_SOCKET == "/run/lvmsuper/lvmsuper.sock"
    assert (config.max_connections, config.max_request_bytes, config.max_queue,
            config.max_parallel, config.lvm_timeout) == (256, 1024 * 1024, 1024, 4, 60.0)
    assert config.access_query == config.access_manage == config.access_destroy == \
        ("lvmsuper",)
    assert config.policy_devices == () and config.protected_vgs == ()
    assert config.dbus_enabled == "auto" and config.dbus_bus == "system"
    assert config.lvm_runner == "shell" and config.lvm_system_dir is None
    assert config.connection_idle_timeout == 600.0


def test_every_documented_key() -> None:
    config = parse_config(tomllib.loads(FULL_TOML), "test.toml")
    assert config == Config(
        socket="/run/test/lvmsuper.sock", socket_group="storage", socket_mode=0o640,
        idle_timeout=30.0, lvm_binary="/opt/lvm/sbin/lvm",
        lvm_system_dir="/etc/lvmsuper/lvm", lvm_timeout=12.5,
        lvm_extra_config="devices { use_devicesfile=0 }", lvm_runner="shell",
        jobs_keep=600.0, access_query=("lvmsuper", "monitoring"), access_manage=("vdsm",),
        access_destroy=(), policy_devices=("/dev/disk/by-id/*", "/dev/loop*"),
        protected_vgs=("rootvg",), dbus_enabled=False, dbus_bus="unix:path=/run/test/bus",
        max_connections=16, max_request_bytes=65536, max_queue=32, max_parallel=2,
        connection_idle_timeout=90.0)
    assert config.source == "test.toml"
    assert isinstance(config.idle_timeout, float) and isinstance(config.jobs_keep, float)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().max_parallel = 8  # type: ignore[misc]


@pytest.mark.parametrize("value", [True, "auto", False])
def test_dbus_enabled_values(value: Any) -> None:
    assert parse_config({"dbus": {"enabled": value}}, "t").dbus_enabled == value


@pytest.mark.parametrize(("text", "mode"), [('"0660"', 0o660), ('"660"', 0o660),
                                            ('"0600"', 0o600), ('"0777"', 0o777)])
def test_socket_mode_octal_strings(text: str, mode: int) -> None:
    assert parse_config(tomllib.loads(f"[server]\nsocket_mode = {text}\n"),
                        "t").socket_mode == mode


def _error(toml: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(toml), "/etc/lvmsuper/lvmsuper.toml")
    message = str(info.value)
    assert message.startswith("/etc/lvmsuper/lvmsuper.toml: ")
    return message


@pytest.mark.parametrize(("toml", "key"), [
    ('[limits]\nmax_parallel = "4"', "limits.max_parallel"),
    ("[limits]\nmax_parallel = 0", "limits.max_parallel"),
    ("[limits]\nmax_connections = 1.5", "limits.max_connections"),
    ("[limits]\nmax_queue = true", "limits.max_queue"),
    ("[limits]\nmax_request_bytes = -1", "limits.max_request_bytes"),
    ("[server]\nsocket_mode = 660", "server.socket_mode"),
    ('[server]\nsocket_mode = "0999"', "server.socket_mode"),
    ('[server]\nsocket_mode = "rw-rw----"', "server.socket_mode"),
    ('[server]\nsocket_mode = ""', "server.socket_mode"),
    ('[server]\nsocket_mode = "07777"', "server.socket_mode"),
    ('[server]\nsocket = "run/lvmsuper.sock"', "server.socket"),
    ('[server]\nsocket_group = ""', "server.socket_group"),
    ("[server]\nsocket_group = 0", "server.socket_group"),
    ("[server]\nidle_timeout = -1", "server.idle_timeout"),
    ('[server]\nidle_timeout = "30s"', "server.idle_timeout"),
    ('[access]\nquery = "lvmsuper"', "access.query"),
    ("[access]\nmanage = [1, 2]", "access.manage"),
    ('[access]\ndestroy = "root"', "access.destroy"),
    ('[policy]\ndevices = "/dev/loop*"', "policy.devices"),
    ("[policy]\nprotected_vgs = [true]", "policy.protected_vgs"),
    ('[lvm]\nbinary = "lvm"', "lvm.binary"),
    ('[lvm]\nsystem_dir = "etc/lvm"', "lvm.system_dir"),
    ("[lvm]\ntimeout = true", "lvm.timeout"),
    ("[lvm]\nextra_config = 5", "lvm.extra_config"),
    ('[lvm]\nrunner = "sudo"', "lvm.runner"),
    ('[jobs]\nkeep = "1h"', "jobs.keep"),
    ('[dbus]\nenabled = "yes"', "dbus.enabled"),
    ("[dbus]\nenabled = 1", "dbus.enabled"),
    ("[dbus]\nbus = false", "dbus.bus"),
])
def test_wrong_type_or_value_names_the_key(toml: str, key: str) -> None:
    assert f" {key} " in _error(toml)


@pytest.mark.parametrize(("toml", "key"), [
    ("[limits]\nmax_paralel = 4", "limits.max_paralel"),
    ('[server]\nsocket_path = "/run/x.sock"', "server.socket_path"),
    ('[lvm]\nlvm_binary = "/sbin/lvm"', "lvm.lvm_binary"),
    ("[access]\nadmin = []", "access.admin"),
])
def test_unknown_key_is_named(toml: str, key: str) -> None:
    message = _error(toml)
    assert "unknown key" in message and key in message


def test_unknown_section_is_named() -> None:
    message = _error("[limit]\nmax_parallel = 4")
    assert "unknown section" in message and "[limit]" in message


def test_top_level_key_is_refused() -> None:
    message = _error('socket = "/run/x.sock"')
    assert "socket" in message


def test_section_that_is_not_a_table() -> None:
    with pytest.raises(ConfigError, match=r"\[server\]"):
        parse_config({"server": "x"}, "t")


# ---- load_config / check_socket_group --------------------------------------------

def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lvmsuper.toml"
    path.write_text('[lvm]\nbinary = "/opt/lvm/sbin/lvm"\n[limits]\nmax_parallel = 8\n')
    config = load_config(path)
    assert config.max_parallel == 8
    assert config.lvm_binary == "/opt/lvm/sbin/lvm"
    assert config.source == str(path)


def test_load_config_socket_override(tmp_path: Path) -> None:
    path = tmp_path / "lvmsuper.toml"
    path.write_text('[server]\nsocket = "/run/a.sock"\n[lvm]\nbinary = "/sbin/lvm"\n')
    assert load_config(path, socket="/tmp/b.sock").socket == "/tmp/b.sock"
    assert load_config(path).socket == "/run/a.sock"


def test_load_config_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "lvmsuper.toml"
    path.write_text("[limits\nmax_parallel = 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "TOML" in str(info.value)


def test_load_config_bad_key_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "lvmsuper.toml"
    path.write_text('[limits]\nmax_parallel = "4"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "limits.max_parallel" in str(info.value)


def test_load_config_missing_explicit_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "no such file" in str(info.value)


def test_load_config_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_config(tmp_path)


def test_missing_socket_group_says_how_to_create_it() -> None:
    config = Config(socket_group="lvmsuper-nonexistent-grp")
    with pytest.raises(ConfigError) as info:
        check_socket_group(config)
    message = str(info.value)
    assert "server.socket_group" in message
    assert "'lvmsuper-nonexistent-grp'" in message
    assert "groupadd --system lvmsuper-nonexistent-grp" in message


def test_existing_socket_group_gives_its_gid() -> None:
    assert check_socket_group(Config(socket_group="root")) == 0


def test_access_scopes_parse() -> None:
    from lvmsuper.supervisor.config import ScopeConfig
    config = parse_config(tomllib.loads(
        '[access]\nquery = ["ops"]\n[[access.scope]]\ngroup = "vdsm"\n'
        'roles = ["query", "manage", "destroy", "open"]\nvgs = ["sd-*", "[ab]?"]\n'
        'vg_tags = ["RHAT_storage_domain"]\n[[access.scope]]\ngroup = "csi"\n'
        'roles = ["query"]\nvg_tags = ["csi"]\n'), "t")
    assert config.access_query == ("ops",)
    assert config.access_scopes == (
        ScopeConfig("vdsm", ("query", "manage", "destroy", "open"), ("sd-*", "[ab]?"),
                    ("RHAT_storage_domain",)),
        ScopeConfig("csi", ("query",), (), ("csi",)))


@pytest.mark.parametrize("entry,key", [
    ({"group": "g", "roles": ["query", "root"], "vgs": ["a"]}, "access.scope[1].roles"),
    ({"group": "g", "roles": ["query", "query"], "vgs": ["a"]}, "access.scope[1].roles"),
    ({"group": "g", "roles": "query", "vgs": ["a"]}, "access.scope[1].roles"),
    ({"group": "g", "roles": ["query"], "vgs": ["a]"]}, "access.scope[1].vgs"),
    ({"group": "g", "roles": ["query"], "vgs": ["a b"]}, "access.scope[1].vgs"),
    ({"group": "g", "roles": ["query"], "vgs": ["-a"]}, "access.scope[1].vgs"),
    ({"group": "g", "roles": ["query"], "vgs": "sd-*"}, "access.scope[1].vgs"),
    ({"group": "g", "roles": ["query"], "vg_tags": ["a b"]}, "access.scope[1].vg_tags"),
    ({"group": "g", "roles": ["query"]}, "access.scope[1].vgs"),
    ({"group": "g", "roles": ["query"], "vgs": ["a"], "tags": ["x"]}, "access.scope[1].tags"),
    ({"group": 5, "roles": ["query"], "vgs": ["a"]}, "access.scope[1].group"),
])
def test_a_bad_scope_names_its_key(entry: dict[str, Any], key: str) -> None:
    good = {"group": "g", "roles": ["query"], "vgs": ["a"]}
    with pytest.raises(ConfigError) as info:
        parse_config({"access": {"scope": [good, entry]}}, "t")
    assert f"t: {key} " in str(info.value)
