"""The one typed wire format: declared message types, canonical msgpack, signed envelopes.

Every message that crosses a participant boundary is a frozen dataclass declared in this module
with ``@message(TYPE, version=N)``. Its body is encoded as a msgpack **array in field order** (never
a map), so there is exactly one encoding of each value; :func:`decode` re-encodes what it read and
rejects any other encoding (:class:`~gonka_ray.exceptions.NonCanonicalEncoding`). No pickle, ever.

Field types are plain annotations, optionally narrowed with ``Annotated``:
``int`` (int64; ``Annotated[int, Range(lo, hi)]``), ``bool``, ``float`` (finite, float64),
``str`` / ``bytes`` (``MaxLen(n)`` or ``Size(n)``), ``list[T]`` (``MaxLen``), ``T | None`` and nested
``@struct`` dataclasses.

A signed **envelope** is the msgpack array ``[type, version, body, signer, signature]`` where
``body`` is the canonical body bytes, ``signer`` the sender's 32-byte Ed25519 public key and
``signature`` covers the canonical bytes of ``[chain, type, version, body, signer]`` (purpose
``b"envelope"``, see :mod:`gonka_ray.crypto`). ``chain`` is the network's chain id (its genesis
``chain_id``): it is not sent, each side supplies its own, so an envelope signed for one network
fails the signature check on every other. :func:`open_envelope` checks size, shape, signature,
then decodes the body; every failure is a typed :class:`~gonka_ray.exceptions.WireError`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args, get_origin

import msgpack

from gonka_ray import crypto
from gonka_ray.constants import (
    PROTOCOL_VERSION,
    WIRE_MAX_BYTES_LEN,
    WIRE_MAX_LIST_LEN,
    WIRE_MAX_MESSAGE_BYTES,
    WIRE_MAX_STR_CHARS,
)
from gonka_ray.exceptions import (
    MalformedMessage,
    NonCanonicalEncoding,
    OversizeField,
    TruncatedMessage,
    UnauthorizedSigner,
    UnknownMessageType,
    UnsupportedVersion,
    WireError,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
ENVELOPE_PURPOSE = b"envelope"
CHAIN_ID_MAX_CHARS = 64


# --- field annotations ----------------------------------------------------------------------


@dataclass(frozen=True)
class MaxLen:
    """At most ``n`` characters (str), bytes, or items (list)."""

    n: int


@dataclass(frozen=True)
class Size:
    """Exactly ``n`` bytes (bytes fields)."""

    n: int


@dataclass(frozen=True)
class Range:
    """Integer in ``[lo, hi]``."""

    lo: int
    hi: int


Bytes32 = Annotated[bytes, Size(32)]
Signature = Annotated[bytes, Size(64)]
U64 = Annotated[int, Range(0, UINT64_MAX)]
U32 = Annotated[int, Range(0, 2**32 - 1)]
Name = Annotated[str, MaxLen(128)]


# --- field codecs ---------------------------------------------------------------------------
# A codec is a pair (check, to_python): ``check(value, path)`` validates a Python value before
# encoding and returns the msgpack-able form; ``to_python(obj, path)`` validates a decoded msgpack
# object and returns the Python value. Both raise MalformedMessage / OversizeField naming ``path``.

Codec = tuple[Callable[[Any, str], Any], Callable[[Any, str], Any]]


def _fail(path: str, what: str) -> typing.NoReturn:
    raise MalformedMessage(f"field {path!r}: {what}", field=path)


def _int_codec(lo: int, hi: int) -> Codec:
    def check(v: Any, path: str) -> int:
        if type(v) is not int:
            _fail(path, f"expected int, got {type(v).__name__}")
        if not lo <= v <= hi:
            raise OversizeField(f"field {path!r}: {v} outside [{lo}, {hi}]", field=path)
        return v

    return check, check


def _bool_check(v: Any, path: str) -> bool:
    if type(v) is not bool:
        _fail(path, f"expected bool, got {type(v).__name__}")
    return v


def _float_check(v: Any, path: str) -> float:
    if type(v) is int and not isinstance(v, bool):
        v = float(v)
    if type(v) is not float:
        _fail(path, f"expected float, got {type(v).__name__}")
    if not math.isfinite(v):
        _fail(path, "float must be finite")
    return v


def _float_decode(v: Any, path: str) -> float:
    # NOTE: ints are not accepted on the wire for float fields: 1 and 1.0 must not both decode.
    if type(v) is not float:
        _fail(path, f"expected float, got {type(v).__name__}")
    return _float_check(v, path)


def _sized_codec(kind: type, max_len: int, exact: int | None) -> Codec:
    def check(v: Any, path: str) -> Any:
        if type(v) is not kind:
            if kind is bytes and type(v) is bytearray:
                v = bytes(v)
            else:
                _fail(path, f"expected {kind.__name__}, got {type(v).__name__}")
        if exact is not None and len(v) != exact:
            _fail(path, f"expected exactly {exact} bytes, got {len(v)}")
        if len(v) > max_len:
            raise OversizeField(f"field {path!r}: length {len(v)} > {max_len}", field=path)
        return v

    return check, check


def _list_codec(item: Codec, max_len: int) -> Codec:
    item_check, item_decode = item

    def check(v: Any, path: str) -> list:
        if type(v) not in (list, tuple):
            _fail(path, f"expected list, got {type(v).__name__}")
        if len(v) > max_len:
            raise OversizeField(f"field {path!r}: {len(v)} items > {max_len}", field=path)
        return [item_check(x, f"{path}[{i}]") for i, x in enumerate(v)]

    def decode(v: Any, path: str) -> tuple:
        if type(v) is not list:
            _fail(path, f"expected list, got {type(v).__name__}")
        if len(v) > max_len:
            raise OversizeField(f"field {path!r}: {len(v)} items > {max_len}", field=path)
        return tuple(item_decode(x, f"{path}[{i}]") for i, x in enumerate(v))

    return check, decode


def _optional_codec(inner: Codec) -> Codec:
    inner_check, inner_decode = inner

    def check(v: Any, path: str) -> Any:
        return None if v is None else inner_check(v, path)

    def decode(v: Any, path: str) -> Any:
        return None if v is None else inner_decode(v, path)

    return check, decode


def _struct_codec(cls: type) -> Codec:
    def check(v: Any, path: str) -> list:
        if not isinstance(v, cls):
            _fail(path, f"expected {cls.__name__}, got {type(v).__name__}")
        return _encode_fields(cls, v, path + ".")

    def decode(v: Any, path: str) -> Any:
        return _decode_fields(cls, v, path + ".")

    return check, decode


def _codec_for(tp: Any, meta: tuple = ()) -> Codec:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extra = get_args(tp)
        return _codec_for(base, (*meta, *extra))
    max_len = next((m.n for m in meta if isinstance(m, MaxLen)), None)
    exact = next((m.n for m in meta if isinstance(m, Size)), None)
    rng = next((m for m in meta if isinstance(m, Range)), None)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(get_args(tp)) != 2:
            raise TypeError(f"only `T | None` unions are supported, got {tp}")
        return _optional_codec(_codec_for(args[0], meta))
    if origin in (list, tuple):
        (item_tp, *rest) = get_args(tp)
        if rest and rest != [Ellipsis]:
            raise TypeError("tuples on the wire must be tuple[T, ...]")
        return _list_codec(_codec_for(item_tp), max_len or WIRE_MAX_LIST_LEN)
    if tp is bool:
        return _bool_check, _bool_check
    if tp is int:
        return _int_codec(rng.lo, rng.hi) if rng else _int_codec(INT64_MIN, INT64_MAX)
    if tp is float:
        return _float_check, _float_decode
    if tp is str:
        return _sized_codec(str, max_len or WIRE_MAX_STR_CHARS, None)
    if tp is bytes:
        return _sized_codec(bytes, exact or max_len or WIRE_MAX_BYTES_LEN, exact)
    if isinstance(tp, type) and getattr(tp, "__wire_fields__", None) is not None:
        return _struct_codec(tp)
    raise TypeError(f"type {tp!r} cannot be declared on the wire")


def _compile(cls: type) -> None:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [(f.name, _codec_for(hints[f.name])) for f in dataclasses.fields(cls)]
    cls.__wire_fields__ = tuple(fields)


def _encode_fields(cls: type, value: Any, prefix: str = "") -> list:
    return [check(getattr(value, name), prefix + name) for name, (check, _) in cls.__wire_fields__]


def _decode_fields(cls: type, obj: Any, prefix: str = "") -> Any:
    fields = cls.__wire_fields__
    if type(obj) is not list:
        _fail(prefix.rstrip(".") or cls.__name__, f"expected a {cls.__name__} array")
    if len(obj) != len(fields):
        _fail(
            prefix.rstrip(".") or cls.__name__,
            f"{cls.__name__} has {len(fields)} fields, got {len(obj)}",
        )
    return cls(*[dec(v, prefix + name) for (name, (_, dec)), v in zip(fields, obj, strict=True)])


# --- declarations ---------------------------------------------------------------------------

T = TypeVar("T")
REGISTRY: dict[tuple[str, int], type] = {}
_TYPES: set[str] = set()


class Message:
    """Base of declared message types (for typing only; instances are frozen dataclasses)."""

    TYPE: ClassVar[str]
    VERSION: ClassVar[int]
    __wire_fields__: ClassVar[tuple]


def struct(cls: type[T]) -> type[T]:
    """Declare a frozen dataclass usable as a nested field (no type tag of its own)."""
    cls = dataclass(frozen=True, slots=True)(cls)
    _compile(cls)
    return cls


def message(type_name: str, *, version: int = 1) -> Callable[[type[T]], type[T]]:
    """Declare a top-level message type ``type_name`` at ``version``."""

    def wrap(cls: type[T]) -> type[T]:
        key = (type_name, version)
        if key in REGISTRY:
            raise TypeError(f"message {type_name} v{version} declared twice")
        cls = dataclass(frozen=True, slots=True)(cls)
        cls.TYPE = type_name
        cls.VERSION = version
        _compile(cls)
        REGISTRY[key] = cls
        _TYPES.add(type_name)
        return cls

    return wrap


# --- msgpack with typed errors ----------------------------------------------------------------


def _pack(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except UnicodeEncodeError:  # a str with a lone surrogate (JSON "\ud800") has no UTF-8 form
        raise MalformedMessage("a string field is not valid Unicode (lone surrogate)") from None


def _unpack(data: bytes) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"expected bytes, got {type(data).__name__}")
    if len(data) > WIRE_MAX_MESSAGE_BYTES:
        raise OversizeField(f"message of {len(data)} bytes > {WIRE_MAX_MESSAGE_BYTES}")
    if len(data) == 0:
        raise TruncatedMessage("empty message")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except msgpack.ExtraData:
        raise MalformedMessage("trailing bytes after the message") from None
    except ValueError as exc:  # includes msgpack's "incomplete input"
        if "incomplete" in str(exc).lower():
            raise TruncatedMessage("message ends early") from None
        raise MalformedMessage(f"not valid msgpack: {exc}") from None
    except Exception as exc:  # FormatError, StackError, UnicodeDecodeError, ...
        raise MalformedMessage(f"not valid msgpack: {type(exc).__name__}") from None


def _lookup(type_name: Any, version: Any) -> type:
    if type(type_name) is not str or type(version) is not int:
        raise MalformedMessage("type must be a string and version an int")
    cls = REGISTRY.get((type_name, version))
    if cls is None:
        if type_name in _TYPES:
            raise UnsupportedVersion(f"{type_name} v{version} is not supported", field="version")
        raise UnknownMessageType(f"unknown message type {type_name[:64]!r}", field="type")
    return cls


def encode_body(msg: Any) -> bytes:
    """Canonical bytes of a message's body (its fields, in order)."""
    return _pack(_encode_fields(type(msg), msg))


