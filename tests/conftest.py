"""Fixtures for the system tier: one loop-device sandbox, test users and one daemon per
session; every test that uses LVM starts from an empty sandbox."""

from __future__ import annotations

import fcntl
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
    # One test session at a time may own the test users: two sessions saving and
    # restoring /etc/passwd around each other would leave users behind.
    with open("/tmp/lvmsuper-tests-users.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with rig.etc_restored(*rig.ETC_FILES):
            rig.create_users()
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
