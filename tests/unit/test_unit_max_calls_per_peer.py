"""`[limits] max_calls_per_peer`: a positive integer, 64 by default, validated like the
other `[limits]` keys (a wrong type is a start-up error naming the key)."""

from __future__ import annotations

import tomllib

import pytest

from lvmsuper.supervisor.config import Config, ConfigError, parse_config


def test_default_and_set() -> None:
    assert Config().max_calls_per_peer == 64
    assert parse_config({}, "t").max_calls_per_peer == 64
    config = parse_config(tomllib.loads("[limits]\nmax_calls_per_peer = 8\n"), "t")
    assert config.max_calls_per_peer == 8


@pytest.mark.parametrize("value", ["0", "-1", "1.5", '"64"', "true"])
def test_bad_values_name_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(f"[limits]\nmax_calls_per_peer = {value}\n"), "t.toml")
    assert str(info.value).startswith("t.toml: limits.max_calls_per_peer ")


def test_misspelt_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown key limits.max_call_per_peer"):
        parse_config(tomllib.loads("[limits]\nmax_call_per_peer = 8\n"), "t.toml")