def decode_body(cls: type[T], data: bytes) -> T:
    """Decode body bytes of declared type ``cls``; rejects non-canonical encodings."""
    obj = _unpack(data)
    msg = _decode_fields(cls, obj)
    if encode_body(msg) != bytes(data):
        raise NonCanonicalEncoding(f"{cls.TYPE} body is not canonically encoded")
    return msg


def encode(msg: Any) -> bytes:
    """Unsigned canonical encoding ``[type, version, body]`` (for local storage and hashing)."""
    cls = type(msg)
    if (getattr(cls, "TYPE", None), getattr(cls, "VERSION", None)) not in REGISTRY:
        raise MalformedMessage(f"{cls.__name__} is not a declared message type")
    return _pack([cls.TYPE, cls.VERSION, _encode_fields(cls, msg)])


def decode(data: bytes, expect: type[T] | tuple[type, ...] | None = None) -> T:
    """Inverse of :func:`encode`. Raises a :class:`WireError` subclass on any bad input."""
    obj = _unpack(data)
    if type(obj) is not list or len(obj) != 3:
        raise MalformedMessage("expected [type, version, body]")
    cls = _lookup(obj[0], obj[1])
    _check_expected(cls, expect)
    msg = _decode_fields(cls, obj[2])
    if encode(msg) != bytes(data):
        raise NonCanonicalEncoding(f"{cls.TYPE} is not canonically encoded")
    return msg


