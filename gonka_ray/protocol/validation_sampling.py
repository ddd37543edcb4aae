"""Who validates what: secret per-epoch seeds and the reputation-dependent rate (DESIGN §4).

Participant V validates a finished inference it did not execute iff
``sha256(seed_V ‖ inference_id)[:8] / 2^64 < p`` with

- ``target = max_avg − (max_avg − min_avg(traffic)) · reputation / 100`` (``max_avg = 1``);
- ``min_avg`` = 1.0 at ≤ 100 requests per epoch, linear to 0.05 at 5,000, linear to 0.01 at
  ≥ 10,000;
- ``p = min(1, target · weight_V / (total_weight − weight_executor))``.

Summed over validators, the expected number of checks per inference is ``target`` (capped by the
``min(1, ·)`` terms): ≈ 1 for a newcomer, ≈ 0.01 for a trusted participant under heavy traffic.
The seed stays secret until the epoch's reward claim, so an executor cannot know in advance which
of its inferences will be checked; its commitment ``sha256(seed)`` goes on the ledger at epoch
start, and the ledger recomputes the required set after the reveal.

**Newcomers are checked every time** (DESIGN §4). Independent secret draws leave ~(1 − 1/n)^n of
a reputation-0 executor's inferences unchecked (~30% with three validators), so each of its
inferences also has a **primary validator**: drawn ∝ epoch weight among the other participants,
with randomness ``sha256("gonka/primary" ‖ inference_id ‖ hash of the block that committed the
Finish)``, known only once the output is committed. It must check it (the ledger counts it in its
duty), on top of the secret-seed sampling.

**Deterrence at any scale** (issue 16). One confirmed invalidation forfeits the executor's whole
epoch (fees R_f and mint R_m, R = R_f + R_m). An executor cheating on a share ``c`` of its ``n``
inferences of an epoch saves at most ``c`` of its compute cost ``C ≤ R_f`` and is caught with
``P = 1 − (1 − q·d)^(c·n) ≈ 1 − exp(−c·d·q·n)`` (``q`` checks per inference, ``d`` the
detection rate of one check). Its profit over an honest one's, ``((1 − P)·R − C + c·C) /
(R − C)``, stays ≤ 0.9 whatever the margin ``C/R`` iff ``P ≥ 0.1 + c``; at ``c = 1%`` that is
``q·n·d ≥ −ln(0.89)/0.01 ≈ 11.7`` checks of its work per epoch. The reputation rate alone gives
``q·n = 0.01 · traffic · share``: enough for one executor of four at 10,000 requests per epoch,
not for one of a hundred. So the target never falls below :func:`deterrence_floor`:
``MIN_CHECKS_PER_EPOCH / n`` with ``n = traffic · w_executor / W`` the executor's expected
inferences this epoch (capped at one check per inference; below ``MIN_CHECKS_PER_EPOCH``
inferences every one is checked). Cheating on 1% then risks ``P ≥ 1 − e^(−0.16·d) ≈ 0.15``,
10% risks ``≥ 0.80``. The cost falls on small executors in large networks (their every inference
is checked when they serve fewer than 16 per epoch): verification grows with participants ×
16, not with traffic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from gonka_ray.constants import MIN_CHECKS_PER_EPOCH, VALIDATION_MAX_AVG_CHECKS
from gonka_ray.exceptions import NoExecutorAvailable
from gonka_ray.protocol.selection import weighted_pick

_SCALE = 1 << 64


def min_avg(requests_per_epoch: int) -> float:
    """The floor of the average checks per inference at a given traffic level."""
    n = requests_per_epoch
    if n <= 100:
        return 1.0
    if n <= 5_000:
        return 1.0 + (0.05 - 1.0) * (n - 100) / (5_000 - 100)
    if n < 10_000:
        return 0.05 + (0.01 - 0.05) * (n - 5_000) / (10_000 - 5_000)
    return 0.01


def target_checks(reputation: int, requests_per_epoch: int) -> float:
    """Expected checks per inference of an executor with ``reputation`` (0..100)."""
    if not 0 <= reputation <= 100:
        raise ValueError("reputation must be in 0..100")
    return (
        VALIDATION_MAX_AVG_CHECKS
        - (VALIDATION_MAX_AVG_CHECKS - min_avg(requests_per_epoch)) * reputation / 100
    )


def deterrence_floor(
    requests_per_epoch: int,
    executor_weight: int,
    total_weight: int,
    min_checks: int = MIN_CHECKS_PER_EPOCH,
) -> float:
    """The least expected checks per inference for an executor: ``min_checks`` over its
    expected inferences this epoch, at most one per inference (see the module docstring)."""
    if requests_per_epoch <= 0 or executor_weight <= 0 or total_weight <= 0:
        return VALIDATION_MAX_AVG_CHECKS
    expected = requests_per_epoch * executor_weight / total_weight
    return min(VALIDATION_MAX_AVG_CHECKS, min_checks / expected)


def check_target(
    reputation: int, requests_per_epoch: int, executor_weight: int, total_weight: int
) -> float:
    """Expected checks per inference of an executor: its reputation's rate, never below the
    deterrence floor."""
    return max(
        target_checks(reputation, requests_per_epoch),
        deterrence_floor(requests_per_epoch, executor_weight, total_weight),
    )


def validation_probability(
    target: float, validator_weight: int, total_weight: int, executor_weight: int
) -> float:
    """``p`` for one validator (0 when nobody else has weight)."""
    others = total_weight - executor_weight
    if others <= 0 or validator_weight <= 0:
        return 0.0
    return min(1.0, target * validator_weight / others)


def seed_commitment(seed: bytes) -> bytes:
    """What a validator publishes at epoch start: ``sha256(seed)``."""
    return hashlib.sha256(seed).digest()


def sample_point(seed: bytes, inference_id: bytes) -> int:
    """``sha256(seed ‖ inference_id)[:8]`` as an integer in [0, 2^64)."""
    return int.from_bytes(hashlib.sha256(seed + inference_id).digest()[:8], "big")


def should_validate(seed: bytes, inference_id: bytes, probability: float) -> bool:
    """The sampling decision: true with probability ``probability``, fixed by the seed."""
    if probability >= 1.0:
        return True
    if probability <= 0.0:
        return False
    return sample_point(seed, inference_id) < int(probability * _SCALE)


def must_validate(
    *,
    seed: bytes,
    inference_id: bytes,
    executor_reputation: int,
    requests_per_epoch: int,
    validator_weight: int,
    total_weight: int,
    executor_weight: int,
) -> bool:
    """All of the above in one call: must this validator check this inference?"""
    target = check_target(executor_reputation, requests_per_epoch, executor_weight, total_weight)
    p = validation_probability(target, validator_weight, total_weight, executor_weight)
    return should_validate(seed, inference_id, p)


def primary_validator(
    inference_id: bytes, finish_block_hash: bytes, weights: Mapping[str, int], executor: str
) -> str | None:
    """The primary validator of a newcomer's inference (see the module docstring): a weighted
    draw over ``weights`` without the executor; None when nobody else has weight."""
    others = {a: w for a, w in weights.items() if a != executor and w > 0}
    digest = hashlib.sha256(b"gonka/primary" + inference_id + finish_block_hash).digest()
    try:
        return weighted_pick(others, int.from_bytes(digest[:8], "big"))
    except NoExecutorAvailable:
        return None


def must_check(
    *,
    seed: bytes,
    validator: str,
    inference_id: bytes,
    executor: str,
    finish_block_hash: bytes,
    executor_reputation: int,
    requests_per_epoch: int,
    weights: Mapping[str, int],
) -> bool:
    """Must ``validator`` check this inference: as its primary validator (executor at
    reputation 0) or by its secret-seed sampling. ``weights`` are the epoch's."""
    if validator == executor:
        return False
    if executor_reputation == 0 and (
        primary_validator(inference_id, finish_block_hash, weights, executor) == validator
    ):
        return True
    return must_validate(
        seed=seed,
        inference_id=inference_id,
        executor_reputation=executor_reputation,
        requests_per_epoch=requests_per_epoch,
        validator_weight=weights.get(validator, 0),
        total_weight=sum(w for w in weights.values() if w > 0),
        executor_weight=weights.get(executor, 0),
    )
