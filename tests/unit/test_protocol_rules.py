"""Pin the protocol formulas of DESIGN §2–§4."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import pytest

from gonka_ray.constants import MIN_CHECKS_PER_EPOCH
from gonka_ray.exceptions import NoExecutorAvailable
from gonka_ray.protocol import payments, reputation, selection, validation_sampling, votes
from gonka_ray.protocol.reputation import Status
from gonka_ray.protocol.votes import VoteOutcome


def iid(i: int) -> bytes:
    return hashlib.sha256(f"inference-{i}".encode()).digest()


WEIGHTS = {"a": 100, "b": 300, "c": 600}


def test_selection_is_deterministic_and_order_free() -> None:
    one = selection.select_executor(iid(1), 0, WEIGHTS)
    shuffled = dict(reversed(list(WEIGHTS.items())))
    assert selection.select_executor(iid(1), 0, shuffled) == one


def test_selection_is_proportional_to_weight() -> None:
    n = 20_000
    counts = Counter(selection.select_executor(iid(i), 0, WEIGHTS) for i in range(n))
    for key, w in WEIGHTS.items():
        share = counts[key] / n
        expected = w / 1000
        assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / n), key


def test_selection_excludes_own_participant_and_zero_weight() -> None:
    picks = {
        selection.select_executor(iid(i), 0, {**WEIGHTS, "z": 0}, exclude={"c"}) for i in range(300)
    }
    assert picks == {"a", "b"}
    with pytest.raises(NoExecutorAvailable):
        selection.select_executor(iid(0), 0, {"a": 5}, exclude={"a"})


def test_retry_attempt_gives_a_fresh_draw() -> None:
    draws = {selection.draw_randomness(iid(7), a) for a in range(5)}
    assert len(draws) == 5
    picks = [selection.select_executor(iid(7), a, WEIGHTS) for a in range(40)]
    assert len(set(picks)) > 1


def test_retries_draw_without_replacement() -> None:
    # every run of len(WEIGHTS) attempts names each candidate once, so a dead executor cannot
    # fail all of a request's attempts while another one is left
    for i in range(200):
        picks = [selection.select_executor(iid(i), a, WEIGHTS, exclude={"z"}) for a in range(6)]
        assert sorted(picks[:3]) == sorted(picks[3:]) == sorted(WEIGHTS), (i, picks)
    # attempt 0 is still proportional to weight, and the heaviest candidate goes first most often
    firsts = Counter(selection.select_executor(iid(i), 0, WEIGHTS) for i in range(3_000))
    seconds = Counter(selection.select_executor(iid(i), 1, WEIGHTS) for i in range(3_000))
    assert firsts["c"] > firsts["b"] > firsts["a"]
    assert seconds["c"] < firsts["c"] and seconds["a"] > firsts["a"]
    with pytest.raises(ValueError):
        selection.select_executor(iid(0), -1, WEIGHTS)


def test_min_avg_breakpoints() -> None:
    f = validation_sampling.min_avg
    assert f(0) == f(100) == 1.0
    assert f(5_000) == pytest.approx(0.05)
    assert f(10_000) == f(50_000) == 0.01
    assert f(2_550) == pytest.approx((1.0 + 0.05) / 2)
    assert f(7_500) == pytest.approx(0.03)


def test_target_falls_with_reputation() -> None:
    t = validation_sampling.target_checks
    assert t(0, 20_000) == 1.0
    assert t(100, 20_000) == pytest.approx(0.01)
    assert t(100, 50) == 1.0  # low traffic: everything checked
    assert t(50, 10_000) == pytest.approx(0.505)
    with pytest.raises(ValueError):
        t(101, 10)


def test_probability_and_expected_checks() -> None:
    weights = {"v1": 100, "v2": 200, "v3": 300, "ex": 400}
    total = sum(weights.values())
    for target in (1.0, 0.2, 0.01):
        ps = [
            validation_sampling.validation_probability(target, w, total, 400)
            for k, w in weights.items()
            if k != "ex"
        ]
        assert sum(ps) == pytest.approx(target)
    assert validation_sampling.validation_probability(1.0, 100, 100, 100) == 0.0
    assert validation_sampling.validation_probability(5.0, 100, 200, 0) == 1.0


def test_should_validate_rate_and_secrecy() -> None:
    seed = b"s" * 32
    n = 20_000
    hits = sum(validation_sampling.should_validate(seed, iid(i), 0.1) for i in range(n))
    assert abs(hits / n - 0.1) < 4 * math.sqrt(0.1 * 0.9 / n)
    other = sum(
        validation_sampling.should_validate(b"t" * 32, iid(i), 0.1)
        and validation_sampling.should_validate(seed, iid(i), 0.1)
        for i in range(n)
    )
    assert other < hits * 0.2  # another seed picks a mostly different set
    assert validation_sampling.should_validate(seed, iid(1), 1.0)
    assert not validation_sampling.should_validate(seed, iid(1), 0.0)
    assert validation_sampling.seed_commitment(seed) == hashlib.sha256(seed).digest()


def test_reputation_formula() -> None:
    r = reputation.reputation
    assert r(0, 30) == 0
    assert r(1, 30) == 3  # floor(3.33)
    assert r(15, 30) == 50
    assert r(30, 30) == r(99, 30) == 100
    assert reputation.next_epochs_active(10, missed_duty=False, invalidated=False) == 11
    assert reputation.next_epochs_active(10, missed_duty=True, invalidated=False) == 9
    assert reputation.next_epochs_active(10, missed_duty=False, invalidated=True) == 0


def test_consecutive_rule_trips_at_five_for_fpr_005() -> None:
    assert [reputation.trips_consecutive_rule(k, 0.05) for k in range(7)] == [
        False,
        False,
        False,
        False,
        False,
        True,
        True,
    ]


def test_z_rule() -> None:
    assert not reputation.trips_z_rule(failed=5, checked=9, fpr=0.05)  # too few checked
    assert not reputation.trips_z_rule(failed=0, checked=100, fpr=0.05)
    assert reputation.trips_z_rule(failed=10, checked=100, fpr=0.05)  # z ≈ 2.29
    z = reputation.failure_z_score(7, 100, 0.05)
    assert z == pytest.approx((7 - 5) / math.sqrt(100 * 0.05 * 0.95))
    s = reputation.status_after(Status.ACTIVE, consecutive_invalid=5, failed=0, checked=0, fpr=0.05)
    assert s is Status.INVALID
    assert (
        reputation.status_after(
            Status.INVALID, consecutive_invalid=0, failed=0, checked=0, fpr=0.05
        )
        is Status.INVALID
    )


def test_vote_tally() -> None:
    w = {"a": 40, "b": 35, "c": 25}
    assert votes.tally({"a": False}, w, deadline_passed=False) is VoteOutcome.PENDING
    assert (
        votes.tally({"a": False, "c": False}, w, deadline_passed=False) is VoteOutcome.INVALIDATED
    )
    assert votes.tally({"a": True, "b": True}, w, deadline_passed=False) is VoteOutcome.UPHELD
    assert votes.tally({"a": False, "c": True}, w, deadline_passed=True) is VoteOutcome.INVALIDATED
    assert votes.tally({"b": False, "a": True}, w, deadline_passed=True) is VoteOutcome.UPHELD
    assert votes.tally({}, w, deadline_passed=True) is VoteOutcome.UPHELD  # tie: innocent
    assert votes.tally({"x": False}, w, deadline_passed=True) is VoteOutcome.UPHELD  # not eligible
    # v5: at the deadline the invalid side also needs more than a third of the eligible weight
    lone = {"c": False}  # 25 of 100
    assert votes.tally(lone, w, deadline_passed=True) is VoteOutcome.INVALIDATED  # v4
    assert votes.tally(lone, w, deadline_passed=True, quorum_at_deadline=True) is VoteOutcome.LAPSED
    third = {"b": False}  # 35 of 100
    assert (
        votes.tally(third, w, deadline_passed=True, quorum_at_deadline=True)
        is VoteOutcome.INVALIDATED
    )
    refuted = {"c": False, "b": True}
    assert (
        votes.tally(refuted, w, deadline_passed=True, quorum_at_deadline=True) is VoteOutcome.UPHELD
    )


def test_payments() -> None:
    assert payments.escrow_amount(10, 20, 3) == 90
    assert payments.cost_amount(10, 5, 3, 90) == 45
    assert payments.cost_amount(10, 50, 3, 90) == 90  # never above escrow
    for bad in (-1, 2**63, 1.5):
        with pytest.raises(ValueError):
            payments.escrow_amount(bad, 1, 1)
    with pytest.raises(ValueError):
        payments.escrow_amount(2**40, 2**40, 2**40)  # overflow past 2^63


@pytest.mark.parametrize("participants", [4, 10, 100, 1000])
@pytest.mark.parametrize("traffic", [1_000, 10_000, 100_000])
def test_deterrence_floor_makes_cheating_one_percent_unprofitable(participants, traffic) -> None:
    """Issue 16: whatever the traffic and the network size, each trusted executor's work is
    checked at least MIN_CHECKS_PER_EPOCH times per epoch in expectation (every inference when
    it serves fewer), so cheating on 1% of it is caught with P >= 0.1 + c (the bound under which
    a forfeited epoch makes it earn at most 90% of honest; derivation in the module)."""
    vs = validation_sampling
    weights = {f"p{i}": 100 + (i % 7) for i in range(participants)}
    total = sum(weights.values())
    for executor, w in list(weights.items())[:5]:
        q = vs.check_target(100, traffic, w, total)  # reputation 100: the lowest rate
        n = traffic * w / total
        assert q * n >= min(MIN_CHECKS_PER_EPOCH, n) - 1e-9
        assert q >= vs.target_checks(100, traffic)  # the floor only ever adds checks
        c, d = 0.01, 0.999
        cheated = max(1.0, c * n)  # a cheater at this size cheats on at least one inference
        p_caught = 1 - (1 - min(1.0, q) * d) ** cheated
        assert p_caught >= 0.1 + c, (executor, q, n, p_caught)
    # one of four executors at 10,000 requests: the reputation rate alone is enough (no change)
    four = {f"p{i}": 100 for i in range(4)}
    assert vs.check_target(100, 10_000, 100, 400) == vs.target_checks(100, 10_000)
    assert sum(four.values()) == 400
