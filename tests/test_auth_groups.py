"""Socket credentials with many groups: a caller in more supplementary groups than
Python's getsockopt buffer holds (256) is seen with all of them, from the kernel at
connect time, never from the user database."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

import rig
from lvmsuper.client import Client, PermissionDenied
from lvmsuper.supervisor.core.auth import peer_caller

pytestmark = pytest.mark.system

NOBODY_USER = "lvmst-out"  # a test user in no group of the user database
JUNK_GIDS = [4_000_000 + i for i in range(299)]  # no group of the daemon's config


@pytest.fixture
def nobody(users: object) -> tuple[int, int]:
    rig.system_ready()
    import pwd
    pw = pwd.getpwnam(NOBODY_USER)
    assert os.getgrouplist(NOBODY_USER, pw.pw_gid) == [pw.pw_gid]  # in no other group
    return pw.pw_uid, pw.pw_gid


def test_peer_caller_reports_all_300_groups(nobody: tuple[int, int]) -> None:
    uid, gid = nobody
    groups = JUNK_GIDS + [rig.gid_of(rig.GROUP_QUERY)]
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o755)
        path = str(Path(d) / "s")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        os.chmod(path, 0o666)
        server.listen(1)
        client = rig.connect_as(path, uid, gid, groups)
        conn, _ = server.accept()
        try:
            caller = peer_caller(conn)
        finally:
            for s in (conn, client, server):
                s.close()
    assert (caller.uid, caller.gid) == (uid, gid)
    assert caller.groups == frozenset(groups)


def test_caller_in_300_groups_is_allowed_through_the_last(daemon: rig.Daemon,
                                                          nobody: tuple[int, int]) -> None:
    """The query group is the 300th: the caller may query, and may not change (its 299
    other groups grant nothing)."""
    uid, gid = nobody
    sock = rig.connect_as(daemon.socket, uid, gid, JUNK_GIDS + [rig.gid_of(rig.GROUP_QUERY)])
    client = Client(daemon.socket)
    client._sock = sock
    try:
        assert client.ping() == {}
        assert isinstance(client.pvs(), list)
        with pytest.raises(PermissionDenied):
            client.vgcreate("vg300", [daemon.sandbox.loops[0]])
        assert client._sock is sock  # all on the child's connection (no root reconnect)
    finally:
        client.close()


def test_caller_in_300_groups_without_an_access_group_is_refused(
        daemon: rig.Daemon, nobody: tuple[int, int]) -> None:
    uid, gid = nobody
    sock = rig.connect_as(daemon.socket, uid, gid, JUNK_GIDS + [4_100_000])
    client = Client(daemon.socket)
    client._sock = sock
    try:
        with pytest.raises(PermissionDenied):
            client.ping()
        assert client._sock is sock
    finally:
        client.close()
