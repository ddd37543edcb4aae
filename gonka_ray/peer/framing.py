"""Frames of the TCP peer transport, without I/O: length prefix, kinds, batches, frame cipher.

Layout (integers big-endian)::

    frame   = length:u32 ‖ payload        length = len(payload), 1 ≤ length ≤ the limit
    payload = kind:u8 ‖ body              before the handshake completes (HELLO only)
            | seal(kind:u8 ‖ body)        after it: ChaCha20-Poly1305 under the sender's
                                          direction key, nonce = that direction's frame
                                          counter (0, 1, 2, ...), 16-byte tag appended

    kind        body
    1 HELLO     a sealed PeerHello envelope (``wire.seal``; see gonka_ray.peer.handshake)
    2 BATCH     msgpack array of bin: encoded consensus messages, in send order
    3 REQUEST   ``wire.encode(PeerRequest)``
    4 RESPONSE  ``wire.encode(PeerResponse)``
    5 PING      empty: keeps an idle connection's deadlines fresh

The limit is ``PEER_MAX_HELLO_BYTES`` until the handshake completes and
``PEER_MAX_FRAME_BYTES`` after it: :class:`FrameDecoder` refuses a longer frame as soon as its
4 header bytes are in, before it buffers any of the body. Because the nonce is the frame
counter, a replayed, reordered, dropped, altered or injected frame fails authentication, and the
connection is cut. Every refusal is a :class:`~gonka_ray.exceptions.PeerProtocolError` whose
``reason`` names it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from enum import IntEnum

import msgpack

from gonka_ray import crypto
from gonka_ray.exceptions import BadSignature, PeerProtocolError

HEADER = struct.Struct(">I")
# msgpack's worst-case overhead: an array header, and a header per bin (bin 32: 5 bytes)
_ARRAY_OVERHEAD = 5
_BIN_OVERHEAD = 5


class Kind(IntEnum):
    HELLO = 1
    BATCH = 2
    REQUEST = 3
    RESPONSE = 4
    PING = 5
    CALL = 6
    REPLY = 7
    CANCEL = 8


def frame(payload: bytes) -> bytes:
    """The frame carrying ``payload`` (length prefix + payload)."""
    return HEADER.pack(len(payload)) + payload


def plain(kind: Kind, body: bytes = b"") -> bytes:
    """An unsealed payload (the handshake's)."""
    return bytes((kind,)) + body


def split_plain(payload: bytes) -> tuple[Kind, bytes]:
    """``(kind, body)`` of an unsealed or opened payload.

    Raises:
        PeerProtocolError: ``unknown_kind``.
    """
    try:
        kind = Kind(payload[0])
    except (ValueError, IndexError):
        raise PeerProtocolError("unknown frame kind", reason="unknown_kind") from None
    return kind, payload[1:]


class FrameDecoder:
    """Cuts a byte stream into frame payloads.

    Feed it what the socket gives (:meth:`feed`), then take complete payloads with
    :meth:`next_payload` until it returns None. At most one incomplete frame is ever buffered:
    a header announcing more than ``max_frame_bytes`` raises at once (the limit may change
    between two payloads, e.g. when the handshake completes).
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held (0 between frames)."""
        return len(self._buf) - self._pos

    def pending_length(self) -> int | None:
        """The announced length of the incomplete frame, once its header is in."""
        if self.buffered < HEADER.size:
            return None
        return HEADER.unpack_from(self._buf, self._pos)[0]

    def next_payload(self) -> bytes | None:
        """The next complete payload, or None until more bytes arrive.

        Raises:
            PeerProtocolError: ``frame_too_large`` or ``empty_frame``.
        """
        n = self.pending_length()
        if n is not None:
            if n > self.max_frame_bytes:
                raise PeerProtocolError(
                    f"frame of {n} bytes > {self.max_frame_bytes}", reason="frame_too_large"
                )
            if n == 0:
                raise PeerProtocolError("empty frame", reason="empty_frame")
            start = self._pos + HEADER.size
            if len(self._buf) >= start + n:
                self._pos = start + n
                return bytes(self._buf[start : self._pos])
        if self._pos:  # compact once per batch of frames, not per frame
            del self._buf[: self._pos]
            self._pos = 0
        return None


def pack_batch(messages: list[bytes]) -> bytes:
    """The BATCH body of ``messages``."""
    return msgpack.packb(messages, use_bin_type=True)


def batch_bytes(message: bytes) -> int:
    """What one message adds to a BATCH body, at most."""
    return len(message) + _BIN_OVERHEAD


def batches(messages: Iterable[bytes], max_bytes: int, max_msgs: int) -> Iterator[list[bytes]]:
    """Consecutive groups of ``messages``, each packing into at most ``max_bytes`` of body and
    holding at most ``max_msgs`` (a single message too big for any group is the caller's to
    refuse before queueing it)."""
    group: list[bytes] = []
    size = _ARRAY_OVERHEAD
    for m in messages:
        n = batch_bytes(m)
        if group and (size + n > max_bytes or len(group) >= max_msgs):
            yield group
            group, size = [], _ARRAY_OVERHEAD
        group.append(m)
        size += n
    if group:
        yield group


def unpack_batch(body: bytes, max_msgs: int) -> list[bytes]:
    """Inverse of :func:`pack_batch`; at most ``max_msgs`` messages, none of them empty.

    Raises:
        PeerProtocolError: ``bad_batch``.
    """
    try:
        obj = msgpack.unpackb(
            body,
            raw=False,
            max_array_len=max_msgs,
            max_map_len=0,
            max_str_len=0,
            max_ext_len=0,
        )
    except Exception:  # ExtraData, FormatError, StackError, ValueError (a limit), ...
        raise PeerProtocolError(
            "a batch is not a msgpack array of bin", reason="bad_batch"
        ) from None
    if type(obj) is not list or not obj or any(type(m) is not bytes or not m for m in obj):
        raise PeerProtocolError("a batch is a non-empty array of bin", reason="bad_batch")
    return obj


class FrameCipher:
    """One direction of a session: seals (or opens) its frames in order with its key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0

    def seal(self, kind: Kind, body: bytes = b"") -> bytes:
        """The sealed payload of the next frame."""
        out = crypto.aead_seal(self._key, self._counter, bytes((kind,)) + body)
        self._counter += 1
        return out

    def open(self, payload: bytes) -> tuple[Kind, bytes]:
        """``(kind, body)`` of the next frame.

        Raises:
            PeerProtocolError: ``bad_frame_auth`` (forged, altered, replayed, reordered or
                sealed for another connection) or ``unknown_kind``.
        """
        try:
            opened = crypto.aead_open(self._key, self._counter, payload)
        except BadSignature:
            raise PeerProtocolError(
                "frame does not authenticate", reason="bad_frame_auth"
            ) from None
        self._counter += 1
        return split_plain(opened)
