"""Ed25519 keys, addresses and signatures (PyNaCl / libsodium).

Invariants:
- A signature always covers ``WIRE_SIGNATURE_DOMAIN + purpose + b"\\x00" + message`` so that bytes
  signed for one purpose (a wire envelope, a consensus vote) can never be replayed as another.
- ``address(pk)`` is ``"gonka" + hex(sha256(pk)[:20])``: stable, printable, derived only from the
  public key.
- Key files hold the 32-byte seed in hex and are created with mode 0600; loading a file that
  others can read is refused, as ssh does.
- Session keys (peer connections): an ephemeral X25519 exchange (libsodium ``crypto_kx``) gives
  one key per direction; a frame is sealed with ChaCha20-Poly1305 (IETF) under its direction's
  key with the frame counter as nonce, so a key never sees the same nonce twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from gonka_ray.constants import WIRE_SIGNATURE_DOMAIN
from gonka_ray.exceptions import BadSignature, InvalidKey, KeyFileError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEED_BYTES = 32
AEAD_TAG_BYTES = 16  # Poly1305 tag appended to every sealed frame
_AEAD_NONCE_PREFIX = bytes(4)  # IETF nonce = 4 zero bytes + the 8-byte frame counter
ADDRESS_PREFIX = "gonka"


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def address(public_key: bytes) -> str:
    """The printable account address of an Ed25519 public key.

    Raises:
        InvalidKey: ``public_key`` is not 32 bytes.
    """
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidKey("an Ed25519 public key is 32 bytes", field="public_key")
    return ADDRESS_PREFIX + hashlib.sha256(public_key).hexdigest()[:40]


def is_address(text: str) -> bool:
    """True when ``text`` has the shape of an address (not whether it exists)."""
    if not isinstance(text, str) or not text.startswith(ADDRESS_PREFIX):
        return False
    body = text[len(ADDRESS_PREFIX) :]
    return len(body) == 40 and all(c in "0123456789abcdef" for c in body)


def _signed_bytes(purpose: bytes, message: bytes) -> bytes:
    return WIRE_SIGNATURE_DOMAIN + purpose + b"\x00" + message


@lru_cache(maxsize=4096)
def _verify_key(public_key: bytes) -> nacl.signing.VerifyKey:
    # NOTE: building a VerifyKey costs about as much as a verify; peers are few, so cache them.
    return nacl.signing.VerifyKey(public_key)


def verify(public_key: bytes, purpose: bytes, message: bytes, signature: bytes) -> None:
    """Check ``signature`` by ``public_key`` over ``message`` signed for ``purpose``.

    Raises:
        BadSignature: wrong length, malformed key, or the signature does not verify.
    """
    if len(signature) != SIGNATURE_BYTES or len(public_key) != PUBLIC_KEY_BYTES:
        raise BadSignature("signature or public key has the wrong length")
    try:
        _verify_key(bytes(public_key)).verify(_signed_bytes(purpose, message), bytes(signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise BadSignature("signature does not verify") from None


def is_valid_signature(public_key: bytes, purpose: bytes, message: bytes, signature: bytes) -> bool:
    """Like :func:`verify` but returns a bool."""
    try:
        verify(public_key, purpose, message, signature)
    except BadSignature:
        return False
    return True


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 signing key with its public key and address.

    Build with :meth:`generate`, :meth:`from_seed` or :meth:`load`; never pickle it across a trust
    boundary (actors receive key *files* or seeds from their own operator only).
    """

    seed: bytes = field(repr=False)
    _signing_key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    public_key: bytes = field(init=False)
    address: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_BYTES:
            raise InvalidKey("an Ed25519 seed is 32 bytes", field="seed")
        sk = nacl.signing.SigningKey(self.seed)
        object.__setattr__(self, "_signing_key", sk)
        object.__setattr__(self, "public_key", bytes(sk.verify_key))
        object.__setattr__(self, "address", address(bytes(sk.verify_key)))

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key from the OS random source."""
        return cls(os.urandom(SEED_BYTES))

    @classmethod
    def from_seed(cls, seed: bytes | str) -> KeyPair:
        """A key from a 32-byte seed, or from any string (hashed: for tests and demos only)."""
        if isinstance(seed, str):
            seed = sha256(b"gonka_ray/test-key/" + seed.encode())
        return cls(seed)

    def sign(self, purpose: bytes, message: bytes) -> bytes:
        """64-byte signature over ``message`` for ``purpose`` (see module docstring)."""
        return self._signing_key.sign(_signed_bytes(purpose, message)).signature

    def save(self, path: str | Path) -> Path:
        """Write the key to ``path`` with mode 0600; refuses to overwrite an existing file.

        Raises:
            KeyFileError: the file exists or cannot be written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"type": "ed25519", "seed": self.seed.hex(), "address": self.address}, indent=2
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
        except OSError as exc:
            raise KeyFileError(f"cannot create key file {path}: {exc}") from None
        with os.fdopen(fd, "w") as f:
            f.write(body + "\n")
        os.chmod(path, 0o600)  # NOTE: umask may have narrowed it further; never widen
        return path

    @classmethod
    def load(cls, path: str | Path) -> KeyPair:
        """Read a key written by :meth:`save`.

        Raises:
            KeyFileError: missing, readable by group/others, or not a gonka_ray key file.
        """
        path = Path(path)
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path} is accessible by group or others (mode {oct(mode & 0o777)}); "
                f"run: chmod 600 {path}"
            )
        try:
            data = json.loads(path.read_text())
            seed = bytes.fromhex(data["seed"])
            if data.get("type") != "ed25519":
                raise ValueError("type is not ed25519")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyFileError(f"{path} is not a gonka_ray key file: {exc}") from None
        key = cls(seed)
        if data.get("address") not in (None, key.address):
            raise KeyFileError(f"{path}: address does not match the seed")
        return key


