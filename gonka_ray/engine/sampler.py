"""Deterministic, replayable Gumbel-max sampling shared by every engine (DESIGN §3).

The token at output position ``p`` of a request with seed ``s`` is::

    argmax_t( mask(logits_t / T) + g(s, p, t) ),   g = -log(-log(u(s, p, t)))

where ``mask`` applies top-k then top-p (both on the temperature-scaled logits) and ``u`` comes
from a counter-based integer hash (splitmix64 finaliser) of ``(seed, position, token id)``.
Temperature 0 is greedy: plain argmax of the raw logits, no noise.

Invariants:

- **Replayable.** The choice depends only on the row's logits and ``(seed, position, params)``,
  never on batch composition, RNG state, thread count or device. A verifier that recomputes the
  logits can recompute the choice; the *margin* (best minus runner-up score) says how robust
  that choice is to small numeric differences between the executor's and verifier's logits.
- **Device independent noise.** The hash is done in int64 tensor ops (wrap-around multiply and
  add, logical shifts emulated by masking) so CPU and CUDA produce the same 64-bit integers;
  ``u`` takes the top 52 bits plus one half (so ``0 < u < 1`` exactly and the conversion to
  float64 is exact); the two logs run in float64 and the noise is rounded to float32, so a last-
  place difference between CPU and CUDA ``log`` practically never survives the rounding.
- Pure torch, no Ray, no global RNG.

Shapes: ``B`` rows (sequences or positions), ``V`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# splitmix64 constants, written as the signed int64 with the same bits
_U64 = 1 << 64


def _s64(x: int) -> int:
    """The signed int64 with the same 64 bits as unsigned ``x``."""
    x &= _U64 - 1
    return x - _U64 if x >= 1 << 63 else x


GOLDEN = _s64(0x9E3779B97F4A7C15)
MIX1 = _s64(0xBF58476D1CE4E5B9)
MIX2 = _s64(0x94D049BB133111EB)
_NEG_INF = float("-inf")


def seed_to_int64(seed: int) -> int:
    """Map a uint64 seed (``0 <= seed < 2**64``) onto int64 with the same bits."""
    if not 0 <= seed < _U64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return _s64(seed)


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (unsigned) right shift of int64 ``x``: arithmetic shift, then clear sign copies."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64: add the golden gamma, then the finaliser. int64 in, int64 out (wraps)."""
    z = x + GOLDEN
    z = (z ^ _shr(z, 30)) * MIX1
    z = (z ^ _shr(z, 27)) * MIX2
    return z ^ _shr(z, 31)


