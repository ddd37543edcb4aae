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


def poc_claim_outcome(
    verdicts: Mapping[str, bool], weights: Mapping[str, int], claimant: str
) -> bool | None:
    """The ledger's decision on one Proof-of-Compute claim from its validators' verdicts.

    Accepted iff more than a third of the weight that could judge it (every weighted
    participant but the claimant) accepted it **and** more weight accepted than rejected (a tie
    rejects). None when nobody judged it: the ledger cannot tell a good claim from a bad one
    and keeps the claimant's current weight (one slow phase must not drain honest weight).
    With byzantine weight below a third, an accepted claim passed at least one honest
    validator's sampled recomputation; silent validators cannot get a claim accepted alone.

    Args:
        verdicts: validator address → True if its sampled recomputation accepted the claim.
        weights: the epoch's weights (non-positive ones count as 0).
    """
    total = sum(w for w in weights.values() if w > 0)
    judges = total - max(0, weights.get(claimant, 0))
    cast = {v: ok for v, ok in verdicts.items() if v != claimant}  # never its own
    yes = sum(max(0, weights.get(v, 0)) for v, ok in cast.items() if ok)
    no = sum(max(0, weights.get(v, 0)) for v, ok in cast.items() if not ok)
    if yes == no == 0 and judges > 0:
        return None
    return judges > 0 and 3 * yes > judges and yes > no
