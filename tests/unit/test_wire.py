from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gonka_ray import crypto, wire
from gonka_ray.constants import WIRE_MAX_MESSAGE_BYTES
from gonka_ray.exceptions import (
    BadSignature,
    MalformedMessage,
    NonCanonicalEncoding,
    OversizeField,
    TruncatedMessage,
    UnauthorizedSigner,
    UnknownMessageType,
    UnsupportedVersion,
    WireError,
)
from tests.strategies import any_message

CHAIN = "wire-test"  # the chain id every envelope here is signed for
KEY = crypto.KeyPair.from_seed("alice")
OTHER = crypto.KeyPair.from_seed("mallory")
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def request(**over) -> wire.InferenceRequest:
    sampling = wire.SamplingSpec(
        temperature=0.7, top_p=0.9, top_k=0, max_tokens=16, seed=42, logprobs=5, stop=("\n",)
    )
    fields = dict(
        model="smollm2-135m-instruct",
        messages=(wire.ChatMessage("user", "hi"),),
        prompt=None,
        sampling=sampling,
        timestamp_ms=1_700_000_000_000,
        nonce=7,
        max_escrow=1000,
    )
    fields.update(over)
    return wire.InferenceRequest(**fields)


@FAST
@given(any_message)
def test_encode_decode_encode_is_identity(msg) -> None:
    data = wire.encode(msg)
    back = wire.decode(data)
    assert back == msg
    assert wire.encode(back) == data


@FAST
@given(any_message)
def test_envelope_roundtrip(msg) -> None:
    env = wire.seal(msg, KEY, CHAIN)
    opened = wire.open_envelope(env, chain=CHAIN)
    assert opened.message == msg
    assert opened.signer == KEY.public_key
    assert opened.raw == env
    assert wire.seal(opened.message, KEY, CHAIN) == env  # Ed25519 is deterministic


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_flipped_byte_in_an_envelope_is_rejected(data) -> None:
    env = bytearray(wire.seal(request(), KEY, CHAIN))
    i = data.draw(st.integers(0, len(env) - 1))
    bit = data.draw(st.integers(0, 7))
    env[i] ^= 1 << bit
    with pytest.raises(WireError):
        wire.open_envelope(bytes(env), chain=CHAIN)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_every_truncation_is_typed(data) -> None:
    env = wire.seal(request(), KEY, CHAIN)
    cut = data.draw(st.integers(0, len(env) - 1))
    with pytest.raises(WireError):
        wire.open_envelope(env[:cut], chain=CHAIN)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_never_crash(blob) -> None:
    for fn in (wire.open_envelope, wire.decode, wire.peek_type):
        try:
            fn(blob, chain=CHAIN) if fn is wire.open_envelope else fn(blob)
        except WireError:
            pass


def test_truncated_is_its_own_type() -> None:
    env = wire.seal(request(), KEY, CHAIN)
    with pytest.raises(TruncatedMessage):
        wire.open_envelope(env[:-10], chain=CHAIN)
    with pytest.raises(TruncatedMessage):
        wire.open_envelope(b"", chain=CHAIN)


def test_unknown_type_and_wrong_version() -> None:
    body = wire.encode_body(wire.Ping(1, 2))
    with pytest.raises(UnknownMessageType):
        wire.decode(msgpack.packb(["NoSuchType", 1, [1, 2]]))
    with pytest.raises(UnsupportedVersion):
        wire.decode(msgpack.packb(["Ping", 99, [1, 2]]))
    forged = msgpack.packb(["Ping", 2, body, KEY.public_key, b"\x00" * 64])
    with pytest.raises(UnsupportedVersion):
        wire.open_envelope(forged, chain=CHAIN)


def test_expected_type_is_enforced() -> None:
    env = wire.seal(wire.Ping(1, 2), KEY, CHAIN)
    with pytest.raises(UnknownMessageType, match="expected InferenceRequest"):
        wire.open_envelope(env, expect=wire.InferenceRequest, chain=CHAIN)
    assert (
        wire.open_envelope(
            env, expect=(wire.InferenceRequest, wire.Ping), chain=CHAIN
        ).message.nonce
        == 1
    )


def test_oversize_fields_are_rejected_on_both_sides() -> None:
    with pytest.raises(OversizeField):
        wire.encode(request(model="m" * 129))
    raw = msgpack.packb(
        [
            "InferenceRequest",
            1,
            ["m" * 129, *wire.codec._encode_fields(wire.InferenceRequest, request())[1:]],
        ],
        use_bin_type=True,
    )
    with pytest.raises(OversizeField):
        wire.decode(raw)
    with pytest.raises(OversizeField):
        wire.decode(msgpack.packb(["Ping", 1, [-1, 0]]))  # U64 rejects negatives
    with pytest.raises(OversizeField):
        wire.decode(b"\x00" * (WIRE_MAX_MESSAGE_BYTES + 1))


