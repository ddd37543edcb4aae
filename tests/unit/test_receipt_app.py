"""Receipts on the ledger (protocol v3): every pass carries one at the validator's positions;
its executor may challenge it; judges decide; a conviction forfeits the next settled epoch."""

from __future__ import annotations

from gonka_ray import wire
from gonka_ray.ledger import receipt_app
from gonka_ray.ledger.state import TxContext
from gonka_ray.protocol.receipts import Outcome
from tests.ledger_harness import BY_ADDR, Chain, receipt_at


def _passed(chain: Chain) -> tuple[bytes, str, str, list[str]]:
    """A finished inference with one pass; its id, executor, validator and the other two."""
    iid, executor = chain.finished()
    validator, *judges = [a for a in BY_ADDR if a != executor]
    assert chain.block(chain.validation_tx(iid, BY_ADDR[validator], True)) == [(True, "")]
    return iid, executor, validator, judges


def _challenge(chain: Chain, iid: bytes, signer: str, validator: str) -> list:
    msg = dict(inference_id=iid, validator=validator)
    return chain.block(chain.tx(BY_ADDR[signer], wire.ReceiptChallenge, **msg))


def _ballot(chain: Chain, iid: bytes, judge: str, validator: str, holds: bool) -> list:
    msg = dict(inference_id=iid, validator=validator, holds=holds)
    return chain.block(chain.tx(BY_ADDR[judge], wire.ReceiptVote, **msg))


def _convicted(chain: Chain) -> frozenset[str]:
    return receipt_app.take_convicted(TxContext(chain.sm, height=chain.sm.height, block_hash=b""))


def test_a_pass_must_carry_a_receipt_at_the_validators_positions() -> None:
    # Guard: receipt_app.store. Without it a validator passes without naming anything only a
    # model run yields, and nothing it submits can be audited.
    chain = Chain()
    iid, executor = chain.finished(tokens=20)
    validator = next(a for a in BY_ADDR if a != executor)
    n_out = chain.record(iid).completion_tokens
    fields = dict(
        inference_id=iid, passed=True, replay_mismatches=0, similarity=1.0, logprob_deviation=0.0
    )
    bare = chain.tx(BY_ADDR[validator], wire.Validation, **fields)
    assert chain.block(bare) == [(False, "bad_receipt")]
    elsewhere = receipt_at(iid, executor, n_out)  # another's positions
    assert [e.position for e in elsewhere] != [e.position for e in receipt_at(iid, validator, 20)]
    tx = chain.tx(BY_ADDR[validator], wire.Validation, **fields, receipt=elsewhere)
    assert chain.block(tx) == [(False, "bad_receipt")]
    mine = receipt_at(iid, validator, n_out)
    tx = chain.tx(BY_ADDR[validator], wire.Validation, **fields, receipt=mine)
    assert chain.block(tx) == [(True, "")]
    stored = receipt_app.receipt_of(chain.sm.get, iid, validator)
    assert [e.position for e in stored] == [e.position for e in mine]
    # a failed check carries none
    judge = next(a for a in BY_ADDR if a not in (executor, validator))
    assert chain.block(chain.validation_tx(iid, BY_ADDR[judge], False)) == [(True, "")]
    assert receipt_app.receipt_of(chain.sm.get, iid, judge) is None


def test_only_the_executor_challenges_and_only_others_judge() -> None:
    chain = Chain()
    iid, executor, validator, judges = _passed(chain)
    assert _challenge(chain, iid, judges[0], validator) == [(False, "not_executor")]
    assert _challenge(chain, iid, executor, judges[0]) == [(False, "no_receipt")]
    assert _challenge(chain, iid, executor, validator) == [(True, "")]
    # one block (the dispute is open for the harness' 3 vote blocks)
    challenge = dict(inference_id=iid, validator=validator)
    assert chain.block(
        chain.tx(BY_ADDR[executor], wire.ReceiptChallenge, **challenge),
        *(
            chain.tx(BY_ADDR[party], wire.ReceiptVote, **challenge, holds=True)
            for party in (executor, validator)
        ),
        chain.tx(BY_ADDR[judges[0]], wire.ReceiptVote, **challenge, holds=False),
        chain.tx(BY_ADDR[judges[0]], wire.ReceiptVote, **challenge, holds=False),
    ) == [
        (False, "duplicate"),
        (False, "not_judge"),
        (False, "not_judge"),
        (True, ""),
        (False, "duplicate"),
    ]


