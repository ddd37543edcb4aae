"""Reputation and participant status (DESIGN §4).

``reputation = floor(min(epochs_active, epochs_to_max) / epochs_to_max · 100)``, where
``epochs_active`` counts clean epochs, loses one per epoch with missed validations and resets to 0
on an invalidated inference.

Status: a participant is RAMPING in its first epoch (reputation 0: every inference checked),
ACTIVE afterwards, and INVALID once ``fpr ** consecutive_invalid < 1e-6`` (with fpr 0.05: five
invalidations in a row) or once its epoch failure-rate z-score exceeds 1 after ≥ 10 checked
inferences. INVALID is sticky for the epoch: no executor selection, no fees, no reward.
"""

from __future__ import annotations

import math
from enum import StrEnum

from gonka_ray.constants import (
    INVALID_PROBABILITY_THRESHOLD,
    REPUTATION_MIN_CHECKED_FOR_Z,
    REPUTATION_Z_SCORE_LIMIT,
    VALIDATION_FPR,
)


class Status(StrEnum):
    RAMPING = "RAMPING"
    ACTIVE = "ACTIVE"
    INVALID = "INVALID"


def reputation(epochs_active: int, epochs_to_max: int) -> int:
    """Reputation 0..100 from clean epochs (integer arithmetic, floor)."""
    if epochs_to_max <= 0:
        raise ValueError("epochs_to_max must be positive")
    return min(max(epochs_active, 0), epochs_to_max) * 100 // epochs_to_max


def next_epochs_active(epochs_active: int, *, missed_duty: bool, invalidated: bool) -> int:
    """``epochs_active`` after an epoch closes."""
    if invalidated:
        return 0
    if missed_duty:
        return max(0, epochs_active - 1)
    return epochs_active + 1


def trips_consecutive_rule(
    consecutive_invalid: int,
    fpr: float = VALIDATION_FPR,
    threshold: float = INVALID_PROBABILITY_THRESHOLD,
) -> bool:
    """True when ``consecutive_invalid`` honest false positives in a row are implausible."""
    return consecutive_invalid > 0 and fpr**consecutive_invalid < threshold


def failure_z_score(failed: int, checked: int, fpr: float = VALIDATION_FPR) -> float:
    """z-score of ``failed`` out of ``checked`` against an honest failure rate ``fpr``."""
    if checked <= 0:
        return 0.0
    expected = checked * fpr
    return (failed - expected) / math.sqrt(checked * fpr * (1 - fpr))


def trips_z_rule(failed: int, checked: int, fpr: float = VALIDATION_FPR) -> bool:
    """True when the epoch's failure rate is significantly above ``fpr``."""
    return (
        checked >= REPUTATION_MIN_CHECKED_FOR_Z
        and failure_z_score(failed, checked, fpr) > REPUTATION_Z_SCORE_LIMIT
    )


def status_after(
    current: Status, *, consecutive_invalid: int, failed: int, checked: int, fpr: float
) -> Status:
    """The status after an invalidation or a validation outcome; INVALID never reverts here."""
    if current is Status.INVALID:
        return Status.INVALID
    if trips_consecutive_rule(consecutive_invalid, fpr) or trips_z_rule(failed, checked, fpr):
        return Status.INVALID
    return current
