"""The inference lifecycle: transitions, money conservation and the exploit guards."""

from __future__ import annotations

import copy
import hashlib
import random

import pytest

from gonka_ray.exceptions import TxRejected
from gonka_ray.protocol import versions
from gonka_ray.protocol.lifecycle import InferenceBook, InferenceStatus, ParticipantRecord
from gonka_ray.protocol.reputation import Status

PRICE = 2
CLIENT = "client"


class DictAccounts:
    def __init__(self, balances: dict[str, int]) -> None:
        self.balances = dict(balances)

    def balance(self, address: str) -> int:
        return self.balances.get(address, 0)

    def add(self, address: str, amount: int) -> None:
        new = self.balances.get(address, 0) + amount
        assert new >= 0, "balance went negative"
        self.balances[address] = new


def iid(i: int) -> bytes:
    return hashlib.sha256(b"req-%d" % i).digest()


@pytest.fixture
def book() -> InferenceBook:
    parts = {
        a: ParticipantRecord(a, w) for a, w in {"p0": 100, "p1": 100, "p2": 100, "p3": 100}.items()
    }
    return InferenceBook(DictAccounts({CLIENT: 100_000}), parts, expiry_blocks=10, vote_blocks=5)


def total_money(book: InferenceBook) -> int:
    return sum(book.accounts.balances.values()) + book.total_escrow() + book.total_pending_fees()


def start(
    book: InferenceBook, i: int = 0, ta: str = "p0", attempt: int = 0, height: int = 1, **over
):
    kw = dict(
        inference_id=iid(i),
        requester=CLIENT,
        transport_agent=ta,
        executor=book.expected_executor(iid(i), attempt, ta),
        attempt=attempt,
        prompt_hash=b"h",
        prompt_tokens=10,
        max_tokens=20,
        max_escrow=10_000,
        price_per_token=PRICE,
        seed=1,
        height=height,
    )
    kw.update(over)
    return book.start(**kw)


def finish(book: InferenceBook, rec, tokens: int = 5, height: int = 2, prompt_tokens=None):
    """The executor's Finish (``prompt_tokens``: its own count; None: the TA's)."""
    return book.finish(
        inference_id=rec.inference_id,
        executor=rec.executor,
        completion_tokens=tokens,
        finish_reason="stop",
        response_hash=b"r",
        artifact_hash=b"a",
        height=height,
        prompt_tokens=prompt_tokens,
    )


def others(book: InferenceBook, rec) -> list[str]:
    return [a for a in book.participants if a != rec.executor]


def test_happy_path_moves_money_exactly(book) -> None:
    before = total_money(book)
    rec = start(book)
    assert book.accounts.balance(CLIENT) == 100_000 - (10 + 20) * PRICE
    finish(book, rec, tokens=5)
    assert book.accounts.balance(CLIENT) == 100_000 - (10 + 5) * PRICE
    assert book.participants[rec.executor].pending_fees == 15 * PRICE
    book.delivered(inference_id=rec.inference_id, transport_agent="p0", output_hash=b"o")
    assert total_money(book) == before


def test_ta_cannot_steer_or_pick_itself(book) -> None:
    rec_exec = book.expected_executor(iid(1), 0, "p0")
    wrong = next(a for a in book.participants if a not in (rec_exec,))
    with pytest.raises(TxRejected) as info:
        start(book, 1, executor=wrong)
    assert info.value.reason == "wrong_executor"
    for i in range(50):
        assert book.expected_executor(iid(i), 0, "p0") != "p0"
    assert book.accounts.balance(CLIENT) == 100_000  # nothing escrowed on rejection


def test_only_selected_executor_finishes_and_only_once(book) -> None:
    rec = start(book)
    intruder = others(book, rec)[0]
    with pytest.raises(TxRejected, match="selected executor"):
        book.finish(
            inference_id=rec.inference_id,
            executor=intruder,
            completion_tokens=1,
            finish_reason="stop",
            response_hash=b"",
            artifact_hash=b"",
            height=2,
        )
    finish(book, rec)
    with pytest.raises(TxRejected):
        finish(book, rec)


def test_escrow_limits_and_balance(book) -> None:
    with pytest.raises(TxRejected) as info:
        start(book, 2, max_escrow=10)
    assert info.value.reason == "escrow_above_limit"
    with pytest.raises(TxRejected) as info:
        start(book, 3, prompt_tokens=10**7, max_escrow=10**9)
    assert info.value.reason == "insufficient_balance"
    with pytest.raises(TxRejected) as info:
        start(book, 4, prompt_tokens=-5)
    assert info.value.reason == "bad_amount"


