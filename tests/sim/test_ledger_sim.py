"""BFT properties over many seeded runs: faults, partitions and byzantine replicas.

Each batch runs ``BATCH`` seeds; a failure lists every failing seed with its replay command.
Hand-written scenarios (partitions, each byzantine mode, reconfiguration) are scripts in
``scenarios/``, run by ``test_scenarios.py``.
"""

from __future__ import annotations

import pytest

from tests.sim.network import run_scenario

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


@pytest.mark.parametrize("seed", [1685, 4395])
def test_replica_left_in_a_long_epoch_suffix_catches_up(seed: int) -> None:
    """Regression: a replica whose high QC certifies a block far up the suffix above an epoch's
    last block (the suffix grows one block per timed-out view) must still be sent the QC that
    ended that epoch. The epoch was guessed from the block's height, which missed it."""
    r = run_scenario(seed)
    assert r.epoch_blocks and r.epochs >= 1
    assert r.ok, r.describe()
    assert r.safety == []
