"""Verification receipts on the ledger (protocol v3): sealed with each pass, challenged by the
executor, judged by everyone else (the rules: :mod:`gonka_ray.protocol.receipts`).

A pass commits to its receipt and carries it encrypted to the executor, so no other validator
can copy it. The executor opens and audits it; a challenge publishes it (``entries``, checked
against the commitment), or says it did not open, and then the validator must reveal its
one-time key within the vote window (the ledger opens the box with it and checks the
commitment; no reveal in ``RECEIPT_REVEAL_BLOCKS``, or a box that is not the committed
receipt, breaks it). A published
receipt at positions other than the validator's is broken at once; otherwise the judges vote.

Tables:

- ``receipt``: ``[inference id, validator]`` → ``[commitment, one-time public key, box]``,
  written by :func:`store` from a passing ``Validation`` (the inference app's handler calls it);
- ``receipt_dispute``: ``[inference id, validator]`` → ``[challenger, deadline, ballots,
  outcome, entries]`` (ballots sorted ``[judge, holds]`` pairs; entries once published);
- ``receipt_open``: the undecided disputes' keys → deadline (the end-of-block hook scans only
  these);
- ``receipt_convicted``: address → convictions not yet settled (while one is, or a dispute is
  open, no other receipt of that validator can be challenged). The next epoch settlement
  forfeits every address named here (:func:`take_convicted`) and clears it: a conviction costs
  the epoch being settled when it is decided, whichever epoch the receipt was written in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gonka_ray import wire
from gonka_ray.constants import RECEIPT_REVEAL_BLOCKS
from gonka_ray.ledger.state import PARTICIPANTS, StateMachine, TxContext
from gonka_ray.protocol import receipts
from gonka_ray.protocol.lifecycle import InferenceRecord
from gonka_ray.protocol.receipts import Dispute, Entry, Outcome, Sealed

RECEIPTS = "receipt"
RECEIPT_DISPUTES = "receipt_dispute"
RECEIPT_OPEN = "receipt_open"
RECEIPT_CONVICTED = "receipt_convicted"

RecordOf = Callable[[TxContext, bytes], InferenceRecord | None]
Judges = Callable[[TxContext], Mapping[str, int]]  # weighted participants → weight


def store(ctx: TxContext, rec: InferenceRecord, validator: str, msg: wire.Validation) -> None:
    """Keep a passing validation's sealed receipt (protocol v3: every pass carries one)."""
    if len(msg.receipt_commitment) != 32 or len(msg.receipt_key) != 32 or not msg.receipt_box:
        ctx.reject("bad_receipt")
    row = [msg.receipt_commitment, msg.receipt_key, msg.receipt_box]
    ctx.put(RECEIPTS, (rec.inference_id, validator), row)


def sealed_of(get: Callable[..., Any], inference_id: bytes, validator: str) -> Sealed | None:
    row = get(RECEIPTS, (inference_id, validator))
    return None if row is None else Sealed(bytes(row[0]), bytes(row[1]), bytes(row[2]))


def dispute_of(get: Callable[..., Any], inference_id: bytes, validator: str) -> Dispute | None:
    row = get(RECEIPT_DISPUTES, (inference_id, validator))
    if row is None:
        return None
    challenger, deadline, ballots, outcome, entries = row
    return Dispute(
        challenger,
        int(deadline),
        {str(j): bool(h) for j, h in ballots},
        Outcome(outcome),
        tuple(Entry(int(p), int(t), int(lp)) for p, t, lp in entries),
    )


def revealed_of(get: Callable[..., Any], inference_id: bytes, validator: str):
    """The receipt as a dispute published it (a tuple of :class:`Entry`), or None."""
    d = dispute_of(get, inference_id, validator)
    return None if d is None or d.outcome is Outcome.AWAITING_REVEAL else d.entries


def _put_dispute(ctx: TxContext, key: tuple, d: Dispute) -> None:
    ballots = sorted([j, bool(h)] for j, h in d.ballots.items())
    entries = [[e.position, e.token, e.logprob_micro] for e in d.entries]
    ctx.put(RECEIPT_DISPUTES, key, [d.challenger, d.deadline, ballots, d.outcome.value, entries])


def take_convicted(ctx: TxContext) -> frozenset[str]:
    """Every address convicted since the last settlement (and forget them)."""
    out = frozenset(ctx.keys(RECEIPT_CONVICTED))
    for a in out:
        ctx.delete(RECEIPT_CONVICTED, a)
    return out