def test_retry_with_higher_attempt_keeps_escrow(book) -> None:
    rec = start(book)
    bal = book.accounts.balance(CLIENT)
    start(book, 0, attempt=1)
    assert rec.attempt == 1 and rec.executor == book.expected_executor(iid(0), 1, "p0")
    assert book.accounts.balance(CLIENT) == bal
    with pytest.raises(TxRejected):
        start(book, 0, attempt=1)  # replayed attempt


def test_expiry_refunds_in_full_once(book) -> None:
    rec = start(book, height=1)
    assert book.advance(5) == []
    assert book.advance(11) == [rec]
    assert rec.status is InferenceStatus.EXPIRED and book.accounts.balance(CLIENT) == 100_000
    assert book.advance(50) == []  # no double refund
    with pytest.raises(TxRejected):
        finish(book, rec)


def test_self_validation_and_duplicates_are_rejected(book) -> None:
    rec = finish(book, start(book))
    with pytest.raises(TxRejected) as info:
        book.validation(
            inference_id=rec.inference_id, validator=rec.executor, passed=True, height=3
        )
    assert info.value.reason == "self_validation"
    v = others(book, rec)[0]
    book.validation(inference_id=rec.inference_id, validator=v, passed=True, height=3)
    with pytest.raises(TxRejected) as info:
        book.validation(inference_id=rec.inference_id, validator=v, passed=True, height=3)
    assert info.value.reason == "duplicate"
    with pytest.raises(TxRejected):
        book.validation(inference_id=rec.inference_id, validator="outsider", passed=True, height=3)


def test_failed_check_vote_invalidates_refunds_and_resets(book) -> None:
    before = total_money(book)
    rec = finish(book, start(book))
    ex = book.participants[rec.executor]
    ex.epochs_active = 12
    accuser, v2, v3 = others(book, rec)
    book.validation(inference_id=rec.inference_id, validator=accuser, passed=False, height=3)
    assert rec.status is InferenceStatus.VOTING
    with pytest.raises(TxRejected):
        book.vote(inference_id=rec.inference_id, voter=rec.executor, valid=True, height=3)
    with pytest.raises(TxRejected):
        book.vote(inference_id=rec.inference_id, voter=accuser, valid=False, height=3)
    book.vote(inference_id=rec.inference_id, voter=v2, valid=False, height=3)
    assert rec.status is InferenceStatus.INVALIDATED  # 2 of 3 voters' weight
    assert book.accounts.balance(CLIENT) == 100_000 - 0  # paid cost refunded, escrow released
    assert ex.pending_fees == 0 and ex.epochs_active == 0 and ex.consecutive_invalid == 1
    with pytest.raises(TxRejected):
        book.vote(inference_id=rec.inference_id, voter=v3, valid=False, height=3)  # closed
    with pytest.raises(TxRejected) as info:
        book.validation(inference_id=rec.inference_id, validator=v3, passed=False, height=3)
    assert info.value.reason == "not_validatable"  # no credit on an invalidated inference
    assert total_money(book) == before


def test_upheld_vote_pays_executor_and_marks_accuser(book) -> None:
    rec = finish(book, start(book))
    accuser, v2, _ = others(book, rec)
    book.validation(inference_id=rec.inference_id, validator=accuser, passed=False, height=3)
    book.vote(inference_id=rec.inference_id, voter=v2, valid=True, height=3)
    assert rec.status is InferenceStatus.VOTING
    book.advance(3 + 5)  # deadline: 1 valid vs 1 invalid (equal weight) -> upheld
    assert rec.status is InferenceStatus.VALIDATED
    assert book.participants[accuser].false_accusations == 1
    assert book.participants[rec.executor].pending_fees == rec.cost
    assert book.participants[rec.executor].consecutive_invalid == 0


