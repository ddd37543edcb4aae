"""The one typed wire format: declared message types, canonical msgpack, signed envelopes.

Every message that crosses a participant boundary is a frozen dataclass declared in the
:mod:`gonka_ray.wire` package with ``@message(TYPE, version=N)``. Its body is encoded as a msgpack **array in field order** (never
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
    WIRE_CHAIN_ID_MAX_CHARS,
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

    # NOTE: the items are checked under the list's own path first, without formatting a path per
    # item (a block carries thousands of transactions); only a failure is checked again item by
    # item, so that the error names the index (the checks are pure).

    def check(v: Any, path: str) -> list:
        if type(v) not in (list, tuple):
            _fail(path, f"expected list, got {type(v).__name__}")
        if len(v) > max_len:
            raise OversizeField(f"field {path!r}: {len(v)} items > {max_len}", field=path)
        try:
            return [item_check(x, path) for x in v]
        except WireError:
            return [item_check(x, f"{path}[{i}]") for i, x in enumerate(v)]

    def decode(v: Any, path: str) -> tuple:
        if type(v) is not list:
            _fail(path, f"expected list, got {type(v).__name__}")
        if len(v) > max_len:
            raise OversizeField(f"field {path!r}: {len(v)} items > {max_len}", field=path)
        try:
            return tuple(item_decode(x, path) for x in v)
        except WireError:
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


def _canonical(obj: Any, data: bytes) -> bool:
    """Whether ``data`` is the canonical encoding of ``obj``, what ``_unpack(data)`` read and
    a declaration then decoded without error.

    NOTE: that decode checked every value's exact type, and the declarable types (int, bool,
    float, str, bytes, lists, structs as arrays, None) have no maps and no conversions, so
    packing what msgpack read gives the same bytes as encoding the decoded message would
    (``encode_body``): a non-minimal integer or length, a float32, a str for bin or trailing
    bytes all come out different. Packing it costs no per-field checks a second time."""
    return _pack(obj) == bytes(data)


def decode_body(cls: type[T], data: bytes) -> T:
    """Decode body bytes of declared type ``cls``; rejects non-canonical encodings."""
    obj = _unpack(data)
    msg = _decode_fields(cls, obj)
    if not _canonical(obj, data):
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
    if not _canonical(obj, data):
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
    if type(chain) is not str or not 0 < len(chain) <= WIRE_CHAIN_ID_MAX_CHARS:
        raise MalformedMessage("a chain id is a non-empty string of at most 64 characters")
    return _pack([chain, type_name, version, body, signer])


def _envelope_fields(data: bytes) -> list:
    """The five fields of an envelope's msgpack array, unchecked beyond their number."""
    obj = _unpack(data)
    if type(obj) is not list or len(obj) != 5:
        raise MalformedMessage("an envelope is [type, version, body, signer, signature]")
    return obj


def seal(msg: Message, key: crypto.KeyPair, chain: str) -> bytes:
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
    obj = _envelope_fields(data)
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
    obj = _envelope_fields(data)
    if type(obj[4]) is not bytes:
        raise MalformedMessage("an envelope is [type, version, body, signer, signature]")
    return crypto.sha256(obj[4])


def open_applied(data: bytes) -> Signed:
    """An envelope the ledger has already verified and applied (its receipt is ok), decoded
    without verifying its signature a second time. Never for bytes that did not come out of a
    committed block on this replica: those go through :func:`open_envelope`."""
    obj = _envelope_fields(data)
    type_name, version, body, signer, sig = obj
    return Signed(decode_body(_lookup(type_name, version), body), signer, sig, bytes(data))


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
    "open_applied",
    "open_envelope",
    "peek_type",
    "seal",
    "struct",
]
