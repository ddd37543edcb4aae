"""Binary Merkle tree over transaction hashes, with inclusion proofs.

Leaves are ``sha256(0x00 ‖ tx_hash)`` and inner nodes ``sha256(0x01 ‖ left ‖ right)`` (domain
separation, so a leaf can never pose as an inner node). An odd node at the end of a level is
promoted unchanged rather than paired with itself, which avoids Bitcoin's duplicate-leaf ambiguity
(CVE-2012-2459). The empty tree's root is ``sha256(b"")``. ``tx_hash`` is ``sha256(tx bytes)``.
"""

from __future__ import annotations

import hashlib

EMPTY_ROOT = hashlib.sha256(b"").digest()


def tx_hash(tx: bytes) -> bytes:
    """The hash that identifies a transaction's bytes in a block (the Merkle leaf input)."""
    return hashlib.sha256(tx).digest()


def _leaf(h: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + h).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(tx_hashes: list[bytes]) -> bytes:
    """Merkle root of ``tx_hashes`` (in block order)."""
    if not tx_hashes:
        return EMPTY_ROOT
    level = [_leaf(h) for h in tx_hashes]
    while len(level) > 1:
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def proof(tx_hashes: list[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the root (promoted levels contribute none)."""
    if not 0 <= index < len(tx_hashes):
        raise IndexError(f"leaf {index} outside a tree of {len(tx_hashes)}")
    level = [_leaf(h) for h in tx_hashes]
    path: list[bytes] = []
    i = index
    while len(level) > 1:
        sibling = i ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        nxt = [_node(level[j], level[j + 1]) for j in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, i = nxt, i // 2
    return path


def verify(
    tx_hash_: bytes, index: int, count: int, path: list[bytes] | tuple, root_: bytes
) -> bool:
    """True when ``path`` proves that ``tx_hash_`` is leaf ``index`` of ``count`` under ``root_``."""
    if not 0 <= index < count:
        return False
    h, i, n, k = _leaf(tx_hash_), index, count, 0
    while n > 1:
        sibling = i ^ 1
        if sibling < n:
            if k >= len(path):
                return False
            h = _node(h, path[k]) if i % 2 == 0 else _node(path[k], h)
            k += 1
        i, n = i // 2, (n + 1) // 2
    return k == len(path) and h == root_