def test_non_canonical_encodings_are_rejected() -> None:
    good = wire.encode(wire.Ping(1, 2))
    # 1 encoded as uint16 instead of a positive fixint: same value, different bytes
    padded = b"\x93\xa4Ping\x01\x92\xcd\x00\x01\x02"
    assert msgpack.unpackb(padded) == msgpack.unpackb(good)
    with pytest.raises(NonCanonicalEncoding):
        wire.decode(padded)
    # a float32 where float64 is canonical
    spec = wire.codec._encode_fields(wire.InferenceRequest, request())
    body32 = msgpack.packb(spec, use_bin_type=True, use_single_float=True)
    with pytest.raises(NonCanonicalEncoding):
        wire.decode_body(wire.InferenceRequest, body32)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_message, st.data())
def test_bytes_decode_accepts_are_the_canonical_encoding_of_what_it_returns(msg, data) -> None:
    # decode checks canonicality by re-packing what msgpack read, not by encoding the decoded
    # message again: whatever it accepts must still be exactly that encoding
    raw = bytearray(wire.encode(msg))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        back = wire.decode(bytes(raw))
    except WireError:
        return
    assert wire.encode(back) == bytes(raw)


def test_a_bad_list_item_is_named_by_its_index() -> None:
    bad = msgpack.packb(
        ["ConsensusTxBatch", 1, [[b"a", b"b", "not bytes", b"d"]]], use_bin_type=True
    )
    with pytest.raises(MalformedMessage) as err:
        wire.decode(bad)
    assert err.value.fields["field"] == "txs[2]"
    with pytest.raises(MalformedMessage) as err:
        wire.encode(wire.ConsensusTxBatch(txs=(b"a", 5)))
    assert err.value.fields["field"] == "txs[1]"


def test_shape_and_type_errors_name_the_field() -> None:
    with pytest.raises(MalformedMessage, match="nonce"):
        wire.decode(msgpack.packb(["Ping", 1, ["x", 2]]))
    with pytest.raises(MalformedMessage, match="fields"):
        wire.decode(msgpack.packb(["Ping", 1, [1]]))
    with pytest.raises(MalformedMessage):
        wire.decode(msgpack.packb({"type": "Ping"}))
    with pytest.raises(MalformedMessage, match="trailing"):
        wire.decode(wire.encode(wire.Ping(1, 2)) + b"\x00")
    with pytest.raises(MalformedMessage, match="expected int"):
        wire.encode(wire.Ping(True, 2))  # bools are not ints on the wire
    with pytest.raises(MalformedMessage, match="finite"):
        wire.encode(request(sampling=wire.SamplingSpec(float("nan"), 1.0, 0, 1, 0, 0, ())))


def test_signature_by_another_key_and_changed_body() -> None:
    env = wire.seal(request(), KEY, CHAIN)
    type_name, version, body, signer, sig = msgpack.unpackb(env)
    swapped = msgpack.packb([type_name, version, body, OTHER.public_key, sig], use_bin_type=True)
    with pytest.raises(BadSignature):
        wire.open_envelope(swapped, chain=CHAIN)
    changed = wire.encode_body(request(max_escrow=10**9))
    tampered = msgpack.packb([type_name, version, changed, signer, sig], use_bin_type=True)
    with pytest.raises(BadSignature):
        wire.open_envelope(tampered, chain=CHAIN)


def test_authorize_hook() -> None:
    env = wire.seal(wire.Ping(1, 2), KEY, CHAIN)
    with pytest.raises(UnauthorizedSigner):
        wire.open_envelope(env, authorize=lambda pk, msg: pk == OTHER.public_key, chain=CHAIN)
    assert wire.open_envelope(
        env, authorize=lambda pk, msg: pk == KEY.public_key, chain=CHAIN
    ).signer_address


def test_digest_and_ids_are_content_addressed() -> None:
    a, b = request(), request(nonce=8)
    assert wire.digest(a) == wire.digest(request()) != wire.digest(b)
    assert (
        wire.open_envelope(wire.seal(a, KEY, CHAIN), chain=CHAIN).id
        != wire.open_envelope(wire.seal(b, KEY, CHAIN), chain=CHAIN).id
    )


def test_redeclaring_a_message_fails() -> None:
    with pytest.raises(TypeError):

        @wire.message("Ping", version=1)
        class Ping2:
            nonce: int


def test_an_envelope_signed_for_one_chain_does_not_open_on_another() -> None:
    env = wire.seal(request(), KEY, CHAIN)
    assert wire.open_envelope(env, chain=CHAIN).message == request()
    for other in ("wire-test2", "WIRE-TEST", "wire-tes"):
        with pytest.raises(BadSignature):
            wire.open_envelope(env, chain=other)
    with pytest.raises(MalformedMessage):
        wire.seal(request(), KEY, "")
    assert wire.envelope_id(env) == wire.open_envelope(env, chain=CHAIN).id
