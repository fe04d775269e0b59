"""The daemon's configuration: one frozen ``Config`` built once at start-up.

Rule: every key of /etc/lvmsuper/lvmsuper.toml is declared in ``_SCHEMA`` below; an
unknown key or a value of the wrong type is a ``ConfigError`` naming the key, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["Config", "ConfigError", "ScopeConfig", "load_config", "DEFAULT_CONFIG_PATH",
           "DEFAULT_SOCKET", "SCOPE_ROLES"]

DEFAULT_CONFIG_PATH = Path("/etc/lvmsuper/lvmsuper.toml")
DEFAULT_SOCKET = "/run/lvmsuper/lvmsuper.sock"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key at fault."""


# The roles an ``[[access.scope]]`` entry may grant ("open": ``lv_open``).
SCOPE_ROLES = ("query", "manage", "destroy", "open")


@dataclass(frozen=True, slots=True)
class ScopeConfig:
    """One ``[[access.scope]]``: members of ``group`` get ``roles``, but only on VGs
    whose name matches one of ``vgs`` (fnmatch globs) or that carry one of ``vg_tags``."""

    group: str
    roles: tuple[str, ...]
    vgs: tuple[str, ...] = ()
    vg_tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    # [server]
    socket: str = DEFAULT_SOCKET
    socket_group: str = "lvmsuper"
    socket_mode: int = 0o660
    idle_timeout: float = 0.0
    # [lvm]
    lvm_binary: str = ""
    lvm_system_dir: str | None = None
    lvm_timeout: float = 60.0
    lvm_extra_config: str | None = None
    lvm_runner: str = "shell"
    lvm_cache: bool = True
    # [jobs]
    jobs_keep: float = 3600.0
    jobs_max_kept: int = 1000
    # [events]
    events_keep: int = 4096
    events_poll_interval: float = 10.0
    # [access]: group names per role; root is always allowed
    access_query: tuple[str, ...] = ("lvmsuper",)
    access_manage: tuple[str, ...] = ("lvmsuper",)
    access_destroy: tuple[str, ...] = ("lvmsuper",)
    # [[access.scope]]: roles limited to some VGs
    access_scopes: tuple[ScopeConfig, ...] = ()
    access_open: tuple[str, ...] = ("lvmsuper",)
    # [policy]
    policy_devices: tuple[str, ...] = ()
    protected_vgs: tuple[str, ...] = ()
    # [dbus]
    dbus_enabled: bool | str = "auto"
    dbus_bus: str = "system"
    # [limits]
    max_connections: int = 256
    max_request_bytes: int = 1024 * 1024
    max_queue: int = 1024
    max_parallel: int = 4
    # D-Bus calls in flight per bus peer (unique name); beyond it Busy, before polkit
    max_calls_per_peer: int = 64
    # seconds a connection may sit with no request in flight and no complete request
    # received before it is closed (subscribed connections are exempt); 0: never
    connection_idle_timeout: float = 600.0
    # bytes of answers a connection may leave unread before the daemon stops reading
    # its requests (and a subscriber is dropped)
    max_pending_bytes: int = 8 * 1024 * 1024
    # not in the file: where the configuration came from, for messages
    source: str = field(default="defaults", compare=False)