@pytest.mark.parametrize("version", [4, 5])
def test_an_accusation_nobody_else_voted_on_lapses_at_the_deadline_from_v5(version) -> None:
    # Guards votes.tally's v5 quorum: under v4 the accuser's own ballot convicted an executor
    # whenever no other judge voted by the deadline (seen in the crash-fault run: an honest
    # executor invalidated on one failed payload fetch). From v5 the invalid side needs more
    # than a third of the eligible weight; the lapsed vote pays the executor and does not
    # charge the accuser (nobody refuted it).
    parts = {a: ParticipantRecord(a, 100) for a in ("p0", "p1", "p2", "p3")}
    book = InferenceBook(
        DictAccounts({CLIENT: 100_000}),
        parts,
        expiry_blocks=10,
        vote_blocks=5,
        rules_at=lambda _h: versions.RULES[version],
    )
    before = total_money(book)
    rec = finish(book, start(book))
    accuser = others(book, rec)[0]
    book.validation(inference_id=rec.inference_id, validator=accuser, passed=False, height=3)
    book.advance(3 + 5)
    ex = book.participants[rec.executor]
    if version == 4:
        assert rec.status is InferenceStatus.INVALIDATED and ex.consecutive_invalid == 1
    else:
        assert rec.status is InferenceStatus.VALIDATED and ex.pending_fees == rec.cost
        assert ex.consecutive_invalid == 0 and ex.epochs_active == parts[rec.executor].epochs_active
        assert book.participants[accuser].false_accusations == 0
    assert total_money(book) == before
    # v5: a new accusation on the inference the lapsed vote cleared opens a new vote, without
    # old ballots (v4 kept them: their voters could not vote again)
    rec0 = finish(book, start(book, 2, height=4), height=5)
    a0, w0, x0 = others(book, rec0)
    book.validation(inference_id=rec0.inference_id, validator=a0, passed=False, height=6)
    book.vote(inference_id=rec0.inference_id, voter=w0, valid=True, height=6)
    book.advance(6 + 5)  # 1 valid vs 1 invalid: upheld
    assert rec0.status is InferenceStatus.VALIDATED
    book.validation(inference_id=rec0.inference_id, validator=x0, passed=False, height=12)
    assert rec0.status is InferenceStatus.VOTING
    assert rec0.votes == ({} if version == 5 else {w0: True})
    # with a second judge agreeing (2 of 3 eligible, > 1/3) the deadline convicts under v5 too
    rec2 = finish(book, start(book, 1, height=10), height=11)
    a2, w2, _ = others(book, rec2)
    book.validation(inference_id=rec2.inference_id, validator=a2, passed=False, height=12)
    book.vote(inference_id=rec2.inference_id, voter=w2, valid=False, height=12)
    assert rec2.status is InferenceStatus.INVALIDATED


def test_a_prompt_vote_is_judged_apart_from_an_accusation_made_while_it_was_open(book) -> None:
    # v3: the executor's count (10) contradicts the TA's claim (40): the Finish opens a vote in
    # which the TA and the executor are parties. A validator's failed check made meanwhile is
    # not lost: when the prompt vote closes (upholding the count, convicting the TA), it opens
    # its own vote, and the prompt vote's structural ballots do not count in it.
    rec = finish(book, start(book, prompt_tokens=40), prompt_tokens=10)
    assert rec.status is InferenceStatus.VOTING and rec.prompt_vote and rec.accuser == "p0"
    assert rec.prompt_tokens == 10
    judges = [a for a in book.participants if a not in (rec.executor, "p0")]
    with pytest.raises(TxRejected):
        book.vote(inference_id=rec.inference_id, voter="p0", valid=False, height=3)
    book.validation(inference_id=rec.inference_id, validator=judges[0], passed=False, height=3)
    book.vote(inference_id=rec.inference_id, voter=judges[0], valid=True, height=3)
    assert rec.status is InferenceStatus.VOTING  # half of the judges' weight: not yet
    book.vote(inference_id=rec.inference_id, voter=judges[1], valid=True, height=3)
    assert rec.ta_convicted and not rec.prompt_vote
    assert rec.status is InferenceStatus.VOTING and rec.accuser == judges[0] and rec.votes == {}
    book.vote(inference_id=rec.inference_id, voter=judges[1], valid=False, height=4)
    assert rec.status is InferenceStatus.INVALIDATED  # accuser + judge: 2 of 3 voters' weight
    assert book.participants[rec.executor].pending_fees == 0


def test_five_invalidations_in_a_row_kick_out(book) -> None:
    kicked: list[str] = []
    book.on_invalid = kicked.append
    target = "p1"
    n = 0
    i = 0
    while n < 5:
        i += 1
        if book.expected_executor(iid(i), 0, "p0") != target:
            continue
        rec = finish(book, start(book, i))
        a, b, _ = others(book, rec)
        book.validation(inference_id=rec.inference_id, validator=a, passed=False, height=3)
        book.vote(inference_id=rec.inference_id, voter=b, valid=False, height=3)
        n += 1
    assert book.participants[target].status is Status.INVALID and kicked == [target]
    assert all(book.expected_executor(iid(j), 0, "p0") != target for j in range(200))
    with pytest.raises(TxRejected) as info:  # a TA naming the INVALID executor anyway
        start(book, 10_000, executor=target)
    assert info.value.reason == "wrong_executor"