def digest(msg: Any) -> bytes:
    """SHA-256 of the canonical unsigned encoding: a content id for any declared message."""
    return crypto.sha256(encode(msg))


def _check_expected(cls: type, expect: type | tuple[type, ...] | None) -> None:
    if expect is None:
        return
    allowed = expect if isinstance(expect, tuple) else (expect,)
    if cls not in allowed:
        names = ", ".join(c.TYPE for c in allowed)
        raise UnknownMessageType(f"expected {names}, got {cls.TYPE}", field="type")


# --- signed envelopes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signed:
    """An opened envelope: the decoded message, who signed it, and the exact bytes received."""

    message: Any
    signer: bytes
    signature: bytes
    raw: bytes

    @property
    def signer_address(self) -> str:
        return crypto.address(self.signer)

    @property
    def id(self) -> bytes:
        """SHA-256 of the signature: unique per signed message (Ed25519 is deterministic)."""
        return crypto.sha256(self.signature)


def _signing_bytes(chain: str, type_name: str, version: int, body: bytes, signer: bytes) -> bytes:
    if type(chain) is not str or not 0 < len(chain) <= CHAIN_ID_MAX_CHARS:
        raise MalformedMessage("a chain id is a non-empty string of at most 64 characters")
    return _pack([chain, type_name, version, body, signer])


