from __future__ import annotations

import dataclasses

import pytest

from gonka_ray import crypto, wire
from gonka_ray.ledger import merkle
from gonka_ray.ledger.consensus import ConsensusCore
from gonka_ray.ledger.quorum import (
    VOTE_PURPOSE,
    Validator,
    ValidatorSet,
    verify_commit_certificate,
    verify_qc,
    vote_bytes,
)
from gonka_ray.ledger.ready import Recovered
from gonka_ray.wire import (
    Block,
    ConsensusProposal,
    ConsensusSafety,
    ConsensusSyncInfo,
    ConsensusVote,
    QuorumCert,
    SignerSig,
)
from tests.sim.network import SimNetwork, scenario_txs, sim_key


def txs(n: int, seed: int = 1) -> list[bytes]:
    import random

    return scenario_txs(random.Random(seed), n)


def committed_net(n_txs: int = 10, **kw) -> tuple[SimNetwork, list[bytes]]:
    net = SimNetwork(7, **kw)
    batch = txs(n_txs)
    for tx in batch:
        net.submit(0, tx)
    wanted = {merkle.tx_hash(t) for t in batch}
    assert net.run_until(lambda: net.all_committed(wanted), 200)
    return net, batch


def test_four_honest_replicas_commit_the_same_blocks() -> None:
    net, _ = committed_net()
    assert not net.safety_violations()
    heights = {len(nd.commits) for nd in net.nodes}
    assert len(heights) == 1 and heights.pop() >= 1
    assert len({nd.state_hashes[-1] for nd in net.nodes}) == 1


def test_weighted_power_quorum() -> None:
    keys = [sim_key(f"w{i}") for i in range(4)]
    vs = ValidatorSet([Validator(k.public_key, p) for k, p in zip(keys, [5, 1, 1, 1], strict=True)])
    assert not vs.is_quorum([0])  # 5/8 is not > 2/3
    assert vs.is_quorum([0, 1])  # 6/8 is
    assert not vs.is_quorum([1, 2, 3])
    assert vs.is_one_third([0]) and not vs.is_one_third([1, 2])


def test_weighted_network_commits() -> None:
    net, _ = committed_net(powers=[5, 1, 1, 1])
    assert not net.safety_violations()
    assert all(len(nd.commits) >= 1 for nd in net.nodes)


def _qc(net: SimNetwork) -> QuorumCert:
    core = net.nodes[0].core
    assert core is not None and core.high_qc.view > 0
    return core.high_qc


def test_qc_verification_rejects_forgeries() -> None:
    net, _ = committed_net()
    qc, vs, chain = _qc(net), net.vs, net.nodes[0].core.chain
    assert verify_qc(qc, vs, chain)
    assert not verify_qc(dataclasses.replace(qc, sigs=qc.sigs[:2]), vs, chain)  # 2/4 power
    dup = (qc.sigs[0], qc.sigs[0], qc.sigs[1])
    assert not verify_qc(dataclasses.replace(qc, sigs=dup), vs, chain)
    bad = (SignerSig(qc.sigs[0].index, bytes(64)), *qc.sigs[1:])
    assert not verify_qc(dataclasses.replace(qc, sigs=bad), vs, chain)
    assert not verify_qc(dataclasses.replace(qc, view=qc.view + 1), vs, chain)
    assert not verify_qc(dataclasses.replace(qc, block_hash=bytes(32)), vs, chain)
    assert not verify_qc(qc, vs, b"\x01" * 32)  # another chain


def test_commit_certificate_verifies_offline_and_detects_tampering() -> None:
    net = SimNetwork(3)
    seen = []
    orig = net._carry_out

    def spy(node, ready):
        if node.index == 1:
            seen.extend(ready.committed)
        orig(node, ready)

    net._carry_out = spy
    for tx in txs(6):
        net.submit(2, tx)
    net.run(60)
    assert seen
    chain = net.nodes[1].core.chain
    for c in seen:
        assert c.certificate.headers[0] == c.block.header
        assert verify_commit_certificate(c.certificate, net.vs, chain)
        # round trip through the wire
        back = wire.decode(wire.encode(c.certificate))
        assert verify_commit_certificate(back, net.vs, chain)
    cert = seen[0].certificate
    h0 = dataclasses.replace(cert.headers[0], tx_count=cert.headers[0].tx_count + 1)
    assert not verify_commit_certificate(
        dataclasses.replace(cert, headers=(h0, *cert.headers[1:])), net.vs, chain
    )
    assert not verify_commit_certificate(
        dataclasses.replace(cert, headers=cert.headers[1:]), net.vs, chain
    )
    assert not verify_commit_certificate(cert, net.vs, bytes(32))


