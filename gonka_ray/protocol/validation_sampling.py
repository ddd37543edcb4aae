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
"""

from __future__ import annotations

import hashlib

MAX_AVG = 1.0
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
    return MAX_AVG - (MAX_AVG - min_avg(requests_per_epoch)) * reputation / 100


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
    target = target_checks(executor_reputation, requests_per_epoch)
    p = validation_probability(target, validator_weight, total_weight, executor_weight)
    return should_validate(seed, inference_id, p)
