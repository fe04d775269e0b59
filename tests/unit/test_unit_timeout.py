"""No caller waits forever: against a socket that accepts connections and never answers
(what systemd's lvmsuper.socket does while lvmsuper.service cannot start), the clients
fail after their timeout and lvmsuperctl exits 3 pointing at the service."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvmsuper.client import DEFAULT_TIMEOUT, AsyncClient, Client, ConnectionFailed
from lvmsuper.client._core import call_timeout
from lvmsuper.client.cli import main


@pytest.fixture
def silent(tmp_path: Path) -> Iterator[str]:
    """A listening socket nobody serves: connect() succeeds (the kernel queues it),
    requests are never read, never answered."""
    path = str(tmp_path / "silent.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(16)
    try:
        yield path
    finally:
        sock.close()


def test_the_default_timeout_is_finite() -> None:
    assert DEFAULT_TIMEOUT == 120.0
    assert Client("/nonexistent").timeout == DEFAULT_TIMEOUT
    assert AsyncClient("/nonexistent").timeout == DEFAULT_TIMEOUT
    assert Client("/nonexistent", timeout=None).timeout is None  # forever, when asked


def test_a_change_waits_its_own_wait_on_top() -> None:
    assert call_timeout(10, "pvs", {"wait": 5}) == 10  # reads have no wait
    assert call_timeout(10, "lvremove", {"lv": "vg/lv"}) == 10
    assert call_timeout(10, "lvremove", {"lv": "vg/lv", "wait": 5}) == 15
    assert call_timeout(None, "lvremove", {"wait": 5}) is None


def test_sync_client_gives_up(silent: str) -> None:
    start = time.monotonic()
    with Client(silent, timeout=0.3) as c, pytest.raises(ConnectionFailed) as failed:
        c.pvs()
    assert 0.3 <= time.monotonic() - start < 5
    assert failed.value.data["timeout"] == 0.3
    assert "no answer from lvmsuperd to pvs within 0.3 s" in failed.value.message


def test_sync_change_waits_timeout_plus_wait_and_says_outcome_unknown(silent: str) -> None:
    start = time.monotonic()
    with Client(silent, timeout=0.2) as c, pytest.raises(ConnectionFailed) as failed:
        c.lvremove("vg0/lv0", wait=0.3)
    assert 0.5 <= time.monotonic() - start < 5
    assert "within 0.5 s" in failed.value.message
    assert "may or may not have happened" in failed.value.message


def test_async_client_gives_up(silent: str) -> None:
    async def run() -> ConnectionFailed:
        async with AsyncClient(silent, timeout=0.3) as c:
            with pytest.raises(ConnectionFailed) as failed:
                await c.vgs()
            return failed.value

    start = time.monotonic()
    error = asyncio.run(run())
    assert 0.3 <= time.monotonic() - start < 5
    assert error.data["timeout"] == 0.3


def test_cli_exits_3_and_points_at_the_service(silent: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    assert main(["--socket", silent, "--timeout", "0.3", "pvs"]) == 3
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert "did not answer" in err and "within 0.3 s" in err
    assert "systemctl status lvmsuper" in err


def test_cli_timeout_option(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("-1", "x", "nan", "inf"):
        with pytest.raises(SystemExit) as usage:
            main(["--timeout", bad, "ping"])
        assert usage.value.code == 2
    assert "--timeout" in capsys.readouterr().err