def test_votes_and_proposals_with_bad_signatures_are_rejected() -> None:
    net = SimNetwork(5)
    core = net.nodes[2].core
    view = core.cur_view
    fake = bytes(range(32))
    # Signed by replica 0, claiming to be replica 1.
    sig = sim_key("replica-0").sign(VOTE_PURPOSE, vote_bytes(core.chain, view, fake))
    ready = core.step(wire.encode(ConsensusVote(view, fake, 1, sig)), 0)
    assert core.stats.rejected == 1 and not ready
    # Garbage and truncated bytes.
    core.step(b"\x01\x02", 0)
    core.step(wire.encode(ConsensusVote(view, fake, 0, sig))[:-5], 0)
    assert core.stats.rejected == 3


def test_proposal_from_non_leader_is_rejected_and_not_voted() -> None:
    net = SimNetwork(5)
    # Build a proposal for view 1 signed by replica 3 (not the leader).
    impostor = net.nodes[3].core
    victim = net.nodes[2].core
    parent = impostor.blocks[impostor.high_qc.block_hash]
    from gonka_ray.ledger.quorum import PROPOSAL_PURPOSE, block_hash
    from gonka_ray.wire import BlockHeader

    header = BlockHeader(
        height=parent.header.height + 1,
        view=1,
        parent=impostor.high_qc.block_hash,
        justify=impostor.high_qc,
        tx_root=merkle.root([]),
        tx_count=0,
        proposer=3,
    )
    sig = sim_key("replica-3").sign(
        PROPOSAL_PURPOSE, vote_bytes(victim.chain, 1, block_hash(header))
    )
    ready = victim.step(wire.encode(ConsensusProposal(Block(header, ()), None, sig)), 3)
    assert victim.stats.rejected == 1 and victim.stats.votes_sent == 0
    assert not ready.outbound


def test_safety_state_is_persisted_in_the_ready_that_sends_a_vote() -> None:
    net = SimNetwork(11)
    checked = 0
    orig = net._carry_out

    def spy(node, ready):
        nonlocal checked
        for _, data in ready.outbound:
            msg = wire.decode(data)
            if isinstance(msg, ConsensusVote) and msg.voter == node.index:
                safety = [p for p in ready.to_persist if isinstance(p, ConsensusSafety)]
                assert safety and safety[-1].last_voted_view >= msg.view
                checked += 1
        orig(node, ready)

    net._carry_out = spy
    for tx in txs(5):
        net.submit(0, tx)
    net.run(40)
    assert checked >= 4


def test_recovered_replica_never_votes_twice_in_a_view() -> None:
    net = SimNetwork(13)
    persisted: list = []
    orig = net._carry_out

    def spy(node, ready):
        if node.index == 2:
            persisted.extend(ready.to_persist)
        orig(node, ready)

    net._carry_out = spy
    for tx in txs(5):
        net.submit(0, tx)
    net.run(30)
    old = net.nodes[2].core
    assert old.last_voted_view >= 1
    blocks = [p for p in persisted if isinstance(p, Block)]
    safety = [p for p in persisted if isinstance(p, ConsensusSafety)][-1]
    rec = ConsensusCore(
        net.vs,
        sim_key("replica-2"),
        wire.digest(net.genesis),
        recovered=Recovered(
            blocks=blocks, committed_hashes=list(net.nodes[2].commits), safety=safety
        ),
    )
    assert rec.last_voted_view == old.last_voted_view
    assert rec.committed_height == old.committed_height
    assert rec.locked_hash == old.locked_hash
    # Re-delivering the proposal of the last voted view must not produce a second vote.
    last = old.last_voted_view
    blk = next(b for b in blocks if b.header.view == last)
    leader_key = sim_key(f"replica-{blk.header.proposer}")
    from gonka_ray.ledger.quorum import PROPOSAL_PURPOSE, block_hash

    sig = leader_key.sign(PROPOSAL_PURPOSE, vote_bytes(rec.chain, last, block_hash(blk.header)))
    ready = rec.step(wire.encode(ConsensusProposal(blk, None, sig)), blk.header.proposer)
    votes = [d for _, d in ready.outbound if isinstance(wire.decode(d), ConsensusVote)]
    assert votes == []


