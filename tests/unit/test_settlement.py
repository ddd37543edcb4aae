"""Validation duty and epoch settlement: exact integer arithmetic and supply conservation."""

from __future__ import annotations

import hashlib
import random

import pytest

from gonka_ray.protocol import settlement as st
from gonka_ray.protocol import validation_sampling as vs
from gonka_ray.protocol.lifecycle import InferenceBook, InferenceStatus, ParticipantRecord
from gonka_ray.protocol.reputation import Status

CLIENT = "client"
WEIGHTS = {"p0": 100, "p1": 200, "p2": 300, "p3": 400}


class DictAccounts:
    def __init__(self, balances: dict[str, int]) -> None:
        self.balances = dict(balances)

    def balance(self, address: str) -> int:
        return self.balances.get(address, 0)

    def add(self, address: str, amount: int) -> None:
        new = self.balances.get(address, 0) + amount
        assert new >= 0
        self.balances[address] = new


def iid(i: int) -> bytes:
    return hashlib.sha256(b"settle-%d" % i).digest()


def seed_of(a: str) -> bytes:
    return hashlib.sha256(b"secret-" + a.encode()).digest()


def supply(book: InferenceBook) -> int:
    return sum(book.accounts.balances.values()) + book.total_escrow() + book.total_pending_fees()


def make_book() -> InferenceBook:
    parts = {a: ParticipantRecord(a, w, status=Status.ACTIVE) for a, w in WEIGHTS.items()}
    return InferenceBook(DictAccounts({CLIENT: 10_000_000}), parts, expiry_blocks=50)


def run(book: InferenceBook, i: int, ta: str = "p0") -> bytes:
    ex = book.expected_executor(iid(i), 0, ta)
    book.start(
        inference_id=iid(i),
        requester=CLIENT,
        transport_agent=ta,
        executor=ex,
        attempt=0,
        prompt_hash=b"h",
        prompt_tokens=7,
        max_tokens=13,
        max_escrow=10**9,
        price_per_token=3,
        seed=i,
        height=1,
    )
    book.finish(
        inference_id=iid(i),
        executor=ex,
        completion_tokens=11,
        finish_reason="stop",
        response_hash=b"r",
        artifact_hash=b"a",
        height=2,
    )
    return iid(i)


# --- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_largest_remainder_is_exact_and_proportional(seed: int) -> None:
    rng = random.Random(seed)
    weights = {f"k{i}": rng.randrange(0, 1000) for i in range(rng.randrange(1, 30))}
    weights["k0"] = 1 + weights["k0"]
    total = rng.randrange(0, 10**9)
    out = st.split_largest_remainder(total, weights)
    assert sum(out.values()) == total
    wsum = sum(weights.values())
    for k, w in weights.items():
        assert abs(out[k] - total * w / wsum) < 1.0


def test_capped_weights_never_exceed_the_share_after_redistribution() -> None:
    counts = {"big": 1000, "mid": 400, "a": 100, "b": 100, "c": 100, "d": 100}
    out = st.capped_weights(counts, 0.25)
    total = sum(out.values())
    assert all(4 * w <= total for w in out.values())
    assert out["a"] == 100 and out["big"] == out["mid"]  # both capped at the same level
    # a single pass (cap at 25% of the original total) would leave "big" above 25%
    naive = {k: min(v, int(0.25 * sum(counts.values()))) for k, v in counts.items()}
    assert 4 * naive["big"] > sum(naive.values())


def test_capped_weights_untouched_when_nobody_is_over() -> None:
    counts = {f"p{i}": 100 + i for i in range(10)}
    assert st.capped_weights(counts, 0.25) == counts


def test_capped_weights_with_too_few_participants_flattens() -> None:
    assert st.capped_weights({"a": 10, "b": 30}, 0.25) == {"a": 10, "b": 10}


def test_epoch_weights_excludes_previous_invalids() -> None:
    out = st.epoch_weights({"a": 10, "b": 10, "c": 10, "d": 10, "e": 10}, {"c"}, 0.25)
    assert out["c"] == 0 and out["a"] == 10


def test_binomial_tail_matches_exact_sums() -> None:
    from math import comb

    n, p = 30, 0.1
    for k in (0, 1, 3, 7, 30):
        exact = sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert st.binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-9)
    assert st.binomial_tail(31, 30, 0.1) == 0.0