def _mode(value: Any) -> int:
    if not isinstance(value, str) or not value or any(c not in "01234567" for c in value):
        raise ValueError('must be a string of octal digits such as "0660"')
    mode = int(value, 8)
    if mode > 0o777:
        raise ValueError("must be at most 0777")
    return mode


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return tuple(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("must be a number >= 0")
    return float(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _runner(value: Any) -> str:
    if value not in ("exec", "shell"):
        raise ValueError('must be "exec" or "shell"')
    return str(value)


def _dbus_enabled(value: Any) -> bool | str:
    if value == "auto" or isinstance(value, bool):
        return value  # type: ignore[no-any-return]
    raise ValueError('must be "auto", true or false')


def _abs_path(value: Any) -> str:
    text = _string(value)
    if not os.path.isabs(text):
        raise ValueError("must be an absolute path")
    return text


class _Within(ValueError):
    """A bad value inside a key's value: ``where`` continues the key's name
    (``[1].roles`` after ``access.scope``)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(problem)
        self.where = where


# A VG name glob: VG name characters and fnmatch's ``* ? [...] [!...]``
_GLOB = re.compile(r"(?:[A-Za-z0-9+_.*?-]|\[!?[A-Za-z0-9+_.-]+\])+")
# an LVM tag, as the methods accept it (core/validate.py: tags)
_TAG = re.compile(r"[A-Za-z0-9_+.=!:&#/][A-Za-z0-9_+.=!:&#/-]{0,127}")
_SCOPE_KEYS = ("group", "roles", "vgs", "vg_tags")


def _scope(index: int, entry: Any) -> ScopeConfig:
    at = f"[{index}]"
    if not isinstance(entry, dict):
        raise _Within(at, "must be a table ([[access.scope]])")
    for key in entry:
        if key not in _SCOPE_KEYS:
            raise _Within(f"{at}.{key}", "is not a key of [[access.scope]] (group, roles, "
                          "vgs, vg_tags)")
    if "group" not in entry:
        raise _Within(f"{at}.group", "is required")
    try:
        group = _string(entry["group"])
    except ValueError as exc:
        raise _Within(f"{at}.group", str(exc)) from None
    roles = entry.get("roles")
    if not isinstance(roles, list) or not roles or \
            not all(isinstance(r, str) and r in SCOPE_ROLES for r in roles) or \
            len(set(roles)) != len(roles):
        raise _Within(f"{at}.roles", "must be a non-empty list of distinct roles among "
                      + ", ".join(f'"{r}"' for r in SCOPE_ROLES))
    values: dict[str, tuple[str, ...]] = {}
    for key, pattern, what in (("vgs", _GLOB, "VG name globs (VG name characters and "
                                "* ? [...])"), ("vg_tags", _TAG, "LVM tags")):
        value = entry.get(key, [])
        if not isinstance(value, list) or \
                not all(isinstance(v, str) and pattern.fullmatch(v) for v in value) or \
                any(v.startswith("-") for v in value):
            raise _Within(f"{at}.{key}", f"must be a list of {what}")
        values[key] = tuple(value)
    if not values["vgs"] and not values["vg_tags"]:
        raise _Within(f"{at}.vgs", "an entry needs at least one VG glob (vgs) or tag "
                      "(vg_tags): an empty scope would admit nothing")
    return ScopeConfig(group, tuple(roles), values["vgs"], values["vg_tags"])


def _scopes(value: Any) -> tuple[ScopeConfig, ...]:
    if not isinstance(value, list):
        raise ValueError("must be an array of tables ([[access.scope]])")
    return tuple(_scope(i, entry) for i, entry in enumerate(value))


# section -> key -> (Config field, converter)
_SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    "server": {"socket": ("socket", _abs_path), "socket_group": ("socket_group", _string),
               "socket_mode": ("socket_mode", _mode), "idle_timeout": ("idle_timeout", _number)},
    "lvm": {"binary": ("lvm_binary", _abs_path), "system_dir": ("lvm_system_dir", _abs_path),
            "timeout": ("lvm_timeout", _number), "extra_config": ("lvm_extra_config", _string),
            "runner": ("lvm_runner", _runner), "cache": ("lvm_cache", _bool)},
    "jobs": {"keep": ("jobs_keep", _number), "max_kept": ("jobs_max_kept", _positive_int)},
    "events": {"keep": ("events_keep", _positive_int),
               "poll_interval": ("events_poll_interval", _number)},
    "access": {"query": ("access_query", _str_list), "manage": ("access_manage", _str_list),
               "destroy": ("access_destroy", _str_list), "scope": ("access_scopes", _scopes),
               "open": ("access_open", _str_list)},
    "policy": {"devices": ("policy_devices", _str_list),
               "protected_vgs": ("protected_vgs", _str_list)},
    "dbus": {"enabled": ("dbus_enabled", _dbus_enabled), "bus": ("dbus_bus", _string)},
    "limits": {"max_connections": ("max_connections", _positive_int),
               "max_request_bytes": ("max_request_bytes", _positive_int),
               "max_queue": ("max_queue", _positive_int),
               "max_parallel": ("max_parallel", _positive_int),
               "max_calls_per_peer": ("max_calls_per_peer", _positive_int),
               "connection_idle_timeout": ("connection_idle_timeout", _number),
               "max_pending_bytes": ("max_pending_bytes", _positive_int)},
}


def parse_config(data: dict[str, Any], source: str) -> Config:
    """A Config from a decoded TOML document; raises ConfigError naming the bad key."""
    values: dict[str, Any] = {}
    for section, table in data.items():
        keys = _SCHEMA.get(section)
        if keys is None:
            raise ConfigError(f"{source}: unknown section [{section}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in table.items():
            if key not in keys:
                raise ConfigError(f"{source}: unknown key {section}.{key}")
            attr, convert = keys[key]
            try:
                values[attr] = convert(value)
            except ValueError as exc:
                where = exc.where if isinstance(exc, _Within) else ""
                raise ConfigError(f"{source}: {section}.{key}{where} {exc}") from None
    return Config(source=source, **values)


def load_config(path: Path | None, *, socket: str | None = None,
                require_file: bool = False) -> Config:
    """Reads ``path`` (the default path may be absent), applies command-line overrides,
    and resolves what must be known at start-up (the lvm binary)."""
    file = path or DEFAULT_CONFIG_PATH
    try:
        with open(file, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        if path is not None or require_file:
            raise ConfigError(f"{file}: no such file") from None
        data = {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    config = parse_config(data, str(file))
    if socket is not None:
        config = replace(config, socket=_abs_path(socket))
    if not config.lvm_binary:
        found = shutil.which("lvm", path="/usr/sbin:/sbin:/usr/bin:/bin")
        if found is None:
            raise ConfigError("lvm.binary: no lvm binary found in /usr/sbin, /sbin, /usr/bin, "
                              "/bin (install lvm2 or set [lvm] binary)")
        config = replace(config, lvm_binary=found)
    return config


def check_socket_group(config: Config) -> int:
    """The gid of ``server.socket_group``; a missing group is a ConfigError saying how
    to create it."""
    try:
        return grp.getgrnam(config.socket_group).gr_gid
    except KeyError:
        raise ConfigError(
            f"server.socket_group: group {config.socket_group!r} does not exist; "
            f"create it with 'groupadd --system {config.socket_group}'") from None