def install(
    sm: StateMachine,
    *,
    record_of: RecordOf,
    judges: Judges,
    vote_blocks: int,
    reveal_blocks: int = RECEIPT_REVEAL_BLOCKS,
) -> None:
    """Register ``ReceiptChallenge`` / ``ReceiptReveal`` / ``ReceiptVote`` and the deadline
    hook on ``sm``: the judges have ``vote_blocks`` once a receipt is public, a validator
    ``reveal_blocks`` to reveal the key of one that did not open."""

    def _judges(ctx: TxContext, key: tuple, d: Dispute) -> dict[str, int]:
        parties = {d.challenger, key[1]}
        return {a: w for a, w in judges(ctx).items() if a not in parties and w > 0}

    def _decide(ctx: TxContext, key: tuple, d: Dispute, *, deadline_passed: bool) -> Outcome:
        quorum = ctx.chain.rules_at(ctx.height).vote_quorum_at_deadline
        return receipts.decide(
            d, _judges(ctx, key, d), deadline_passed=deadline_passed, quorum_at_deadline=quorum
        )

    def _settle(ctx: TxContext, key: tuple, d: Dispute, outcome: Outcome) -> None:
        d.outcome = outcome
        _put_dispute(ctx, key, d)
        ctx.delete(RECEIPT_OPEN, key)
        guilty = {Outcome.BROKEN: key[1], Outcome.UPHELD: d.challenger}.get(outcome)
        if guilty is not None:
            ctx.put(RECEIPT_CONVICTED, guilty, int(ctx.get(RECEIPT_CONVICTED, guilty, 0)) + 1)

    def _publish(ctx: TxContext, key: tuple, d: Dispute, rec: InferenceRecord, entries) -> None:
        """The receipt is public: broken at once at positions not the validator's, else the
        judges have the vote window."""
        d.entries = tuple(entries)
        want = receipts.positions(rec.inference_id, key[1], rec.completion_tokens)
        if tuple(e.position for e in d.entries) != want:
            _settle(ctx, key, d, Outcome.BROKEN)
            return
        d.outcome, d.deadline = Outcome.OPEN, ctx.height + vote_blocks
        _put_dispute(ctx, key, d)
        ctx.put(RECEIPT_OPEN, key, d.deadline)

    def challenge(ctx: TxContext, msg: wire.ReceiptChallenge) -> None:
        if not ctx.chain.rules_at(ctx.height).receipts:
            ctx.reject("not_in_this_version")
        rec = record_of(ctx, msg.inference_id)
        if rec is None:
            ctx.reject("unknown_inference")
        if rec.executor != ctx.sender:
            ctx.reject("not_executor")
        if rec.settled:
            ctx.reject("settled")
        key = (msg.inference_id, msg.validator)
        sealed = sealed_of(ctx.get, *key)
        if sealed is None:
            ctx.reject("no_receipt")
        if ctx.get(RECEIPT_DISPUTES, key) is not None:
            ctx.reject("duplicate")
        # one dispute per validator at a time, none once it is convicted until the settlement
        # that forfeits it: a validator that stamped a hundred passes costs the judges one
        # prefill, not a hundred
        if ctx.get(RECEIPT_CONVICTED, msg.validator) is not None or any(
            v == msg.validator for _, v in ctx.keys(RECEIPT_OPEN)
        ):
            ctx.reject("validator_under_challenge")
        # ... and an executor convicted of a false challenge makes no more until then
        if ctx.get(RECEIPT_CONVICTED, ctx.sender) is not None:
            ctx.reject("challenger_convicted")
        entries = tuple(Entry(e.position, e.token, e.logprob_micro) for e in msg.entries)
        if entries and receipts.commitment(
            msg.inference_id, msg.validator, receipts.encode(entries)
        ) != (sealed.commitment):
            ctx.reject("not_the_receipt")
        d = Dispute(ctx.sender, ctx.height + reveal_blocks, outcome=Outcome.AWAITING_REVEAL)
        if entries:
            _publish(ctx, key, d, rec, entries)
        else:  # it did not open for the executor: the validator must reveal its key
            _put_dispute(ctx, key, d)
            ctx.put(RECEIPT_OPEN, key, d.deadline)

    def reveal(ctx: TxContext, msg: wire.ReceiptReveal) -> None:
        key = (msg.inference_id, ctx.sender)
        d = dispute_of(ctx.get, *key)
        if d is None or d.outcome is not Outcome.AWAITING_REVEAL:
            ctx.reject("no_reveal_due")
        rec = record_of(ctx, msg.inference_id)
        executor_key = ctx.get(PARTICIPANTS, rec.executor)[0]
        sealed = sealed_of(ctx.get, *key)
        entries = receipts.open_with_key(
            msg.secret, executor_key, sealed, msg.inference_id, ctx.sender
        )
        if entries is None:  # the box is not the committed receipt: the executor was right
            _settle(ctx, key, d, Outcome.BROKEN)
        else:
            _publish(ctx, key, d, rec, entries)

    def vote(ctx: TxContext, msg: wire.ReceiptVote) -> None:
        key = (msg.inference_id, msg.validator)
        d = dispute_of(ctx.get, *key)
        if d is None or d.outcome is not Outcome.OPEN:
            ctx.reject("not_open")
        eligible = _judges(ctx, key, d)
        if ctx.sender not in eligible:
            ctx.reject("not_judge")
        if ctx.sender in d.ballots:
            ctx.reject("duplicate")
        d.ballots[ctx.sender] = msg.holds
        outcome = _decide(ctx, key, d, deadline_passed=False)
        if outcome is Outcome.OPEN:
            _put_dispute(ctx, key, d)
        else:
            _settle(ctx, key, d, outcome)

    def end_block(ctx: TxContext) -> None:
        due = [k for k in ctx.keys(RECEIPT_OPEN) if int(ctx.get(RECEIPT_OPEN, k)) <= ctx.height]
        for key in sorted(due):
            key = tuple(key)
            d = dispute_of(ctx.get, *key)
            if d.outcome is Outcome.AWAITING_REVEAL:  # no reveal in time
                _settle(ctx, key, d, Outcome.BROKEN)
            else:
                _settle(ctx, key, d, _decide(ctx, key, d, deadline_passed=True))

    sm.register(wire.ReceiptChallenge, challenge, sequenced=False)
    sm.register(wire.ReceiptReveal, reveal, sequenced=False)
    sm.register(wire.ReceiptVote, vote, sequenced=False)
    sm.on_end_block(end_block)