def test_duty_test_allows_a_few_misses_but_not_many() -> None:
    assert not st.duty_forfeits(0, 100)[0]
    assert not st.duty_forfeits(12, 100)[0]  # 12% misses: plausibly within the 10% allowance
    assert st.duty_forfeits(25, 100)[0]
    assert st.duty_forfeits(100, 100)[0]
    assert not st.duty_forfeits(0, 0)[0]


# --- duty ------------------------------------------------------------------------------------


def snapshot(requests: int = 50) -> st.EpochSnapshot:
    return st.EpochSnapshot(0, WEIGHTS, dict.fromkeys(WEIGHTS, 0), requests)


def test_required_set_matches_must_validate_and_skips_own() -> None:
    book = make_book()
    ids = [run(book, i) for i in range(40)]
    snap = snapshot()
    req = st.required_validations("p1", seed_of("p1"), book.records.values(), snap)
    for i in ids:
        rec = book.records[i]
        primary = vs.primary_validator(i, rec.finish_block_hash, WEIGHTS, rec.executor)
        expected = rec.executor != "p1" and (
            primary == "p1"
            or vs.must_validate(
                seed=seed_of("p1"),
                inference_id=i,
                executor_reputation=0,
                requests_per_epoch=50,
                validator_weight=200,
                total_weight=1000,
                executor_weight=WEIGHTS[rec.executor],
            )
        )
        assert (i in req) == expected
    assert req  # with reputation 0 and few requests most inferences need checks


def test_every_newcomer_inference_has_a_required_check() -> None:
    """Independent secret draws alone leave ~30% of a newcomer's inferences unchecked with three
    validators; the primary validator closes the gap (and only for reputation 0)."""
    book = make_book()
    ids = [run(book, i) for i in range(300)]
    new = st.EpochSnapshot(0, WEIGHTS, dict.fromkeys(WEIGHTS, 0), 50)
    covered = set().union(
        *(st.required_validations(v, seed_of(v), book.records.values(), new) for v in WEIGHTS)
    )
    assert covered == set(ids)
    secret_only = sum(
        any(
            vs.must_validate(
                seed=seed_of(v),
                inference_id=i,
                executor_reputation=0,
                requests_per_epoch=50,
                validator_weight=WEIGHTS[v],
                total_weight=1000,
                executor_weight=WEIGHTS[book.records[i].executor],
            )
            for v in WEIGHTS
            if v != book.records[i].executor
        )
        for i in ids
    )
    assert secret_only < 0.85 * len(ids)  # precondition: the gap the primary closes is real
    trusted = st.EpochSnapshot(0, WEIGHTS, dict.fromkeys(WEIGHTS, 100), 20_000)
    some = set().union(
        *(st.required_validations(v, seed_of(v), book.records.values(), trusted) for v in WEIGHTS)
    )
    assert len(some) < 0.2 * len(ids)  # at reputation 100 no primary: ~1-2% sampled


def test_lazy_validator_forfeits_and_diligent_one_does_not() -> None:
    book = make_book()
    for i in range(60):
        run(book, i)
    snap = snapshot()
    recs = list(book.records.values())
    for v in ("p2", "p3"):
        for i in st.required_validations(v, seed_of(v), recs, snap):
            book.validation(inference_id=i, validator=v, passed=True, height=3)
    duties = {
        v: st.assess_duty(
            v,
            seed=seed_of(v),
            commitment=vs.seed_commitment(seed_of(v)),
            records=recs,
            snapshot=snap,
        )
        for v in WEIGHTS
    }
    assert not duties["p2"].forfeits and duties["p2"].missed == 0 and duties["p2"].required > 0
    assert duties["p0"].forfeits and duties["p0"].done == 0  # skipped everything
    # a wrong reveal forfeits even with perfect work
    bad = st.assess_duty(
        "p2",
        seed=b"x" * 32,
        commitment=vs.seed_commitment(seed_of("p2")),
        records=recs,
        snapshot=snap,
    )
    assert bad.forfeits and not bad.revealed


# --- settlement ------------------------------------------------------------------------------


