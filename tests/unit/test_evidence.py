"""Epoch evidence (pure): required validations only, a trimmed statistic, and what dishonest
validators holding less than the trimmed share can and cannot do."""

from __future__ import annotations

import numpy as np
import pytest

from gonka_ray.protocol import evidence
from gonka_ray.protocol.verification_policy import EpochRule
from gonka_ray.verification.calibration import trimmed_ratios

# kappa: the sd of honest T over 20 of these synthetic inferences (measured: ~0.0013)
RULE = EpochRule(mu=0.03, kappa=0.0015, z=3.09, safety=1.2, min_inferences=20, trim=0.3)
M = evidence.MICRO


def _epoch(rng, ratio: float, n: int = 30, liar_ratio: float | None = None, liars: int = 5):
    """``n`` inferences of executor E, each checked by one of ``liars`` validators in turn;
    validator ``v0`` reports ``liar_ratio`` instead of what it measured (a 1/``liars`` share)."""
    records, ev, required = [], {}, {f"v{i}": set() for i in range(liars)}
    for i in range(n):
        iid = i.to_bytes(32, "big")
        v = f"v{i % liars}"
        w = rng.uniform(5, 40)  # Σ w of one output
        measured = max(0.0, rng.normal(ratio, 0.15 * ratio)) * w
        a = liar_ratio * w if (v == "v0" and liar_ratio is not None) else measured
        records.append((iid, "E", round(w * M)))
        ev[(iid, v)] = round(a * M)
        required[v].add(iid)
    return records, ev, {k: frozenset(s) for k, s in required.items()}


def test_honest_noise_is_not_convicted_and_inflated_noise_is() -> None:
    rng = np.random.default_rng(0)
    honest = [evidence.tally(*_epoch(rng, 0.03), RULE)["E"].convicted for _ in range(200)]
    cheat = [evidence.tally(*_epoch(rng, 0.05), RULE)["E"].convicted for _ in range(200)]
    assert sum(honest) == 0 and sum(cheat) == 200


@pytest.mark.parametrize("liar", [1e3, 0.0])
def test_a_fifth_of_the_checks_can_neither_frame_nor_shield(liar) -> None:
    """Inflated reports on an honest executor, or zero reports on a cheating one, from a
    validator holding a fifth of the checks (under the 30% trimmed from each end)."""
    rng = np.random.default_rng(1)
    truth = 0.03 if liar > 0 else 0.06
    verdicts = [
        evidence.tally(*_epoch(rng, truth, liar_ratio=liar), RULE)["E"].convicted
        for _ in range(100)
    ]
    assert sum(verdicts) == (0 if liar > 0 else 100)


def test_only_required_validations_count_and_too_few_inferences_judge_nobody() -> None:
    rng = np.random.default_rng(2)
    records, ev, required = _epoch(rng, 0.03)
    for iid, _, _ in records:  # an unrequired validator floods every inference
        ev[(iid, "v9")] = 10**12
    t = evidence.tally(records, ev, required, RULE)["E"]
    assert not t.convicted and t.inferences == len(records)
    few = evidence.tally(*_epoch(rng, 0.5, n=19), RULE)["E"]
    assert few.inferences == 19 and not few.convicted


def test_the_ledgers_trimmed_ratio_equals_the_calibrations() -> None:
    rng = np.random.default_rng(3)
    a = rng.exponential(1.0, (50, 20))
    w = rng.uniform(0.5, 30, (50, 20))
    fast = trimmed_ratios(a, w, 0.3)
    for row in range(50):
        pairs = list(zip(a[row].tolist(), w[row].tolist(), strict=True))
        assert evidence.trimmed_ratio(pairs, 0.3) == pytest.approx(fast[row], rel=1e-12)


def test_one_validator_cannot_frame_even_with_half_the_checks() -> None:
    """Two validators: the liar holds half of the checks (beyond the trim) — the conviction
    must stand without its reports, and it does not; a real cheater is still convicted."""
    rng = np.random.default_rng(4)
    framed = [
        evidence.tally(*_epoch(rng, 0.03, n=40, liar_ratio=1e3, liars=2), RULE)["E"]
        for _ in range(50)
    ]
    assert all(t.statistic > t.threshold for t in framed)  # precondition: the trim alone fails
    assert not any(t.convicted for t in framed)
    cheats = [evidence.tally(*_epoch(rng, 0.05, n=40, liars=2), RULE)["E"] for _ in range(50)]
    assert all(t.convicted for t in cheats)


def test_a_weight_scaled_rule_widens_for_short_answers_and_stays_tight_for_long() -> None:
    """``sigma``: honest T's sd falls as 1/√W. An honest executor answering in 1–2 tokens (Σw
    ~1 per inference, T noisy: ratio sd 0.6·μ) is not convicted; the same rule convicts 2·μ
    over long answers (Σw 5–40)."""
    rule = EpochRule(0.03, 0.0, 3.09, 1.2, 20, 0.3, sigma=0.08)
    rng = np.random.default_rng(4)

    def short_epoch():
        records, ev, required = [], {}, {"v0": set()}
        for i in range(30):
            iid, w = i.to_bytes(32, "big"), rng.uniform(0.3, 1.5)
            records.append((iid, "E", round(w * M)))
            ev[(iid, "v0")] = round(max(0.0, rng.normal(0.03, 0.018)) * w * M)
            required["v0"].add(iid)
        return records, ev, {k: frozenset(s) for k, s in required.items()}

    short = [evidence.tally(*short_epoch(), rule)["E"] for _ in range(200)]
    long_cheat = [evidence.tally(*_epoch(rng, 0.06), rule)["E"] for _ in range(200)]
    assert not any(t.convicted for t in short)
    assert all(t.convicted for t in long_cheat)
    assert min(t.threshold for t in short) > max(t.threshold for t in long_cheat)