def _judged(holds: bool) -> tuple[Chain, bytes, str, str]:
    """A pass challenged by its executor and judged ``holds`` by both other participants."""
    chain = Chain()
    iid, executor, validator, judges = _passed(chain)
    _challenge(chain, iid, executor, validator)
    for j in judges:
        _ballot(chain, iid, j, validator, holds)
    return chain, iid, executor, validator


def test_a_broken_receipt_convicts_the_validator_and_a_sound_one_the_challenger() -> None:
    # Guards: receipt_app's vote. Broken (the judges' prefills disagree with it): the validator
    # passed without running the check. Upheld by judges: the executor lied about its own ranks.
    chain, iid, executor, validator = _judged(holds=False)
    assert receipt_app.dispute_of(chain.sm.get, iid, validator).outcome is Outcome.BROKEN
    # its other receipts cannot be challenged until the settlement forfeits it
    other, ex2 = chain.finished()
    while ex2 == validator:
        other, ex2 = chain.finished()
    assert chain.block(chain.validation_tx(other, BY_ADDR[validator], True)) == [(True, "")]
    assert _challenge(chain, other, ex2, validator) == [(False, "validator_under_challenge")]
    assert _convicted(chain) == {validator}

    chain, iid, executor, validator = _judged(holds=True)
    assert receipt_app.dispute_of(chain.sm.get, iid, validator).outcome is Outcome.UPHELD
    assert _convicted(chain) == {executor}


def test_a_challenge_nobody_judged_convicts_nobody_at_its_deadline() -> None:
    chain = Chain()
    iid, executor, validator, _ = _passed(chain)
    _challenge(chain, iid, executor, validator)
    for _ in range(4):  # vote_blocks = 3 in the harness
        chain.block()
    assert receipt_app.dispute_of(chain.sm.get, iid, validator).outcome is Outcome.UNJUDGED
    assert _convicted(chain) == frozenset()


def test_a_convicted_validator_forfeits_the_epoch_being_settled() -> None:
    # Guard: epoch_app's settlement takes receipt_app.take_convicted into its forfeits. Without
    # it a broken receipt cost the validator nothing.
    from gonka_ray.ledger import epoch_app
    from gonka_ray.protocol import epochs
    from tests.unit.test_epoch_app import ADDR, EPOCH, KEYS, NAME, commit_all, reveal_all
    from tests.unit.test_epoch_app import Chain as EpochChain

    chain = EpochChain()
    commit_all(chain, 0)
    before = chain.money()
    iid, ex = chain.run_inference(ta="p0")
    validator, *judges = [n for n in KEYS if n != ex]
    assert chain.validate(validator, iid) == [(True, "")]
    key = dict(inference_id=iid, validator=ADDR[validator])
    assert chain.block(chain.tx(ex, wire.ReceiptChallenge, **key)) == [(True, "")]
    for j in judges:
        assert chain.block(chain.tx(j, wire.ReceiptVote, **key, holds=False)) == [(True, "")]
    chain.until(epochs.epoch_start(1, EPOCH))
    reveal_all(chain, 0)
    chain.until(epochs.epoch_start(2, EPOCH))
    rows = {NAME[r.address]: r for r in epoch_app.settlement_summary(chain.sm, 0).rows}
    assert rows[validator].forfeited and rows[validator].paid == 0
    assert not any(rows[n].forfeited for n in KEYS if n != validator)
    s = epoch_app.settlement_summary(chain.sm, 0)
    assert chain.money() == before + s.minted - s.burned
