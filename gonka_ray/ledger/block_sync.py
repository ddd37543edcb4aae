"""Block sync of the consensus core: storing blocks, fetching missing ones, parked messages.

:class:`BlockSync` is a mixin of :class:`~gonka_ray.ledger.consensus.ConsensusCore` working on the
core's block store. Blocks are content-addressed, so a fetched block needs no signature: it is
taken only if it was asked for (``wanted``), passes the structural checks and links to a known
parent (else it waits as an orphan while its parent is fetched). Messages that need a missing
block are parked (at most :data:`~gonka_ray.constants.LEDGER_SYNC_MAX_PARKED`) and replayed
when it arrives. Fetches go to the sender of the message that needed the block, else to a peer
drawn from the core's seeded RNG, and are retried every ``fetch_retry_ticks`` ticks.
"""

from __future__ import annotations

from typing import Any

from gonka_ray import wire
from gonka_ray.constants import LEDGER_SYNC_FETCH_BLOCKS, LEDGER_SYNC_MAX_PARKED
from gonka_ray.ledger.quorum import block_hash, check_block
from gonka_ray.ledger.ready import Ready
from gonka_ray.wire import Block, ConsensusBlockRequest, ConsensusBlockResponse


class BlockSync:
    """Block storage, fetching and parking (a mixin of ``ConsensusCore``; see the module)."""

    def _retry_fetches(self, ready: Ready) -> None:
        """One tick of the fetch timer: ask again for blocks wanted too long."""
        for h in list(self.wanted):
            self.wanted[h] += 1
            if self.wanted[h] >= self.fetch_retry_ticks:
                self._request(h, None, ready)

    def _store_block(self, b: Block, bh: bytes, ready: Ready) -> None:
        if bh in self.blocks:
            return
        self.blocks[bh] = b
        self.wanted.pop(bh, None)
        ready.to_persist.append(b)
        for child_hash, child in [(k, o) for k, o in self.orphans.items() if o.header.parent == bh]:
            del self.orphans[child_hash]
            if child.header.height == b.header.height + 1:
                self._store_block(child, child_hash, ready)
        waiting = self.parked.pop(bh, [])
        self.n_parked -= len(waiting)
        for msg, sender in waiting:
            self._handle(msg, sender, ready)

    def _park(self, missing: bytes, msg: Any, sender: int | None, ready: Ready) -> None:
        if self.n_parked >= LEDGER_SYNC_MAX_PARKED:
            return
        self.parked.setdefault(missing, []).append((msg, sender))
        self.n_parked += 1
        if missing not in self.wanted and missing not in self.orphans:
            self._request(missing, sender, ready)
        elif missing in self.orphans:
            self._want_parent_of(self.orphans[missing], sender, ready)

    def _want_parent_of(self, b: Block, sender: int | None, ready: Ready) -> None:
        parent = b.header.parent
        if parent in self.blocks or parent in self.orphans:
            return
        if parent not in self.wanted:
            self._request(parent, sender, ready)

    def _request(self, h: bytes, peer: int | None, ready: Ready) -> None:
        if peer is None or peer == self.peer:
            others = [i for i in range(self.n_peers) if i != self.peer]
            if not others:
                return
            peer = self.rng.choice(others)
        self.wanted[h] = 0
        self.stats.fetches += 1
        req = ConsensusBlockRequest(block_hash=h, max_blocks=LEDGER_SYNC_FETCH_BLOCKS)
        ready.outbound.append((peer, wire.encode(req)))

    def _on_block_request(self, r: ConsensusBlockRequest, sender: int | None, ready: Ready) -> None:
        if sender is None or sender == self.peer:
            return
        out = []
        b = self._held_block(r.block_hash)
        while b is not None and b.header.height > 0 and len(out) < r.max_blocks:
            out.append(b)
            b = self._held_block(b.header.parent)
        if out:
            resp = ConsensusBlockResponse(blocks=tuple(out))
            ready.outbound.append((sender, wire.encode(resp)))

    def _held_block(self, h: bytes) -> Block | None:
        """A block this replica can serve: in memory, else from the shell's store (older than
        the previous epoch, see ``ConsensusCore``)."""
        b = self.blocks.get(h)
        if b is None and self.block_source is not None:
            b = self.block_source(h)
        return b

    def _on_block_response(
        self, r: ConsensusBlockResponse, sender: int | None, ready: Ready
    ) -> None:
        for b in r.blocks:
            bh = block_hash(b.header)
            if bh in self.blocks or bh not in self.wanted:
                continue
            if not check_block(b, self.max_block_txs):
                self.stats.rejected += 1
                continue
            del self.wanted[bh]
            if b.header.parent in self.blocks:
                parent = self.blocks[b.header.parent]
                if b.header.height == parent.header.height + 1:
                    self._store_block(b, bh, ready)
            else:
                self.orphans[bh] = b
                if b.header.parent not in self.wanted:
                    self.wanted[b.header.parent] = self.fetch_retry_ticks  # next response/tick
        # Ask for the oldest still-missing ancestor right away.
        for h, age in list(self.wanted.items()):
            if age >= self.fetch_retry_ticks:
                self._request(h, sender, ready)
