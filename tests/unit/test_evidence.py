"""Epoch evidence (pure): required validations only, per-inference cap, and what one lying
validator can and cannot do."""

from __future__ import annotations

import numpy as np

from gonka_ray.protocol import evidence
from gonka_ray.protocol.verification_policy import EpochRule

RULE = EpochRule(mu=0.03, kappa=0.01, z=3.09, safety=1.2, min_inferences=20)
M = evidence.MICRO


def _epoch(rng, ratio: float, n: int = 30, liar_ratio: float | None = None):
    """``n`` inferences of executor E, each checked by one of three validators (round robin);
    validator ``v2`` reports ``liar_ratio`` instead of what it measured."""
    records, ev, required = [], {}, {"v0": set(), "v1": set(), "v2": set()}
    for i in range(n):
        iid = i.to_bytes(32, "big")
        v = f"v{i % 3}"
        w = rng.uniform(5, 40)  # Σ w of one output
        measured = max(0.0, rng.normal(ratio, 0.15 * ratio)) * w
        a = liar_ratio * w if (v == "v2" and liar_ratio is not None) else measured
        records.append((iid, "E", round(w * M)))
        ev[(iid, v)] = round(a * M)
        required[v].add(iid)
    return records, ev, {k: frozenset(s) for k, s in required.items()}


def test_honest_noise_is_not_convicted_and_inflated_noise_is() -> None:
    rng = np.random.default_rng(0)
    honest = [evidence.tally(*_epoch(rng, 0.03), RULE)["E"].convicted for _ in range(200)]
    cheat = [evidence.tally(*_epoch(rng, 0.05), RULE)["E"].convicted for _ in range(200)]
    assert sum(honest) == 0 and sum(cheat) == 200


def test_a_lying_validator_with_a_third_of_the_checks_cannot_frame_an_honest_executor() -> None:
    rng = np.random.default_rng(1)
    for liar in (1.0, 1e3):
        t = evidence.tally(*_epoch(rng, 0.03, liar_ratio=liar), RULE)["E"]
        assert not t.convicted
        assert t.ratio <= 0.03 * (1 + (evidence.CLAMP_RATIO - 1) / 3) * 1.1


def test_only_required_validations_count_and_too_few_inferences_judge_nobody() -> None:
    rng = np.random.default_rng(2)
    records, ev, required = _epoch(rng, 0.03)
    for iid, _, _ in records:  # an unrequired validator floods every inference
        ev[(iid, "v9")] = 10**12
    t = evidence.tally(records, ev, required, RULE)["E"]
    assert not t.convicted and t.inferences == len(records)
    few = evidence.tally(*_epoch(rng, 0.5, n=19), RULE)["E"]
    assert few.inferences == 19 and not few.convicted
