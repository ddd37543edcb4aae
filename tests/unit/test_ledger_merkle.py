from __future__ import annotations

import pytest

from gonka_ray.ledger import merkle


def hashes(n: int) -> list[bytes]:
    return [merkle.tx_hash(b"tx-%d" % i) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_every_leaf_proves_and_tampering_fails(n: int) -> None:
    hs = hashes(n)
    root = merkle.root(hs)
    for i in range(n):
        path = merkle.proof(hs, i)
        assert merkle.verify(hs[i], i, n, path, root)
        assert not merkle.verify(merkle.tx_hash(b"other"), i, n, path, root)
        assert not merkle.verify(hs[i], (i + 1) % n if n > 1 else 1, n, path, root)
        if path:
            bad = [bytes(32), *path[1:]]
            assert not merkle.verify(hs[i], i, n, bad, root)
            assert not merkle.verify(hs[i], i, n, path[:-1], root)


def test_root_depends_on_order_and_count() -> None:
    hs = hashes(4)
    assert merkle.root(hs) != merkle.root(list(reversed(hs)))
    assert merkle.root(hs[:3]) != merkle.root(hs)
    assert merkle.root([]) == merkle.EMPTY_ROOT
    # No duplicate-leaf ambiguity: [a, b, c] and [a, b, c, c] differ.
    assert merkle.root(hs[:3]) != merkle.root([*hs[:3], hs[2]])
