"""Weighted vote tallying on a disputed inference (DESIGN §4).

Every eligible participant (not the executor, not the accuser) re-verifies and votes
*valid* or *invalid*. A side wins as soon as it holds > 50% of the eligible voting weight; at the
deadline the side with more cast weight wins, and a tie upholds the executor (the accusation
must carry the burden).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class VoteOutcome(StrEnum):
    PENDING = "PENDING"
    INVALIDATED = "INVALIDATED"
    UPHELD = "UPHELD"


def tally(
    votes: Mapping[str, bool],
    eligible_weights: Mapping[str, int],
    *,
    deadline_passed: bool,
) -> VoteOutcome:
    """Decide a vote.

    Args:
        votes: voter address → True if it found the inference valid.
        eligible_weights: every eligible voter's weight (votes from others are ignored).
        deadline_passed: whether the voting window has closed.
    """
    total = sum(w for w in eligible_weights.values() if w > 0)
    valid = sum(eligible_weights.get(v, 0) for v, ok in votes.items() if ok)
    invalid = sum(eligible_weights.get(v, 0) for v, ok in votes.items() if not ok)
    if total > 0 and 2 * invalid > total:
        return VoteOutcome.INVALIDATED
    if total > 0 and 2 * valid > total:
        return VoteOutcome.UPHELD
    if not deadline_passed:
        return VoteOutcome.PENDING
    return VoteOutcome.INVALIDATED if invalid > valid else VoteOutcome.UPHELD
