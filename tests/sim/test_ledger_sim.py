"""BFT properties over many seeded runs: faults, partitions and byzantine replicas.

Each batch runs ``BATCH`` seeds; a failure lists every failing seed with its replay command.
"""

from __future__ import annotations

import pytest

from gonka_ray.ledger import merkle
from gonka_ray.ledger.sim import SimNetwork, run_scenario, scenario_txs, sim_key

SEEDS = 500
BATCH = 50


@pytest.mark.parametrize("start", range(0, SEEDS, BATCH))
def test_random_scenarios_are_safe_and_live(start: int) -> None:
    failures = [r for r in map(run_scenario, range(start, start + BATCH)) if not r.ok]
    assert not failures, "\n".join(r.describe() for r in failures)


def test_seven_replicas_with_two_byzantine() -> None:
    """n = 7 tolerates f = 2: scenarios pick two byzantine replicas."""
    results = [run_scenario(seed, n=7) for seed in range(100_000, 100_030)]
    assert any(len(r.byzantine) == 2 for r in results)
    failures = [r for r in results if not r.ok]
    assert not failures, "\n".join(r.describe() for r in failures)


def _txs(seed: int, n: int) -> list[bytes]:
    import random

    return scenario_txs(random.Random(seed), n)


def test_equivocating_leader_cannot_split_honest_replicas() -> None:
    net = SimNetwork(21, byzantine={1: "equivocate"}, max_delay=2, timeout_ticks=8)
    batch = _txs(21, 20)
    for i, tx in enumerate(batch):
        net.submit([0, 2, 3][i % 3], tx)
        net.run(2)
    wanted = {merkle.tx_hash(t) for t in batch}
    assert net.run_until(lambda: net.all_committed(wanted), 400)
    assert net.safety_violations() == []
    # The equivocator did lead some views, so the conflicting proposals were really sent.
    assert net.nodes[1].core.stats.proposals > 0


def test_minority_partition_catches_up_after_heal() -> None:
    net = SimNetwork(22, max_delay=2, timeout_ticks=8)
    net.set_partition([{0, 1, 2}, {3}])
    batch = _txs(22, 30)
    for tx in batch:
        net.submit(0, tx)
        net.run(3)
    majority_height = len(net.nodes[0].commits)
    assert majority_height >= 1 and len(net.nodes[3].commits) == 0
    net.set_partition(None)
    wanted = {merkle.tx_hash(t) for t in batch}
    assert net.run_until(lambda: net.all_committed(wanted), 400)
    assert net.safety_violations() == []
    assert net.nodes[3].commits[:majority_height] == net.nodes[0].commits[:majority_height]


def test_no_progress_without_quorum_then_progress_after_heal() -> None:
    net = SimNetwork(23, max_delay=1, timeout_ticks=6)
    net.set_partition([{0, 1}, {2, 3}])
    batch = _txs(23, 10)
    for tx in batch:
        net.submit(0, tx)
        net.submit(2, tx)
    net.run(150)
    assert all(len(nd.commits) == 0 for nd in net.nodes)  # 2 of 4 is not > 2/3
    net.set_partition(None)
    wanted = {merkle.tx_hash(t) for t in batch}
    assert net.run_until(lambda: net.all_committed(wanted), 600)
    assert net.safety_violations() == []


@pytest.mark.parametrize("mode", ["silent", "forge", "replay", "equivocate"])
def test_each_byzantine_mode_with_drops(mode: str) -> None:
    net = SimNetwork(
        30, byzantine={2: mode}, drop=0.1, duplicate=0.1, max_delay=3, timeout_ticks=10
    )
    batch = _txs(30, 15)
    for tx in batch:
        net.submit(0, tx)
        net.run(2)
    net.drop = 0.0
    wanted = {merkle.tx_hash(t) for t in batch}
    assert net.run_until(lambda: net.all_committed(wanted), 600)
    assert net.safety_violations() == []
    if mode == "forge":
        assert sum(nd.core.stats.rejected for nd in net.honest) > 10


def test_replica_cut_off_for_several_epochs_catches_up_after_heal() -> None:
    """The others change sets twice while replica 3 is partitioned away; after the heal it is
    sent the QCs that ended those epochs, fetches the blocks and follows into the current one."""
    net = SimNetwork(
        24,
        max_delay=2,
        timeout_ticks=8,
        empty_block_ticks=2,
        epoch_blocks=4,
        reconfigure={2: {0: 2}, 6: {0: 1, 1: 2}},
    )
    net.set_partition([{0, 1, 2}, {3}])
    net.run(150)
    assert net.nodes[0].core.epoch >= 3 and net.nodes[3].core.epoch == 0
    net.set_partition(None)
    batch = _txs(24, 10)
    for tx in batch:
        net.submit(0, tx)
    wanted = {merkle.tx_hash(t) for t in batch}
    assert net.run_until(lambda: net.all_committed(wanted), 600)
    target = net.nodes[0].core.epoch
    assert net.run_until(lambda: net.nodes[3].core.epoch >= target, 300)
    assert net.safety_violations() == []


def test_byzantine_replica_voted_out_at_an_epoch_boundary() -> None:
    net = SimNetwork(
        25,
        byzantine={2: "equivocate"},
        max_delay=2,
        timeout_ticks=8,
        empty_block_ticks=3,
        epoch_blocks=5,
        reconfigure={3: {2: 0}},
    )
    batch = _txs(25, 20)
    for i, tx in enumerate(batch):
        net.submit([0, 1, 3][i % 3], tx)
        net.run(2)
    wanted = {merkle.tx_hash(t) for t in batch}
    assert net.run_until(lambda: net.all_committed(wanted), 600)
    assert net.safety_violations() == []
    honest = net.honest[0].core
    assert honest.epoch >= 1 and len(honest.vs) == 3
    assert honest.vs.index_of(sim_key("replica-2").public_key) is None


@pytest.mark.parametrize("seed", [1685, 4395])
def test_replica_left_in_a_long_epoch_suffix_catches_up(seed: int) -> None:
    """Regression: a replica whose high QC certifies a block far up the suffix above an epoch's
    last block (the suffix grows one block per timed-out view) must still be sent the QC that
    ended that epoch. The epoch was guessed from the block's height, which missed it."""
    r = run_scenario(seed)
    assert r.epoch_blocks and r.epochs >= 1
    assert r.ok, r.describe()
    assert r.safety == []
