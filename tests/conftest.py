"""Fixtures for the system tier: one loop-device sandbox, test users and one daemon per
session; every test that uses LVM starts from an empty sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import rig


@pytest.fixture(scope="session")
def sandbox() -> Iterator[rig.Sandbox]:
    rig.system_ready()
    box = rig.Sandbox()
    try:
        yield box
    finally:
        box.destroy()


@pytest.fixture(scope="session")
def users() -> Iterator[dict[str, list[str]]]:
    rig.system_ready()
    with rig.users_for_tests():
        yield rig.USERS


@pytest.fixture(scope="session")
def daemon(sandbox: rig.Sandbox, users: dict[str, list[str]]) -> Iterator[rig.Daemon]:
    d = rig.Daemon(sandbox).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def lvm(sandbox: rig.Sandbox) -> Iterator[rig.Sandbox]:
    """The sandbox, emptied before the test (no PVs, VGs or LVs)."""
    sandbox.wipe()
    yield sandbox
