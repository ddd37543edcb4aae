"""The simulated adversary: what the byzantine replicas of :class:`~tests.sim.network.SimNetwork` do.

Every byzantine replica of one network is driven by the network's one :class:`Adversary`, so they
**collude**: every block, QC and timeout any of them receives is known to all of them, and the
adversary signs with any colluder's key. All it cannot do is forge an honest replica's signature.
It is also told when an honest replica receives a message from a byzantine identity, and records
the validly signed proposals and votes per view: ``counts["conflicting_proposals"]`` and
``counts["double_votes"]`` count equivocations that honest replicas really saw, so a scenario can
prove that its attack happened.

Modes (``BYZANTINE_MODES``; a replica runs one):

- ``silent``: never sends anything (a crash).
- ``equivocate``: an honest core whose proposals are split into a real block and a junk one (one
  made-up transaction), half the peers each, plus one vote for a random hash per vote.
- ``forge``: an honest core plus forged votes, timeouts and proposals signed with the wrong key
  or naming another validator, QCs with random signatures, random and truncated bytes.
- ``replay``: an honest core that re-sends messages it received to random peers.
- ``equivocating_leader``: as leader, proposes two real conflicting blocks for each view (the same
  parent and justify, different transaction sets: the mempool split differently, or one of its
  own signed transfers added), each properly signed, half the peers each, and votes for both.
- ``double_vote``: as leader, splits its proposal into two or three real blocks; as voter it signs
  a vote for every block any colluder has seen in the current or previous view (every conflicting
  block, whatever its lock or timeout says); its timeouts carry its real high QC only to a subset
  (the same subset for every colluder in that view) and a stale QC, properly signed, to the rest.
- ``lock_attack``: tries to make honest replicas lock and vote on conflicting branches. As
  leader it sends its proposal to a subset of the honest replicas and the colluders' votes to a
  subset of those (so a QC forms at some honest replicas and not at others), or, when a colluder
  leads the next view, now and then nothing at all (so the view times out). When it leads a view
  and can assemble a timeout certificate of the previous one from the timeouts it heard (its
  colluders claiming a high QC of view 0, then the honest timeouts with the lowest high QCs), it
  proposes a fork extending the oldest QC that TC allows, if older than the best QC the colluders
  know, to some peers (its honest proposal, or nothing, to the others), and every colluder votes
  for it (``forks_certified`` counts forks that honest votes made a QC of); its timeouts carry
  stale QCs to a subset, like ``double_vote``, and it sends extra stale timeouts now and then.
- ``twins``: a second node runs an honest core with the same key and index (the Twins method,
  Bano et al. 2020): the network delivers that identity's messages to both; partitions put each
  twin with different honest replicas, so the identity votes and proposes twice without any
  single core misbehaving. Both twins count as one byzantine identity.
- ``replay_old_views``: an honest core plus replays of old proposals, votes, timeouts and sync
  infos (any colluder heard or sent, from older views and older epochs) to random peers, and
  sync infos built from old QCs and TCs.

``equivocating_leader``, ``double_vote``, ``lock_attack`` and ``replay_old_views`` also answer only
half of the block requests they get, so an honest replica must find blocks (a conflicting one,
say) at another replica.

Pure test harness: randomness comes from ``random.Random(f"adversary/{seed}")`` (the legacy modes
keep using the network's stream, so their seeds replay as before).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gonka_ray import crypto, wire
from gonka_ray.exceptions import WireError
from gonka_ray.ledger import merkle
from gonka_ray.ledger.consensus import CONSENSUS_MESSAGES
from gonka_ray.ledger.quorum import (
    PROPOSAL_PURPOSE,
    TIMEOUT_PURPOSE,
    VOTE_PURPOSE,
    block_hash,
    timeout_bytes,
    vote_bytes,
)
from gonka_ray.ledger.ready import Ready
from gonka_ray.wire import (
    Block,
    BlockHeader,
    ConsensusBlockResponse,
    ConsensusProposal,
    ConsensusSyncInfo,
    ConsensusTimeout,
    ConsensusVote,
    QuorumCert,
    SignerSig,
    TimeoutCert,
    TimeoutSig,
    Transfer,
)

if TYPE_CHECKING:
    from gonka_ray.ledger.consensus import ConsensusCore
    from tests.sim.network import Node, SimNetwork

LEGACY_MODES = ("silent", "equivocate", "forge", "replay")
ATTACK_MODES = ("equivocating_leader", "double_vote", "lock_attack", "twins", "replay_old_views")
BYZANTINE_MODES = LEGACY_MODES + ATTACK_MODES
COUNTERS = (
    "conflicting_proposals",  # extra validly signed blocks for one view that honest replicas got
    "double_votes",  # extra validly signed votes of one identity in one view, seen by honest ones
    "stale_timeouts",  # timeouts carrying an older QC than the sender's high QC
    "withheld_votes",  # votes sent to a subset of the peers only
    "withheld_proposals",  # proposals sent to a subset of the peers only
    "fork_proposals",  # proposals extending an older QC, justified by a hand-picked TC
    "forks_certified",  # ... that honest votes turned into a QC (the older branch won)
    "replayed_old_views",  # messages of older views (or epochs) re-sent
    "replayed_cross_epoch",  # ... of which from an older epoch
    "withheld_blocks",  # block responses not sent (fetches must find another replica)
)
MAX_HEARD = 3_000  # messages kept for replay


@dataclass
class Knowledge:
    """What the colluders know of one consensus chain (one epoch)."""

    epoch: int
    blocks: dict[int, dict[bytes, Block]] = field(default_factory=dict)  # view -> hash -> block
    qcs: dict[int, QuorumCert] = field(default_factory=dict)  # view -> a valid QC of that view
    tcs: dict[int, TimeoutCert] = field(default_factory=dict)
    timeouts: dict[int, dict[int, TimeoutSig]] = field(default_factory=dict)  # view -> voter -> sig
    targets: dict[int, set[int]] = field(default_factory=dict)  # view -> peers that get the truth
    vote_targets: dict[int, set[int]] = field(default_factory=dict)  # view -> peers that get votes
    forked: set[int] = field(default_factory=set)  # views a lock attacker sent a fork in
    fork_hashes: set[bytes] = field(default_factory=set)
    fork_tries: dict[int, int] = field(default_factory=dict)  # view -> timeouts heard at the try


class Adversary:
    """The colluding byzantine replicas of one :class:`SimNetwork`; see the module docstring."""

    def __init__(self, net: SimNetwork) -> None:
        self.net = net
        self.rng = random.Random(f"adversary/{net.seed}")
        self.counts: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self.know: dict[bytes, Knowledge] = {}
        self.heard: list[tuple[int, int, bytes]] = []  # (epoch, view, message bytes)
        self.voted: set[tuple[int, bytes, bytes]] = set()  # (identity, chain, block hash)
        # honest replicas' evidence: (chain, identity, view, kind) -> block hash -> signature,
        # or whether it verified once a second block turned up for the key
        self.seen: dict[tuple[bytes, int, int, str], dict[bytes, bytes | bool]] = {}
        self.counted: dict[tuple[bytes, int, int, str], int] = {}
        self.pending: dict[int, Ready] = {}  # location -> work of a core to carry out next tick
        self.fillers = 0

    # --- hooks the network calls -----------------------------------------------------------

    def outbound(self, node: Node, ready: Ready) -> list[tuple[int | None, bytes]]:
        """What a byzantine core's ``ready.outbound`` becomes on the wire."""
        mode = node.byzantine
        if mode == "equivocate":
            return self._legacy_equivocate(node, ready)
        if mode not in ("equivocating_leader", "double_vote", "lock_attack", "replay_old_views"):
            return ready.outbound
        core = node.core
        assert core is not None
        out: list[tuple[int | None, bytes]] = []
        for dest, data in ready.outbound:
            msg = wire.decode(data)
            self._learn(node, msg, data)
            if isinstance(msg, ConsensusVote):  # its core's own vote: no need to sign it again
                self.voted.add((node.index, core.chain, msg.block_hash))
            if isinstance(msg, ConsensusBlockResponse):
                if self.rng.random() < 0.5:
                    self.counts["withheld_blocks"] += 1  # let them find the blocks elsewhere
                else:
                    out.append((dest, data))
            elif dest is not None or core.me is None:
                out.append((dest, data))
            elif isinstance(msg, ConsensusProposal) and mode == "equivocating_leader":
                out += self._equivocate(node, msg, data, ways=2)
            elif isinstance(msg, ConsensusProposal) and mode == "double_vote":
                out += self._equivocate(node, msg, data, ways=self.rng.choice((2, 2, 3)))
            elif isinstance(msg, ConsensusProposal) and mode == "lock_attack":
                out += self._lock_attack_proposal(node, msg, data)
            elif isinstance(msg, ConsensusVote) and mode == "lock_attack":
                out += self._withhold(node, msg.view, data, "withheld_votes")
            elif isinstance(msg, ConsensusTimeout) and mode in ("double_vote", "lock_attack"):
                out += self._selective_timeout(node, msg, data)
            else:
                out.append((dest, data))
        return out

    def received(self, node: Node, data: bytes) -> Any:
        """A byzantine replica received ``data``: decode it once (the byzantine core takes the
        decoded message) and remember what it teaches. Returns what to hand the core."""
        if node.byzantine == "replay" and len(node.heard) < 500:
            node.heard.append(data)
        if node.byzantine in LEGACY_MODES:
            return data
        try:
            msg = wire.decode(data, CONSENSUS_MESSAGES)
        except WireError:
            return data  # the core counts it as rejected
        return msg

    def after_step(self, node: Node, msg: Any, data: bytes) -> None:
        """Learn from a message the byzantine core has now handled (so it verified it)."""
        if node.byzantine not in LEGACY_MODES and not isinstance(msg, bytes):
            self._learn(node, msg, data)

    def act(self, node: Node) -> None:
        """Once per tick, after the byzantine replica's core ticked."""
        pending = self.pending.pop(node.location, None)
        if pending is not None:
            self.net._carry_out(node, pending)
        mode = node.byzantine
        if mode == "forge":
            self._legacy_forge(node)
        elif mode == "replay":
            rng = self.net.rng
            if node.heard and rng.random() < 0.5:
                self.net.send(node.location, rng.randrange(self.net.n), rng.choice(node.heard))
        elif mode == "double_vote":
            self._double_vote(node)
        elif mode == "replay_old_views":
            self._replay_old(node)
        elif mode == "lock_attack":
            core = node.core
            assert core is not None
            if core.me is not None and not core.ended and core.vs.leader(core.cur_view) == core.me:
                self._try_fork(node, core.cur_view)
            if self.rng.random() < 0.1:
                self._stale_timeout_to_one(node)

    def witness(self, dst: Node, src: int, data: bytes) -> None:
        """Honest replica ``dst`` received ``data`` from byzantine identity ``src``: record the
        signed proposals and votes per (chain, identity, view). A second distinct block for one
        key is checked against ``dst``'s chain and validator set before it counts."""
        core = dst.core
        if core is None:
            return
        try:
            msg = wire.decode(data, (ConsensusProposal, ConsensusVote))
        except WireError:
            return
        if isinstance(msg, ConsensusProposal):
            h = msg.block.header
            kind, index, view, bh, sig = (
                "proposal",
                h.proposer,
                h.view,
                block_hash(h),
                msg.signature,
            )
            purpose = PROPOSAL_PURPOSE
        else:
            kind, index, view, bh, sig = "vote", msg.voter, msg.view, msg.block_hash, msg.signature
            purpose = VOTE_PURPOSE
        pk = self.net.vs.validators[src].public_key  # the genesis set: transport identity
        if index >= len(core.vs) or core.vs.validators[index].public_key != pk:
            return  # not signed as this identity (relayed or forged): no evidence against it
        key = (core.chain, src, view, kind)
        seen = self.seen.setdefault(key, {})
        if bh in seen:
            return
        seen[bh] = sig  # unchecked; checked (True/False) once a second block turns up
        if len(seen) < 2:
            return
        for h, s in seen.items():
            if isinstance(s, bytes):
                seen[h] = crypto.is_valid_signature(pk, purpose, vote_bytes(core.chain, view, h), s)
        extra = max(0, sum(1 for ok in seen.values() if ok is True) - 1)
        counter = "conflicting_proposals" if kind == "proposal" else "double_votes"
        self.counts[counter] += extra - self.counted.get(key, 0)
        self.counted[key] = extra

    # --- knowledge -------------------------------------------------------------------------

    def _knowledge(self, core: ConsensusCore) -> Knowledge:
        k = self.know.get(core.chain)
        if k is None:
            k = self.know[core.chain] = Knowledge(epoch=core.epoch)
        return k

    def _learn(self, node: Node, msg: Any, data: bytes) -> None:
        core = node.core
        assert core is not None
        k = self._knowledge(core)
        view = None
        if isinstance(msg, ConsensusProposal):
            h = msg.block.header
            view = h.view
            bh = block_hash(h)
            if bh in core.blocks:  # the core checked it (or made it)
                k.blocks.setdefault(h.view, {})[bh] = msg.block
                self._learn_qc(core, k, h.justify)
                if msg.tc is not None:
                    k.tcs.setdefault(msg.tc.view, msg.tc)
        elif isinstance(msg, ConsensusVote):
            view = msg.view
        elif isinstance(msg, ConsensusTimeout):
            view = msg.view
            if core._valid_sig(
                msg.voter,
                TIMEOUT_PURPOSE,
                timeout_bytes(core.chain, msg.view, msg.high_qc.view),
                msg.signature,
            ):
                sigs = k.timeouts.setdefault(msg.view, {})
                old = sigs.get(msg.voter)
                if old is None or msg.high_qc.view < old.high_qc_view:
                    sigs[msg.voter] = TimeoutSig(msg.voter, msg.high_qc.view, msg.signature)
                self._learn_qc(core, k, msg.high_qc)
        elif isinstance(msg, ConsensusSyncInfo):
            view = msg.high_qc.view
            self._learn_qc(core, k, msg.high_qc)
        self._learn_qc(core, k, core.high_qc)
        if core.last_tc is not None:
            k.tcs.setdefault(core.last_tc.view, core.last_tc)
        if view is not None:
            entry = (core.epoch, view, data)
            if len(self.heard) < MAX_HEARD:
                self.heard.append(entry)
            else:  # keep old ones around: overwrite a random slot
                self.heard[self.rng.randrange(MAX_HEARD)] = entry

    def _learn_qc(self, core: ConsensusCore, k: Knowledge, qc: QuorumCert) -> None:
        if qc.view not in k.qcs and qc.block_hash in core.blocks and core._valid_qc(qc):
            k.qcs[qc.view] = qc
            if qc.block_hash in k.fork_hashes:
                self.counts["forks_certified"] += 1

    def _colluders(self, chain: bytes) -> list[Node]:
        """Byzantine nodes (one per identity) with a core in ``chain`` and a seat in its set."""
        out, ids = [], set()
        for nd in self.net.located:
            c = nd.core
            if (
                nd.byzantine not in (None, "silent")
                and nd.index not in ids
                and c is not None
                and c.chain == chain
                and c.me is not None
            ):
                ids.add(nd.index)
                out.append(nd)
        return out

    def _store(self, node: Node, block: Block, bh: bytes) -> None:
        """Give a colluder's core a block (so it serves fetches of it); carried out next tick."""
        core = node.core
        if core is None or bh in core.blocks or block.header.parent not in core.blocks:
            return
        ready = self.pending.setdefault(node.location, Ready())
        core._store_block(block, bh, ready)

    def _store_everywhere(self, chain: bytes, block: Block, bh: bytes) -> None:
        for nd in self.net.located:
            if nd.byzantine is not None and nd.core is not None and nd.core.chain == chain:
                self._store(nd, block, bh)

    def _peers(self, node: Node) -> list[int]:
        return [i for i in range(self.net.n) if i != node.index]

    def _targets(self, node: Node, view: int) -> set[int]:
        """The peers that get the truth in ``view`` (one draw per chain and view, shared by
        every colluder): a non-empty proper subset of the others where possible."""
        core = node.core
        assert core is not None
        k = self._knowledge(core)
        if view not in k.targets:
            others = [i for i in range(self.net.n) if self.net.nodes[i].byzantine is None]
            size = self.rng.randint(1, max(1, len(others) - 1))
            k.targets[view] = set(self.rng.sample(others, min(size, len(others))))
        return k.targets[view]

    def _vote_targets(self, node: Node, view: int) -> set[int]:
        """Where the colluders' votes of ``view`` go: a subset (maybe empty) of the targets, so
        a QC forms at some of the replicas that got the proposal and not at the others."""
        core = node.core
        assert core is not None
        k = self._knowledge(core)
        if view not in k.vote_targets:
            targets = sorted(self._targets(node, view))
            k.vote_targets[view] = set(self.rng.sample(targets, self.rng.randint(0, len(targets))))
        return k.vote_targets[view]

    # --- signing ---------------------------------------------------------------------------

    def _vote(self, node: Node, view: int, bh: bytes, dest: int | None = None) -> bool:
        """``node``'s identity signs a vote for ``bh`` (once per block) and sends it."""
        core = node.core
        assert core is not None and core.me is not None
        key = (node.index, core.chain, bh)
        if key in self.voted:
            return False
        self.voted.add(key)
        sig = core.key.sign(VOTE_PURPOSE, vote_bytes(core.chain, view, bh))
        vote = ConsensusVote(view=view, block_hash=bh, voter=core.me, signature=sig)
        self.net.send(node.location, dest, wire.encode(vote))
        return True

    def _proposal(self, core: ConsensusCore, block: Block, tc: TimeoutCert | None) -> bytes:
        bh = block_hash(block.header)
        sig = core.key.sign(PROPOSAL_PURPOSE, vote_bytes(core.chain, block.header.view, bh))
        return wire.encode(ConsensusProposal(block=block, tc=tc, signature=sig))

    def _filler_tx(self, core: ConsensusCore) -> bytes:
        """A well-formed transfer signed by the byzantine replica itself (its account holds
        nothing, so the state machine rejects it; the block stays valid)."""
        self.fillers += 1
        tx = Transfer(to=core.key.address, amount=1, nonce=self.fillers)
        return wire.seal(tx, core.key, self.net.genesis.chain_id)

    def _variant(self, core: ConsensusCore, header: BlockHeader, txs: list[bytes]) -> Block:
        txs = txs[: core.max_block_txs]
        h = BlockHeader(
            height=header.height,
            view=header.view,
            parent=header.parent,
            justify=header.justify,
            tx_root=merkle.root([merkle.tx_hash(t) for t in txs]),
            tx_count=len(txs),
            proposer=header.proposer,
        )
        return Block(header=h, txs=tuple(txs))

    def _conflicting(self, core: ConsensusCore, block: Block, count: int) -> list[Block]:
        """Up to ``count`` blocks that conflict with ``block``: same parent, justify and view,
        a different set (or order) of real transactions."""
        mine = list(block.txs)
        ours = set(mine)
        pool = mine + [tx for tx in core.mempool.values() if tx not in ours]
        roots = {block.header.tx_root}
        out: list[Block] = []
        for _ in range(4 * count):
            if len(out) == count:
                break
            roll = self.rng.random()
            if len(pool) >= 2 and roll < 0.5:  # the mempool split differently
                txs = self.rng.sample(pool, self.rng.randint(1, len(pool)))
            elif mine and roll < 0.6:  # nothing at all
                txs = []
            elif mine and roll < 0.7:  # one of its transactions twice
                txs = [*mine, self.rng.choice(mine)]
            else:  # what it has plus one transfer of its own
                txs = [
                    *self.rng.sample(pool, self.rng.randint(0, len(pool))),
                    self._filler_tx(core),
                ]
            variant = self._variant(core, block.header, txs)
            if variant.header.tx_root not in roots:
                roots.add(variant.header.tx_root)
                out.append(variant)
        return out

    # --- equivocating leader / double vote -------------------------------------------------

    def _equivocate(
        self, node: Node, p: ConsensusProposal, data: bytes, ways: int
    ) -> list[tuple[int | None, bytes]]:
        """Send ``ways`` conflicting real blocks for one view, one per group of peers, and vote
        for each (the core votes for its own)."""
        core = node.core
        assert core is not None
        extra = self._conflicting(core, p.block, ways - 1)
        peers = self._peers(node)
        self.rng.shuffle(peers)
        blocks = [p.block, *extra][: max(1, len(peers))]
        k = self._knowledge(core)
        out: list[tuple[int | None, bytes]] = []
        for i, block in enumerate(blocks):
            group = peers[i :: len(blocks)]
            wire_bytes = data if i == 0 else self._proposal(core, block, p.tc)
            out += [(peer, wire_bytes) for peer in group]
            if i:
                bh = block_hash(block.header)
                k.blocks.setdefault(block.header.view, {})[bh] = block
                self._store_everywhere(core.chain, block, bh)
                self._vote(node, block.header.view, bh)
        self.voted.add((node.index, core.chain, block_hash(p.block.header)))
        return out

    def _double_vote(self, node: Node) -> None:
        """Vote for every block any colluder has seen in the current or the previous view."""
        core = node.core
        if core is None or core.me is None or core.ended:
            return
        k = self._knowledge(core)
        for view in (core.cur_view - 1, core.cur_view):
            for bh, block in list(k.blocks.get(view, {}).items()):
                self._store(node, block, bh)
                self._vote(node, view, bh)

    # --- lock attack ----------------------------------------------------------------------

    def _withhold(
        self, node: Node, view: int, data: bytes, counter: str
    ) -> list[tuple[int | None, bytes]]:
        if counter == "withheld_votes":
            targets = self._vote_targets(node, view)
        else:
            targets = self._targets(node, view)
        if len(targets) < len(self.net.honest):
            self.counts[counter] += 1
        return [(peer, data) for peer in sorted(targets)]

    def _lock_attack_proposal(
        self, node: Node, p: ConsensusProposal, data: bytes
    ) -> list[tuple[int | None, bytes]]:
        view = p.block.header.view
        core = node.core
        assert core is not None
        nxt = core.vs.validators[core.vs.leader(view + 1)].public_key
        colluder_next = any(
            c.core is not None and c.core.key.public_key == nxt for c in self._colluders(core.chain)
        )
        if colluder_next and self.rng.random() < 0.5:
            # A colluder leads the next view: propose nothing, so that the view times out and the
            # colluder picks the timeout certificate its fork needs. (Otherwise the proposal goes
            # to some, the votes to fewer, and the colluder's TC may leave that QC out.)
            self.counts["withheld_proposals"] += 1
            return []
        if not self._try_fork(node, view):
            return self._withhold(node, view, data, "withheld_proposals")
        if self.rng.random() < 0.5:  # the fork went to the targets; the honest one to the others
            targets = self._targets(node, view)
            return [(peer, data) for peer in self._peers(node) if peer not in targets]
        return []

    def _try_fork(self, node: Node, view: int) -> bool:
        """As leader of ``view``, send a fork (see :meth:`_fork`) to this view's targets, store
        it at every colluder and have each vote for it. True if a fork went out for ``view``
        (now or before). Tried again only when new timeouts of ``view - 1`` were heard."""
        core = node.core
        assert core is not None and core.me is not None
        k = self._knowledge(core)
        if view in k.forked:
            return True
        heard = len(k.timeouts.get(view - 1, {}))
        if k.fork_tries.get(view) == heard:
            return False
        k.fork_tries[view] = heard
        fork = self._fork(node, view)
        if fork is None:
            return False
        block, tc = fork
        bh = block_hash(block.header)
        k.forked.add(view)
        k.fork_hashes.add(bh)
        self.counts["fork_proposals"] += 1
        k.blocks.setdefault(view, {})[bh] = block
        fork_bytes = self._proposal(core, block, tc)
        for peer in sorted(self._targets(node, view)):
            self.net.send(node.location, peer, fork_bytes)
        self._store_everywhere(core.chain, block, bh)
        for colluder in self._colluders(core.chain):
            self._vote(colluder, view, bh)
        return True

    def _cheapest_tc(self, core: ConsensusCore, view: int) -> TimeoutCert | None:
        """A TC of ``view`` whose highest reported QC is as low as possible: every colluder
        signs a timeout claiming QC view 0, then honest timeouts by rising QC view."""
        k = self._knowledge(core)
        sigs: dict[int, TimeoutSig] = {}
        for nd in self._colluders(core.chain):
            c = nd.core
            assert c is not None and c.me is not None
            sig = c.key.sign(TIMEOUT_PURPOSE, timeout_bytes(c.chain, view, 0))
            sigs[c.me] = TimeoutSig(index=c.me, high_qc_view=0, signature=sig)
        heard = sorted(k.timeouts.get(view, {}).values(), key=lambda s: s.high_qc_view)
        for s in heard:
            if core.vs.is_quorum(sigs):
                break
            sigs.setdefault(s.index, s)
        if not core.vs.is_quorum(sigs):
            return None
        return TimeoutCert(view=view, sigs=tuple(sorted(sigs.values(), key=lambda s: s.index)))

    def _fork(self, node: Node, view: int) -> tuple[Block, TimeoutCert] | None:
        """A block for ``view`` extending the oldest known QC that a hand-built TC of
        ``view - 1`` allows, if that QC is older than the core's high QC."""
        core = node.core
        assert core is not None and core.me is not None
        tc = self._cheapest_tc(core, view - 1)
        if tc is None:
            return None
        floor = max(s.high_qc_view for s in tc.sigs)
        k = self._knowledge(core)
        best = max(k.qcs, default=0)
        old = [qc for v, qc in k.qcs.items() if floor <= v < best]
        if not old:
            return None
        qc = min(old, key=lambda q: q.view)
        parent = core.blocks.get(qc.block_hash)
        if parent is None:
            return None
        txs = list(core.mempool.values())
        txs = self.rng.sample(txs, self.rng.randint(0, len(txs))) if txs else []
        header = BlockHeader(
            height=parent.header.height + 1,
            view=view,
            parent=qc.block_hash,
            justify=qc,
            tx_root=merkle.root([]),
            tx_count=0,
            proposer=core.me,
        )
        return self._variant(core, header, txs), tc

    def _stale_qc(self, core: ConsensusCore, below: int) -> QuorumCert | None:
        k = self._knowledge(core)
        old = [qc for v, qc in k.qcs.items() if v < below]
        if not old:
            return QuorumCert(view=0, block_hash=core.base_hash, sigs=()) if below > 0 else None
        return self.rng.choice(old)

    def _selective_timeout(
        self, node: Node, t: ConsensusTimeout, data: bytes
    ) -> list[tuple[int | None, bytes]]:
        """The real timeout to this view's targets; one with a stale QC to the others."""
        core = node.core
        assert core is not None and core.me is not None
        stale = self._stale_qc(core, t.high_qc.view)
        if stale is None:
            return [(None, data)]
        sig = core.key.sign(TIMEOUT_PURPOSE, timeout_bytes(core.chain, t.view, stale.view))
        lie = wire.encode(ConsensusTimeout(t.view, stale, core.me, sig))
        targets = self._targets(node, t.view)
        out: list[tuple[int | None, bytes]] = []
        for peer in self._peers(node):
            if peer in targets:
                out.append((peer, data))
            else:
                out.append((peer, lie))
                self.counts["stale_timeouts"] += 1
        return out

    def _stale_timeout_to_one(self, node: Node) -> None:
        core = node.core
        if core is None or core.me is None or core.ended:
            return
        stale = self._stale_qc(core, core.high_qc.view)
        if stale is None:
            return
        view = core.cur_view
        sig = core.key.sign(TIMEOUT_PURPOSE, timeout_bytes(core.chain, view, stale.view))
        lie = wire.encode(ConsensusTimeout(view, stale, core.me, sig))
        self.net.send(node.location, self.rng.choice(self._peers(node)), lie)
        self.counts["stale_timeouts"] += 1

    # --- replays --------------------------------------------------------------------------

    def _replay_old(self, node: Node) -> None:
        """Replay messages of older views (and epochs) to random peers."""
        core = node.core
        if core is None or not self.heard:
            return
        rng = self.rng
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            epoch, view, data = rng.choice(self.heard)
            if epoch == core.epoch and view >= core.cur_view - 1:
                continue  # not old (yet)
            self.net.send(node.location, rng.choice(self._peers(node)), data)
            self.counts["replayed_old_views"] += 1
            if epoch < core.epoch:
                self.counts["replayed_cross_epoch"] += 1
        if rng.random() < 0.2:  # an old QC and TC, repackaged as sync info
            k = self.know[rng.choice(list(self.know))] if self.know else None
            if k is None or not k.qcs:
                return
            qc = k.qcs[rng.choice(list(k.qcs))]
            tc = k.tcs[rng.choice(list(k.tcs))] if k.tcs and rng.random() < 0.5 else None
            if k.epoch == core.epoch and qc.view >= core.cur_view - 1:
                return
            info = wire.encode(ConsensusSyncInfo(high_qc=qc, tc=tc))
            self.net.send(node.location, rng.choice(self._peers(node)), info)
            self.counts["replayed_old_views"] += 1
            if k.epoch < core.epoch:
                self.counts["replayed_cross_epoch"] += 1

    # --- legacy modes ---------------------------------------------------------------------

    def _legacy_equivocate(self, node: Node, ready: Ready) -> list[tuple[int | None, bytes]]:
        core = node.core
        assert core is not None
        key, rng = core.key, self.net.rng
        out: list[tuple[int | None, bytes]] = []
        for dest, data in ready.outbound:
            msg = wire.decode(data)
            if isinstance(msg, ConsensusProposal) and dest is None:
                h = msg.block.header
                junk = (b"equivocation-%d" % rng.randrange(1 << 30),)
                alt_header = BlockHeader(
                    height=h.height,
                    view=h.view,
                    parent=h.parent,
                    justify=h.justify,
                    tx_root=merkle.root([merkle.tx_hash(t) for t in junk]),
                    tx_count=1,
                    proposer=h.proposer,
                )
                alt_hash = block_hash(alt_header)
                alt = ConsensusProposal(
                    block=Block(header=alt_header, txs=junk),
                    tc=msg.tc,
                    signature=key.sign(PROPOSAL_PURPOSE, vote_bytes(core.chain, h.view, alt_hash)),
                )
                peers = [i for i in range(self.net.n) if i != node.index]
                rng.shuffle(peers)
                half = len(peers) // 2
                out += [(p, data) for p in peers[:half]]
                out += [(p, wire.encode(alt)) for p in peers[half:]]
            elif isinstance(msg, ConsensusVote):
                out.append((dest, data))
                fake = bytes(rng.randrange(256) for _ in range(32))
                sig = key.sign(VOTE_PURPOSE, vote_bytes(core.chain, msg.view, fake))
                out.append((dest, wire.encode(ConsensusVote(msg.view, fake, node.index, sig))))
            else:
                out.append((dest, data))
        return out

    def _legacy_forge(self, node: Node) -> None:
        """One bad message per tick, of a random kind."""
        core = node.core
        assert core is not None
        n, rng = self.net.n, self.net.rng
        victim = rng.choice([i for i in range(n) if i != node.index])
        view = core.cur_view + rng.randint(-1, 3)
        fake_hash = bytes(rng.randrange(256) for _ in range(32))
        my_key = core.key
        kind = rng.randrange(6)
        if kind == 0:  # vote signed by me but claiming to be the victim
            sig = my_key.sign(VOTE_PURPOSE, vote_bytes(core.chain, view, fake_hash))
            data = wire.encode(ConsensusVote(view, fake_hash, victim, sig))
        elif kind == 1:  # random signature bytes
            data = wire.encode(ConsensusVote(view, fake_hash, node.index, rng.randbytes(64)))
        elif kind == 2:  # a QC with forged signatures in a timeout
            qc = QuorumCert(
                view=view + 5,
                block_hash=fake_hash,
                sigs=tuple(SignerSig(i, rng.randbytes(64)) for i in range(n)),
            )
            data = wire.encode(ConsensusTimeout(view, qc, node.index, rng.randbytes(64)))
        elif kind == 3:  # a proposal for a view it does not lead, self-signed
            header = BlockHeader(
                height=1,
                view=view,
                parent=core.high_qc.block_hash,
                justify=core.high_qc,
                tx_root=merkle.root([]),
                tx_count=0,
                proposer=core.vs.leader(view),
            )
            sig = my_key.sign(PROPOSAL_PURPOSE, vote_bytes(core.chain, view, block_hash(header)))
            data = wire.encode(ConsensusProposal(Block(header, ()), None, sig))
        elif kind == 4:  # random bytes
            data = rng.randbytes(rng.randint(1, 200))
        else:  # a truncated valid message
            sig = my_key.sign(VOTE_PURPOSE, vote_bytes(core.chain, view, fake_hash))
            full = wire.encode(ConsensusVote(view, fake_hash, node.index, sig))
            data = full[: rng.randint(1, len(full) - 1)]
        self.net.send(node.location, victim, data)
