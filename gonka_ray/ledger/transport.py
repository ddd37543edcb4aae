"""What a ledger replica needs from the network: the peer-transport interface.

:class:`~gonka_ray.ledger.replica.LedgerReplica` reaches the other replicas only through a
:class:`PeerTransport` given to its constructor, so the ledger knows nothing of Ray or of any
other wire below it (DESIGN §7: the peer transport sits above the ledger). A transport is bound
to one replica (its genesis index, the sender of everything it carries) and does two things:

- :meth:`PeerTransport.send`: hand one encoded consensus message (signed inside, see
  :mod:`gonka_ray.ledger.consensus`) to the replica at a genesis index. Fire-and-forget: it must
  not block, may drop (consensus recovers by timeouts and block fetches) and keeps the order of
  messages to one peer. The receiver gets it as ``deliver(data, sender)``.
- :meth:`PeerTransport.sync_peers`: the other replicas as :class:`SyncPeer` objects, for
  snapshot sync (a wiped or far-behind replica installs a verified snapshot from them). Block
  sync needs nothing more: the consensus core fetches missing blocks with ``send``.

:class:`InProcessNetwork` wires replicas of one process through the event loop (unit tests,
benchmarks of the replica without a network). The transport with a network below it lives
above the ledger: authenticated, framed TCP between processes or clusters in
:mod:`gonka_ray.peer.tcp`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gonka_ray.ledger.state import PeerEntry


class SyncPeer(Protocol):
    """Another replica as snapshot sync sees it (a :class:`LedgerReplica` is one)."""

    async def snapshot_offer(self) -> dict[str, Any] | None:
        """The replica's snapshot at its latest epoch end, with block, certificate and state
        hash (see ``LedgerReplica.snapshot_offer``); None when it has none."""
        ...

    async def attest_state(self, height: int) -> tuple[bytes, bytes, bytes, bytes, bytes] | None:
        """Its signed attestation of the committed state at ``height`` (see
        ``LedgerReplica.attest_state``); None when it has not applied ``height``."""
        ...


class LocalReplica(SyncPeer, Protocol):
    """A replica in this process: it also takes messages (:class:`InProcessNetwork`)."""

    async def deliver(self, data: bytes, sender: int) -> None: ...


class PeerTransport(ABC):
    """One replica's link to the others (see the module docstring)."""

    @abstractmethod
    def send(self, dest: int, data: bytes) -> None:
        """Queue ``data`` (an encoded consensus message) for the replica at genesis index
        ``dest``; returns at once. Never raises for an unreachable peer: the message is lost."""

    @abstractmethod
    def sync_peers(self) -> list[SyncPeer]:
        """The other replicas reachable now, for snapshot sync (may be empty)."""

    def set_directory(self, entries: Sequence[PeerEntry]) -> None:  # noqa: B027  (optional hook)
        """The peer directory from committed state (every place by index: key, endpoint); the
        replica calls it whenever it changes (a registration, an announced endpoint). A
        transport that dials peers dials what it names."""

    async def start(self, local: LocalReplica) -> None:  # noqa: B027  (optional hook)
        """Begin delivering to ``local`` (a transport with sockets listens and dials here);
        the replica calls it from its own :meth:`start`. Idempotent."""

    async def close(self) -> None:  # noqa: B027  (optional hook)
        """Stop: the replica calls it when it closes. Idempotent."""


class InProcessNetwork:
    """Replicas of one process, each message delivered as its own task on the running event
    loop (like a fire-and-forget actor call). A replica in ``down`` neither sends nor hears.

    Register a replica with :meth:`add` after building it with :meth:`transport`'s link.
    """

    def __init__(self) -> None:
        self.replicas: dict[int, LocalReplica] = {}
        self.down: set[int] = set()

    def transport(self, index: int) -> InProcessTransport:
        """The link of the replica at genesis index ``index``."""
        return InProcessTransport(self, index)

    def add(self, index: int, replica: LocalReplica) -> None:
        """Make ``replica`` the receiver at ``index`` (replacing a previous one: a restart)."""
        self.replicas[index] = replica

    def reachable(self, src: int, dest: int) -> bool:
        return src not in self.down and dest not in self.down and dest in self.replicas

    def deliver(self, src: int, dest: int, data: bytes) -> None:
        if self.reachable(src, dest):
            asyncio.get_running_loop().create_task(self.replicas[dest].deliver(data, src))


class InProcessTransport(PeerTransport):
    """The link of replica ``index`` in an :class:`InProcessNetwork`."""

    def __init__(self, network: InProcessNetwork, index: int) -> None:
        self.network = network
        self.index = index

    def send(self, dest: int, data: bytes) -> None:
        self.network.deliver(self.index, dest, data)

    def sync_peers(self) -> list[SyncPeer]:
        net = self.network
        return [
            r
            for i, r in sorted(net.replicas.items())
            if i != self.index and net.reachable(self.index, i)
        ]
