"""The mutual handshake of a peer connection, without I/O.

Each side sends two :class:`~gonka_ray.wire.PeerHello` ``(chain_id, index, nonce, echo_nonce,
session_key, timestamp_ms)`` sealed with its node key (``wire.seal``): **hello 1** with an empty
``echo_nonce``, then **hello 2** with the same fields and ``echo_nonce`` = the other side's
nonce. The dialer speaks first (its hello 1); the acceptor answers a hello 1 that passed the
checks below with its hello 1 and hello 2 together, and the dialer completes with its hello 2.
So the acceptor signs nothing, and creates no key, for a stranger who has not shown a hello
signed by a genesis key (a stranger's key is refused before any signature is checked). A side
accepts the other once it has

- opened both of its hellos for this chain id (the envelope signature);
- found the signer to be the genesis key of the claimed ``index`` (so a peer claiming another's
  index fails: it lacks that key), the index not its own and, when it dialed, the one it dialed;
- found hello 2 echoing *its own* fresh nonce, with the nonce and session key of hello 1 (so a
  hello recorded on one connection and replayed on another fails);
- found the timestamps within ``max_skew_ms`` of its clock (defence in depth: the nonce is what
  stops replays).

Then every frame is sealed (:class:`~gonka_ray.peer.framing.FrameCipher`) with keys from the two
ephemeral X25519 ``session_key``\\ s (``crypto_kx``, the dialer as client), which each side signed
in hello 2 next to the other's nonce: every frame is attributed to the authenticated index, and a
relay between two honest replicas can forward their hellos but can neither read nor inject a
single frame. This is the shape of CometBFT's SecretConnection (which Gonka's chain runs):
ephemeral X25519, then signatures that bind the ephemeral keys to the node keys. TLS adds nothing
here; an operator who wants it anyway can terminate it outside the process (a sidecar).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from gonka_ray import crypto, wire
from gonka_ray.constants import PEER_GUEST_INDEX
from gonka_ray.exceptions import InvalidKey, PeerProtocolError, WireError
from gonka_ray.peer.framing import FrameCipher, Kind, plain, split_plain
from gonka_ray.wire import PeerHello

NONCE_BYTES = 32


@dataclass(frozen=True)
class Session:
    """An authenticated connection: the peer's directory index (``PEER_GUEST_INDEX`` for a
    guest) and the two frame ciphers."""

    peer: int
    send: FrameCipher
    recv: FrameCipher


def _fail(reason: str, what: str) -> PeerProtocolError:
    return PeerProtocolError(f"handshake: {what}", reason=reason)


class Handshake:
    """One side's handshake on one connection.

    Args:
        key: this node's key (the genesis key of ``index``).
        index: this node's genesis index.
        chain_id: the network's chain id (bound into every hello's signature).
        peer_keys: the genesis public keys, by index.
        dialer: this side opened the connection.
        expect: the index dialed (None when accepting: any other index may authenticate).
        now_ms: the wall clock now, in ms since the epoch (this side's hello timestamp).
        max_skew_ms: how far a hello's timestamp may be from ``now_ms``.
        nonce, ephemeral: fixed values for tests; fresh random ones otherwise.
        guests: accept a hello with ``PEER_GUEST_INDEX`` signed by any key (a joiner that is
            not in the directory yet); its session's ``peer`` is ``PEER_GUEST_INDEX``. With
            ``index == PEER_GUEST_INDEX`` this side is the guest: it takes any acceptor's key.
    """

    def __init__(
        self,
        *,
        key: crypto.KeyPair,
        index: int,
        chain_id: str,
        peer_keys: Sequence[bytes],
        dialer: bool,
        expect: int | None,
        now_ms: int,
        max_skew_ms: int,
        nonce: bytes | None = None,
        ephemeral: tuple[bytes, bytes] | None = None,
        guests: bool = False,
    ) -> None:
        self.key = key
        self.index = index
        self.chain_id = chain_id
        self.peer_keys = list(peer_keys)
        self.dialer = dialer
        self.expect = expect
        self.max_skew_ms = max_skew_ms
        self.nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
        self._eph_pk, self._eph_sk = ephemeral if ephemeral is not None else crypto.kx_keypair()
        self._now_ms = now_ms
        self._first: PeerHello | None = None  # the other side's hello 1
        self._spoke = False  # this side's hello 1 is out
        self._genesis_keys = frozenset(self.peer_keys)
        self.guests = guests
        self.session: Session | None = None

    def _hello(self, echo: bytes) -> bytes:
        msg = PeerHello(
            chain_id=self.chain_id,
            index=self.index,
            nonce=self.nonce,
            echo_nonce=echo,
            session_key=self._eph_pk,
            timestamp_ms=self._now_ms,
        )
        return plain(Kind.HELLO, wire.seal(msg, self.key, self.chain_id))

    def hello(self) -> bytes:
        """The payload of this side's hello 1 (the dialer sends it as soon as it connects)."""
        self._spoke = True
        return self._hello(b"")

    @property
    def peer(self) -> int | None:
        """The index the other side claims (once its hello 1 passed)."""
        return None if self._first is None else self._first.index

    def receive(self, payload: bytes, now_ms: int) -> tuple[list[bytes], Session | None]:
        """Take one frame payload from the other side.

        Returns:
            ``(replies, session)``: payloads to send now, in order (hellos), and the session
            once the other side is authenticated (else None).

        Raises:
            PeerProtocolError: the hello fails a check (``reason`` says which); cut the
                connection.
        """
        if self.session is not None:
            raise _fail("unexpected_hello", "a hello after the handshake")
        msg = self._open(payload, now_ms)
        if self._first is None:
            if msg.echo_nonce:
                raise _fail("unexpected_echo", "the first hello echoes a nonce")
            self._first = msg
            replies = [] if self._spoke else [self.hello()]
            return [*replies, self._hello(msg.nonce)], None
        first = self._first
        if msg.echo_nonce != self.nonce:
            raise _fail("stale_echo", "hello 2 does not echo this connection's nonce")
        if (msg.index, msg.nonce, msg.session_key) != (first.index, first.nonce, first.session_key):
            raise _fail("hello_changed", "hello 2 differs from hello 1")
        try:
            rx, tx = crypto.kx_session_keys(
                self._eph_pk, self._eph_sk, msg.session_key, dialer=self.dialer
            )
        except InvalidKey:
            raise _fail("bad_session_key", "unusable session key") from None
        self.session = Session(msg.index, FrameCipher(tx), FrameCipher(rx))
        return [], self.session

    def _open(self, payload: bytes, now_ms: int) -> PeerHello:
        kind, body = split_plain(payload)
        if kind != Kind.HELLO:
            raise _fail("unexpected_kind", f"{kind.name} before the handshake completed")
        signer = _signer_of(body)
        guest = self.guests and _index_of(body) == PEER_GUEST_INDEX
        # A guest dials with the guest index and any key; it takes the acceptor's key as it is
        # (what it learns afterwards carries its own proof: receipts, attested snapshots).
        known = guest or self.index == PEER_GUEST_INDEX
        if not known and signer is not None and signer not in self._genesis_keys:
            raise _fail("wrong_key", "a hello not signed by a directory key")  # before any check
        try:
            signed = wire.open_envelope(body, PeerHello, chain=self.chain_id)
        except WireError as exc:
            raise _fail("bad_hello", f"not a hello sealed for this chain: {exc}") from None
        msg: PeerHello = signed.message
        if msg.chain_id != self.chain_id:  # pragma: no cover - the signature binds the chain
            raise _fail("bad_hello", "another chain")
        if guest and msg.index != PEER_GUEST_INDEX:  # pragma: no cover - the signature binds it
            raise _fail("bad_hello", "a guest hello changed its index")
        if known:
            pass
        elif msg.index >= len(self.peer_keys):
            raise _fail("unknown_index", f"index {msg.index} is not in the directory")
        elif msg.index == self.index:
            raise _fail("self_index", "the peer claims this node's own index")
        elif signed.signer != self.peer_keys[msg.index]:
            raise _fail("wrong_key", f"hello for index {msg.index} not signed by its key")
        if self.expect is not None and msg.index != self.expect and not known:
            raise _fail("unexpected_index", f"dialed {self.expect}, reached {msg.index}")
        if abs(msg.timestamp_ms - now_ms) > self.max_skew_ms:
            raise _fail("clock_skew", f"hello dated {msg.timestamp_ms - now_ms} ms from now")
        return msg


def _index_of(envelope: bytes) -> int | None:
    """The index a hello envelope claims, unverified (None when it has no such shape)."""
    try:
        body = msgpack.unpackb(envelope, raw=False, max_array_len=5, max_map_len=0)[2]
        fields = msgpack.unpackb(body, raw=False, max_array_len=8, max_map_len=0)
    except Exception:  # any malformation: open_envelope refuses it
        return None
    return fields[1] if type(fields) is list and len(fields) > 1 else None


def _signer_of(envelope: bytes) -> bytes | None:
    """The signer field of an envelope, unverified (None when it has no such shape)."""
    try:
        obj = msgpack.unpackb(envelope, raw=False, max_array_len=5, max_map_len=0)
    except Exception:  # any malformation: open_envelope would refuse it too
        return None
    return obj[3] if type(obj) is list and len(obj) == 5 and type(obj[3]) is bytes else None