def test_key_not_in_validator_set_is_refused() -> None:
    vs = ValidatorSet([Validator(sim_key("a").public_key, 1)])
    with pytest.raises(ValueError):
        ConsensusCore(vs, crypto.KeyPair.from_seed("stranger"), b"g")


def test_idle_network_is_quiet() -> None:
    """No pending work: no proposals, no timeouts; only each replica's high QC, broadcast once
    every 8 view timeouts (so a replica that missed the last blocks catches up)."""
    net = SimNetwork(2, timeout_ticks=8)
    net.run(63)
    assert net.messages_sent == 0
    sent: list[object] = []
    orig = net.send
    net.send = lambda loc, dest, data: (sent.append(wire.decode(data)), orig(loc, dest, data))
    net.run(190)  # idle ticks 64, 128 and 192
    assert len(sent) == 3 * len(net.nodes)
    assert all(isinstance(m, ConsensusSyncInfo) for m in sent)
    assert all(nd.core.stats.timeouts_sent == nd.core.stats.proposals == 0 for nd in net.nodes)


def test_idle_chain_keeps_committing_with_heartbeat_blocks() -> None:
    net = SimNetwork(11, empty_block_ticks=3)
    net.run(200)
    heights = [len(nd.commits) for nd in net.nodes]
    assert min(heights) >= 20  # a block about every 4-5 ticks, with no transactions at all
    assert not net.safety_violations()
    net.run(50)
    assert min(len(nd.commits) for nd in net.nodes) > max(heights)
    assert all(not nd.core.stats.timeouts_sent for nd in net.nodes)  # no view was abandoned


def test_heartbeat_blocks_off_means_an_idle_chain_stays_put() -> None:
    net = SimNetwork(11, empty_block_ticks=0)
    net.run(200)
    assert all(len(nd.commits) == 0 for nd in net.nodes)
    assert all(nd.core.stats.proposals == 0 for nd in net.nodes)


def test_heartbeat_blocks_continue_past_a_silent_leader() -> None:
    net = SimNetwork(12, byzantine={1: "silent"}, empty_block_ticks=2, timeout_ticks=6)
    net.run(300)
    assert min(len(nd.commits) for nd in net.honest) >= 10
    assert not net.safety_violations()


def test_block_pacing_batches_a_trickle_of_transactions_into_fewer_blocks() -> None:
    def blocks_for_trickle(min_block_ticks: int) -> tuple[int, int]:
        net = SimNetwork(13, min_block_ticks=min_block_ticks)
        batch = txs(12, seed=3)
        for tx in batch:  # one transaction every other tick, as a request's records arrive
            net.submit(0, tx)
            net.run(2)
        wanted = {merkle.tx_hash(t) for t in batch}
        assert net.run_until(lambda: net.all_committed(wanted), 300)
        assert not net.safety_violations()
        proposals = sum(nd.core.stats.proposals for nd in net.nodes)
        return proposals, net.now

    eager, eager_ticks = blocks_for_trickle(0)
    paced, paced_ticks = blocks_for_trickle(4)
    assert paced < eager / 1.5, (paced, eager)  # transactions share blocks
    assert paced_ticks < eager_ticks + 60  # at the price of a few ticks of commit latency
    with pytest.raises(ValueError):
        SimNetwork(13, min_block_ticks=-1)
    with pytest.raises(ValueError):  # a leader waiting out its followers' timeout never commits
        SimNetwork(13, min_block_ticks=8, timeout_ticks=8)
