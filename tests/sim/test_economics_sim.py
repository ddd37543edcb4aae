"""A small seeded economic run: supply is conserved, honest participants are never made INVALID,
invalidated spend is refunded in full, and an always-cheater earns less than honest work."""

from __future__ import annotations

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