def seal(msg: Any, key: crypto.KeyPair, chain: str) -> bytes:
    """Sign ``msg`` with ``key`` for the network ``chain`` and return the envelope bytes."""
    cls = type(msg)
    if (getattr(cls, "TYPE", None), getattr(cls, "VERSION", None)) not in REGISTRY:
        raise MalformedMessage(f"{cls.__name__} is not a declared message type")
    body = encode_body(msg)
    signed = _signing_bytes(chain, cls.TYPE, cls.VERSION, body, key.public_key)
    sig = key.sign(ENVELOPE_PURPOSE, signed)
    return _pack([cls.TYPE, cls.VERSION, body, key.public_key, sig])


def open_envelope(
    data: bytes,
    expect: type[T] | tuple[type, ...] | None = None,
    *,
    chain: str,
    authorize: Callable[[bytes, Any], bool] | None = None,
) -> Signed:
    """Verify and decode a signed envelope.

    Args:
        data: the envelope bytes.
        expect: the message type(s) acceptable here; anything else raises UnknownMessageType.
        chain: this network's chain id; an envelope signed for another network fails
            (BadSignature).
        authorize: ``authorize(signer_public_key, message) -> bool``; False raises
            UnauthorizedSigner (e.g. "only the selected executor may send FinishInference").

    Returns:
        :class:`Signed` with the decoded message.

    Raises:
        WireError: any of its subclasses: truncated, malformed, unknown type or version,
            oversize, non-canonical, bad signature, unauthorized signer.
    """
    obj = _unpack(data)
    if type(obj) is not list or len(obj) != 5:
        raise MalformedMessage("an envelope is [type, version, body, signer, signature]")
    type_name, version, body, signer, sig = obj
    cls = _lookup(type_name, version)
    _check_expected(cls, expect)
    if type(body) is not bytes:
        raise MalformedMessage("envelope body must be bytes", field="body")
    if type(signer) is not bytes or len(signer) != crypto.PUBLIC_KEY_BYTES:
        raise MalformedMessage("envelope signer must be a 32-byte public key", field="signer")
    if type(sig) is not bytes or len(sig) != crypto.SIGNATURE_BYTES:
        raise MalformedMessage("envelope signature must be 64 bytes", field="signature")
    crypto.verify(
        signer, ENVELOPE_PURPOSE, _signing_bytes(chain, type_name, version, body, signer), sig
    )
    msg = decode_body(cls, body)
    raw = bytes(data)
    if _pack([type_name, version, body, signer, sig]) != raw:
        raise NonCanonicalEncoding("envelope is not canonically encoded")
    if authorize is not None and not authorize(signer, msg):
        raise UnauthorizedSigner(f"{crypto.address(signer)} may not send {cls.TYPE}")
    return Signed(msg, signer, sig, raw)


