"""Verification receipts (protocol v3): a pass carries what only running the model yields.

A validator that answers "passed" without running the check keeps its mint and fee shares
unless something it submits depends on having run it. So a passing ``Validation`` carries a
*receipt*: at :data:`RECEIPT_POSITIONS` output positions chosen by ``sha256(inference id ‖
validator)`` (the last position always among them, so the whole prefill is needed), the
validator's own most likely token outside the artifact's top-k there and its logprob. The
artifact holds only the executor's top k, so the receipt cannot be derived from it.

**Sealed.** The ledger gets the receipt's commitment and the receipt encrypted to the executor
(:func:`seal`: X25519 from the Ed25519 keys, a one-time key the validator re-derives from its
seed and the inference), so no other validator can copy it.

**Audit.** The executor computed every rank while generating and keeps its top k + 2·RANKS
privately (not in the payload). It opens each receipt on its inference and compares it with
them (:func:`holds`): the receipt's token must be among those ranks (numerical noise may
reorder near-ties) and its logprob within :data:`RECEIPT_TOLERANCE_NATS` of the executor's
(twice both margins before it challenges). A receipt that does not hold is *challenged* and
published (``ReceiptChallenge`` with the entries, checked against the commitment); one that
does not open is challenged without them, and the validator must reveal its one-time key
(``ReceiptReveal``), with which the ledger opens it (:func:`open_with_key`; a box that is not
the committed receipt, or no reveal in time, breaks it). Every weighted participant but the
two parties judges a published receipt by its own prefill, as a vote (:func:`decide`,
:func:`votes.tally`): broken, the validator forfeits its epoch; upheld by judges' ballots, the
challenging executor does (a false challenge is a lie about its own computation). A challenge
nobody judged convicts nobody.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, field
from enum import StrEnum

import msgpack

from gonka_ray import crypto
from gonka_ray.constants import (
    ENGINE_MAX_TOP_K_LOGPROBS,
    MAX_TOP_K_LOGPROBS,
    RECEIPT_LOGPROB_FLOOR_MICRO,
    RECEIPT_POSITIONS,
    RECEIPT_RANKS,
    RECEIPT_TOLERANCE_NATS,
)
from gonka_ray.protocol import votes

PRIVATE_RANKS = 2 * RECEIPT_RANKS  # ranks beyond the artifact's top-k an executor keeps
assert MAX_TOP_K_LOGPROBS + PRIVATE_RANKS <= ENGINE_MAX_TOP_K_LOGPROBS


@dataclass(frozen=True)
class Entry:
    """One receipt position: the validator's most likely token outside the artifact's top-k
    there and its logprob (µnats)."""

    position: int
    token: int
    logprob_micro: int


def positions(inference_id: bytes, validator: str, n_out: int) -> tuple[int, ...]:
    """The output positions a receipt of ``validator`` on ``inference_id`` names (ascending,
    distinct, the last one always included; every position when there are fewer)."""
    if n_out <= RECEIPT_POSITIONS:
        return tuple(range(n_out))
    chosen = {n_out - 1}
    counter = 0
    while len(chosen) < RECEIPT_POSITIONS:
        digest = hashlib.sha256(
            b"gonka_ray/receipt/" + inference_id + validator.encode() + counter.to_bytes(4, "big")
        ).digest()
        chosen.add(int.from_bytes(digest[:8], "big") % (n_out - 1))
        counter += 1
    return tuple(sorted(chosen))


def make(
    inference_id: bytes,
    validator: str,
    artifact_top_ids: Sequence[Sequence[int]],
    top_ids: Sequence[Sequence[int]],
    top_logprobs: Sequence[Sequence[float]],
) -> tuple[Entry, ...]:
    """The receipt from the validator's own scoring (rows per output position, best first,
    with at least one rank more than the artifact's top-k): at each receipt position its most
    likely token that is *not* among the artifact's top-k there, and that token's logprob
    (µnats, held at the wire's floor, :data:`RECEIPT_LOGPROB_FLOOR_MICRO`)."""
    out = []
    for p in positions(inference_id, validator, len(top_ids)):
        shown = set(artifact_top_ids[p])
        rank = next(r for r, t in enumerate(top_ids[p]) if int(t) not in shown)
        micro = max(round(float(top_logprobs[p][rank]) * 1e6), RECEIPT_LOGPROB_FLOOR_MICRO)
        out.append(Entry(p, int(top_ids[p][rank]), micro))
    return tuple(out)


def holds(
    receipt: Sequence[Entry],
    inference_id: bytes,
    validator: str,
    artifact_top_ids: Sequence[Sequence[int]],
    ref_ids: Sequence[Sequence[int]],
    ref_logprobs: Sequence[Sequence[float]],
    *,
    slack: int = 1,
) -> bool:
    """Whether ``receipt`` agrees with a reference computation of the same inference (the
    executor's ranks kept from generation, or a judge's prefill; rows per output position,
    best first, at least k + RECEIPT_RANKS × ``slack`` ranks where the vocabulary has them):
    the positions are the validator's, and at each the named token is outside the artifact's
    top-k (nothing copied), inside the reference's top k + RECEIPT_RANKS × ``slack`` (noise may
    reorder near-ties) with a logprob within RECEIPT_TOLERANCE_NATS × ``slack``. Judges use
    ``slack`` 1; an executor challenges only a receipt that fails ``slack`` 2, so an honest
    executor never challenges what honest judges would uphold."""
    want = positions(inference_id, validator, len(ref_ids))
    if tuple(e.position for e in receipt) != want:
        return False
    for e in receipt:
        k = len(artifact_top_ids[e.position])
        if e.token in set(artifact_top_ids[e.position]):
            return False
        depth = k + RECEIPT_RANKS * slack
        ranks = dict(
            zip(ref_ids[e.position][:depth], ref_logprobs[e.position][:depth], strict=False)
        )
        ref = ranks.get(e.token)
        if ref is None or abs(e.logprob_micro / 1e6 - float(ref)) > RECEIPT_TOLERANCE_NATS * slack:
            return False
    return True


# --- sealing: a receipt is private to its executor until a challenge reveals it -------------


@dataclass(frozen=True)
class Sealed:
    """What a pass puts on the ledger: the receipt's commitment and the receipt encrypted to
    the executor under a one-time key derived from the validator's seed and the inference."""

    commitment: bytes
    ephemeral_public: bytes
    ciphertext: bytes


def encode(entries: Sequence[Entry]) -> bytes:
    return msgpack.packb([[e.position, e.token, e.logprob_micro] for e in entries])


def decode(plaintext: bytes) -> tuple[Entry, ...] | None:
    """The entries of a receipt's plaintext (None: malformed)."""
    try:
        rows = msgpack.unpackb(plaintext, raw=False, strict_map_key=True)
        entries = tuple(Entry(*row) for row in rows)
    except Exception:  # any malformed plaintext is a malformed receipt
        return None
    ok = len(entries) <= RECEIPT_POSITIONS and all(
        all(isinstance(x, int) and not isinstance(x, bool) for x in astuple(e))
        and 0 <= e.position < 2**32
        and 0 <= e.token < 2**32
        and RECEIPT_LOGPROB_FLOOR_MICRO <= e.logprob_micro <= 0
        for e in entries
    )
    return entries if ok else None


def commitment(inference_id: bytes, validator: str, plaintext: bytes) -> bytes:
    return hashlib.sha256(
        b"gonka_ray/receipt/v1\x00" + inference_id + validator.encode() + b"\x00" + plaintext
    ).digest()


def nonce(inference_id: bytes, validator: str) -> bytes:
    return hashlib.sha256(b"gonka_ray/receipt-nonce/" + inference_id + validator.encode()).digest()[
        :24
    ]


def ephemeral_secret(validator_seed: bytes, inference_id: bytes) -> bytes:
    """The one-time key of a validator's receipt on an inference: re-derivable by the validator
    alone (it reveals it in a challenge instead of keeping the receipt)."""
    return hashlib.sha256(b"gonka_ray/receipt-key/" + validator_seed + inference_id).digest()


def seal(
    validator: crypto.KeyPair, executor_public_key: bytes, inference_id: bytes, entries
) -> Sealed:
    plaintext = encode(entries)
    public, ciphertext = crypto.seal_to(
        ephemeral_secret(validator.seed, inference_id),
        executor_public_key,
        nonce(inference_id, validator.address),
        plaintext,
    )
    return Sealed(commitment(inference_id, validator.address, plaintext), public, ciphertext)


def open_as_executor(
    executor: crypto.KeyPair, sealed: Sealed, inference_id: bytes, validator: str
) -> tuple[Entry, ...] | None:
    """The receipt, opened by its executor (None: the box does not open or does not match
    the commitment — the executor then challenges without entries and the validator must
    reveal its key)."""
    plaintext = crypto.open_sealed_by_recipient(
        executor, sealed.ephemeral_public, nonce(inference_id, validator), sealed.ciphertext
    )
    if plaintext is None or commitment(inference_id, validator, plaintext) != sealed.commitment:
        return None
    return decode(plaintext)


def open_with_key(
    key: bytes, executor_public_key: bytes, sealed: Sealed, inference_id: bytes, validator: str
) -> tuple[Entry, ...] | None:
    """The receipt, opened with its revealed one-time key (the ledger's check of a reveal):
    None when the key is not the box's, the box does not open, or it does not match the
    commitment — the validator sealed something else than it committed to."""
    plaintext = crypto.open_sealed_by_sender(
        key, executor_public_key, nonce(inference_id, validator), sealed.ciphertext
    )
    if plaintext is None or commitment(inference_id, validator, plaintext) != sealed.commitment:
        return None
    return decode(plaintext)


class Outcome(StrEnum):
    AWAITING_REVEAL = "awaiting_reveal"  # the executor could not open it: the validator reveals
    OPEN = "open"  # the receipt is public: the judges vote
    BROKEN = "broken"  # the judges found the receipt wrong: the validator is convicted
    UPHELD = "upheld"  # the judges found it right: the challenging executor is convicted
    UNJUDGED = "unjudged"  # nobody judged it by the deadline: nobody is convicted


@dataclass
class Dispute:
    """A challenge of one validator's receipt on one inference."""

    challenger: str
    deadline: int
    ballots: dict[str, bool] = field(default_factory=dict)  # judge → the receipt holds
    outcome: Outcome = Outcome.OPEN
    entries: tuple[Entry, ...] = ()  # the receipt, once published


def decide(
    dispute: Dispute,
    judges: Mapping[str, int],
    *,
    deadline_passed: bool,
    quorum_at_deadline: bool = False,
) -> Outcome:
    """The dispute's outcome from its ballots (:func:`votes.tally`: "holds" is "valid"; a
    lapsed vote, v5, convicts nobody)."""
    outcome = votes.tally(
        dispute.ballots,
        judges,
        deadline_passed=deadline_passed,
        quorum_at_deadline=quorum_at_deadline,
    )
    if outcome is votes.VoteOutcome.PENDING:
        return Outcome.OPEN
    if outcome is votes.VoteOutcome.INVALIDATED:
        return Outcome.BROKEN
    if outcome is votes.VoteOutcome.LAPSED:
        return Outcome.UNJUDGED
    return Outcome.UPHELD if any(dispute.ballots.values()) else Outcome.UNJUDGED
