"""Validator-set changes at epoch boundaries, taken from committed state (pure core + shell)."""

from __future__ import annotations

import asyncio
import random

from gonka_ray import wire
from gonka_ray.ledger import merkle
from gonka_ray.ledger.quorum import (
    Validator,
    ValidatorSet,
    epoch_chain_id,
    verify_commit_certificate,
)
from gonka_ray.ledger.receipts import verify_receipt
from gonka_ray.ledger.replica import epoch_validators, validators_of
from gonka_ray.ledger.state import VALIDATOR_SETS, StateMachine
from gonka_ray.wire import TxReceipt
from tests.sim.network import SimNetwork, make_genesis, scenario_txs, sim_key

B = 5  # blocks per epoch: epoch e is heights e·B … (e+1)·B − 1


def test_power_change_and_removal_take_effect_at_the_next_boundary() -> None:
    # At height 2 (epoch 0) replica 0 gets power 3 and replica 3 leaves the set.
    net = SimNetwork(
        41, epoch_blocks=B, reconfigure={2: {0: 3, 3: 0}}, empty_block_ticks=2, max_delay=2
    )
    committed: dict[int, list] = {i: [] for i in range(4)}
    orig = net._carry_out

    def spy(node, ready):
        committed[node.index].extend(ready.committed)
        orig(node, ready)

    net._carry_out = spy
    batch = scenario_txs(random.Random(41), 20)
    for tx in batch:
        net.submit(1, tx)
        net.run(3)
    wanted = {merkle.tx_hash(t) for t in batch}
    assert net.run_until(lambda: net.all_committed(wanted), 400)
    assert net.run_until(lambda: min(len(nd.commits) for nd in net.nodes) >= 4 * B, 400)
    assert net.safety_violations() == []
    # Everyone, the removed replica included, moved through the same epochs.
    assert all(nd.core.epoch >= 3 for nd in net.nodes)
    new = [(v.public_key, v.power) for v in net.nodes[0].core.vs.validators]
    assert new == [(sim_key(f"replica-{i}").public_key, p) for i, p in [(0, 3), (1, 1), (2, 1)]]
    assert net.nodes[3].core.me is None
    # Each block's certificate verifies against its own epoch's set and chain id only.
    genesis_hash = net.nodes[1].core.genesis_hash
    for c in committed[3]:
        h = c.block.header.height
        e = h // B
        vs = epoch_validators(net.nodes[1].sm, e)
        chain = (
            genesis_hash
            if e == 0
            else epoch_chain_id(genesis_hash, e, net.nodes[1].commits[e * B - 2])
        )
        assert verify_commit_certificate(c.certificate, vs, chain)
        if e >= 1:
            assert not verify_commit_certificate(c.certificate, net.vs, genesis_hash)
            # The removed replica signed nothing from epoch 1 on (index 3 no longer exists).
            assert all(s.index < 3 for s in c.certificate.qc.sigs)


def test_state_records_each_epochs_set_at_its_last_block() -> None:
    sm = StateMachine(make_genesis(4, powers=[1, 2, 3, 4]), epoch_blocks=B)
    assert sm.validator_set(0) == [(sim_key(f"replica-{i}").public_key, i + 1) for i in range(4)]
    for h in range(1, B):
        assert sm.validator_set(1) is None
        sm.apply_block(h, bytes(32), ())
    assert sm.validator_set(1) == sm.validator_set(0)  # nothing changed it
    assert sorted(sm.tables[VALIDATOR_SETS]) == [0, 1]


def test_replica_restarted_in_a_later_epoch_resumes_with_that_epochs_set(tmp_path) -> None:
    from tests.sim.replicas import Bus, transfer, until

    async def scenario() -> None:
        bus = Bus(empty_block_interval_ms=4, epoch_blocks=4)
        reps = await bus.started(tmp_path)
        await until(lambda: min(r.core.committed_height for r in reps) >= 10, polls=2000)
        assert all(r.core.epoch >= 2 for r in reps)
        await reps[2].stop()
        bus.down.add(2)
        reps[2].store.close()
        bus.down.discard(2)
        again = bus.make(2, tmp_path)
        assert again.core.epoch == (again.core.committed_height + 1) // 4 >= 2
        assert again.core.vs.validators == epoch_validators(again.sm, again.core.epoch).validators
        await again.start()
        tx = transfer(1, 0)
        await reps[0].submit(tx)
        receipt = wire.decode(await again.wait_receipt(merkle.tx_hash(tx), timeout_s=10), TxReceipt)
        height = receipt.certificate.headers[0].height
        assert height >= 8  # committed in epoch 2 or later
        chain, members = await again.epoch_context(height)
        vs = ValidatorSet([Validator(k, w) for k, w in members])
        assert verify_receipt(receipt, vs, chain, tx)
        assert not verify_receipt(
            receipt, validators_of(make_genesis(4)), reps[0].core.genesis_hash
        )
        for r in [reps[0], reps[1], reps[3], again]:
            await r.stop()

    asyncio.run(scenario())