def test_settlement_arithmetic_and_supply_conservation() -> None:
    book = make_book()
    ids = [run(book, i, ta="p0" if i % 2 else "p1") for i in range(40)]
    recs = list(book.records.values())
    # every non-executor validates everything; p3 fails one of p2's inferences -> vote
    target = next(i for i in ids if book.records[i].executor == "p2")
    held = next(i for i in ids if book.records[i].executor == "p1")
    for i in ids:
        rec = book.records[i]
        for v in WEIGHTS:
            if v == rec.executor or rec.status is InferenceStatus.INVALIDATED:
                continue
            if i == held and v != "p0":
                continue
            book.validation(
                inference_id=i,
                validator=v,
                passed=not (i in (target, held) and v in ("p3", "p0")),
                height=3,
            )
    book.vote(inference_id=target, voter="p3", valid=False, height=4)  # p0+p3: 500 of 700
    assert book.records[target].status is InferenceStatus.INVALIDATED
    assert book.records[held].status is InferenceStatus.VOTING
    book.participants["p2"].status = Status.INVALID  # as the status rule would, after more fails
    before = supply(book)
    snap = snapshot()
    duties = {
        v: st.assess_duty(
            v,
            seed=seed_of(v),
            commitment=vs.seed_commitment(seed_of(v)),
            records=recs,
            snapshot=snap,
        )
        for v in ("p0", "p1", "p2")  # p3 never reveals
    }
    params = st.SettlementParams(reward_per_epoch=1_000_003, validator_fee_share_bps=1000)
    s = st.settle_epoch(
        epoch=0, participants=book.participants, records=recs, duties=duties, params=params
    )
    st.apply_settlement(s, book.accounts, book.participants)
    after = supply(book)
    assert after == before + s.minted - s.burned
    assert s.minted == 1_000_003
    # INVALID p2: no mint, no fees; its fees went back to the client
    p2 = s.participants["p2"]
    assert p2.paid == 0 and p2.refunded_fees > 0 and s.refunds[CLIENT] == p2.refunded_fees
    # p3 did not reveal: its mint share burned, its executor fees paid
    p3 = s.participants["p3"]
    assert p3.mint == 0 and p3.executor_fees > 0 and p3.burned >= 1_000_003 * 400 // 1000
    # largest remainder: 100000.3, 200000.6, 300000.9, 400001.2 -> the .9 and .6 get +1
    assert (s.participants["p0"].mint, s.participants["p1"].mint) == (100_000, 200_001)
    # the disputed inference is held, its cost still pending
    assert held in s.held_ids and book.participants["p1"].pending_fees == book.records[held].cost
    # validators got 10% of validated costs they passed
    assert s.participants["p0"].validator_fees > 0
    # reputations and next group
    assert book.participants["p2"].epochs_active == 0 and s.excluded_next == {"p2"}
    assert book.participants["p0"].epochs_active == 1
    assert book.participants["p3"].epochs_active == 0  # missed duty: max(0, 0 - 1)
    assert book.participants["p0"].status is Status.ACTIVE
    assert book.participants["p2"].status is Status.RAMPING  # excluded by weight, not status


def test_settlement_rejects_records_that_do_not_match_the_book() -> None:
    book = make_book()
    i = run(book, 0)
    rec = book.records[i]
    book.participants[rec.executor].pending_fees = 0
    s = st.settle_epoch(
        epoch=0,
        participants=book.participants,
        records=[rec],
        duties={},
        params=st.SettlementParams(reward_per_epoch=0),
    )
    with pytest.raises(ValueError):
        st.apply_settlement(s, book.accounts, book.participants)


def test_duty_fraction_prorates_below_ninety_percent() -> None:
    def duty(required: int, done: int) -> st.DutyResult:
        forfeits, p = st.duty_forfeits(required - done, required)
        return st.DutyResult("v", True, required, done, p, forfeits)

    assert st.duty_fraction(duty(10, 10), 0.1) == (1, 1)
    assert st.duty_fraction(duty(10, 9), 0.1) == (1, 1)
    assert st.duty_fraction(duty(0, 0), 0.1) == (1, 1)
    one_skipped = duty(1, 0)
    assert not one_skipped.forfeits  # the binomial test cannot see a single skipped check...
    assert st.duty_fraction(one_skipped, 0.1) == (0, 1)  # ...the pro-rata rule can
    assert st.duty_fraction(duty(20, 15), 0.1) == (15, 18)


