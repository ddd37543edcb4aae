"""The TCP peer transport's frames and handshake without sockets: the decoder, batches, the
frame cipher, the token bucket, and each handshake check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gonka_ray import crypto, wire
from gonka_ray.exceptions import PeerProtocolError
from gonka_ray.peer.framing import (
    HEADER,
    FrameCipher,
    FrameDecoder,
    Kind,
    batches,
    frame,
    pack_batch,
    unpack_batch,
)
from gonka_ray.peer.handshake import Handshake
from gonka_ray.peer.limits import TokenBucket
from gonka_ray.wire import PeerHello, parse_address

CHAIN = "framing-test"
KEYS = [crypto.KeyPair.from_seed(f"framing-{i}") for i in range(3)]
PEER_KEYS = [k.public_key for k in KEYS]
NOW_MS = 1_700_000_000_000


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8), st.data())
def test_the_decoder_cuts_any_chunking_into_the_same_payloads(payloads, data) -> None:
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder(300)
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        dec.feed(stream[a:b])
        while (p := dec.next_payload()) is not None:
            out.append(p)
    assert out == payloads and dec.buffered == 0


def test_an_oversized_frame_is_refused_on_its_header_alone() -> None:
    dec = FrameDecoder(100)
    dec.feed(HEADER.pack(101)[:3])
    assert dec.next_payload() is None  # not even the header yet
    dec.feed(HEADER.pack(101)[3:])
    with pytest.raises(PeerProtocolError) as err:
        dec.next_payload()
    assert err.value.reason == "frame_too_large"
    dec = FrameDecoder(100)
    dec.feed(HEADER.pack(0))
    with pytest.raises(PeerProtocolError, match="empty"):
        dec.next_payload()


def test_batches_split_by_bytes_and_count_and_unpack_back() -> None:
    msgs = [bytes([i]) * 100 for i in range(10)]
    groups = list(batches(msgs, max_bytes=350, max_msgs=10))
    assert [len(g) for g in groups] == [3, 3, 3, 1]
    assert [len(g) for g in batches(msgs, max_bytes=10**6, max_msgs=4)] == [4, 4, 2]
    assert [len(g) for g in batches([b"x" * 1000], max_bytes=10, max_msgs=4)] == [1]
    for g in groups:
        body = pack_batch(g)
        assert len(body) <= 350 and unpack_batch(body, 10) == g


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",  # never used in msgpack
        pack_batch([]),
        pack_batch([b""]),
        pack_batch([b"ok"]) + b"trailing",
        wire.codec._pack(["text, not bin"]),
        wire.codec._pack([[b"nested"]]),
        wire.codec._pack({"a": b"map"}),
        pack_batch([b"x"] * 11),  # over max_msgs
    ],
)
def test_a_malformed_batch_is_refused(body: bytes) -> None:
    with pytest.raises(PeerProtocolError) as err:
        unpack_batch(body, 10)
    assert err.value.reason == "bad_batch"


def test_the_frame_cipher_refuses_replayed_reordered_and_altered_frames() -> None:
    key = bytes(range(32))
    send, recv = FrameCipher(key), FrameCipher(key)
    a, b = send.seal(Kind.BATCH, b"a"), send.seal(Kind.PING)
    assert recv.open(a) == (Kind.BATCH, b"a")
    for bad in (a, a[:-1] + bytes([a[-1] ^ 1]), b""):  # replayed, altered, empty
        with pytest.raises(PeerProtocolError) as err:
            recv.open(bad)
        assert err.value.reason == "bad_frame_auth"
    assert recv.open(b) == (Kind.PING, b"")
    other = FrameCipher(key)
    other.seal(Kind.PING)
    with pytest.raises(PeerProtocolError):  # frame 1 opened as frame 0: reordered
        FrameCipher(key).open(other.seal(Kind.PING))


def test_the_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert bucket.take(20, 0.0) and not bucket.take(1, 0.0)
    assert not bucket.take(6, 0.5) and bucket.take(5, 0.5)
    assert bucket.take(20, 100.0) and not bucket.take(1, 100.0)


def test_addresses_parse() -> None:
    assert parse_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_address("[::1]:9") == ("::1", 9)
    for bad in ("nohost", ":80", "h:", "h:x", "h:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


# --- handshake --------------------------------------------------------------------------------


def side(i: int, *, dialer: bool, expect: int | None = None, key=None, now_ms=NOW_MS, **kw):
    return Handshake(
        key=key or KEYS[i],
        index=i,
        chain_id=kw.pop("chain_id", CHAIN),
        peer_keys=PEER_KEYS,
        dialer=dialer,
        expect=expect,
        now_ms=now_ms,
        max_skew_ms=60_000,
        **kw,
    )


def exchange(dialer: Handshake, acceptor: Handshake) -> None:
    """The dialer speaks first; the acceptor answers with both its hellos; the dialer ends."""
    a_out, none = acceptor.receive(dialer.hello(), NOW_MS)
    assert none is None and len(a_out) == 2
    d_out, none = dialer.receive(a_out[0], NOW_MS)
    assert none is None and len(d_out) == 1
    rest, s_dialer = dialer.receive(a_out[1], NOW_MS)
    assert rest == []
    _, s_acceptor = acceptor.receive(d_out[0], NOW_MS)
    assert s_acceptor.peer == dialer.index and s_dialer.peer == acceptor.index
    for s, r in ((s_dialer.send, s_acceptor.recv), (s_acceptor.send, s_dialer.recv)):
        assert r.open(s.seal(Kind.BATCH, b"hi")) == (Kind.BATCH, b"hi")


def refusal(fn) -> str:
    with pytest.raises(PeerProtocolError) as err:
        fn()
    return err.value.reason


def test_two_honest_sides_authenticate_and_share_frame_keys() -> None:
    exchange(side(0, dialer=True, expect=1), side(1, dialer=False))


def test_each_hello_check_refuses_what_it_names() -> None:
    acceptor = side(1, dialer=False)
    stranger = side(0, dialer=True, key=crypto.KeyPair.from_seed("stranger")).hello()
    assert refusal(lambda: acceptor.receive(stranger, NOW_MS)) == "wrong_key"
    claims = side(0, dialer=True, key=KEYS[2])  # a genesis key, another's index
    assert refusal(lambda: side(1, dialer=False).receive(claims.hello(), NOW_MS)) == "wrong_key"
    own = side(1, dialer=True)
    assert refusal(lambda: side(1, dialer=False).receive(own.hello(), NOW_MS)) == "self_index"
    dialer = side(0, dialer=True, expect=2)
    assert refusal(lambda: dialer.receive(side(1, dialer=False).hello(), NOW_MS)) == (
        "unexpected_index"
    )
    late = side(0, dialer=True, now_ms=NOW_MS - 61_000)
    assert refusal(lambda: side(1, dialer=False).receive(late.hello(), NOW_MS)) == "clock_skew"
    other_chain = side(0, dialer=True, chain_id="another-chain")
    assert refusal(lambda: side(1, dialer=False).receive(other_chain.hello(), NOW_MS)) == (
        "bad_hello"
    )
    assert refusal(lambda: side(1, dialer=False).receive(b"\x02junk", NOW_MS)) == (
        "unexpected_kind"
    )
    assert refusal(lambda: side(1, dialer=False).receive(b"\x09", NOW_MS)) == "unknown_kind"


def test_a_replayed_hello_fails_on_a_new_connection() -> None:
    dialer, acceptor = side(0, dialer=True, expect=1), side(1, dialer=False)
    d1 = dialer.hello()
    (a1, _), _ = acceptor.receive(d1, NOW_MS)
    (d2,), _ = dialer.receive(a1, NOW_MS)
    assert acceptor.receive(d2, NOW_MS)[1] is not None  # the genuine session
    fresh = side(1, dialer=False)  # a new connection: a new nonce
    fresh.receive(d1, NOW_MS)
    assert refusal(lambda: fresh.receive(d2, NOW_MS)) == "stale_echo"


def test_hello_two_must_repeat_hello_one() -> None:
    dialer, acceptor = side(0, dialer=True, expect=1), side(1, dialer=False)
    (a1, _), _ = acceptor.receive(dialer.hello(), NOW_MS)
    other = side(0, dialer=True, expect=1)  # same key and index, another nonce and session key
    other.hello()
    (d2,), _ = other.receive(a1, NOW_MS)
    assert refusal(lambda: acceptor.receive(d2, NOW_MS)) == "hello_changed"
    # Signed by the right key, echoing the right nonce, but with another session key:
    first = side(0, dialer=True, expect=1)
    acc = side(1, dialer=False)
    acc.receive(first.hello(), NOW_MS)
    forged = PeerHello(CHAIN, 0, first.nonce, acc.nonce, bytes(32), NOW_MS)
    payload = bytes((Kind.HELLO,)) + wire.seal(forged, KEYS[0], CHAIN)
    assert refusal(lambda: acc.receive(payload, NOW_MS)) == "hello_changed"
    fresh = side(1, dialer=False)
    assert refusal(lambda: fresh.receive(payload, NOW_MS)) == "unexpected_echo"


def test_the_acceptor_signs_nothing_for_a_stranger() -> None:
    acceptor = side(1, dialer=False)
    stranger = side(0, dialer=True, key=crypto.KeyPair.from_seed("stranger")).hello()
    assert refusal(lambda: acceptor.receive(stranger, NOW_MS)) == "wrong_key"
    assert not acceptor._spoke  # no hello of its own went out


def test_hellos_are_small_enough_for_the_pre_handshake_limit() -> None:
    from gonka_ray.constants import PEER_MAX_HELLO_BYTES

    h = side(0, dialer=True)
    assert len(frame(h.hello())) < PEER_MAX_HELLO_BYTES // 2
