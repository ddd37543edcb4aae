"""A small seeded economic run: supply is conserved, honest participants are never made INVALID,
invalidated spend is refunded in full, and an always-cheater earns less than honest work."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.economics import SimConfig, simulate, summarise


def test_small_economy_punishes_cheating_and_spares_the_honest() -> None:
    cfg = SimConfig(
        participants=20,
        epochs=4,
        requests=300,
        chunks=3,
        reward_per_epoch=750_000,
        counts=(("cheat_always", 2), ("lazy", 2)),
    )
    # simulate() asserts supply == before + minted - burned after every epoch
    tally = simulate(cfg, seed=1, progress=False)
    result = summarise([tally])
    rows = {r["strategy"]: r for r in result["rows"]}
    assert result["participant_epochs"] == 80
    assert result["honest_invalid_count"] == 0
    assert result["refund_share"] == 1.0
    assert rows["cheat_always"]["ratio_to_honest"] < 0.5
    assert rows["cheat_always"]["invalid_epochs"] >= 4  # caught in (nearly) every epoch it serves
    assert rows["lazy"]["forfeited_epochs"] == 2 * 4  # never checks: forfeits every epoch
    assert rows["honest"]["forfeited_epochs"] == 0
    assert result["minted"] == 4 * 750_000 and result["burned"] > 0


def test_sweep_model_applies_the_ledger_rules() -> None:
    """The epoch-level model of the sweep (benchmarks/economics_sweep.py): an always-cheater is
    kicked out at its 5th invalidation in a row and loses money, a lazy validator loses its
    pro-rated mint, an inflating TA and a rubber-stamping validator forfeit their epoch and
    sit out the next ones, and a vote committee caps what a cheater's disputes cost the honest."""
    from benchmarks import economics_sweep

    rates = economics_sweep.Rates(tpr=0.95, fpr=1e-3, source="test", detail={})
    cheat = economics_sweep.run("cheat_always", 1_000, 100, 0, 4, economics_sweep.Economy(), rates)
    assert cheat["kicked_out"] >= 4 and cheat["profit_bad"] < 0 < cheat["profit_honest"]
    lazy = economics_sweep.run("lazy", 1_000, 100, 0, 4, economics_sweep.Economy(), rates)
    assert lazy["profit_bad"] < 0.9 * lazy["profit_honest"]
    # a TA inflating its Starts' prompt counts is convicted by the vote each epoch (v3)
    ta = economics_sweep.run("ta_inflate", 1_000, 100, 0, 4, economics_sweep.Economy(), rates)
    # (v3: caught, it then sits out the next caught_sit_out_epochs epochs)
    assert ta["forfeited_epochs_bad"] >= ta["group"] and ta["honest_invalidated"] == 0
    assert ta["profit_bad"] < 0 < ta["profit_honest"]
    # a validator passing without checking: its receipts are challenged and broken (v3)
    stamp = economics_sweep.run("rubber_stamp", 1_000, 100, 0, 4, economics_sweep.Economy(), rates)
    assert stamp["forfeited_epochs_bad"] >= stamp["group"] and stamp["honest_invalidated"] == 0
    assert stamp["profit_bad"] < 0 < stamp["profit_honest"]
    everyone = economics_sweep.run(
        "cheat_always", 1_000, 1_000, 0, 3, economics_sweep.Economy(), rates
    )
    committee = economics_sweep.run(
        "cheat_always", 1_000, 1_000, 0, 3, economics_sweep.Economy(committee=12), rates
    )
    # every participant re-checks every dispute: honest work turns unprofitable at 1,000
    assert everyone["profit_honest"] < 0 < committee["profit_honest"]


def test_framing_is_free_under_the_ledger_rules_and_costly_with_appeal_and_bond() -> None:
    """Framers (under a third of the weight) accuse every honest inference and vote "invalid"
    unchecked. Under the ledger's rules they convict nobody but the disputes cost the honest
    more than they earn; a committee alone lets them convict honest executors; with an appeal
    to everyone and a bond on accusations they convict nobody, lose money, and the honest are
    reimbursed the re-checks."""
    from benchmarks import economics_sweep as sweep

    rates = sweep.Rates(tpr=0.95, fpr=1e-3, source="test", detail={})

    def frame(econ: sweep.Economy) -> dict:
        return sweep.run("frame", 1_000, 100, 0, 4, econ, rates)

    ledger = frame(sweep.Economy())
    assert ledger["honest_invalidated"] == 0 and ledger["profit_honest"] < 0
    committee = frame(sweep.Economy(committee=12))
    assert committee["honest_invalidated"] > 0
    appeal = frame(sweep.Economy(committee=12, appeal=True, accusation_bond=True))
    assert appeal["honest_invalidated"] == 0 and appeal["appeals"] > 0
    assert appeal["profit_bad"] < 0 < appeal["profit_honest"]


def test_every_newcomer_inference_must_be_checked_by_someone() -> None:
    from benchmarks.economics_sweep import newcomer_checked_share

    got = newcomer_checked_share(samples=8, seed=3)
    assert got["inferences"] == 3 * (8 + 8 + 1) and got["share"] == 1.0


def test_sweep_reports_each_cells_seed_noise(monkeypatch) -> None:
    """A cell's ratio is a mean over seeds; its standard error says how far apart two such
    means may fall by chance (sybil at 1,000 participants: ±0.25 per seed)."""
    from benchmarks import economics_sweep as es

    monkeypatch.setattr(es, "REQUESTS", (1_000,))
    monkeypatch.setattr(es, "PARTICIPANTS", (10,))
    monkeypatch.setattr(es, "STRATEGIES", ("sybil", "cheat_1"))
    rates = es.Rates(tpr=0.95, fpr=1e-3, source="test", detail={})
    result = es.sweep(rates, seeds=4, epochs=2, progress=False)
    sybil = next(c for c in result["cells"] if c["strategy"] == "sybil")
    ratios = []
    for seed in range(4):
        peace = es.run("none", 1_000, 10, seed, 2, es.Economy(), rates)
        r = es.run("sybil", 1_000, 10, seed, 2, es.Economy(), rates)
        ratios.append(1 + (r["profit_bad"] - r["profit_honest"]) / peace["profit_honest"])
    assert sybil["ratio_se"] == pytest.approx(np.std(ratios, ddof=1) / 2)
    assert result["sybil_profit_ratio_max_se"] == sybil["ratio_se"] > 0
