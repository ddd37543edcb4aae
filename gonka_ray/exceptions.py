"""The one exception tree of gonka_ray.

Every error the package raises on purpose is a :class:`GonkaError`. Each class says in its
docstring whether it is **Recoverable** (retrying the same call, later or elsewhere, may succeed)
or **Fatal** (the input or state is wrong; retrying the same thing fails the same way), and sets
``recoverable`` accordingly so callers can decide without string matching. ``http_status`` and
``code`` feed the OpenAI-style JSON errors of the HTTP layer.

A failed verification is a *result* (``VerificationResult``), never an exception.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GonkaError(Exception):
    """Root of all gonka_ray errors. Fatal unless a subclass says otherwise."""

    recoverable: ClassVar[bool] = False
    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __reduce__(self) -> tuple:
        # NOTE: subclasses take required keyword arguments (reason=...), which the default
        # Exception pickling cannot pass; Ray must ship them between actors intact.
        return (_rebuild, (type(self), self.message), self.__dict__)

    def to_dict(self) -> dict[str, Any]:
        """An OpenAI-style error object: ``{"message", "type", "code", "param"}``."""
        return {
            "message": self.message,
            "type": type(self).__name__,
            "code": self.code,
            "param": self.fields.get("field"),
        }


def _rebuild(cls: type, message: str) -> GonkaError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


class RecoverableError(GonkaError):
    """Recoverable: the same call may succeed on retry (later, or on another actor)."""

    recoverable = True
    http_status = 503
    code = "unavailable"


# --- configuration -------------------------------------------------------------------------


class ConfigError(GonkaError):
    """Fatal: a configuration file, value or ``GONKA_*`` environment variable is invalid."""

    http_status = 500
    code = "config_error"


# --- wire format ----------------------------------------------------------------------------


class WireError(GonkaError):
    """Fatal: bytes that are not a valid gonka_ray message. Never retry the same bytes."""

    http_status = 400
    code = "bad_message"


class TruncatedMessage(WireError):
    """Fatal: the bytes end before the message does."""


class MalformedMessage(WireError):
    """Fatal: well-formed msgpack whose shape or field types do not match the declared type."""


class UnknownMessageType(WireError):
    """Fatal: the type tag names no declared message."""


class UnsupportedVersion(WireError):
    """Fatal: the message type is known but not at this version."""


class OversizeField(WireError):
    """Fatal: a field (or the whole message) exceeds its declared maximum size."""


class NonCanonicalEncoding(WireError):
    """Fatal: decodes, but is not the one canonical encoding of its value (signatures would
    not be unique)."""


# --- crypto --------------------------------------------------------------------------------


class CryptoError(GonkaError):
    """Fatal: a key or signature problem."""

    http_status = 401
    code = "invalid_signature"


class BadSignature(CryptoError, WireError):
    """Fatal: the signature does not verify for the claimed signer over the canonical bytes."""


class UnauthorizedSigner(CryptoError, WireError):
    """Fatal: the signature is valid but the signer is not allowed to send this message."""

    http_status = 403
    code = "unauthorized"


class InvalidKey(CryptoError):
    """Fatal: bytes that are not an Ed25519 key or an address."""


class KeyFileError(CryptoError):
    """Fatal: a key file is missing, unreadable, malformed or readable by others."""

    http_status = 500
    code = "key_file_error"


# --- requests and engines ------------------------------------------------------------------


class InvalidRequest(GonkaError):
    """Fatal: a request field is invalid; ``field`` names it."""

    http_status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, **fields: Any) -> None:
        super().__init__(message, field=field, **fields)
        self.field = field


class RequestTooLarge(InvalidRequest):
    """Fatal: the request body is larger than the ingress reads (``limit_bytes``)."""

    http_status = 413
    code = "request_too_large"


class ModelNotFound(InvalidRequest):
    """Fatal: the request names a model this network does not serve."""

    http_status = 404
    code = "model_not_found"


class EngineLoadError(GonkaError):
    """Fatal: an engine could not load; the message names the missing file or package."""

    code = "engine_load_error"


class EngineError(RecoverableError):
    """Recoverable: the engine failed while running a request (another attempt may succeed)."""

    code = "engine_error"


# --- protocol ------------------------------------------------------------------------------


class AuthenticationError(GonkaError):
    """Fatal: missing or unknown API key, or a request signed by an unknown key."""

    http_status = 401
    code = "invalid_api_key"


class InsufficientBalance(GonkaError):
    """Fatal (until the account is topped up): balance is below the required escrow."""

    http_status = 402
    code = "insufficient_balance"


class ReplayedRequest(GonkaError):
    """Fatal: a signed request or transaction id that was already seen."""

    http_status = 409
    code = "replayed_request"


class ExpiredRequest(GonkaError):
    """Fatal: the request timestamp is outside the accepted window."""

    http_status = 400
    code = "expired_request"


class NotFound(GonkaError):
    """Fatal: the named inference, account or record does not exist."""

    http_status = 404
    code = "not_found"


class StreamInterrupted(EngineError):
    """Recoverable: the executor failed after the first token was sent, so the answer is
    incomplete (the client already holds part of it; a transparent retry could contradict it).
    Resend as a new request. The unfinished inference's escrow is refunded in full when its
    Start expires (``expiry_blocks``); ``inference_id`` and ``tokens_sent`` say which and how far.
    """

    code = "stream_interrupted"


class Overloaded(RecoverableError):
    """Recoverable: back-pressure; retry after ``retry_after_s`` seconds."""

    http_status = 429
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **fields: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **fields)
        self.retry_after_s = retry_after_s


class NoExecutorAvailable(RecoverableError):
    """Recoverable: no eligible executor could serve the request right now."""

    http_status = 503
    code = "no_executor"


class PayloadUnavailable(RecoverableError):
    """Recoverable for the fetcher; counts as a failed validation once the fetch window ends."""

    code = "payload_unavailable"


# --- ledger --------------------------------------------------------------------------------


class LedgerError(GonkaError):
    """Root of ledger errors."""

    code = "ledger_error"


class TxRejected(LedgerError):
    """Fatal: the state machine rejected a transaction deterministically; ``reason`` says why."""

    http_status = 400
    code = "tx_rejected"

    def __init__(self, message: str, *, reason: str, **fields: Any) -> None:
        super().__init__(message, reason=reason, **fields)
        self.reason = reason


class CommitTimeout(LedgerError, RecoverableError):
    """Recoverable: the transaction was not seen committed in time; it may still commit
    (transactions are idempotent by id, so resubmitting is safe)."""

    http_status = 503
    code = "commit_timeout"


class StorageError(LedgerError):
    """Fatal: persistent storage is corrupt or unwritable."""

    code = "storage_error"


class CorruptStore(StorageError):
    """Fatal: the replica's SQLite file at ``path`` is damaged (``problem`` says how), so the
    replica refuses to start on it: retrying the same file fails the same way. Move the file
    aside and resync from the peers (``on_corrupt_store="resync"`` does both)."""

    code = "corrupt_store"

    def __init__(self, path: str, problem: str, **fields: Any) -> None:
        super().__init__(
            f"ledger store {path} is corrupt: {problem}. The replica will not start on it: move "
            f"the file (and its -wal and -shm files) aside and let the replica resync from its "
            f"peers; on_corrupt_store='resync' does both (it renames the file to "
            f"<name>.corrupt-<time> and snapshot-syncs)",
            path=path,
            problem=problem,
            **fields,
        )
        self.path = path
        self.problem = problem


# --- peer transport --------------------------------------------------------------------------


class PeerProtocolError(WireError):
    """Fatal for the connection: the peer broke the framing or handshake protocol (oversized
    frame, bad hello, failed frame authentication, flood, ...). ``reason`` is a short label
    for logs and counters; the transport cuts the connection (the peer may redial)."""

    code = "peer_protocol_error"

    def __init__(self, message: str, *, reason: str, **fields: Any) -> None:
        super().__init__(message, reason=reason, **fields)
        self.reason = reason


class PeerUnavailable(RecoverableError):
    """Recoverable: no authenticated connection to that peer now, or it dropped or did not
    answer in time; ask again later or ask another peer."""

    code = "peer_unavailable"


class PeerCallFailed(RecoverableError):
    """Recoverable: the peer answered a call with an error instead of a result (``reason``:
    ``"unknown_method"``, ``"too_large"``, ``"failed"``, ``"empty"``); ask another peer."""

    code = "peer_call_failed"

    def __init__(self, message: str, *, reason: str, **fields: Any) -> None:
        super().__init__(message, reason=reason, **fields)
        self.reason = reason


class JoinRefused(GonkaError):
    """Fatal: a network would not take this participant (its registration or endpoint was
    refused, or no peer answered before the deadline); ``reason`` says why."""

    code = "join_refused"

    def __init__(self, message: str, *, reason: str, **fields: Any) -> None:
        super().__init__(message, reason=reason, **fields)
        self.reason = reason


class CrossParticipantCall(GonkaError):
    """Fatal (a bug): an actor tried to reach another participant's actor through Ray; what
    crosses a participant boundary goes over the peer transport."""

    code = "cross_participant_call"
