"""GroupAuthority resolves the `[access]` group names once, when it is made: answering
never touches the group database (a slow NSS would block the event loop); a group that
does not exist admits nobody and is logged once. peer_groups reads SO_PEERGROUPS."""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import socket
from typing import Any

import pytest

from lvmsuper.supervisor.config import Config
from lvmsuper.supervisor.core import auth
from lvmsuper.supervisor.core.auth import Caller, GroupAuthority, Role

GIDS = {"readers": 5001, "admins": 5002}


class Resolver:
    """A group database that counts look-ups; ``gone`` names stop existing."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gone: set[str] = set()

    def __call__(self, name: str) -> Any:
        self.calls.append(name)
        if name not in GIDS or name in self.gone:
            raise KeyError(name)
        return grp.struct_group((name, "x", GIDS[name], []))


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    fake = Resolver()
    monkeypatch.setattr(auth.grp, "getgrnam", fake)
    return fake


def caller(uid: int, *groups: int) -> Caller:
    return Caller(uid=uid, gid=uid, pid=1, comm="t", groups=frozenset(groups))


def answers(authority: GroupAuthority) -> list[bool]:
    async def ask() -> list[bool]:
        return [await authority.allowed(c, role, {})
                for c in (caller(1000, 5001), caller(1001, 5002), caller(1002), caller(0))
                for role in Role]
    return asyncio.run(ask())


def test_names_resolved_once_at_start(resolver: Resolver) -> None:
    config = Config(access_query=("readers", "admins"), access_manage=("admins",),
                    access_destroy=("admins",), access_open=("admins",))
    authority = GroupAuthority(config)
    assert sorted(resolver.calls) == ["admins", "readers"]  # each name once
    first = answers(authority)
    assert first == [True, False, False, False,  # readers: query only
                     True, True, True, True,     # admins: every role
                     False, False, False, False,  # in neither group
                     True, True, True, True]     # root
    for _ in range(50):
        assert answers(authority) == first
    resolver.gone = {"admins", "readers"}  # deleted after start-up: same answers
    assert answers(authority) == first
    assert sorted(resolver.calls) == ["admins", "readers"]  # never asked again


def test_a_missing_group_admits_nobody_and_is_logged_once(
        resolver: Resolver, caplog: pytest.LogCaptureFixture) -> None:
    config = Config(access_query=("nosuch", "readers"), access_manage=("nosuch",),
                    access_destroy=("nosuch",), access_open=("nosuch",))
    with caplog.at_level(logging.WARNING, logger="lvmsuperd.auth"):
        authority = GroupAuthority(config)
        results = [answers(authority) for _ in range(5)]
    assert results[0][:4] == [True, False, False, False]  # readers still query
    assert results[0][4:12] == [False] * 8  # nobody gets in through "nosuch"
    assert all(r == results[0] for r in results)
    warnings = [r.getMessage() for r in caplog.records if "nosuch" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "does not exist" in warnings[0]
    assert resolver.calls.count("nosuch") == 1


def test_peer_groups_of_a_socketpair_are_ours() -> None:
    from lvmsuper.supervisor.core.auth import peer_groups
    a, b = socket.socketpair()
    with a, b:
        assert peer_groups(a) == frozenset(os.getgroups())


def test_scopes_grant_roles_on_some_vgs_only(resolver: Resolver) -> None:
    """A role from a global list is unscoped (None); a role only through scopes is the
    union of the scopes that grant it; "open" (lv_open's role) is a scope role too."""
    from lvmsuper.supervisor.config import ScopeConfig
    config = Config(access_query=("admins",), access_manage=("admins",),
                    access_destroy=("admins",), policy_devices=("/dev/loop*",),
                    access_scopes=(ScopeConfig("readers", ("query", "manage"), ("sd-*",)),
                                   ScopeConfig("readers", ("query", "open"), (), ("T",)),
                                   ScopeConfig("nosuch", ("destroy",), ("x",))))
    authority = GroupAuthority(config)
    scoped, admin, outside = caller(1000, 5001), caller(1001, 5002), caller(1002)

    async def allowed(c: Caller, role: Role) -> bool:
        return await authority.allowed(c, role, {})
    assert {r.value: asyncio.run(allowed(scoped, r)) for r in Role} == \
        {"query": True, "manage": True, "destroy": False, "open": True}
    assert not any(asyncio.run(allowed(outside, r)) for r in Role)
    assert authority.scope(admin, Role.MANAGE) is None
    assert authority.scope(caller(0), "open") is None
    query = authority.scope(scoped, Role.QUERY)
    assert query is not None and query.globs == ("sd-*",) and query.tags == {"T"}
    assert query.covers("sd-1", []) and query.covers("vg", ["T"])
    assert not query.covers("vg", ["U"])
    assert not query.covers("SD-1", [])  # case matters, as in VG names
    manage = authority.scope(scoped, Role.MANAGE)
    assert manage is not None and manage.tags == frozenset() and not manage.covers("vg", ["T"])
    opener = authority.scope(scoped, "open")
    assert opener is not None and opener.globs == () and opener.tags == {"T"}
    assert query.sees("pv", "/dev/loop3", {}) and not query.sees("pv", "/dev/sda", {})
    assert not query.sees("vg", "gone", {})
