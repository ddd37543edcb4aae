"""Receipts on the ledger (protocol v3): every pass carries one, sealed to its executor; the
executor may challenge it, publishing it or (when it does not open) making the validator
reveal its key; the judges decide; a conviction forfeits the next settled epoch."""

from __future__ import annotations

from gonka_ray import wire
from gonka_ray.constants import RECEIPT_REVEAL_BLOCKS
from gonka_ray.ledger import receipt_app
from gonka_ray.ledger.state import TxContext
from gonka_ray.protocol import receipts
from gonka_ray.protocol.receipts import Entry, Outcome
from tests.ledger_harness import BY_ADDR, Chain

PASS = dict(passed=True, replay_mismatches=0, similarity=1.0, logprob_deviation=0.0)


def _passed(chain: Chain, tokens: int = 5) -> tuple[bytes, str, str, list[str]]:
    """A finished inference with one pass; its id, executor, validator and the other two."""
    iid, executor = chain.finished(tokens=tokens)
    validator, *judges = [a for a in BY_ADDR if a != executor]
    assert chain.block(chain.validation_tx(iid, BY_ADDR[validator], True)) == [(True, "")]
    return iid, executor, validator, judges


def _opened(chain: Chain, iid: bytes, executor: str, validator: str) -> tuple[Entry, ...]:
    sealed = receipt_app.sealed_of(chain.sm.get, iid, validator)
    entries = receipts.open_as_executor(BY_ADDR[executor], sealed, iid, validator)
    assert entries is not None
    return entries


def _challenge(chain: Chain, iid: bytes, signer: str, validator: str, entries=()) -> list:
    published = [wire.ReceiptEntry(e.position, e.token, e.logprob_micro) for e in entries]
    msg = dict(inference_id=iid, validator=validator, entries=published)
    return chain.block(chain.tx(BY_ADDR[signer], wire.ReceiptChallenge, **msg))


def _ballot(chain: Chain, iid: bytes, judge: str, validator: str, holds: bool) -> list:
    msg = dict(inference_id=iid, validator=validator, holds=holds)
    return chain.block(chain.tx(BY_ADDR[judge], wire.ReceiptVote, **msg))


def _outcome(chain: Chain, iid: bytes, validator: str) -> Outcome:
    return receipt_app.dispute_of(chain.sm.get, iid, validator).outcome


def _convicted(chain: Chain) -> frozenset[str]:
    return receipt_app.take_convicted(TxContext(chain.sm, height=chain.sm.height, block_hash=b""))


def test_a_pass_carries_a_receipt_only_its_executor_can_open() -> None:
    # Guards: receipt_app.store (a pass without a sealed receipt is refused) and the sealing
    # (the ledger holds a commitment and a box only the executor opens: another validator
    # cannot copy a receipt).
    chain = Chain()
    iid, executor = chain.finished(tokens=20)
    validator, other, _ = [a for a in BY_ADDR if a != executor]
    bare = chain.tx(BY_ADDR[validator], wire.Validation, inference_id=iid, **PASS)
    assert chain.block(bare) == [(False, "bad_receipt")]
    assert chain.block(chain.validation_tx(iid, BY_ADDR[validator], True)) == [(True, "")]
    sealed = receipt_app.sealed_of(chain.sm.get, iid, validator)
    entries = _opened(chain, iid, executor, validator)
    assert [e.position for e in entries] == list(receipts.positions(iid, validator, 20))
    assert receipts.open_as_executor(BY_ADDR[other], sealed, iid, validator) is None
    assert receipt_app.revealed_of(chain.sm.get, iid, validator) is None  # not public
    # a failed check carries none
    assert chain.block(chain.validation_tx(iid, BY_ADDR[other], False)) == [(True, "")]
    assert receipt_app.sealed_of(chain.sm.get, iid, other) is None


def test_only_the_executor_challenges_with_the_committed_receipt_and_only_others_judge() -> None:
    chain = Chain()
    iid, executor, validator, judges = _passed(chain)
    entries = _opened(chain, iid, executor, validator)
    assert _challenge(chain, iid, judges[0], validator, entries) == [(False, "not_executor")]
    assert _challenge(chain, iid, executor, judges[0], entries) == [(False, "no_receipt")]
    forged = (Entry(entries[0].position, entries[0].token + 1, -1), *entries[1:])
    assert _challenge(chain, iid, executor, validator, forged) == [(False, "not_the_receipt")]
    assert _challenge(chain, iid, executor, validator, entries) == [(True, "")]
    assert receipt_app.revealed_of(chain.sm.get, iid, validator) == entries  # published
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
    """A pass challenged (published) by its executor and judged ``holds`` by the other two."""
    chain = Chain()
    iid, executor, validator, judges = _passed(chain)
    _challenge(chain, iid, executor, validator, _opened(chain, iid, executor, validator))
    for j in judges:
        _ballot(chain, iid, j, validator, holds)
    return chain, iid, executor, validator