# --- session keys (peer connections) ---------------------------------------------------------


def kx_keypair() -> tuple[bytes, bytes]:
    """A fresh ephemeral X25519 ``(public_key, secret_key)`` for one connection."""
    return nacl.bindings.crypto_kx_keypair()


def kx_session_keys(
    public_key: bytes, secret_key: bytes, peer_public_key: bytes, *, dialer: bool
) -> tuple[bytes, bytes]:
    """``(receive_key, send_key)`` of one side of a connection; the dialer's send key is the
    other side's receive key.

    Raises:
        InvalidKey: ``peer_public_key`` is not a usable X25519 key (e.g. a low-order point).
    """
    kx = (
        nacl.bindings.crypto_kx_client_session_keys
        if dialer
        else nacl.bindings.crypto_kx_server_session_keys
    )
    try:
        return kx(public_key, secret_key, peer_public_key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, ValueError):
        raise InvalidKey("not a usable X25519 public key", field="session_key") from None


def aead_seal(key: bytes, counter: int, plaintext: bytes) -> bytes:
    """``plaintext`` encrypted and authenticated under ``key`` with nonce ``counter`` (use each
    counter once per key); ``AEAD_TAG_BYTES`` longer than ``plaintext``."""
    nonce = _AEAD_NONCE_PREFIX + counter.to_bytes(8, "big")
    return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, None, nonce, key)


def aead_open(key: bytes, counter: int, sealed: bytes) -> bytes:
    """Inverse of :func:`aead_seal`.

    Raises:
        BadSignature: the bytes were not sealed under ``key`` with ``counter`` (forged,
            altered, replayed or reordered).
    """
    nonce = _AEAD_NONCE_PREFIX + counter.to_bytes(8, "big")
    try:
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(sealed, None, nonce, key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, ValueError):
        raise BadSignature("frame does not authenticate") from None


# --- sealed receipts: X25519 boxes between the Ed25519 keys (gonka_ray/protocol/receipts.py) ---


def _box(secret: bytes, public_key: bytes) -> nacl.public.Box | None:
    """The XSalsa20-Poly1305 box between an X25519 ``secret`` and the X25519 form of an
    Ed25519 ``public_key`` (None: not a valid Ed25519 point)."""
    try:
        theirs = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(bytes(public_key))
        return nacl.public.Box(nacl.public.PrivateKey(bytes(secret)), nacl.public.PublicKey(theirs))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return None


def seal_to(
    ephemeral_secret: bytes, recipient_public_key: bytes, nonce: bytes, plaintext: bytes
) -> tuple[bytes, bytes]:
    """Encrypt ``plaintext`` to ``recipient_public_key`` (Ed25519) under a one-time X25519
    ``ephemeral_secret``; returns ``(ephemeral public key, ciphertext)``. Anyone later given
    the ephemeral secret can open the box too (that is how a sealed receipt is revealed).

    Raises:
        InvalidKey: the recipient key is not a valid Ed25519 public key.
    """
    box = _box(ephemeral_secret, recipient_public_key)
    if box is None:
        raise InvalidKey("not an Ed25519 public key", field="public_key")
    public = bytes(nacl.public.PrivateKey(bytes(ephemeral_secret)).public_key)
    return public, bytes(box.encrypt(plaintext, nonce).ciphertext)


def open_sealed_by_recipient(
    recipient: KeyPair, ephemeral_public: bytes, nonce: bytes, ciphertext: bytes
) -> bytes | None:
    """The plaintext of a box sealed to ``recipient`` (None: it does not open)."""
    try:
        mine = nacl.signing.SigningKey(recipient.seed).to_curve25519_private_key()
        box = nacl.public.Box(mine, nacl.public.PublicKey(bytes(ephemeral_public)))
        return bytes(box.decrypt(bytes(ciphertext), bytes(nonce)))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return None


def open_sealed_by_sender(
    ephemeral_secret: bytes, recipient_public_key: bytes, nonce: bytes, ciphertext: bytes
) -> bytes | None:
    """The plaintext of a box sealed under ``ephemeral_secret`` (None: it does not open)."""
    box = _box(ephemeral_secret, recipient_public_key)
    if box is None:
        return None
    try:
        return bytes(box.decrypt(bytes(ciphertext), bytes(nonce)))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return None