def test_lazy_validator_below_test_power_keeps_no_mint() -> None:
    book = make_book()
    parts = book.participants
    duties = {a: st.DutyResult(a, True, 0, 0, 1.0, False) for a in parts}
    duties["p1"] = st.DutyResult("p1", True, 2, 0, 0.01, False)  # skipped both, not significant
    params = st.SettlementParams(reward_per_epoch=1000)
    s = st.settle_epoch(epoch=0, participants=parts, records=[], duties=duties, params=params)
    assert s.participants["p1"].mint == 0 and s.participants["p1"].burned == 200
    assert s.participants["p0"].mint == 100 and s.burned == 200
    lax = st.SettlementParams(reward_per_epoch=1000, prorate_duty=False)
    s2 = st.settle_epoch(epoch=0, participants=parts, records=[], duties=duties, params=lax)
    assert s2.participants["p1"].mint == 200


def test_one_confirmed_invalidation_forfeits_the_epoch_but_not_the_next() -> None:
    """DESIGN §4: the executor of an invalidated inference loses all its rewards of that epoch
    (its other fees go back to their clients, its mint burns, its reputation resets) but, not
    being INVALID, is not excluded from the next epoch group."""
    book = make_book()
    ids = [run(book, i, ta="p0" if i % 2 else "p1") for i in range(40)]
    recs = list(book.records.values())
    by_p2 = [i for i in ids if book.records[i].executor == "p2"]
    assert len(by_p2) >= 2  # precondition: one invalidated, at least one honest-looking
    book.validation(inference_id=by_p2[0], validator="p3", passed=False, height=3)
    book.vote(inference_id=by_p2[0], voter="p1", valid=False, height=4)  # p1+p3: 600 of 700
    assert book.records[by_p2[0]].status is InferenceStatus.INVALIDATED
    assert book.participants["p2"].status is not Status.INVALID  # one strike is not INVALID
    duties = {
        v: st.DutyResult(v, True, 0, 0, 1.0, False) for v in WEIGHTS
    }  # every duty met: only the invalidation decides
    before = supply(book)
    params = st.SettlementParams(reward_per_epoch=1_000_000, validator_fee_share_bps=1000)
    s = st.settle_epoch(
        epoch=0,
        participants=book.participants,
        records=recs,
        duties=duties,
        params=params,
        invalidated={"p2"},
    )
    st.apply_settlement(s, book.accounts, book.participants)
    p2 = s.participants["p2"]
    assert p2.forfeited and not p2.invalid
    assert p2.paid == 0 and p2.burned == 1_000_000 * 300 // 1000
    rest = sum(book.records[i].cost for i in by_p2[1:])
    assert p2.refunded_fees == rest and s.refunds[CLIENT] == rest
    assert "p2" not in s.excluded_next
    assert book.participants["p2"].epochs_active == 0
    assert s.participants["p0"].mint > 0 and not s.participants["p0"].forfeited
    assert supply(book) == before + s.minted - s.burned


def test_caught_in_names_invalidated_executors_and_convicted_transport_agents() -> None:
    from dataclasses import replace

    from gonka_ray.protocol.lifecycle import InferenceRecord

    base = InferenceRecord(b"i", "c", "ta", "ex", 0, b"h", 10, 20, 1, 30, 1, 1)
    assert st.caught_in([base]) == frozenset()
    assert st.caught_in([replace(base, status=InferenceStatus.INVALIDATED)]) == {"ex"}
    assert st.caught_in([replace(base, ta_convicted=True)]) == {"ta"}
    both = replace(base, status=InferenceStatus.INVALIDATED, ta_convicted=True)
    assert st.caught_in([both]) == {"ex", "ta"}


def test_a_caught_participant_sits_out_long_enough_to_forgo_32_inferences() -> None:
    from gonka_ray.protocol.versions import RULES

    v3, v4 = RULES[3], RULES[4]
    # v3: four epochs whatever the traffic
    assert st.sit_out_epochs(v3, 1_000, 1, 1_000) == 4
    # v4: one inference per epoch expected -> the forfeited epoch and 31 more
    assert st.sit_out_epochs(v4, 1_000, 1, 1_000) == 31
    assert st.sit_out_epochs(v4, 1_000, 3, 1_000) == 10  # ceil(32 / 3) - 1
    # busy: 10 per epoch -> ceil(3.2) - 1 = 3, but never below v3's four
    assert st.sit_out_epochs(v4, 10_000, 1, 1_000) == 4
    # nearly idle: capped at 64 epochs; no traffic at all: the floor
    assert st.sit_out_epochs(v4, 10, 1, 1_000) == 64
    assert st.sit_out_epochs(v4, 0, 1, 1_000) == 4
    assert st.sit_out_epochs(v4, 1_000, 0, 1_000) == 4
