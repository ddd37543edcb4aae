"""The inference protocol on the ledger: lifecycle transactions as state-machine handlers.

:func:`install` registers handlers for ``StartInference``, ``FinishInference``,
``OutputDelivered``, ``Validation`` and ``Vote`` on a
:class:`~gonka_ray.ledger.state.StateMachine`, plus an end-of-block hook that expires unfinished
inferences and closes votes past their deadline. The rules themselves live in
:class:`~gonka_ray.protocol.lifecycle.InferenceBook`; this module only maps ledger tables to the
book's mappings (write-through views over a :class:`~gonka_ray.ledger.state.TxContext`) and
authenticated signers to addresses.

Tables (all hashed into the state hash like every other table):
- ``inference``: inference id → record fields (see :func:`_encode_record`);
- ``inference_open``: inference id → height of its next deadline;
- ``pstate``: participant address → protocol counters (status, reputation inputs, fees);
- ``seed_commit``: ``[epoch, address]`` → sha256 of the secret epoch seed (written by
  :mod:`gonka_ray.ledger.epoch_app`, which owns the epoch transactions);
- ``unsettled``: inference id → finish height, until an epoch settlement pays it out;
- ``validation_evidence``: ``[inference id, validator]`` → the validator's measured excess for
  the epoch evidence (:mod:`gonka_ray.protocol.evidence`), until the inference is settled;
- ``draw_set``: the draw's recent eligible sets (``-1`` → the current one, ``height`` → one
  replaced at that height, kept ``draw_grace_blocks``), so a Start drawn from a view a few blocks
  old still commits.

Authorisation: the StartInference carries the *client's* signed request, so a TA can only escrow
what the client agreed to (``max_escrow``); the inference id is ``sha256(client signature)``.
Everything else is signed by a registered participant, checked by the book.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

from gonka_ray import wire
from gonka_ray.exceptions import WireError
from gonka_ray.ledger import receipt_app
from gonka_ray.ledger.state import PARTICIPANTS, StateMachine, TxContext
from gonka_ray.protocol import selection
from gonka_ray.protocol.lifecycle import (
    InferenceBook,
    InferenceRecord,
    InferenceStatus,
    ParticipantRecord,
)
from gonka_ray.protocol.reputation import Status

INFERENCES = "inference"
OPEN = "inference_open"
PSTATE = "pstate"
SEED_COMMITS = "seed_commit"
UNSETTLED = "unsettled"
DRAW_SETS = "draw_set"
EVIDENCE = "validation_evidence"  # [inference id, validator] → excess_micro

_RECORD_FIELDS = [f.name for f in fields(InferenceRecord)]
_PSTATE_FIELDS = [f.name for f in fields(ParticipantRecord) if f.name not in ("address", "weight")]


@dataclass(frozen=True)
class InferenceAppConfig:
    """Protocol parameters the state machine needs (from ``NetworkConfig``)."""

    price_per_token: int = 1
    expiry_blocks: int = 600
    vote_blocks: int = 20
    fpr: float = 0.05
    draw_grace_blocks: int = 64  # a TA's view of the participants may be this many blocks old


# Fields added after records were first stored (protocol v3), all False by default: a record
# leaves them out while they are False, so it encodes (and hashes into the state) as before.
_RECORD_TAIL = ("prompt_vote", "ta_convicted")
assert tuple(_RECORD_FIELDS[-len(_RECORD_TAIL) :]) == _RECORD_TAIL


def _encode_record(rec: InferenceRecord) -> list:
    out = []
    for name in _RECORD_FIELDS:
        v = getattr(rec, name)
        if isinstance(v, InferenceStatus):
            v = v.value
        elif isinstance(v, dict):
            v = sorted([k, bool(b)] for k, b in v.items())
        out.append(v)
    while len(out) > len(_RECORD_FIELDS) - len(_RECORD_TAIL) and out[-1] is False:
        out.pop()
    return out


def pairs(weights: Mapping[str, int]) -> list[list]:
    """``{address: amount}`` as sorted ``[address, amount]`` rows (canonical table values)."""
    return [[k, int(v)] for k, v in sorted(weights.items())]


def unpairs(rows: list) -> dict[str, int]:
    return {str(k): int(v) for k, v in rows}


def _decode_record(row: list) -> InferenceRecord:
    if not len(_RECORD_FIELDS) - len(_RECORD_TAIL) <= len(row) <= len(_RECORD_FIELDS):
        raise ValueError(f"an inference record has {len(row)} fields")
    kw = dict(zip(_RECORD_FIELDS, row, strict=False))  # a missing tail field is its default
    kw["status"] = InferenceStatus(kw["status"])
    kw["validations"] = {k: bool(b) for k, b in kw["validations"]}
    kw["votes"] = {k: bool(b) for k, b in kw["votes"]}
    return InferenceRecord(**kw)


class _TableView(MutableMapping):
    """A write-through mapping over one ledger table (values are copies)."""

    def __init__(self, ctx: TxContext, table: str, encode, decode) -> None:
        self.ctx, self.table, self.encode, self.decode = ctx, table, encode, decode

    def __getitem__(self, key: Any) -> Any:
        row = self.ctx.get(self.table, key)
        if row is None:
            raise KeyError(key)
        return self.decode(key, row)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.ctx.put(self.table, key, self.encode(value))

    def __delitem__(self, key: Any) -> None:
        if self.ctx.get(self.table, key) is None:
            raise KeyError(key)
        self.ctx.delete(self.table, key)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.ctx.keys(self.table))

    def __len__(self) -> int:
        return len(self.ctx.keys(self.table))


def _records(ctx: TxContext) -> _TableView:
    """Inference id → :class:`InferenceRecord`, read and written through ``ctx``."""
    return _TableView(ctx, INFERENCES, _encode_record, lambda _k, row: _decode_record(row))


class _Participants(_TableView):
    """Participants: identity and weight from the ledger's participant table, protocol counters
    from ``pstate``."""

    def __init__(self, ctx: TxContext) -> None:
        super().__init__(ctx, PARTICIPANTS, None, None)

    def __getitem__(self, address: str) -> ParticipantRecord:
        ident = self.ctx.get(PARTICIPANTS, address)
        if ident is None:
            raise KeyError(address)
        counters = self.ctx.get(PSTATE, address)
        rec = ParticipantRecord(address=address, weight=int(ident[2]))
        if counters is not None:
            for name, v in zip(_PSTATE_FIELDS, counters, strict=True):
                setattr(rec, name, Status(v) if name == "status" else v)
        return rec

    def __setitem__(self, address: str, rec: ParticipantRecord) -> None:
        if self.ctx.get(PARTICIPANTS, address) is None:
            raise KeyError(address)
        row = [getattr(rec, n) for n in _PSTATE_FIELDS]
        row = [v.value if isinstance(v, Status) else v for v in row]
        self.ctx.put(PSTATE, address, row)

    def __delitem__(self, address: str) -> None:  # pragma: no cover - never used by the book
        raise TypeError("participants are removed only at epoch boundaries")


class _Accounts:
    def __init__(self, ctx: TxContext) -> None:
        self.ctx = ctx

    def balance(self, address: str) -> int:
        return self.ctx.balance(address)

    def add(self, address: str, amount: int) -> None:
        if amount >= 0:
            self.ctx.credit(address, amount)
        else:
            self.ctx.debit(address, -amount)


ValidatorWeight = Callable[[TxContext, InferenceRecord, str], int]
StreakRule = Callable[[TxContext, InferenceRecord, str], bool]


def book_for(
    ctx: TxContext,
    config: InferenceAppConfig,
    validator_weight: ValidatorWeight | None = None,
    resets_streak: StreakRule | None = None,
) -> InferenceBook:
    """An :class:`InferenceBook` reading and writing through ``ctx``."""
    return InferenceBook(
        _Accounts(ctx),
        _Participants(ctx),
        records=_records(ctx),
        open_index=_TableView(ctx, OPEN, int, lambda _k, row: int(row)),
        expiry_blocks=config.expiry_blocks,
        vote_blocks=config.vote_blocks,
        fpr=config.fpr,
        validator_weight=(
            None if validator_weight is None else (lambda rec, a: validator_weight(ctx, rec, a))
        ),
        draw_sets=_TableView(ctx, DRAW_SETS, pairs, lambda _k, row: unpairs(row)),
        draw_grace_blocks=config.draw_grace_blocks,
        rules_at=ctx.chain.rules_at,
        resets_streak=(
            None if resets_streak is None else (lambda rec, a: resets_streak(ctx, rec, a))
        ),
    )


def prompt_hash(prompt_ids: list[int] | tuple[int, ...]) -> bytes:
    """sha256 of token ids as uint32 little-endian (the ``prompt_hash`` / ``response_hash``)."""
    return hashlib.sha256(b"".join(int(t).to_bytes(4, "little") for t in prompt_ids)).digest()


def open_client_request(request: bytes, chain: str) -> wire.Signed:
    """Verify a client's InferenceRequest envelope signed for ``chain`` (raises a WireError
    subclass)."""
    return wire.open_envelope(request, expect=wire.InferenceRequest, chain=chain)


def install(
    sm: StateMachine,
    config: InferenceAppConfig,
    validator_weight: ValidatorWeight | None = None,
    resets_streak: StreakRule | None = None,
) -> None:
    """Register the lifecycle handlers and the end-of-block hook on ``sm``.

    ``validator_weight`` (from the epoch app) says which weight entitles a participant to
    validate an inference; default: its current weight. ``resets_streak`` says whose pass ends
    an executor's run of invalidations (default: anyone's).
    """

    def start(ctx: TxContext, msg: wire.StartInference) -> None:
        try:
            client = open_client_request(msg.request, ctx.chain.id)
        except WireError as exc:
            ctx.reject(f"bad_client_request:{type(exc).__name__}")
        req = client.message
        book_for(ctx, config).start(
            inference_id=client.id,
            requester=client.signer_address,
            transport_agent=ctx.sender,
            executor=msg.executor,
            attempt=msg.attempt,
            prompt_hash=msg.prompt_hash,
            prompt_tokens=msg.prompt_tokens,
            max_tokens=req.sampling.max_tokens,
            max_escrow=req.max_escrow,
            price_per_token=config.price_per_token,
            seed=req.sampling.seed,
            height=ctx.height,
        )

    def finish(ctx: TxContext, msg: wire.FinishInference) -> None:
        ctx.put(UNSETTLED, msg.inference_id, ctx.height)
        book_for(ctx, config).finish(
            inference_id=msg.inference_id,
            executor=ctx.sender,
            prompt_tokens=msg.prompt_tokens,
            completion_tokens=msg.completion_tokens,
            finish_reason=msg.finish_reason,
            response_hash=msg.response_hash,
            artifact_hash=msg.artifact_hash,
            payload_hash=msg.payload_hash,
            height=ctx.height,
            evidence_weight=msg.evidence_weight_micro,
            block_hash=ctx.block_hash,
        )

    def delivered(ctx: TxContext, msg: wire.OutputDelivered) -> None:
        book_for(ctx, config).delivered(
            inference_id=msg.inference_id,
            transport_agent=ctx.sender,
            output_hash=msg.output_hash,
            client_left=msg.client_left,
        )

    def validation(ctx: TxContext, msg: wire.Validation) -> None:
        rec = book_for(ctx, config, validator_weight, resets_streak).validation(
            inference_id=msg.inference_id,
            validator=ctx.sender,
            passed=msg.passed,
            height=ctx.height,
        )
        if rec.evidence_weight > 0:  # pooled against the executor's committed weight
            ctx.put(EVIDENCE, (msg.inference_id, ctx.sender), msg.evidence_excess_micro)
        if msg.passed and ctx.chain.rules_at(ctx.height).receipts:
            receipt_app.store(ctx, rec, ctx.sender, msg)

    def vote(ctx: TxContext, msg: wire.Vote) -> None:
        book_for(ctx, config).vote(
            inference_id=msg.inference_id, voter=ctx.sender, valid=msg.valid, height=ctx.height
        )

    def end_block(ctx: TxContext) -> None:
        book_for(ctx, config).advance(ctx.height)

    sm.register(wire.StartInference, start, sequenced=False)
    sm.register(wire.FinishInference, finish, sequenced=False)
    sm.register(wire.OutputDelivered, delivered, sequenced=False)
    sm.register(wire.Validation, validation, sequenced=False)
    sm.register(wire.Vote, vote, sequenced=False)
    sm.on_end_block(end_block)
    receipt_app.install(
        sm,
        record_of=lambda ctx, iid: _records(ctx).get(iid),
        judges=lambda ctx: selection.eligible_weights(_Participants(ctx)),
        vote_blocks=config.vote_blocks,
    )


# --- queries on committed state (replica and client side) ----------------------------------


def inference_record(sm: StateMachine, inference_id: bytes) -> InferenceRecord | None:
    row = sm.get(INFERENCES, inference_id)
    return None if row is None else _decode_record(row)


def participant_record(sm: StateMachine, address: str) -> ParticipantRecord | None:
    ctx = TxContext(sm, height=sm.height, block_hash=b"")
    try:
        return _Participants(ctx)[address]
    except KeyError:
        return None


def participant_records(sm: StateMachine) -> dict[str, ParticipantRecord]:
    ctx = TxContext(sm, height=sm.height, block_hash=b"")
    view = _Participants(ctx)
    return {a: view[a] for a in view}


def inference_id_of(request_envelope: bytes) -> bytes:
    """``sha256(client signature)`` of a client's request envelope (read, not verified: for
    envelopes the ledger already accepted)."""
    return wire.envelope_id(request_envelope)


__all__ = [
    "InferenceAppConfig",
    "book_for",
    "inference_id_of",
    "inference_record",
    "install",
    "participant_record",
    "participant_records",
    "prompt_hash",
]