def test_a_start_drawn_just_before_its_executor_turned_invalid_commits_within_the_grace() -> None:
    # A TA draws from the participants it last saw; if the drawn executor is made INVALID before
    # the Start commits, the Start names a draw the ledger no longer makes. It must still commit
    # for draw_grace_blocks (the client already has the answer) and never after.
    parts = {a: ParticipantRecord(a, 100) for a in ("p0", "p1", "p2", "p3")}
    book = InferenceBook(
        DictAccounts({CLIENT: 100_000}),
        parts,
        expiry_blocks=50,
        draw_sets={},
        draw_grace_blocks=8,
    )
    book.advance(1)  # the ledger notes the eligible set after every block
    target = "p2"
    ids = [i for i in range(1, 400) if book.expected_executor(iid(i), 0, "p0") == target]
    parts[target].status = Status.INVALID  # a vote in block 2 invalidated it
    rec = start(book, ids[0], executor=target, height=2)  # same block: the set before it
    assert rec.executor == target
    book.advance(2)  # the set without p2 is now current; the old one retired at height 2
    never = next(a for a in ("p1", "p3") if a != book.expected_executor(iid(ids[1]), 0, "p0"))
    with pytest.raises(TxRejected) as info:  # a draw under no recent set is still refused
        start(book, ids[1], executor=never, height=3)
    assert info.value.reason == "wrong_executor"
    assert start(book, ids[1], executor=target, height=10).executor == target  # 8 blocks on
    book.advance(11)
    with pytest.raises(TxRejected) as info:
        start(book, ids[2], executor=target, height=11)
    assert info.value.reason == "wrong_executor"
    assert list(book.draw_sets) == [-1]  # the retired set is forgotten after the grace


def test_random_schedule_conserves_money() -> None:
    rng = random.Random(7)
    parts = {f"p{i}": ParticipantRecord(f"p{i}", rng.randint(1, 300)) for i in range(5)}
    book = InferenceBook(DictAccounts({CLIENT: 10**6}), parts, expiry_blocks=8, vote_blocks=4)
    total = total_money(book)
    live: list = []
    for height in range(1, 400):
        op = rng.random()
        try:
            if op < 0.35:
                ta = rng.choice(list(parts))
                live.append(start(book, height, ta=ta, height=height))
            elif op < 0.6 and live:
                finish(book, rng.choice(live), tokens=rng.randint(0, 20), height=height)
            elif op < 0.8 and live:
                rec = rng.choice(live)
                book.validation(
                    inference_id=rec.inference_id,
                    validator=rng.choice(list(parts)),
                    passed=rng.random() < 0.7,
                    height=height,
                )
            elif live:
                rec = rng.choice(live)
                book.vote(
                    inference_id=rec.inference_id,
                    voter=rng.choice(list(parts)),
                    valid=rng.random() < 0.5,
                    height=height,
                )
        except TxRejected:
            pass
        book.advance(height)
        assert total_money(book) == total, f"money not conserved at height {height}"
        assert all(p.pending_fees >= 0 for p in parts.values())


class CopyingDict(dict):
    """A mapping that hands out copies, like a view over ledger tables: a change that is not
    written back is lost."""

    def __getitem__(self, key):
        return copy.deepcopy(super().__getitem__(key))

    def get(self, key, default=None):
        return copy.deepcopy(super().get(key, default))

    def values(self):
        return [copy.deepcopy(v) for v in super().values()]

    def items(self):
        return [(k, copy.deepcopy(v)) for k, v in super().items()]


def run_schedule(make_mapping) -> tuple:
    rng = random.Random(11)
    parts = make_mapping({f"p{i}": ParticipantRecord(f"p{i}", 100) for i in range(4)})
    book = InferenceBook(
        DictAccounts({CLIENT: 10**6}),
        parts,
        records=make_mapping({}),
        open_index=make_mapping({}),
        expiry_blocks=6,
        vote_blocks=3,
    )
    for height in range(1, 200):
        try:
            r = rng.random()
            if r < 0.4:
                start(book, height, ta=rng.choice(list(parts)), height=height)
            else:
                ids = sorted(dict.keys(book.records))
                if ids:
                    rec = book.records[rng.choice(ids)]
                    if r < 0.6:
                        finish(book, rec, tokens=rng.randint(0, 20), height=height)
                    elif r < 0.85:
                        book.validation(
                            inference_id=rec.inference_id,
                            validator=rng.choice(list(parts)),
                            passed=rng.random() < 0.5,
                            height=height,
                        )
                    else:
                        book.vote(
                            inference_id=rec.inference_id,
                            voter=rng.choice(list(parts)),
                            valid=rng.random() < 0.5,
                            height=height,
                        )
        except TxRejected:
            pass
        book.advance(height)
    statuses = sorted((r.inference_id, r.status, r.refunded) for r in book.records.values())
    people = sorted(
        (p.address, p.pending_fees, p.failed, p.checked, p.status) for p in parts.values()
    )
    return statuses, people, dict(book.accounts.balances)


def test_write_through_storage_matches_plain_dicts() -> None:
    assert run_schedule(dict) == run_schedule(CopyingDict)
