"""A ledger peer transport over Ray actor calls: the baseline the benchmarks compare with.

The network does not use it: participants reach each other only over
:mod:`gonka_ray.peer.tcp` (no Ray call crosses a participant boundary). ``ledger.py`` and
``peer_transport.py`` measure a replica group over Ray actor calls beside the TCP transport.

:class:`RayPeerTransport` is bound to one replica (``index``) and looks the others up by name
when first needed (``ray.get_actor``), so replicas can start in any order; one that is not up yet
is skipped (consensus recovers by timeouts and block fetches). It holds no handle when built, so
it pickles into an actor's constructor arguments and a restarted actor (``max_restarts``) gets a
fresh one.

Messages to one peer are queued and leave together at the next turn of the event loop as one
actor call (``deliver`` for one message, ``deliver_many`` for several): a vote, a proposal and a
transaction batch produced by one step cost one call, not three. Order per peer is kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from gonka_ray.ledger.transport import PeerTransport, SyncPeer

Lookup = Callable[[str], Any]  # actor name -> handle; raises ValueError when there is none


class RayActorPeer:
    """A :class:`~gonka_ray.ledger.transport.SyncPeer` over a replica actor's handle."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def snapshot_offer(self) -> Any:
        return await self.handle.snapshot_offer.remote()

    async def attest_state(self, height: int) -> Any:
        return await self.handle.attest_state.remote(height)


class RayPeerTransport(PeerTransport):
    """Args:
    peer_names: the Ray actor names of all replicas, by genesis index (this one's included).
    index: this replica's genesis index (the sender of everything sent here).
    namespace: the Ray namespace of those actors (None: the caller's).
    lookup: ``lookup(name) -> handle`` (tests); default ``ray.get_actor`` in ``namespace``.
    """

    def __init__(
        self,
        peer_names: Sequence[str],
        *,
        index: int,
        namespace: str | None = None,
        lookup: Lookup | None = None,
    ) -> None:
        self.peer_names = list(peer_names)
        self.index = index
        self.namespace = namespace
        self._lookup = lookup
        self._handles: dict[int, Any] = {}
        self._outbox: dict[int, list[bytes]] = {}
        self._flush_scheduled = False

    def _get_actor(self, name: str) -> Any:
        if self._lookup is not None:
            return self._lookup(name)
        import ray

        return ray.get_actor(name, namespace=self.namespace)

    def _handle(self, dest: int) -> Any | None:
        handle = self._handles.get(dest)
        if handle is None:
            try:
                handle = self._get_actor(self.peer_names[dest])
            except ValueError:
                return None  # not up yet
            self._handles[dest] = handle
        return handle

    def send(self, dest: int, data: bytes) -> None:
        self._outbox.setdefault(dest, []).append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, {}
        for dest, batch in outbox.items():
            handle = self._handle(dest)
            if handle is None:
                continue  # the core retries by timeouts and fetches
            if len(batch) == 1:
                handle.deliver.remote(batch[0], self.index)
            else:
                handle.deliver_many.remote(batch, self.index)

    def sync_peers(self) -> list[SyncPeer]:
        out: list[SyncPeer] = []
        for i in range(len(self.peer_names)):
            if i != self.index:
                handle = self._handle(i)
                if handle is not None:
                    out.append(RayActorPeer(handle))
        return out