def test_a_broken_receipt_convicts_the_validator_and_a_sound_one_the_challenger() -> None:
    # Guards: receipt_app's vote. Broken (the judges' prefills disagree with it): the validator
    # passed without running the check. Upheld by judges: the executor lied about its own ranks.
    chain, iid, executor, validator = _judged(holds=False)
    assert _outcome(chain, iid, validator) is Outcome.BROKEN
    # its other receipts cannot be challenged until the settlement forfeits it
    other, ex2 = chain.finished()
    while ex2 == validator:
        other, ex2 = chain.finished()
    assert chain.block(chain.validation_tx(other, BY_ADDR[validator], True)) == [(True, "")]
    assert _challenge(chain, other, ex2, validator) == [(False, "validator_under_challenge")]
    assert _convicted(chain) == {validator}

    chain, iid, executor, validator = _judged(holds=True)
    assert _outcome(chain, iid, validator) is Outcome.UPHELD
    # a convicted challenger makes no more challenges until the settlement forfeits it
    other, ex2 = chain.finished()
    while ex2 != executor:
        other, ex2 = chain.finished()
    judge = next(a for a in BY_ADDR if a not in (executor, validator))
    assert chain.block(chain.validation_tx(other, BY_ADDR[judge], True)) == [(True, "")]
    assert _challenge(chain, other, executor, judge) == [(False, "challenger_convicted")]
    assert _convicted(chain) == {executor}


def test_a_receipt_that_does_not_open_must_be_revealed_by_its_validator() -> None:
    # Guard: receipt_app's reveal. A challenge without entries (the box did not open for the
    # executor) makes the validator reveal its one-time key; the ledger opens the box with it.
    # A sound box is then judged like any published receipt; a box that is not the committed
    # receipt, or no reveal in time, breaks it. Without it a validator could seal garbage and
    # never be audited.
    chain = Chain()
    iid, executor, validator, judges = _passed(chain)
    assert _challenge(chain, iid, executor, validator) == [(True, "")]
    assert _outcome(chain, iid, validator) is Outcome.AWAITING_REVEAL
    key = receipts.ephemeral_secret(BY_ADDR[validator].seed, iid)
    reveal = dict(inference_id=iid, secret=key)
    assert chain.block(chain.tx(BY_ADDR[judges[0]], wire.ReceiptReveal, **reveal)) == [
        (False, "no_reveal_due")  # only the challenged validator reveals
    ]
    assert chain.block(chain.tx(BY_ADDR[validator], wire.ReceiptReveal, **reveal)) == [(True, "")]
    assert _outcome(chain, iid, validator) is Outcome.OPEN
    assert receipt_app.revealed_of(chain.sm.get, iid, validator) == _opened(
        chain, iid, executor, validator
    )

    chain = Chain()  # the wrong key: the box is not the committed receipt
    iid, executor, validator, _ = _passed(chain)
    _challenge(chain, iid, executor, validator)
    wrong = dict(inference_id=iid, secret=b"\x07" * 32)
    assert chain.block(chain.tx(BY_ADDR[validator], wire.ReceiptReveal, **wrong)) == [(True, "")]
    assert _outcome(chain, iid, validator) is Outcome.BROKEN
    assert _convicted(chain) == {validator}

    chain = Chain()  # no reveal within the reveal window
    iid, executor, validator, _ = _passed(chain)
    _challenge(chain, iid, executor, validator)
    for _ in range(RECEIPT_REVEAL_BLOCKS - 1):
        chain.block()
    assert _outcome(chain, iid, validator) is Outcome.AWAITING_REVEAL  # a slow one is in time
    chain.block()
    chain.block()
    assert _outcome(chain, iid, validator) is Outcome.BROKEN
    assert _convicted(chain) == {validator}


def test_a_published_receipt_at_positions_not_the_validators_is_broken_at_once() -> None:
    chain = Chain()
    iid, executor = chain.finished(tokens=20)
    validator = next(a for a in BY_ADDR if a != executor)
    elsewhere = [Entry(p, 0, -1) for p in receipts.positions(iid, executor, 20)]
    assert [e.position for e in elsewhere] != list(receipts.positions(iid, validator, 20))
    sealed = receipts.seal(BY_ADDR[validator], BY_ADDR[executor].public_key, iid, elsewhere)
    fields = {
        "receipt_commitment": sealed.commitment,
        "receipt_key": sealed.ephemeral_public,
        "receipt_box": sealed.ciphertext,
    }
    tx = chain.tx(BY_ADDR[validator], wire.Validation, inference_id=iid, **PASS, **fields)
    assert chain.block(tx) == [(True, "")]  # the ledger cannot see inside the box
    assert _challenge(chain, iid, executor, validator, elsewhere) == [(True, "")]
    assert _outcome(chain, iid, validator) is Outcome.BROKEN


def test_a_challenge_nobody_judged_convicts_nobody_at_its_deadline() -> None:
    chain = Chain()
    iid, executor, validator, _ = _passed(chain)
    _challenge(chain, iid, executor, validator, _opened(chain, iid, executor, validator))
    for _ in range(4):  # vote_blocks = 3 in the harness
        chain.block()
    assert _outcome(chain, iid, validator) is Outcome.UNJUDGED
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
    sealed = receipt_app.sealed_of(chain.sm.get, iid, ADDR[validator])
    entries = receipts.open_as_executor(KEYS[ex], sealed, iid, ADDR[validator])
    published = [wire.ReceiptEntry(e.position, e.token, e.logprob_micro) for e in entries]
    key = dict(inference_id=iid, validator=ADDR[validator])
    challenge = chain.tx(ex, wire.ReceiptChallenge, **key, entries=published)
    assert chain.block(challenge) == [(True, "")]
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
