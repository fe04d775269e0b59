"""The D-Bus peer table (supervisor/transports/peers.py): at most max_calls in flight per
peer, and no entry of a peer that left outlives its last call, in whatever order the
call's end and the peer's leaving are seen."""

from __future__ import annotations

import random

import pytest

from lvmsuper.supervisor.transports.peers import PeerTable


class Counts:
    clients = 0


def table(max_calls: int = 3) -> tuple[PeerTable, Counts]:
    counts = Counts()
    return PeerTable(max_calls, counts), counts


def test_bound_per_peer() -> None:
    peers, counts = table(3)
    a = [peers.admit(":1.1") for _ in range(5)]
    assert [p is not None for p in a] == [True, True, True, False, False]
    assert peers.admit(":1.2") is not None  # another peer is not bound by :1.1's calls
    assert counts.clients == 2
    first = a[0]
    assert first is not None
    peers.finished(":1.1", first)
    assert peers.admit(":1.1") is not None  # a finished call frees its place


def test_live_peer_keeps_its_entry_and_credentials() -> None:
    peers, counts = table()
    peer = peers.admit(":1.1")
    assert peer is not None
    peer.creds = (1000, 1000, 42, frozenset())
    peers.finished(":1.1", peer)
    assert peers.get(":1.1") is peer and counts.clients == 1
    peers.left(":1.1")
    assert peers.get(":1.1") is None and counts.clients == 0


@pytest.mark.parametrize("order", ["left first", "finished first"])
def test_entry_goes_with_whichever_comes_last(order: str) -> None:
    peers, counts = table()
    p1, p2 = peers.admit(":1.7"), peers.admit(":1.7")
    assert p1 is p2 is not None
    if order == "left first":
        peers.left(":1.7")
        assert counts.clients == 1  # two calls still in flight
        peers.finished(":1.7", p1)
        assert counts.clients == 1
        peers.finished(":1.7", p2)
    else:
        peers.finished(":1.7", p1)
        peers.finished(":1.7", p2)
        assert counts.clients == 1  # still on the bus
        peers.left(":1.7")
    assert len(peers) == 0 and counts.clients == 0


def test_left_before_its_call_was_seen() -> None:
    """NameOwnerChanged handled before the call: the transport's failed credentials
    lookup reports the peer gone, and the entry goes with the call."""
    peers, counts = table()
    peers.left(":1.9")  # nothing to forget yet
    peer = peers.admit(":1.9")
    assert peer is not None
    peers.left(":1.9")  # the lookup failed
    peers.finished(":1.9", peer)
    assert len(peers) == 0 and counts.clients == 0


def test_random_interleavings_never_leak() -> None:
    rng = random.Random(11)
    for _ in range(200):
        peers, counts = table(2)
        events: list[tuple[str, str]] = []
        for n in range(5):
            name = f":1.{n}"
            events += [("call", name)] * rng.randint(1, 4) + [("left", name)]
        rng.shuffle(events)
        running = []
        for kind, name in events:
            if kind == "call":
                peer = peers.admit(name)
                if peer is not None:
                    running.append((name, peer))
            else:
                peers.left(name)
            if running and rng.random() < 0.5:
                done = running.pop(rng.randrange(len(running)))
                peers.finished(*done)
        for done in running:
            peers.finished(*done)
        # Calls admitted after a shuffled "left" belong to a peer the transport will
        # report gone again (its lookup fails); every such peer is gone for good here.
        for name in {n for _, n in events}:
            peers.left(name)
        assert len(peers) == 0 and counts.clients == 0


def test_clear_at_shutdown_then_late_finishes() -> None:
    peers, counts = table()
    calls = [(f":1.{i}", peers.admit(f":1.{i}")) for i in range(9)]
    peers.clear()
    assert counts.clients == 0
    for name, peer in calls:
        assert peer is not None
        peers.finished(name, peer)
    assert counts.clients == 0 and len(peers) == 0
