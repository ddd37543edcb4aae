"""Inference protocol messages: the client's request, lifecycle transactions, peer messages.

Lifecycle transactions are signed envelopes applied by :mod:`gonka_ray.ledger.inference_app`;
``nonce`` is a per-sender salt (the ledger rejects a transaction id it has already applied).
Messages between actors of different participants are signed envelopes too; stream chunks are
plain encoded bytes whose content the executor later commits to in FinishInference. Ordered by
flow. Adding a field to a message means declaring a new version of it.
"""

from __future__ import annotations

from typing import Annotated

from gonka_ray.constants import (
    POC_MAX_CLAIMED_NONCES,
    RECEIPT_LOGPROB_FLOOR_MICRO,
    RECEIPT_POSITIONS,
)
from gonka_ray.wire.codec import U32, U64, Bytes32, MaxLen, Name, Range, message, struct

# --- declared messages ----------------------------------------------------------------------
# Ordered by flow. Adding a field to a message means declaring a new version of it.


@struct
class ChatMessage:
    role: Annotated[str, MaxLen(32)]
    content: Annotated[str, MaxLen(1_000_000)]


@struct
class SamplingSpec:
    """Sampling parameters that are part of the signed request (replayable by verifiers)."""

    temperature: float
    top_p: float
    top_k: Annotated[int, Range(0, 1_000_000)]  # 0 = disabled
    max_tokens: Annotated[int, Range(1, 1_000_000)]
    seed: U64
    logprobs: Annotated[int, Range(0, 20)]  # top-k of the artifact / top_logprobs
    stop: Annotated[list[Annotated[str, MaxLen(256)]], MaxLen(16)]


@message("InferenceRequest", version=1)
class InferenceRequest:
    """A client's signed request. ``inference_id = sha256(envelope signature)``."""

    model: Name
    messages: Annotated[list[ChatMessage], MaxLen(1024)]  # chat form; empty when ``prompt`` used
    prompt: Annotated[str, MaxLen(1_000_000)] | None  # completion form
    sampling: SamplingSpec
    timestamp_ms: U64
    nonce: U64
    max_escrow: U64  # the most the client agrees to lock


@message("Ping", version=1)
class Ping:
    """Liveness probe between actors; also the smallest message for benchmarks."""

    nonce: U64
    sent_ms: U64


# --- inference protocol ---------------------------------------------------------------------
# Owned by the participants' protocol (issue 7). Lifecycle transactions are signed envelopes
# applied by gonka_ray/ledger/inference_app.py; ``nonce`` is a per-sender salt (the ledger
# rejects a transaction id it has already applied). Messages between actors of different
# participants are signed envelopes too; stream chunks are plain encoded bytes whose content
# the executor later commits to in FinishInference.

Address = Annotated[str, MaxLen(64)]


@message("StartInference", version=1)
class StartInference:
    """The TA opens an inference: the client's signed request authorises the escrow."""

    request: Annotated[bytes, MaxLen(4 * 1024 * 1024)]  # the client's InferenceRequest envelope
    executor: Address
    attempt: U32
    prompt_tokens: U32
    prompt_hash: Bytes32  # sha256 of the prompt token ids (uint32 little-endian)
    nonce: U64


@message("FinishInference", version=3)
class FinishInference:
    """The drawn executor's signed report of the output. ``prompt_tokens`` is its own count of
    the prompt it ran (the client is charged for at most that many, whatever the TA's Start
    claimed; verifiers check it against the artifact)."""

    inference_id: Bytes32
    prompt_tokens: U32
    completion_tokens: U32
    finish_reason: Annotated[str, MaxLen(16)]
    response_hash: Bytes32  # sha256 of the output token ids (uint32 little-endian)
    artifact_hash: Bytes32  # sha256 of the artifact's canonical bytes
    payload_hash: Bytes32  # sha256 of the compact payload bytes kept by the executor
    nonce: U64
    # Σ over output tokens of max(1 − p, 0.01) from the artifact's logprobs, in millionths: the
    # epoch evidence's weight (verifiers recompute it; a wrong value fails the check)
    evidence_weight_micro: U64 = 0


@message("OutputDelivered", version=2)
class OutputDelivered:
    """The TA's record of what its client received. ``client_left``: the client went away
    mid-stream; only then is an output the executor finished with ``abort`` billed."""

    inference_id: Bytes32
    output_hash: Bytes32  # sha256 of the output token ids the client received
    nonce: U64
    client_left: bool = False


@struct
class ReceiptEntry:
    """One position of a verification receipt (:mod:`gonka_ray.protocol.receipts`)."""

    position: U32
    token: U32
    logprob_micro: Annotated[int, Range(RECEIPT_LOGPROB_FLOOR_MICRO, 0)]


@message("Validation", version=3)
class Validation:
    """A validator's verdict on one inference, with its epoch evidence about the executor: the
    sum over output tokens of the logprob excess beyond float16 rounding, in millionths (the
    weight it is pooled against is the executor's committed one; see
    :mod:`gonka_ray.protocol.evidence`). A pass carries its sealed receipt (protocol v3): what
    only running the model yields, readable by the executor alone, which audits it."""

    inference_id: Bytes32
    passed: bool
    replay_mismatches: U32
    similarity: float
    logprob_deviation: float
    nonce: U64
    evidence_excess_micro: U64 = 0
    # a pass's sealed receipt: its commitment, the one-time X25519 key and the receipt
    # encrypted to the executor (:mod:`gonka_ray.protocol.receipts`); empty on a failure
    receipt_commitment: Annotated[bytes, MaxLen(32)] = b""
    receipt_key: Annotated[bytes, MaxLen(32)] = b""
    receipt_box: Annotated[bytes, MaxLen(512)] = b""


