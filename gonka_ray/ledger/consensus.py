"""Pure, step-driven BFT consensus core: chained HotStuff with a timeout-certificate pacemaker.

Protocol (chained HotStuff, Yin et al. 2019, with a DiemBFT-style pacemaker):

- Views ``1, 2, ...``; the leader of view ``v`` is ``validators[v % n]`` (rotating). Voting power
  is weighted; a quorum is **strictly more than 2/3** of the total power. Safety holds while the
  byzantine replicas hold less than 1/3 of the power (n ≥ 3f+1 with equal weights).
- The leader of ``v`` proposes a block whose ``justify`` is its highest quorum certificate (QC)
  and whose parent is the QC's block. Proposals, votes and timeouts are Ed25519-signed with
  their own purposes (``consensus/proposal``, ``consensus/vote``, ``consensus/timeout``) over
  ``(chain, view, ...)``, where ``chain`` is the genesis block hash.
- A replica votes at most once per view, never in a view it timed out of, and only for a block
  that extends its locked block or whose justify is newer than the lock (``safe_node``). Votes
  are broadcast; every replica aggregates > 2/3 into a QC (so commits never wait on the next
  leader), and the leader of ``v+1`` proposes on top of it.
- On seeing ``QC(b2)`` with ``b1 = b2.parent``, ``b0 = b1.parent``: lock ``b1``; when the three
  have consecutive views, **commit** ``b0`` and its uncommitted ancestors (the 3-chain rule).
- Heartbeat blocks: with ``empty_block_ticks = N > 0`` an idle leader proposes an empty block
  once ``N`` ticks have passed since it entered its view (that is, since the last QC or TC it
  saw), so an idle chain's committed height keeps advancing (the epoch clock is committed
  height). ``N = 0`` disables it: the leader then proposes only for transactions (and the empty
  blocks that finish their commit). Ticks are the only clock, so this stays deterministic.
- Block pacing: with ``min_block_ticks = M > 0`` a leader proposes no block before ``M`` ticks
  have passed since it entered its view. Without it a leader proposes the moment it holds the
  QC of the previous view, so a single transaction set off four back-to-back blocks (its own
  and the three that commit it), each costing every replica a round of signed messages;
  pacing lets the transactions that arrive meanwhile share blocks, trading commit latency for
  CPU. ``M = 0`` (the default) keeps the eager behaviour. Ticks only, so still deterministic.
- Pacemaker: with work pending (mempool or uncommitted transactions, or always when heartbeat
  blocks are on, after the extra ``N`` ticks a heartbeat may take) and no progress for
  ``timeout_ticks`` ticks (doubling per consecutive timeout, at most 8×), a replica broadcasts a
  signed timeout carrying its high QC and re-broadcasts it every period. > 2/3 of power timing out
  of ``v`` forms a timeout certificate (TC) that moves everyone to ``v+1``; a leader may propose
  in ``v+1`` with ``TC(v)`` instead of ``QC(v)``, using a justify at least as high as every high QC
  named in the TC. Seeing > 1/3 of power time out of views ≥ V (so one honest replica did) makes a
  replica join view V (Bracha-style amplification), which re-synchronises views after a partition.
- A replica replies to a timeout from a peer that is behind (older high QC, or an older view)
  with a ``ConsensusSyncInfo`` carrying its high QC and last TC, so a replica that missed the last
  proposals or the TC catches up. With nothing pending (and heartbeat blocks off) nobody times
  out, so an idle replica broadcasts its sync info every ``8 · timeout_ticks`` idle ticks: a
  replica that was cut off while the others committed the last transactions and went idle
  catches up without waiting for new traffic.
- **Validator-set changes** (``epoch_blocks = B > 0``), DiemBFT-style: consensus epoch ``e``
  orders heights ``e·B … (e+1)·B − 1`` (the epochs of :mod:`gonka_ray.protocol.epochs`). Once a
  replica commits ``L = (e+1)·B − 1`` it stops acting in ``e``; the shell applies ``L`` and calls
  :meth:`ConsensusCore.start_epoch` with the set that committed state names for ``e+1`` (so the
  set written by the end-block hooks up to ``L`` rules ``e+1``, on every replica alike). Epoch
  ``e+1`` is a fresh chain rooted at the committed block ``L``: chain id
  ``sha256(genesis ‖ e+1 ‖ hash(L))``, views from 1, the "view 0" QC names ``L``, so no vote,
  QC or timeout of one epoch is valid in another, and the old set can never certify anything
  that the new set builds on. Blocks above ``L`` in epoch ``e`` (the suffix that commits ``L``)
  are empty and never committed. A replica outside the new set stops voting and proposing but
  follows the chain. Wire indices (voter, proposer, signer) are positions in the epoch's set;
  transport indices (``sender``, ``dest``) are positions in the genesis set (one replica per
  genesis participant), which never change. A replica left behind in an ended epoch is sent the
  QC that ended it when its (now unverifiable) timeouts arrive, fetches the blocks and follows.
- Missing blocks are fetched by hash (``ConsensusBlockRequest``); blocks are content-addressed,
  so responses need no signature. Messages that need a missing block are parked and replayed.

**The shell must persist before it sends**: for every :class:`Ready`, write ``to_persist``
(new blocks and the :class:`~gonka_ray.wire.ConsensusSafety` record) durably, *then* deliver
``outbound``, then apply ``committed``. A replica that sends a vote and forgets it after a crash
could vote twice in one view; that is how BFT systems lose safety in practice.

No clock, network, disk or global randomness here: time advances only through :meth:`tick`,
randomness comes from the ``seed`` constructor argument, and every input and output is bytes in
the declared wire format (:mod:`gonka_ray.wire`).

The core is split by concept: :mod:`~gonka_ray.ledger.quorum` (validator sets, signed bytes,
certificate checks; usable offline), :mod:`~gonka_ray.ledger.ready` (what the core and its shell
exchange), and two mixins of :class:`ConsensusCore` over its state,
:mod:`~gonka_ray.ledger.pacemaker` (timeouts, TCs, view sync) and
:mod:`~gonka_ray.ledger.block_sync` (block storage, fetching, parking).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gonka_ray import crypto, wire
from gonka_ray.constants import LEDGER_SYNC_MAX_PARKED
from gonka_ray.exceptions import WireError
from gonka_ray.ledger import merkle
from gonka_ray.ledger.block_sync import BlockSync
from gonka_ray.ledger.pacemaker import Pacemaker
from gonka_ray.ledger.quorum import (
    PROPOSAL_PURPOSE,
    VOTE_PURPOSE,
    ZERO_HASH,
    ValidatorSet,
    block_hash,
    check_block,
    epoch_chain_id,
    genesis_block,
    verify_qc,
    verify_tc,
    vote_bytes,
)
from gonka_ray.ledger.ready import Committed, Ready, Recovered
from gonka_ray.wire import (
    Block,
    BlockHeader,
    CommitCertificate,
    ConsensusBlockRequest,
    ConsensusBlockResponse,
    ConsensusProposal,
    ConsensusSafety,
    ConsensusSyncInfo,
    ConsensusTimeout,
    ConsensusTxBatch,
    ConsensusVote,
    QuorumCert,
    SignerSig,
    TimeoutCert,
    TimeoutSig,
)

CONSENSUS_MESSAGES = (
    ConsensusProposal,
    ConsensusVote,
    ConsensusTimeout,
    ConsensusSyncInfo,
    ConsensusTxBatch,
    ConsensusBlockRequest,
    ConsensusBlockResponse,
)


def memory_floor(epoch: int, epoch_blocks: int) -> int:
    """The lowest height a replica keeps in memory during ``epoch``: the previous epoch's base
    (0, everything, in the first two epochs or with epochs off)."""
    return max(0, (epoch - 1) * epoch_blocks - 1) if epoch_blocks else 0


class SafetyViolation(AssertionError):
    """A commit that conflicts with an earlier commit: impossible unless > 1/3 power is faulty
    or the code is wrong. Raised so that tests and simulations cannot miss it."""


@dataclass
class Stats:
    rejected: int = 0  # messages that failed decoding or verification
    proposals: int = 0
    votes_sent: int = 0
    timeouts_sent: int = 0
    qcs_formed: int = 0
    tcs_formed: int = 0
    fetches: int = 0
    idle_syncs: int = 0  # sync infos broadcast while idle (see the pacemaker)


class ConsensusCore(Pacemaker, BlockSync):
    """One replica's consensus state machine. See the module docstring for the protocol.

    Args:
        validators: the validator set (index order is the wire identity).
        key: this replica's signing key; must be in ``validators``.
        genesis_digest: digest of the genesis definition; binds the chain id.
        timeout_ticks: ticks without progress before a view times out.
        max_block_txs: transactions per proposed block.
        seed: seeds the choice of peers to fetch missing blocks from.
        recovered: state reloaded from storage after a restart.
        mempool_max_txs: pending transactions kept; further ones are dropped.
        fetch_retry_ticks: ticks before a missing block is requested again.
        empty_block_ticks: an idle leader proposes an empty block after this many ticks in its
            view (heartbeat blocks); 0 disables.
        min_block_ticks: a leader proposes no block before this many ticks in its view (block
            pacing); 0 proposes as soon as it can; must stay below ``timeout_ticks``.
        admit: ``admit(tx_hash, tx)`` is called once for each transaction new to this mempool,
            before it is gossiped or proposed (the shell verifies its signature there, once, and keeps the result for
            apply). Its result is ignored: what enters a block must not depend on it.
        epoch_blocks: blocks per consensus epoch; 0 = one epoch, the genesis set forever.
        epoch: after a restart, ``(e, set of e)`` for the epoch the recovered committed height
            is in (the shell reads the set from committed state); ``validators`` is always the
            genesis set, which also fixes the transport indices of the genesis replicas.
        peer_index: this replica's transport index when its key is not in the genesis set (a
            participant that joined later: it follows the chain, and votes in the epochs whose
            set names its key).
        block_source: ``block_source(block_hash)`` returns a stored block or None; block requests
            for blocks no longer held in memory are served from it (the shell's store).

    Memory: blocks and committed transaction hashes are kept from the previous epoch's base up
    (:meth:`_forget_old`); a replica more than an epoch behind fetches older blocks from its
    peers' stores (``block_source``), and a transaction older than that which is gossiped again
    is proposed again and refused by the state machine as a duplicate.
    """

    def __init__(
        self,
        validators: ValidatorSet,
        key: crypto.KeyPair,
        genesis_digest: bytes,
        *,
        timeout_ticks: int = 10,
        max_block_txs: int = 2_000,
        seed: int = 0,
        recovered: Recovered | None = None,
        mempool_max_txs: int = 200_000,
        fetch_retry_ticks: int = 4,
        empty_block_ticks: int = 0,
        min_block_ticks: int = 0,
        admit: Callable[[bytes, bytes], Any] | None = None,
        epoch_blocks: int = 0,
        epoch: tuple[int, ValidatorSet] | None = None,
        peer_index: int | None = None,
        block_source: Callable[[bytes], Block | None] | None = None,
    ) -> None:
        if empty_block_ticks < 0:
            raise ValueError("empty_block_ticks must be >= 0")
        if not 0 <= min_block_ticks < timeout_ticks:
            raise ValueError("min_block_ticks must be in [0, timeout_ticks)")
        me = validators.index_of(key.public_key)
        if me is None and peer_index is None:
            raise ValueError("this replica's key is not in the validator set")
        self.vs = validators  # the current epoch's set (wire indices)
        # transport indices: the peer directory (the genesis set, then registered joiners); the
        # shell raises it as participants register (the core only picks whom to ask for blocks)
        self.n_peers = max(len(validators), (peer_index or 0) + 1)
        self.key = key
        self.peer = me if peer_index is None else peer_index  # transport index
        self.me: int | None = me  # index in the current epoch's set; None = not a member
        self.timeout_ticks = timeout_ticks
        self.max_block_txs = max_block_txs
        self.mempool_max_txs = mempool_max_txs
        self.fetch_retry_ticks = fetch_retry_ticks
        self.empty_block_ticks = empty_block_ticks
        self.min_block_ticks = min_block_ticks
        self.admit = admit
        self.block_source = block_source
        if epoch_blocks < 0 or epoch_blocks == 1:
            raise ValueError("epoch_blocks must be 0 (off) or at least 2")
        self.epoch_blocks = epoch_blocks
        self.epoch = 0
        self.ended = False  # this epoch's last block is committed; waiting for start_epoch
        self._held: list[tuple[bytes | Any, int | None]] = []  # messages received while ended
        self.epoch_proofs: dict[int, ConsensusSyncInfo] = {}  # ended epoch -> its ending QC
        self._proof_sent: dict[int, int] = {}  # peer -> tick of the last proof sent to it
        self._sync_sent: dict[int, int] = {}  # peer -> tick of the last sync info sent to it
        self.rng = random.Random(seed)
        self.stats = Stats()

        g = genesis_block(genesis_digest)
        self.genesis_hash = block_hash(g.header)
        self.chain = self.genesis_hash
        self.base_hash = self.genesis_hash  # the root of this epoch's chain
        self.blocks: dict[bytes, Block] = {self.genesis_hash: g}
        self.committed_hashes: list[bytes] = [self.genesis_hash]  # index = height
        genesis_qc = QuorumCert(view=0, block_hash=self.genesis_hash, sigs=())
        self.cur_view = 1
        self.last_voted_view = 0
        self.locked_hash = self.genesis_hash
        self.high_qc = genesis_qc
        self.timeout_view = 0
        self.last_tc: TimeoutCert | None = None

        self.votes: dict[tuple[int, bytes], dict[int, bytes]] = {}
        self.qc_views: set[int] = set()  # views for which this leader formed a QC
        self.timeouts: dict[int, dict[int, TimeoutSig]] = {}
        self.peer_timeout_view: dict[int, int] = {}
        self.proposed_views: set[int] = set()
        self.my_timeout: bytes | None = None
        self.ticks_in_view = 0
        self.idle_ticks = 0  # ticks since this replica entered its current view
        self.consecutive_timeouts = 0
        self.mempool: OrderedDict[bytes, bytes] = OrderedDict()
        self.committed_txs: dict[bytes, int] = {}  # tx hash -> height it committed at
        self.orphans: dict[bytes, Block] = {}
        self.wanted: dict[bytes, int] = {}  # hash -> ticks since last request
        self.parked: dict[bytes, list[tuple[Any, int | None]]] = {}
        self.n_parked = 0
        self._verified: OrderedDict[bytes, bool] = OrderedDict()
        self._good_votes: dict[tuple[int, bytes], set[tuple[int, bytes]]] = {}
        self._now = 0  # ticks since start (for fetch retries only)

        if recovered is not None:
            self._recover(recovered, epoch)
        elif epoch is not None and epoch[0] != 0:
            raise ValueError("a non-zero epoch needs the recovered chain it starts from")

    def _forget_old(self, keep_from: int) -> None:
        """Drop blocks and committed transaction hashes below height ``keep_from`` (the previous
        epoch's base when an epoch starts): nothing in consensus walks below the current
        epoch's base, and a laggard still in the previous epoch can fetch its blocks here. The
        genesis block stays (it is in no store, and a replica starting from it reports the
        genesis QC, which is how its peers find the epoch proofs to send it)."""
        if keep_from <= 0:
            return
        self.blocks = {
            h: b
            for h, b in self.blocks.items()
            if b.header.height >= keep_from or h == self.genesis_hash
        }
        self.committed_txs = {t: h for t, h in self.committed_txs.items() if h >= keep_from}

    # --- public API --------------------------------------------------------------------------

    @property
    def committed_height(self) -> int:
        return len(self.committed_hashes) - 1

    @property
    def epoch_end_height(self) -> int | None:
        """The last height of the current consensus epoch (None: epochs are off)."""
        if not self.epoch_blocks:
            return None
        return (self.epoch + 1) * self.epoch_blocks - 1

    def start_epoch(self, epoch: int, validators: ValidatorSet) -> Ready:
        """Enter consensus epoch ``epoch`` (the next one) with ``validators``, read from the
        state after applying the last block of the ended epoch. See the module docstring."""
        if not self.ended or epoch != self.epoch + 1:
            raise ValueError(f"cannot start epoch {epoch} from epoch {self.epoch}")
        self._enter_epoch(epoch, validators)
        ready = Ready()
        ready.to_persist.append(self.safety_record())
        held, self._held = self._held, []
        for data, sender in held:
            r = self.step(data, sender)
            ready.outbound += r.outbound
            ready.to_persist += r.to_persist
            ready.committed += r.committed
        self._try_propose(ready)
        return ready

    def _enter_epoch(self, epoch: int, validators: ValidatorSet) -> None:
        self._forget_old(memory_floor(epoch, self.epoch_blocks))
        base = self.committed_hashes[-1]
        self.epoch = epoch
        self.ended = False
        self.vs = validators
        self.me = validators.index_of(self.key.public_key)
        self.base_hash = base
        self.chain = epoch_chain_id(self.genesis_hash, epoch, base)
        self.cur_view = 1
        self.last_voted_view = 0
        self.locked_hash = base
        self.high_qc = QuorumCert(view=0, block_hash=base, sigs=())
        self.timeout_view = 0
        self.last_tc = None
        self.votes = {}
        self.qc_views = set()
        self.timeouts = {}
        self.peer_timeout_view = {}
        self.proposed_views = set()
        self.my_timeout = None
        self.ticks_in_view = 0
        self.idle_ticks = 0
        self.consecutive_timeouts = 0
        self.orphans = {}
        self.wanted = {}
        self.parked = {}
        self.n_parked = 0
        self._verified.clear()
        self._good_votes = {}

    def step(self, data: bytes | Any, sender: int | None) -> Ready:
        """Handle one message (bytes in the wire format, or an already decoded message).

        ``sender`` is the transport-level peer index (used only to pick whom to ask for missing
        blocks); authenticity comes from the signatures inside the message. Invalid messages are
        counted in ``stats.rejected`` and otherwise ignored.
        """
        ready = Ready()
        try:
            msg = wire.decode(data, CONSENSUS_MESSAGES) if isinstance(data, bytes) else data
        except WireError:
            self.stats.rejected += 1
            return ready
        if self.ended and not isinstance(
            msg, ConsensusTxBatch | ConsensusBlockRequest | ConsensusBlockResponse
        ):
            # Probably the next epoch's: replayed once start_epoch gives its set.
            if len(self._held) < LEDGER_SYNC_MAX_PARKED:
                self._held.append((msg, sender))
            return ready
        self._handle(msg, sender, ready)
        return ready

    def tick(self) -> Ready:
        """Advance time by one tick: view timeouts, fetch retries, proposing."""
        ready = Ready()
        self._now += 1
        self.ticks_in_view += 1
        self.idle_ticks += 1
        self._retry_fetches(ready)
        if self.ended:
            return ready
        self._check_view_timeout(ready)
        self._try_propose(ready)
        return ready

    def submit(self, tx: bytes) -> Ready:
        """Add one transaction to the mempool and gossip it to the other replicas."""
        return self.submit_many([tx])

    def submit_many(self, txs: Sequence[bytes]) -> Ready:
        """Add transactions to the mempool and gossip them in one batch."""
        ready = Ready()
        fresh = [tx for tx in txs if self._add_tx(tx)]
        if fresh:
            ready.outbound.append((None, wire.encode(ConsensusTxBatch(txs=tuple(fresh)))))
        self._try_propose(ready)
        return ready

    def safety_record(self) -> ConsensusSafety:
        return ConsensusSafety(
            cur_view=self.cur_view,
            last_voted_view=self.last_voted_view,
            locked_hash=self.locked_hash,
            high_qc=self.high_qc,
            timeout_view=self.timeout_view,
            epoch=self.epoch,
        )

    # --- dispatch ----------------------------------------------------------------------------

    def _handle(self, msg: Any, sender: int | None, ready: Ready) -> None:
        if isinstance(msg, ConsensusProposal):
            self._on_proposal(msg, sender, ready)
        elif isinstance(msg, ConsensusVote):
            self._on_vote(msg, sender, ready)
        elif isinstance(msg, ConsensusTimeout):
            self._on_timeout(msg, sender, ready)
        elif isinstance(msg, ConsensusSyncInfo):
            self._on_sync_info(msg, sender, ready)
        elif isinstance(msg, ConsensusTxBatch):
            for tx in msg.txs:
                self._add_tx(tx)
            self._try_propose(ready)
        elif isinstance(msg, ConsensusBlockRequest):
            self._on_block_request(msg, sender, ready)
        elif isinstance(msg, ConsensusBlockResponse):
            self._on_block_response(msg, sender, ready)
        else:  # pragma: no cover - decode() only yields the expected types
            self.stats.rejected += 1

    # --- verification with a small cache -----------------------------------------------------

    def _cached(self, key: bytes, check: Any) -> bool:
        hit = self._verified.get(key)
        if hit is not None:
            return hit
        ok = bool(check())
        self._verified[key] = ok
        if len(self._verified) > 4096:
            self._verified.popitem(last=False)
        return ok

    def _valid_qc(self, qc: QuorumCert) -> bool:
        key = b"qc" + wire.encode_body(qc)
        known = self._good_votes.get((qc.view, qc.block_hash))
        return self._cached(
            crypto.sha256(key), lambda: verify_qc(qc, self.vs, self.chain, known, self.base_hash)
        )

    def _valid_tc(self, tc: TimeoutCert) -> bool:
        key = b"tc" + wire.encode_body(tc)
        return self._cached(crypto.sha256(key), lambda: verify_tc(tc, self.vs, self.chain))

    def _valid_sig(self, index: int, purpose: bytes, msg: bytes, sig: bytes) -> bool:
        if index >= len(self.vs):
            return False
        pk = self.vs.validators[index].public_key
        return crypto.is_valid_signature(pk, purpose, msg, sig)

    # --- proposals ---------------------------------------------------------------------------

    def _on_proposal(self, p: ConsensusProposal, sender: int | None, ready: Ready) -> None:
        b = p.block
        h = b.header
        bh = block_hash(h)
        if (
            h.proposer != self.vs.leader(h.view)
            or not check_block(b, self.max_block_txs)
            or not self._valid_sig(
                h.proposer, PROPOSAL_PURPOSE, vote_bytes(self.chain, h.view, bh), p.signature
            )
            or not self._valid_qc(h.justify)
        ):
            self.stats.rejected += 1
            return
        if p.tc is not None and not self._valid_tc(p.tc):
            self.stats.rejected += 1
            return
        # A proposal must be justified for its view: by QC(v-1), or by TC(v-1) with a justify at
        # least as high as every high QC the TC's signers reported.
        by_qc = h.justify.view == h.view - 1
        by_tc = (
            p.tc is not None
            and p.tc.view == h.view - 1
            and h.justify.view >= max(s.high_qc_view for s in p.tc.sigs)
        )
        if not (by_qc or by_tc):
            self.stats.rejected += 1
            return
        parent = self.blocks.get(h.parent)
        if parent is None:
            self._park(h.parent, p, sender, ready)
            return
        if h.height != parent.header.height + 1:
            self.stats.rejected += 1
            return
        self._store_block(b, bh, ready)
        self._process_qc(h.justify, sender, ready)
        if p.tc is not None:
            self._process_tc(p.tc, ready)
        if (
            self.me is not None
            and not self.ended
            and h.view == self.cur_view
            and h.view > self.last_voted_view
            and h.view > self.timeout_view
            and self._safe_node(b)
        ):
            self.last_voted_view = h.view
            ready.to_persist.append(self.safety_record())
            sig = self.key.sign(VOTE_PURPOSE, vote_bytes(self.chain, h.view, bh))
            vote = ConsensusVote(view=h.view, block_hash=bh, voter=self.me, signature=sig)
            self.stats.votes_sent += 1
            # NOTE: votes go to every replica, not only the next leader: each replica forms the
            # QC itself, so a commit does not wait for (or depend on) the next leader. With
            # round-robin leaders and one crashed replica in four, a leader-only vote path never
            # sees a 3-chain whose QC is formed by an honest leader, and nothing commits.
            ready.outbound.append((None, wire.encode(vote)))
            self._on_vote(vote, self.peer, ready)

    def _safe_node(self, b: Block) -> bool:
        locked = self.blocks[self.locked_hash]
        if b.header.justify.view > locked.header.view:
            return True
        return self._extends(b.header.parent, self.locked_hash, locked.header.height)

    def _extends(self, start: bytes, ancestor: bytes, ancestor_height: int) -> bool:
        cur = self.blocks.get(start)
        while cur is not None and cur.header.height > ancestor_height:
            cur = self.blocks.get(cur.header.parent)
        return cur is not None and block_hash(cur.header) == ancestor

    # --- votes and QCs -----------------------------------------------------------------------

    def _on_vote(self, v: ConsensusVote, sender: int | None, ready: Ready) -> None:
        if v.view in self.qc_views:
            return
        if v.view + 1 < self.cur_view:
            return  # stale
        if not self._valid_sig(
            v.voter, VOTE_PURPOSE, vote_bytes(self.chain, v.view, v.block_hash), v.signature
        ):
            self.stats.rejected += 1
            return
        self._good_votes.setdefault((v.view, v.block_hash), set()).add((v.voter, v.signature))
        bucket = self.votes.setdefault((v.view, v.block_hash), {})
        bucket.setdefault(v.voter, v.signature)
        if self.vs.is_quorum(bucket):
            self.qc_views.add(v.view)
            sigs = tuple(SignerSig(index=i, signature=s) for i, s in sorted(bucket.items()))
            qc = QuorumCert(view=v.view, block_hash=v.block_hash, sigs=sigs)
            self.stats.qcs_formed += 1
            self._cached(crypto.sha256(b"qc" + wire.encode_body(qc)), lambda: True)
            for key in [k for k in self.votes if k[0] <= v.view]:
                del self.votes[key]
            self._process_qc(qc, sender, ready)

    def _process_qc(self, qc: QuorumCert, sender: int | None, ready: Ready) -> None:
        """Update high QC, view, lock and commits from a verified QC."""
        b2 = self.blocks.get(qc.block_hash)
        if b2 is None:
            self._park(qc.block_hash, ConsensusSyncInfo(high_qc=qc, tc=None), sender, ready)
            return
        changed = False
        if qc.view > self.high_qc.view:
            self.high_qc = qc
            changed = True
        if qc.view + 1 > self.cur_view:
            self._advance(qc.view + 1, progress=True)
            changed = True
        b1 = self.blocks.get(b2.header.parent) if qc.view > 0 else None
        if b1 is not None:
            locked = self.blocks[self.locked_hash]
            if b1.header.height > locked.header.height:
                self.locked_hash = b2.header.parent
                changed = True
            b0 = self.blocks.get(b1.header.parent) if b1.header.view > 0 else None
            if (
                b0 is not None
                and b2.header.view == b1.header.view + 1
                and b1.header.view == b0.header.view + 1
            ):
                self._commit(b1.header.parent, [b0.header, b1.header, b2.header], qc, ready)
        if changed:
            ready.to_persist.append(self.safety_record())
        self._try_propose(ready)

    # --- commits -----------------------------------------------------------------------------

    def _commit(
        self, target: bytes, chain_headers: list[BlockHeader], qc: QuorumCert, ready: Ready
    ) -> None:
        if self.ended:
            return  # this epoch is over: nothing above its last block commits
        target_block = self.blocks[target]
        height = target_block.header.height
        end = self.epoch_end_height
        if height <= self.committed_height:
            if self.committed_hashes[height] not in (target, ZERO_HASH):
                raise SafetyViolation(f"replica {self.me}: conflicting commit at height {height}")
            return
        path: list[tuple[bytes, Block]] = []
        cur_hash, cur = target, target_block
        while cur.header.height > self.committed_height:
            path.append((cur_hash, cur))
            cur_hash = cur.header.parent
            cur = self.blocks[cur_hash]
        if cur_hash != self.committed_hashes[-1]:
            raise SafetyViolation(
                f"replica {self.me}: commit at height {height} does not extend the committed chain"
            )
        path.reverse()
        for i, (bh, blk) in enumerate(path):
            if end is not None and blk.header.height > end:
                break  # the suffix above the epoch's last block is never committed
            headers = [b.header for _, b in path[i:]] + chain_headers[1:]
            cert = CommitCertificate(headers=tuple(headers), qc=qc)
            self.committed_hashes.append(bh)
            for tx in blk.txs:
                th = merkle.tx_hash(tx)
                self.committed_txs.setdefault(th, blk.header.height)
                self.mempool.pop(th, None)
            ready.committed.append(Committed(block=blk, hash=bh, certificate=cert))
        if end is not None and self.committed_height == end:
            self.ended = True
            self.epoch_proofs[self.epoch] = ConsensusSyncInfo(high_qc=qc, tc=None)

    # --- proposing ---------------------------------------------------------------------------

    def _try_propose(self, ready: Ready) -> None:
        v = self.cur_view
        if self.ended or self.me is None or self.vs.leader(v) != self.me:
            return
        if v in self.proposed_views:
            return
        if self.idle_ticks < self.min_block_ticks:
            return  # pacing: tick() tries again
        parent = self.blocks.get(self.high_qc.block_hash)
        if parent is None:
            return
        tc = None
        if self.high_qc.view != v - 1:
            tc = self.last_tc
            if tc is None or tc.view != v - 1:
                return
            if self.high_qc.view < max(s.high_qc_view for s in tc.sigs):
                return  # someone has a higher QC; wait for it (or time out)
        end = self.epoch_end_height
        suffix = end is not None and parent.header.height >= end
        txs = [] if suffix else self._pick_txs(parent)  # the suffix above an epoch stays empty
        if not txs and not self._chain_needs_blocks(parent) and not self._heartbeat_due():
            return
        self.proposed_views.add(v)
        hashes = [merkle.tx_hash(t) for t in txs]
        header = BlockHeader(
            height=parent.header.height + 1,
            view=v,
            parent=self.high_qc.block_hash,
            justify=self.high_qc,
            tx_root=merkle.root(hashes),
            tx_count=len(txs),
            proposer=self.me,
        )
        block = Block(header=header, txs=tuple(txs))
        bh = block_hash(header)
        sig = self.key.sign(PROPOSAL_PURPOSE, vote_bytes(self.chain, v, bh))
        proposal = ConsensusProposal(block=block, tc=tc, signature=sig)
        self.stats.proposals += 1
        self._store_block(block, bh, ready)
        ready.outbound.append((None, wire.encode(proposal)))
        self._on_proposal(proposal, self.peer, ready)

    def _heartbeat_due(self) -> bool:
        return self.empty_block_ticks > 0 and self.idle_ticks >= self.empty_block_ticks

    def _uncommitted_ancestry(self, b: Block) -> list[Block]:
        out = []
        while b.header.height > self.committed_height:
            out.append(b)
            b = self.blocks[b.header.parent]
        return out

    def _pick_txs(self, parent: Block) -> list[bytes]:
        if not self.mempool:
            return []
        pending = {merkle.tx_hash(t) for b in self._uncommitted_ancestry(parent) for t in b.txs}
        out = []
        for th, tx in self.mempool.items():
            if th not in pending:
                out.append(tx)
                if len(out) >= self.max_block_txs:
                    break
        return out

    def _chain_needs_blocks(self, tip: Block) -> bool:
        """Empty blocks are needed while transactions above the tip's 3-chain are uncommitted
        here, or while the last three blocks carry transactions (others learn the commit from
        the next proposal's QC), or until the epoch's last block is committed."""
        end = self.epoch_end_height
        if end is not None and tip.header.height >= end and self.committed_height < end:
            return True
        b: Block | None = tip
        for _ in range(3):
            if b is None or b.header.height == 0:
                break
            if b.txs:
                return True
            b = self.blocks.get(b.header.parent)
        return any(x.txs for x in self._uncommitted_ancestry(tip))

    def _has_pending_work(self) -> bool:
        if self.mempool:
            return True
        tip = self.blocks.get(self.high_qc.block_hash)
        return tip is not None and any(x.txs for x in self._uncommitted_ancestry(tip))

    def can_take(self, tx_hash: bytes) -> bool:
        """Whether a submission of ``tx_hash`` leaves it known here: already in the mempool or
        committed, or new with room in the mempool (a full mempool drops new transactions)."""
        known = tx_hash in self.mempool or tx_hash in self.committed_txs
        return known or len(self.mempool) < self.mempool_max_txs

    def _add_tx(self, tx: bytes) -> bool:
        th = merkle.tx_hash(tx)
        if th in self.mempool or th in self.committed_txs:
            return False  # known already
        if not self.can_take(th):
            return False  # the mempool is full
        if self.admit is not None:
            self.admit(th, tx)
        self.mempool[th] = tx
        return True

    # --- recovery ----------------------------------------------------------------------------

    def _recover(self, rec: Recovered, epoch: tuple[int, ValidatorSet] | None) -> None:
        by_hash = {block_hash(b.header): b for b in rec.blocks}
        if rec.first_height > 1 and rec.committed_hashes:
            # Snapshot-synced: the root block's ancestors are not here.
            root = by_hash.get(rec.committed_hashes[0])
            if root is None or root.header.height != rec.first_height:
                raise ValueError("the snapshot root block is missing")
            self.blocks[rec.committed_hashes[0]] = root
            self.committed_hashes += [ZERO_HASH] * (rec.first_height - 1)
        # Not loaded below ``blocks_from``: the committed block there (if the store's run of
        # commits reaches it) roots the loaded ones; otherwise recovery goes as far as the
        # loaded blocks link, as for any gap.
        root_height = None
        i_root = rec.blocks_from - rec.first_height
        if rec.blocks_from > rec.first_height and i_root < len(rec.committed_hashes):
            rb = by_hash.get(rec.committed_hashes[i_root])
            if rb is not None and rb.header.height == rec.blocks_from:
                self.blocks[rec.committed_hashes[i_root]] = rb
                root_height = rec.blocks_from
        # Insert in height order so every stored block has its parent.
        for bh, b in sorted(by_hash.items(), key=lambda kv: kv[1].header.height):
            if b.header.parent in self.blocks:
                self.blocks[bh] = b
        for i, bh in enumerate(rec.committed_hashes):
            height = rec.first_height + i
            if root_height is not None and height < root_height:
                self.committed_hashes.append(bh)  # as the store recorded it (not loaded)
                continue
            blk = self.blocks.get(bh)
            if blk is None:
                break
            # a root (the snapshot's, or the lowest loaded block) has no parent here to link to
            is_root = height == root_height or (i == 0 and rec.first_height > 1)
            if not is_root and blk.header.parent != self.committed_hashes[-1]:
                break
            self.committed_hashes.append(bh)
            for tx in blk.txs:
                self.committed_txs.setdefault(merkle.tx_hash(tx), blk.header.height)
        if epoch is not None and epoch[0] > 0:
            e, vs = epoch
            base_height = e * self.epoch_blocks - 1
            if not self.epoch_blocks or base_height > self.committed_height:
                raise ValueError(f"epoch {e} starts above the recovered height")
            self.epoch = e - 1
            del_above = self.committed_hashes[base_height + 1 :]
            self.committed_hashes = self.committed_hashes[: base_height + 1]
            self.ended = True
            self._enter_epoch(e, vs)
            self.committed_hashes += del_above
        elif self.epoch_end_height is not None and self.committed_height >= self.epoch_end_height:
            raise ValueError("the recovered height is past epoch 0: pass the epoch and its set")
        s = rec.safety
        if s is not None and s.epoch == self.epoch:
            self.cur_view = max(s.cur_view, 1)
            self.last_voted_view = s.last_voted_view
            self.timeout_view = s.timeout_view
            if s.locked_hash in self.blocks:
                self.locked_hash = s.locked_hash
            if s.high_qc.block_hash in self.blocks:
                self.high_qc = s.high_qc