def hash_u64(seeds: torch.Tensor, positions: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """64-bit hash (as int64) of ``(seed, position, token)``; broadcasts like its inputs."""
    h = _mix(seeds.to(torch.int64))
    h = _mix(h ^ positions.to(torch.int64))
    return _mix(h ^ token_ids.to(torch.int64))


def uniform(seeds: torch.Tensor, positions: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """``u`` in the open interval (0, 1), float64: (top 52 hash bits + 0.5) / 2**52."""
    top52 = _shr(hash_u64(seeds, positions, token_ids), 12)  # in [0, 2**52): exact in float64
    return (top52.to(torch.float64) + 0.5) * (2.0**-52)


def gumbel_noise(
    seeds: torch.Tensor,
    positions: torch.Tensor,
    vocab_size: int,
    *,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Gumbel noise for every token of each row.

    Args:
        seeds: [B] int64 (see :func:`seed_to_int64`).
        positions: [B] int64 output positions.
        vocab_size: V.
    Returns:
        [B, V] float32 noise, identical on every device.
    """
    device = device or seeds.device
    tokens = torch.arange(vocab_size, dtype=torch.int64, device=device)[None, :]  # [1, V]
    return gumbel_at(seeds.to(device)[:, None], positions.to(device)[:, None], tokens)  # [B, V]


def gumbel_at(
    seeds: torch.Tensor, positions: torch.Tensor, token_ids: torch.Tensor
) -> torch.Tensor:
    """Gumbel noise (float32) of chosen tokens; broadcasts like :func:`hash_u64`."""
    u = uniform(seeds, positions, token_ids)
    return (-torch.log(-torch.log(u))).to(torch.float32)


def max_gumbel_excluding(
    seeds: torch.Tensor, positions: torch.Tensor, vocab_size: int, excluded: torch.Tensor
) -> torch.Tensor:
    """Largest noise over each row's tokens except ``excluded`` (float32 [B]).

    The noise is increasing in the hash's top bits, so this takes the max of the integers and
    converts one value per row (no logs over the vocabulary).

    Args:
        seeds, positions: [B] int64.
        excluded: [B, M] int64 token ids to leave out (pad with any excluded id).
    """
    tokens = torch.arange(vocab_size, dtype=torch.int64, device=seeds.device)[None, :]
    top52 = _shr(hash_u64(seeds[:, None], positions[:, None], tokens), 12)  # [B, V]
    top52.scatter_(1, excluded, -1)
    best = top52.max(dim=1).values  # [B]
    u = (best.to(torch.float64) + 0.5) * (2.0**-52)
    return (-torch.log(-torch.log(u))).to(torch.float32)


@dataclass(frozen=True)
class RowParams:
    """Sampling parameters of one row. ``top_k`` 0 and ``top_p`` 1.0 disable those masks."""

    temperature: float
    seed: int
    position: int
    top_k: int = 0
    top_p: float = 1.0


@dataclass(frozen=True)
class SampleOutput:
    """What the sampler chose.

    Attributes:
        tokens: [B] int64 chosen token ids.
        margins: [B] float32 best score minus runner-up score (``inf`` when only one token
            survives the masks). Greedy rows use raw logits as scores.
    """

    tokens: torch.Tensor
    margins: torch.Tensor


def _mask_top_k_top_p(
    scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """Set to -inf every entry below the row's top-k / top-p threshold.

    Thresholds are *values*, so tied logits are kept or dropped together whatever the device's
    sort order. ``scaled``: [B, V] float32; ``top_k``: [B] int64 (0 = off); ``top_p``: [B].
    """
    vocab = scaled.shape[-1]
    sorted_vals, _ = torch.sort(scaled, dim=-1, descending=True, stable=True)  # [B, V]
    k = torch.where((top_k <= 0) | (top_k > vocab), torch.full_like(top_k, vocab), top_k)
    kth = sorted_vals.gather(1, (k - 1)[:, None])  # [B, 1]
    sorted_vals = sorted_vals.masked_fill(sorted_vals < kth, _NEG_INF)
    probs = torch.softmax(sorted_vals, dim=-1)  # [B, V]
    before = torch.cumsum(probs, dim=-1) - probs  # probability mass strictly before each entry
    keep = before < top_p.to(probs.dtype)[:, None]
    keep[:, 0] = True
    n_keep = keep.sum(dim=-1).clamp(max=k)  # kept entries form a prefix of the sorted row
    threshold = sorted_vals.gather(1, (n_keep - 1)[:, None])  # [B, 1]
    return scaled.masked_fill(scaled < threshold, _NEG_INF)


def _best_two(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """argmax (first index on ties) and best minus runner-up of each row of ``scores`` [B, V]."""
    top2 = torch.topk(scores, 2, dim=-1).values  # [B, 2]
    tokens = torch.argmax(scores, dim=-1)
    margins = top2[:, 0] - top2[:, 1]
    margins = torch.where(
        torch.isneginf(top2[:, 1]), torch.full_like(margins, float("inf")), margins
    )
    return tokens, margins


def sample(
    logits: torch.Tensor,
    *,
    temperature: torch.Tensor,
    seeds: torch.Tensor,
    positions: torch.Tensor,
    top_k: torch.Tensor | None = None,
    top_p: torch.Tensor | None = None,
) -> SampleOutput:
    """Choose one token per row by Gumbel-max (greedy where temperature is 0).

    Args:
        logits: [B, V] raw model logits (any float dtype; computed in float32).
        temperature: [B] float, >= 0.
        seeds: [B] int64 (uint64 bits, see :func:`seed_to_int64`).
        positions: [B] int64 output positions (0 for the first generated token).
        top_k: [B] int64, 0 = off. top_p: [B] float in (0, 1], 1 = off.
    Returns:
        :class:`SampleOutput` with tokens and margins, on ``logits.device``.
    """
    device = logits.device
    logits = logits.to(torch.float32)
    n_rows, vocab = logits.shape
    temperature = temperature.to(device=device, dtype=torch.float32)
    greedy = temperature <= 0
    safe_t = torch.where(greedy, torch.ones_like(temperature), temperature)
    scaled = logits / safe_t[:, None]
    top_k = (
        torch.zeros(n_rows, dtype=torch.int64, device=device)
        if top_k is None
        else top_k.to(device=device, dtype=torch.int64)
    )
    top_p = (
        torch.ones(n_rows, dtype=torch.float32, device=device)
        if top_p is None
        else top_p.to(device=device, dtype=torch.float32)
    )
    needs_mask = (~greedy) & (((top_k > 0) & (top_k < vocab)) | (top_p < 1.0))
    if bool(needs_mask.any()):
        masked = _mask_top_k_top_p(scaled, top_k, top_p)
        scaled = torch.where(needs_mask[:, None], masked, scaled)
    noise = gumbel_noise(seeds.to(device), positions.to(device), vocab, device=device)
    scores = torch.where(greedy[:, None], logits, scaled + noise)  # [B, V]
    tokens, margins = _best_two(scores)
    return SampleOutput(tokens=tokens, margins=margins)


def sample_rows(logits: torch.Tensor, rows: Sequence[RowParams]) -> SampleOutput:
    """:func:`sample` with per-row parameters given as :class:`RowParams`."""
    device = logits.device
    return sample(
        logits,
        temperature=torch.tensor([r.temperature for r in rows], dtype=torch.float32, device=device),
        seeds=torch.tensor([seed_to_int64(r.seed) for r in rows], dtype=torch.int64, device=device),
        positions=torch.tensor([r.position for r in rows], dtype=torch.int64, device=device),
        top_k=torch.tensor([r.top_k for r in rows], dtype=torch.int64, device=device),
        top_p=torch.tensor([r.top_p for r in rows], dtype=torch.float32, device=device),
    )


def splitmix64_reference(seed: int, position: int, token: int) -> int:
    """Pure-Python uint64 reference of :func:`hash_u64` (for tests and other languages)."""
    mask = _U64 - 1

    def mix(x: int) -> int:
        z = (x + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    h = mix(seed & mask)
    h = mix(h ^ (position & mask))
    return mix(h ^ (token & mask))