def envelope_id(data: bytes) -> bytes:
    """:attr:`Signed.id` of an envelope, read without verifying it (for envelopes already
    verified elsewhere, e.g. a transaction the ledger applied)."""
    obj = _unpack(data)
    if type(obj) is not list or len(obj) != 5 or type(obj[4]) is not bytes:
        raise MalformedMessage("an envelope is [type, version, body, signer, signature]")
    return crypto.sha256(obj[4])


def peek_type(data: bytes) -> tuple[str, int]:
    """The (type, version) of an envelope or encoded message without verifying it."""
    obj = _unpack(data)
    if type(obj) is not list or len(obj) not in (3, 5):
        raise MalformedMessage("not an envelope or encoded message")
    cls = _lookup(obj[0], obj[1])
    return cls.TYPE, cls.VERSION


__all__ = [
    "REGISTRY",
    "U32",
    "U64",
    "Bytes32",
    "MaxLen",
    "Message",
    "Name",
    "Range",
    "Signature",
    "Signed",
    "Size",
    "WireError",
    "decode",
    "decode_body",
    "digest",
    "encode",
    "encode_body",
    "envelope_id",
    "message",
    "open_envelope",
    "peek_type",
    "seal",
    "struct",
]

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


# --- ledger / consensus ---------------------------------------------------------------------
# Owned by gonka_ray/ledger (issue 6). Consensus messages carry their own Ed25519 signatures
# (purposes b"consensus/proposal", b"consensus/vote", b"consensus/timeout") so that votes can be
# aggregated into quorum certificates; they travel as ``encode``d bytes, not envelopes. Ledger
# transactions are ordinary signed envelopes (``seal``).

LEDGER_MAX_BLOCK_TXS = 100_000  # hard cap on transactions in one block (config caps it lower)
LEDGER_MAX_VALIDATORS = 1_024


@struct
class SignerSig:
    """One validator's signature, naming the validator by its index in the validator set."""

    index: Annotated[int, Range(0, LEDGER_MAX_VALIDATORS - 1)]
    signature: Signature


