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