@message("ReceiptChallenge", version=1)
class ReceiptChallenge:
    """The executor of an inference says ``validator``'s receipt on it does not hold, and
    publishes it (``entries``, checked against the commitment); with no entries, the sealed
    receipt did not open, and the validator must reveal its key (``ReceiptReveal``). Every
    weighted participant but the two then judges it (``ReceiptVote``)."""

    inference_id: Bytes32
    validator: Annotated[str, MaxLen(64)]
    nonce: U64
    entries: Annotated[list[ReceiptEntry], MaxLen(RECEIPT_POSITIONS)] = ()


@message("ReceiptReveal", version=1)
class ReceiptReveal:
    """A challenged validator's one-time receipt key: anyone can now open its sealed receipt."""

    inference_id: Bytes32
    secret: Bytes32  # the one-time X25519 secret of its sealed receipt
    nonce: U64


@message("ReceiptVote", version=1)
class ReceiptVote:
    """A judge's ballot on a challenged receipt: ``holds`` against its own prefill."""

    inference_id: Bytes32
    validator: Annotated[str, MaxLen(64)]
    holds: bool
    nonce: U64


@message("Vote", version=1)
class Vote:
    inference_id: Bytes32
    valid: bool
    nonce: U64


@message("SeedCommit", version=1)
class SeedCommit:
    epoch: U64
    commitment: Bytes32  # sha256 of the secret per-epoch seed
    nonce: U64


@message("SeedReveal", version=1)
class SeedReveal:
    """A validator's reward claim for ``epoch``: the seed whose sha256 it committed (DESIGN §4)."""

    epoch: U64
    seed: Bytes32
    nonce: U64


@message("PocClaim", version=1)
class PocClaim:
    """The passing Proof-of-Compute nonces a participant found in ``epoch``'s sprint (DESIGN §5)."""

    epoch: U64
    nonces: Annotated[list[U64], MaxLen(POC_MAX_CLAIMED_NONCES)]
    nonce: U64


@message("PocVerdict", version=1)
class PocVerdict:
    """A validator's verdict on ``participant``'s PoC claim after recomputing a sample of it."""

    epoch: U64
    participant: Address
    accepted: bool
    sampled: U32
    failed: U32
    nonce: U64


@message("ExecuteRequest", version=1)
class ExecuteRequest:
    """TA → executor: run this client request as ``attempt`` (signed by the TA's participant)."""

    request: Annotated[bytes, MaxLen(4 * 1024 * 1024)]
    attempt: U32
    prompt_ids: Annotated[list[U32], MaxLen(1_048_576)]


@message("StreamChunk", version=1)
class StreamChunk:
    """Executor → TA: one output position (unsigned; committed to by FinishInference)."""

    index: U32
    token_id: U32
    text: Annotated[str, MaxLen(4096)]
    logprob: float
    top_ids: Annotated[list[U32], MaxLen(20)]
    top_logprobs: Annotated[list[float], MaxLen(20)]
    finish_reason: Annotated[str, MaxLen(16)]  # "" until the last chunk


@message("ExecutionError", version=1)
class ExecutionError:
    """Executor → TA: the request failed before (``started`` False) or after its first token."""

    code: Annotated[str, MaxLen(64)]
    message: Annotated[str, MaxLen(1024)]
    started: bool


@message("PayloadRequest", version=1)
class PayloadRequest:
    """Verifier → executor: send the payload of an inference (signed by the verifier)."""

    inference_id: Bytes32
    payload_hash: Bytes32
    timestamp_ms: U64


@message("Payload", version=1)
class Payload:
    """What an executor keeps per inference and serves to verifiers: the client's signed
    request (so verifiers can re-derive the prompt and stop strings) and the compact artifact."""

    request: Annotated[bytes, MaxLen(4 * 1024 * 1024)]
    artifact: Annotated[bytes, MaxLen(64 * 1024 * 1024)]


@message("InferenceDone", version=1)
class InferenceDone:
    """TA → client: the last item of a response stream (usage and where to look it up)."""

    inference_id: Bytes32
    executor: Address
    attempt: U32
    prompt_tokens: U32
    completion_tokens: U32
    cost: U64
    finish_reason: Annotated[str, MaxLen(16)]


__all__ = [
    "Address",
    "ChatMessage",
    "ExecuteRequest",
    "ExecutionError",
    "FinishInference",
    "InferenceDone",
    "InferenceRequest",
    "OutputDelivered",
    "Payload",
    "PayloadRequest",
    "Ping",
    "PocClaim",
    "PocVerdict",
    "ReceiptChallenge",
    "ReceiptEntry",
    "ReceiptReveal",
    "ReceiptVote",
    "SamplingSpec",
    "SeedCommit",
    "SeedReveal",
    "StartInference",
    "StreamChunk",
    "Validation",
    "Vote",
]