@struct
class QuorumCert:
    """> 2/3 of voting power signed ``(chain, view, block_hash)`` with purpose consensus/vote."""

    view: U64
    block_hash: Bytes32
    sigs: Annotated[list[SignerSig], MaxLen(LEDGER_MAX_VALIDATORS)]


@struct
class TimeoutSig:
    """One validator's signed timeout of a view, with the view of its highest QC."""

    index: Annotated[int, Range(0, LEDGER_MAX_VALIDATORS - 1)]
    high_qc_view: U64
    signature: Signature


@struct
class TimeoutCert:
    """> 2/3 of voting power timed out of ``view``."""

    view: U64
    sigs: Annotated[list[TimeoutSig], MaxLen(LEDGER_MAX_VALIDATORS)]


@struct
class BlockHeader:
    """What a block's hash covers. ``parent`` is always ``justify.block_hash``."""

    height: U64
    view: U64
    parent: Bytes32
    justify: QuorumCert
    tx_root: Bytes32  # Merkle root over sha256(tx) (see gonka_ray.ledger.merkle)
    tx_count: U32
    proposer: Annotated[int, Range(0, LEDGER_MAX_VALIDATORS - 1)]


@struct
class Block:
    header: BlockHeader
    txs: Annotated[list[Annotated[bytes, MaxLen(1024 * 1024)]], MaxLen(LEDGER_MAX_BLOCK_TXS)]


@message("ConsensusProposal", version=1)
class ConsensusProposal:
    """The leader of ``block.header.view`` proposes ``block``; ``tc`` justifies a view change."""

    block: Block
    tc: TimeoutCert | None
    signature: Signature  # by the proposer over (chain, view, block_hash)


@message("ConsensusVote", version=1)
class ConsensusVote:
    view: U64
    block_hash: Bytes32
    voter: Annotated[int, Range(0, LEDGER_MAX_VALIDATORS - 1)]
    signature: Signature


@message("ConsensusTimeout", version=1)
class ConsensusTimeout:
    view: U64
    high_qc: QuorumCert
    voter: Annotated[int, Range(0, LEDGER_MAX_VALIDATORS - 1)]
    signature: Signature  # over (chain, view, high_qc.view)


@message("ConsensusSyncInfo", version=1)
class ConsensusSyncInfo:
    """A replica's highest QC (and last TC), sent to a peer that is behind."""

    high_qc: QuorumCert
    tc: TimeoutCert | None


@message("ConsensusTxBatch", version=1)
class ConsensusTxBatch:
    """Transactions gossiped to the other replicas' mempools."""

    txs: Annotated[list[Annotated[bytes, MaxLen(1024 * 1024)]], MaxLen(LEDGER_MAX_BLOCK_TXS)]


@message("ConsensusBlockRequest", version=1)
class ConsensusBlockRequest:
    """Ask for the block ``block_hash`` and up to ``max_blocks - 1`` of its ancestors."""

    block_hash: Bytes32
    max_blocks: Annotated[int, Range(1, 1024)]


@message("ConsensusBlockResponse", version=1)
class ConsensusBlockResponse:
    """Blocks, newest first. Unsigned: a block is authenticated by its hash."""

    blocks: Annotated[list[Block], MaxLen(1024)]


@message("ConsensusSafety", version=1)
class ConsensusSafety:
    """A replica's safety state; persisted before any vote or timeout it covers is sent."""

    cur_view: U64
    last_voted_view: U64
    locked_hash: Bytes32
    high_qc: QuorumCert
    timeout_view: U64  # highest view this replica timed out of (0 = none)
    epoch: U64 = 0  # the consensus epoch these views belong to (ledger/consensus.py)


@message("CommitCertificate", version=1)
class CommitCertificate:
    """Proof that ``headers[0]`` is committed: a parent-linked header chain whose last three
    headers have consecutive views, plus the QC of the last one (a HotStuff 3-chain)."""

    headers: Annotated[list[BlockHeader], MaxLen(4096)]
    qc: QuorumCert


