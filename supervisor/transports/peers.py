"""D-Bus peers that called: the bound on calls in flight per peer, and a table that
cannot leak.

Rules: a peer (a unique name on the bus) gets an entry when its first call is admitted,
synchronously as the call is dispatched. It may have at most ``max_calls`` calls in
flight; one more is refused (the transport answers ``Busy``) with nothing started. The
entry goes once the peer has left the bus and its last call has finished, whichever
comes last: an entry of a peer that left never stays without a call in flight. Each
entry counts as one client in the service's stats. No I/O: the transport reports what
happened (a call admitted or finished, a peer gone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Creds", "Peer", "PeerTable"]

Creds = tuple[int, int, int, frozenset[int]]  # uid, primary gid, pid, groups


class Counts(Protocol):
    clients: int


@dataclass(slots=True)
class Peer:
    """A bus peer that called: its calls in flight, its credentials once looked up (the
    bus took them at its connect), and whether it has left the bus."""

    calls: int = 0
    creds: Creds | None = None
    gone: bool = False


class PeerTable:
    def __init__(self, max_calls: int, counts: Counts) -> None:
        self.max_calls = max_calls
        self.counts = counts  # the service's stats: ``clients`` follows the table
        self.peers: dict[str, Peer] = {}

    def __len__(self) -> int:
        return len(self.peers)

    def get(self, name: str) -> Peer | None:
        return self.peers.get(name)

    def admit(self, name: str) -> Peer | None:
        """Counts one more call of ``name``; None when it already has ``max_calls``."""
        peer = self.peers.get(name)
        if peer is None:
            peer = self.peers[name] = Peer()
            self.counts.clients += 1
        elif peer.calls >= self.max_calls:
            return None
        peer.calls += 1
        return peer

    def finished(self, name: str, peer: Peer) -> None:
        """One call of ``peer`` (admitted as ``name``) is over, however it ended."""
        peer.calls -= 1
        self._forget_if_done(name, peer)

    def left(self, name: str) -> None:
        """``name`` is no longer on the bus (NameOwnerChanged, or a credentials lookup
        that failed: then perhaps it left before its call was seen, and no
        NameOwnerChanged is still to come)."""
        peer = self.peers.get(name)
        if peer is not None:
            peer.gone = True
            self._forget_if_done(name, peer)

    def clear(self) -> None:
        """At shutdown: forgets every entry (calls finishing later find none)."""
        self.counts.clients -= len(self.peers)
        self.peers.clear()

    def _forget_if_done(self, name: str, peer: Peer) -> None:
        if peer.gone and peer.calls == 0 and self.peers.get(name) is peer:
            del self.peers[name]
            self.counts.clients -= 1
