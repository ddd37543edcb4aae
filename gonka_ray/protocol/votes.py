"""Weighted vote tallying on a disputed inference (DESIGN §4).

Every eligible participant (not the executor, not the accuser) re-verifies and votes
*valid* or *invalid*. A side wins as soon as it holds > 50% of the eligible voting weight; at the
deadline the side with more cast weight wins, and a tie upholds the executor (the accusation
must carry the burden).

From protocol version 5 (``Rules.vote_quorum_at_deadline``) an accusation also needs more than a
third of the eligible weight behind it at the deadline: with byzantine weight below a third, a
conviction then rests on at least one honest judge's own check. Without it the accuser's ballot
alone convicted whenever nobody else voted in time (judges slow, or the payload briefly out of
reach), so one dishonest or unlucky validator could invalidate an honest executor's work. Such a
vote **lapses**: the executor keeps its fee and the accuser is not charged with a false
accusation, since no judge refuted it either.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class VoteOutcome(StrEnum):
    PENDING = "PENDING"
    INVALIDATED = "INVALIDATED"
    UPHELD = "UPHELD"
    LAPSED = "LAPSED"  # v5: at the deadline neither side carried enough weight; executor kept


def tally(
    votes: Mapping[str, bool],
    eligible_weights: Mapping[str, int],
    *,
    deadline_passed: bool,
    quorum_at_deadline: bool = False,
) -> VoteOutcome:
    """Decide a vote.

    Args:
        votes: voter address → True if it found the inference valid.
        eligible_weights: every eligible voter's weight (votes from others are ignored).
        deadline_passed: whether the voting window has closed.
        quorum_at_deadline: (v5) at the deadline, invalidate only with more than a third of
            the eligible weight invalid; a larger invalid side short of it LAPSES.
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
    if invalid <= valid:
        return VoteOutcome.UPHELD
    if quorum_at_deadline and 3 * invalid <= total:
        return VoteOutcome.LAPSED
    return VoteOutcome.INVALIDATED


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
