"""BFT properties over many seeded runs: faults, partitions and byzantine replicas.

Each batch runs ``BATCH`` seeds; a failure lists every failing seed with its replay command.
Byzantine replicas draw from every mode of :mod:`tests.sim.byzantine` (real equivocation,
coordinated double voting, lock attacks, twins, replays of old views, and the older modes).
Hand-written scenarios (partitions, each byzantine mode, reconfiguration) are scripts in
``scenarios/``, run by ``test_scenarios.py``; the long sweeps are ``benchmarks/ledger_sim.py``.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.sim.byzantine import ATTACK_MODES, LEGACY_MODES
from tests.sim.network import run_scenario

SEEDS = 500
BATCH = 50


@pytest.mark.parametrize("start", range(0, SEEDS, BATCH))
def test_random_scenarios_are_safe_and_live(start: int) -> None:
    failures = [r for r in map(run_scenario, range(start, start + BATCH)) if not r.ok]
    assert not failures, "\n".join(r.describe() for r in failures)


def test_seven_replicas_with_two_colluding_byzantine() -> None:
    """n = 7 tolerates f = 2: scenarios pick two byzantine replicas, which often run one plan
    together (both double voting, both lock attackers, twins plus lock attackers, ...)."""
    results = [run_scenario(seed, n=7) for seed in range(100_000, 100_040)]
    pairs = [r for r in results if len(r.byzantine) == 2]
    assert any(len(set(r.byzantine.values())) == 1 for r in pairs)  # one shared plan
    failures = [r for r in results if not r.ok]
    assert not failures, "\n".join(r.describe() for r in failures)


def test_the_sweep_draws_every_attack_and_the_attacks_happen() -> None:
    """The random runs pick every mode, and each attack really reaches honest replicas (its
    counters move), so the sweep above is not testing a toothless adversary."""
    results = [run_scenario(seed) for seed in range(0, 60)]
    modes = Counter(m for r in results for m in r.byzantine.values())
    assert set(ATTACK_MODES) <= set(modes), modes
    attacks: Counter[str] = Counter()
    for r in results:
        attacks.update(r.attacks)
    for counter in ("conflicting_proposals", "double_votes", "stale_timeouts", "withheld_votes"):
        assert attacks[counter] > 0, attacks
    assert attacks["replayed_old_views"] > 0, attacks


@pytest.mark.parametrize("seed", [1685, 4395])
def test_replica_left_in_a_long_epoch_suffix_catches_up(seed: int) -> None:
    """Regression: a replica whose high QC certifies a block far up the suffix above an epoch's
    last block (the suffix grows one block per timed-out view) must still be sent the QC that
    ended that epoch. The epoch was guessed from the block's height, which missed it. (Pinned
    with the modes these seeds drew before the stronger adversary, so they replay as then.)"""
    r = run_scenario(seed, modes=LEGACY_MODES)
    assert r.epoch_blocks and r.epochs >= 1
    assert r.ok, r.describe()
    assert r.safety == []


def test_replica_cut_off_until_the_chain_went_idle_catches_up() -> None:
    """Regression (twins): partitions put the twin with two honest replicas, which committed
    every transaction while the third was cut off, and went idle. With nothing pending nobody
    timed out, so nothing ever reached the third after the heal and it stayed behind (heights
    15, 13, 15). Idle replicas now broadcast their high QC now and then (see the pacemaker)."""
    r = run_scenario(50529, modes=("twins",))
    assert r.byzantine == {1: "twins"} and r.epochs >= 2
    assert r.ok, r.describe()
