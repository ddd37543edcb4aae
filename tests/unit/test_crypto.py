from __future__ import annotations

import os
import stat

import pytest

from gonka_ray import crypto
from gonka_ray.exceptions import BadSignature, InvalidKey, KeyFileError


def test_sign_verify_roundtrip_and_purpose_separation() -> None:
    key = crypto.KeyPair.from_seed("alice")
    sig = key.sign(b"envelope", b"hello")
    crypto.verify(key.public_key, b"envelope", b"hello", sig)
    with pytest.raises(BadSignature):
        crypto.verify(key.public_key, b"vote", b"hello", sig)  # same bytes, other purpose
    with pytest.raises(BadSignature):
        crypto.verify(key.public_key, b"envelope", b"hellO", sig)
    other = crypto.KeyPair.from_seed("bob")
    with pytest.raises(BadSignature):
        crypto.verify(other.public_key, b"envelope", b"hello", sig)


def test_bad_lengths_are_typed_errors() -> None:
    key = crypto.KeyPair.from_seed("alice")
    with pytest.raises(BadSignature):
        crypto.verify(key.public_key, b"p", b"m", b"short")
    with pytest.raises(BadSignature):
        crypto.verify(b"x" * 31, b"p", b"m", b"\x00" * 64)
    with pytest.raises(InvalidKey):
        crypto.KeyPair(b"too short")
    with pytest.raises(InvalidKey):
        crypto.address(b"\x01" * 5)


def test_address_is_stable_and_shaped() -> None:
    key = crypto.KeyPair.from_seed("alice")
    assert key.address == crypto.address(key.public_key)
    assert crypto.is_address(key.address)
    assert not crypto.is_address("gonka" + "z" * 40)
    assert key.address != crypto.KeyPair.from_seed("bob").address


def test_key_file_is_0600_and_roundtrips(tmp_path) -> None:
    key = crypto.KeyPair.generate()
    path = key.save(tmp_path / "keys" / "p0.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert crypto.KeyPair.load(path).public_key == key.public_key
    with pytest.raises(KeyFileError):
        key.save(path)  # never overwrite a key


def test_key_file_readable_by_others_is_refused(tmp_path) -> None:
    path = crypto.KeyPair.generate().save(tmp_path / "k.key")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        crypto.KeyPair.load(path)


def test_corrupt_key_file_is_typed(tmp_path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("{not json")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError):
        crypto.KeyPair.load(path)
    with pytest.raises(KeyFileError):
        crypto.KeyPair.load(tmp_path / "missing.key")


def test_session_keys_pair_up_and_sealed_frames_bind_key_and_counter() -> None:
    dialer, acceptor = crypto.kx_keypair(), crypto.kx_keypair()
    d_rx, d_tx = crypto.kx_session_keys(*dialer, acceptor[0], dialer=True)
    a_rx, a_tx = crypto.kx_session_keys(*acceptor, dialer[0], dialer=False)
    assert (d_tx, d_rx) == (a_rx, a_tx) and d_tx != d_rx
    sealed = crypto.aead_seal(d_tx, 5, b"frame")
    assert len(sealed) == len(b"frame") + crypto.AEAD_TAG_BYTES
    assert crypto.aead_open(a_rx, 5, sealed) == b"frame"
    for key, counter, data in ((a_rx, 6, sealed), (a_tx, 5, sealed), (a_rx, 5, sealed[:-1])):
        with pytest.raises(BadSignature):
            crypto.aead_open(key, counter, data)
    with pytest.raises(InvalidKey):  # a low-order point gives no shared secret
        crypto.kx_session_keys(*dialer, bytes(32), dialer=True)
