"""Counter-hash integers shared by the sampler and Proof of Compute (splitmix64).

The sampler's noise (:mod:`gonka_ray.engine.sampler`) and the PoC nonce tokens
(:mod:`gonka_ray.engine.poc`) hash ``(seed, position, token)`` with the splitmix64 finaliser
in int64 tensor ops; this module holds what that needs that is plain integer arithmetic: the
constants (as signed int64 with the same bits, the form tensor ops take), the uint64 → int64
seed mapping, and a pure-Python uint64 reference of the tensor hash. The protocol rules use it
too (a PoC participant key is an int64 seed), so it imports neither torch nor the engine.
"""

from __future__ import annotations

_U64 = 1 << 64
_U64_MASK = _U64 - 1
GOLDEN_U64 = 0x9E3779B97F4A7C15  # splitmix64's gamma, added before each finaliser
MIX1_U64 = 0xBF58476D1CE4E5B9  # finaliser multipliers
MIX2_U64 = 0x94D049BB133111EB


def _s64(x: int) -> int:
    """The signed int64 with the same 64 bits as unsigned ``x``."""
    x &= _U64_MASK
    return x - _U64 if x >= 1 << 63 else x


# the same constants written as the signed int64 with the same bits (for int64 tensor ops)
GOLDEN = _s64(GOLDEN_U64)
MIX1 = _s64(MIX1_U64)
MIX2 = _s64(MIX2_U64)


def seed_to_int64(seed: int) -> int:
    """Map a uint64 seed (``0 <= seed < 2**64``) onto int64 with the same bits.

    Raises:
        ValueError: ``seed`` is outside ``[0, 2**64)``.
    """
    if not 0 <= seed < _U64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return _s64(seed)


def splitmix64_reference(seed: int, position: int, token: int) -> int:
    """Pure-Python uint64 reference of :func:`gonka_ray.engine.sampler.hash_u64` (for tests and
    other languages)."""

    def mix(x: int) -> int:
        z = (x + GOLDEN_U64) & _U64_MASK
        z = ((z ^ (z >> 30)) * MIX1_U64) & _U64_MASK
        z = ((z ^ (z >> 27)) * MIX2_U64) & _U64_MASK
        return z ^ (z >> 31)

    h = mix(seed & _U64_MASK)
    h = mix(h ^ (position & _U64_MASK))
    return mix(h ^ (token & _U64_MASK))