@message("TxReceipt", version=1)
class TxReceipt:
    """Offline-verifiable proof that transaction ``tx_hash`` is in a committed block."""

    tx_hash: Bytes32  # sha256 of the transaction bytes (the Merkle leaf)
    index: U32
    path: Annotated[list[Bytes32], MaxLen(64)]
    certificate: CommitCertificate
    ok: bool  # the state machine's verdict (reported by the replica, not proven)
    reason: Annotated[str, MaxLen(256)]


@struct
class GenesisAccount:
    address: Annotated[str, MaxLen(64)]
    balance: U64


@struct
class GenesisParticipant:
    public_key: Bytes32
    name: Name
    weight: U64  # voting power


@struct
class EvidenceRuleSpec:
    """The network's epoch-evidence rule (:class:`gonka_ray.protocol.verification_policy.
    EpochRule`), fixed in the genesis so every replica judges with the same numbers."""

    mu: float
    kappa: float
    z: float
    safety: float
    min_inferences: U32
    trim: float  # share of the evidence weight trimmed from each end
    sigma: float = 0.0  # sd of honest T times √(Σw): the bound narrows with evidence; 0: kappa


@struct
class ProtocolUpgrade:
    """Rules of protocol ``version`` apply to blocks from ``height`` on
    (:mod:`gonka_ray.protocol.versions`)."""

    version: U32
    height: U64


ChainId = Annotated[str, MaxLen(CHAIN_ID_MAX_CHARS)]


@message("LedgerGenesis", version=4)
class LedgerGenesis:
    """The definition every replica starts from.

    ``chain_id`` names the network and is bound into every envelope signature (see
    :func:`seal`); ``protocol_version`` is the rules version from height 0 and ``upgrades`` the
    scheduled later ones, so a replica replaying old blocks applies the rules they were written
    under.
    """

    chain_id: ChainId
    accounts: Annotated[list[GenesisAccount], MaxLen(WIRE_MAX_LIST_LEN)]
    participants: Annotated[list[GenesisParticipant], MaxLen(LEDGER_MAX_VALIDATORS)]
    epoch_evidence: EvidenceRuleSpec | None = None  # None: executors are judged per inference
    protocol_version: U32 = PROTOCOL_VERSION
    upgrades: Annotated[list[ProtocolUpgrade], MaxLen(64)] = ()


# Ledger transactions (signed envelopes). ``nonce`` is the signer's next account nonce.


@message("RegisterParticipant", version=1)
class RegisterParticipant:
    name: Name
    weight: U64  # must be 0: weight is earned (genesis, Proof-of-Compute), never self-declared
    nonce: U64


@message("Transfer", version=1)
class Transfer:
    to: Annotated[str, MaxLen(64)]  # an address (crypto.address)
    amount: U64
    nonce: U64


# --- inference protocol ---------------------------------------------------------------------
# Owned by the participants' protocol (issue 7). Lifecycle transactions are signed envelopes
# applied by gonka_ray/ledger/inference_app.py; ``nonce`` is a per-sender salt (the ledger
# rejects a transaction id it has already applied). Messages between actors of different
# participants are signed envelopes too; stream chunks are plain encoded bytes whose content
# the executor later commits to in FinishInference.

Address = Annotated[str, MaxLen(64)]
POC_MAX_CLAIMED_NONCES = 65_536  # passing nonces in one PoC claim (about 0.5 MiB)


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


@message("Validation", version=2)
class Validation:
    """A validator's verdict on one inference, with its epoch evidence about the executor: the
    sum over output tokens of the logprob excess beyond float16 rounding, in millionths (the
    weight it is pooled against is the executor's committed one; see
    :mod:`gonka_ray.protocol.evidence`)."""

    inference_id: Bytes32
    passed: bool
    replay_mismatches: U32
    similarity: float
    logprob_deviation: float
    nonce: U64
    evidence_excess_micro: U64 = 0


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
