"""The pacemaker of the consensus core: view timeouts, timeout certificates, view sync.

:class:`Pacemaker` is a mixin of :class:`~gonka_ray.ledger.consensus.ConsensusCore`: its methods
work on the core's state (views, high QC, timeouts) and call the core's verification, QC and
proposing steps. The rules (timeouts with backoff, TCs, Bracha-style amplification, sync info,
epoch proofs for a replica left in an ended epoch) are in the consensus module's docstring.
Pure: time is the core's ticks.
"""

from __future__ import annotations

from gonka_ray import crypto, wire
from gonka_ray.constants import LEDGER_IDLE_SYNC_TIMEOUTS, LEDGER_VIEW_TIMEOUT_MAX_BACKOFF
from gonka_ray.ledger.quorum import TIMEOUT_PURPOSE, timeout_bytes
from gonka_ray.ledger.ready import Ready
from gonka_ray.wire import (
    ConsensusSyncInfo,
    ConsensusTimeout,
    ConsensusTxBatch,
    QuorumCert,
    TimeoutCert,
    TimeoutSig,
)


class Pacemaker:
    """View timeouts and view synchronisation (a mixin of ``ConsensusCore``; see the module)."""

    def _check_view_timeout(self, ready: Ready) -> None:
        """One tick of the view timer: with work pending (or heartbeat blocks on) and no
        progress for the (backed-off) timeout, time out of the current view."""
        pending = self._has_pending_work()
        if pending or self.empty_block_ticks:
            limit = self.timeout_ticks * min(
                2**self.consecutive_timeouts, LEDGER_VIEW_TIMEOUT_MAX_BACKOFF
            )
            if not pending:
                limit += self.empty_block_ticks  # an idle leader waits that long to propose
            if self.ticks_in_view >= limit:
                self.ticks_in_view = 0
                self.consecutive_timeouts += 1
                self._local_timeout(self.cur_view, ready)
                if self.mempool:  # others may never have received these: gossip them again
                    resend = list(self.mempool.values())[: self.max_block_txs]
                    ready.outbound.append((None, wire.encode(ConsensusTxBatch(txs=tuple(resend)))))
        else:
            self.ticks_in_view = 0
            # NOTE: with nothing pending nobody times out, so a replica that missed the last
            # blocks (cut off while the others committed them and went idle) would never hear of
            # them: no proposal, timeout or sync info would ever reach it. Idle replicas
            # therefore broadcast their high QC now and then; whoever is behind takes it (and
            # fetches the blocks), whoever is ahead answers one that is behind, and a replica in
            # an ended epoch is sent the QC that ended it.
            period = self.timeout_ticks * LEDGER_IDLE_SYNC_TIMEOUTS
            if self.idle_ticks % period == 0:
                self.stats.idle_syncs += 1
                info = ConsensusSyncInfo(high_qc=self.high_qc, tc=self.last_tc)
                ready.outbound.append((None, wire.encode(info)))

    def _process_tc(self, tc: TimeoutCert, ready: Ready) -> None:
        if self.last_tc is None or tc.view > self.last_tc.view:
            self.last_tc = tc
        if tc.view + 1 > self.cur_view:
            self._advance(tc.view + 1, progress=False)
            ready.to_persist.append(self.safety_record())
        self._try_propose(ready)

    def _advance(self, view: int, *, progress: bool) -> None:
        self.cur_view = view
        self.ticks_in_view = 0
        self.idle_ticks = 0
        self.my_timeout = None
        if progress:
            self.consecutive_timeouts = 0
        for old in [w for w in self.timeouts if w < view - 1]:
            del self.timeouts[old]
        self.proposed_views = {w for w in self.proposed_views if w >= view - 1}
        self.qc_views = {w for w in self.qc_views if w >= view - 2}
        for key in [k for k in self._good_votes if k[0] < view - 3]:
            del self._good_votes[key]

    def _local_timeout(self, view: int, ready: Ready) -> None:
        if self.ended:
            return
        if self.me is None:
            # Not a member of this epoch's set: follow, never vote. Ask the others for what
            # this replica may have missed (they answer when they are ahead).
            info = ConsensusSyncInfo(high_qc=self.high_qc, tc=self.last_tc)
            ready.outbound.append((None, wire.encode(info)))
            return
        if self.my_timeout is None or self.timeout_view != view:
            self.timeout_view = max(self.timeout_view, view)
            ready.to_persist.append(self.safety_record())
            sig = self.key.sign(TIMEOUT_PURPOSE, timeout_bytes(self.chain, view, self.high_qc.view))
            msg = ConsensusTimeout(view=view, high_qc=self.high_qc, voter=self.me, signature=sig)
            data = wire.encode(msg)
            self.my_timeout = data
            self._record_timeout(msg, ready)
        else:
            data = self.my_timeout
        self.stats.timeouts_sent += 1
        ready.outbound.append((None, data))

    def _on_timeout(self, t: ConsensusTimeout, sender: int | None, ready: Ready) -> None:
        if not self._valid_sig(
            t.voter,
            TIMEOUT_PURPOSE,
            timeout_bytes(self.chain, t.view, t.high_qc.view),
            t.signature,
        ) or not self._valid_qc(t.high_qc):
            self.stats.rejected += 1
            self._send_epoch_proofs(sender, t.high_qc, ready)
            return
        behind = t.high_qc.view < self.high_qc.view or t.view < self.cur_view
        if behind and sender is not None and sender != self.peer:
            info = ConsensusSyncInfo(high_qc=self.high_qc, tc=self.last_tc)
            ready.outbound.append((sender, wire.encode(info)))
        self._process_qc(t.high_qc, sender, ready)
        self._record_timeout(t, ready)

    def _send_epoch_proofs(self, peer: int | None, qc: QuorumCert, ready: Ready) -> None:
        """A timeout or sync info that does not verify may come from a replica still in an
        ended epoch: send it the QC that ended the epoch its high QC's block belongs to (at most
        once per ``4 · fetch_retry_ticks``).

        The epoch is read from the block's newest committed ancestor, not from the block's own
        height: the suffix above an epoch's last block ``L`` grows by one block per view until
        three consecutive views certify it, so after timeouts it can reach any height. Blocks
        of epoch ``e`` have their newest committed ancestor at heights ``e·B − 1`` (the base)
        to ``(e+1)·B − 1`` (``L``, under the suffix); at ``L`` the block is in the suffix of
        ``e`` or in ``e + 1``, so two epochs are candidates."""
        if peer is None or peer == self.peer or not self.epoch_blocks or not self.epoch_proofs:
            return
        b = self._held_block(qc.block_hash)  # (a laggard's block may be older than memory)
        if b is None:
            return
        last = self._proof_sent.get(peer)
        if last is not None and self._now - last < 4 * self.fetch_retry_ticks:
            return
        h, bh = b.header.height, qc.block_hash
        while h > 0 and (h > self.committed_height or self.committed_hashes[h] != bh):
            parent = self._held_block(b.header.parent)
            if parent is None:  # below a snapshot root: use the lowest block stored
                break
            bh, b = b.header.parent, parent
            h = b.header.height
        first = (h + 1) // self.epoch_blocks
        proofs = [self.epoch_proofs[e] for e in (first - 1, first) if e in self.epoch_proofs]
        if not proofs:
            return
        self._proof_sent[peer] = self._now
        for proof in proofs:
            ready.outbound.append((peer, wire.encode(proof)))

    def _record_timeout(self, t: ConsensusTimeout, ready: Ready) -> None:
        if t.view < self.cur_view:
            return
        prev = self.peer_timeout_view.get(t.voter, 0)
        self.peer_timeout_view[t.voter] = max(prev, t.view)
        bucket = self.timeouts.setdefault(t.view, {})
        bucket.setdefault(
            t.voter, TimeoutSig(index=t.voter, high_qc_view=t.high_qc.view, signature=t.signature)
        )
        # Amplification: > 1/3 of power timed out of views >= V, so an honest replica did: join.
        ranked = sorted(self.peer_timeout_view.items(), key=lambda kv: -kv[1])
        acc: list[int] = []
        for idx, view in ranked:
            acc.append(idx)
            if self.vs.is_one_third(acc):
                if view >= self.cur_view and self.timeout_view < view:
                    if view > self.cur_view:
                        self._advance(view, progress=False)
                    self._local_timeout(view, ready)
                break
        for view in sorted(self.timeouts):
            if view >= self.cur_view and self.vs.is_quorum(self.timeouts[view]):
                sigs = sorted(self.timeouts[view].values(), key=lambda s: s.index)
                tc = TimeoutCert(view=view, sigs=tuple(sigs))
                self.stats.tcs_formed += 1
                self._cached(crypto.sha256(b"tc" + wire.encode_body(tc)), lambda: True)
                self._process_tc(tc, ready)
                break

    def _on_sync_info(self, s: ConsensusSyncInfo, sender: int | None, ready: Ready) -> None:
        if not self._valid_qc(s.high_qc) or (s.tc is not None and not self._valid_tc(s.tc)):
            self.stats.rejected += 1
            self._send_epoch_proofs(sender, s.high_qc, ready)
            return
        if s.high_qc.view < self.high_qc.view and sender is not None and sender != self.peer:
            last = self._sync_sent.get(sender)
            if last is None or self._now - last >= self.fetch_retry_ticks:
                self._sync_sent[sender] = self._now
                info = ConsensusSyncInfo(high_qc=self.high_qc, tc=self.last_tc)
                ready.outbound.append((sender, wire.encode(info)))
        self._process_qc(s.high_qc, sender, ready)
        if s.tc is not None:
            self._process_tc(s.tc, ready)
