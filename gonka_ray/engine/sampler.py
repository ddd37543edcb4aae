"""Deterministic, replayable Gumbel-max sampling shared by every engine (DESIGN §3).

The token at output position ``p`` of a request with seed ``s`` is::

    argmax_t( mask(logits_t / T) + g(s, p, t) ),   g = -log(-log(u(s, p, t)))

where ``mask`` applies top-k then top-p (both on the temperature-scaled logits) and ``u`` comes
from a counter-based integer hash (splitmix64 finaliser, constants and a pure-Python reference
in :mod:`gonka_ray.hashing`) of ``(seed, position, token id)``.
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

from gonka_ray.constants import SAMPLER_SORT_HEAD
from gonka_ray.hashing import GOLDEN, MIX1, MIX2, seed_to_int64

_NEG_INF = float("-inf")


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
        claimed_margins: with ``claimed`` tokens only: [B] best score minus the claimed token's
            score (0 where it is the choice, ``inf`` where it is surely masked out), lowered as
            ``margins`` are for masks noise could decide. Never below ``margins`` where the
            claim differs: the runner-up is the closest any other token comes.
    """

    tokens: torch.Tensor
    margins: torch.Tensor
    claimed_margins: torch.Tensor | None = None


def _by_head(fn, scaled: torch.Tensor, top_k: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
    """Run ``fn`` on a sorted prefix of each row (``torch.topk``), redoing with the whole
    vocabulary sorted the rows whose answer reaches past the prefix.

    NOTE: a full sort of a 49k vocabulary costs ~7 ms per row on a CPU core, a top-256 ~0.3 ms;
    the nucleus almost always lies in the prefix, and ``fn`` reports the rows where it does not,
    so the result is the same as with a full sort.
    """
    vocab = scaled.shape[-1]
    k_on = (top_k > 0) & (top_k < vocab)
    kmax = int(top_k[k_on].max()) if bool(k_on.any()) else 0
    width = min(vocab, max(SAMPLER_SORT_HEAD, kmax + 2))
    out, ok = fn(scaled, top_k, *rest, width=width)
    if width < vocab and not bool(ok.all()):
        bad = torch.nonzero(~ok).flatten()
        sub, _ = fn(scaled[bad], top_k[bad], *(r[bad] for r in rest), width=vocab)
        out = out.clone()
        out[bad] = sub
    return out


def _head(scaled: torch.Tensor, top_k: torch.Tensor, width: int):
    """The ``width`` largest values of each row, best first, and the top-k/top-p bookkeeping:
    ``(vals, idx, k, kept_k, probs, before)`` — ``kept_k`` marks prefix entries top-k keeps
    (values ``≥`` the k-th; callers check that no tie reaches past the prefix),
    ``probs`` their probability after the top-k cut, ``before`` the mass strictly before."""
    vocab = scaled.shape[-1]
    if width >= vocab:  # topk with k = V is far slower than a sort
        vals, idx = torch.sort(scaled, dim=-1, descending=True, stable=True)
    else:
        vals, idx = torch.topk(scaled, width, dim=-1, sorted=True)  # [B, W]
    k = torch.where((top_k <= 0) | (top_k > vocab), torch.full_like(top_k, vocab), top_k)
    kth = vals.gather(1, (k.clamp(max=width) - 1)[:, None])  # [B, 1] the k-th largest value
    # top-k keeps every value >= the k-th (ties together, as vLLM does)
    kept_k = (vals >= kth) | (k >= vocab)[:, None]
    lse = torch.where(
        k >= vocab,
        torch.logsumexp(scaled, dim=-1),
        torch.logsumexp(vals.masked_fill(~kept_k, _NEG_INF), dim=-1),
    )  # [B]: the top-k cut's normaliser
    probs = torch.exp(vals - lse[:, None]).masked_fill(~kept_k, 0.0)  # [B, W]
    before = torch.cumsum(probs, dim=-1) - probs
    return vals, idx, k, kept_k, probs, before


def _mask_rows(scaled, top_k, top_p, *, width: int):
    vals, _, k, kept_k, _, before = _head(scaled, top_k, width)
    # top_p 1.0 is off: a mass-before that rounds to 1.0 must not drop the tail
    keep = kept_k & ((before < top_p[:, None]) | (top_p >= 1.0)[:, None])
    keep[:, 0] = True
    n_keep = keep.sum(dim=-1)  # kept entries form a prefix of the sorted row
    threshold = vals.gather(1, (n_keep - 1)[:, None])  # [B, 1]
    # the cut lies inside the prefix iff its last entry is dropped (by top-k or top-p) and no
    # value tied with the k-th lies past it (its mass belongs in the normaliser)
    k_on = k < scaled.shape[-1]
    ties_inside = ~k_on | ~kept_k[:, -1]
    ok = (~keep[:, -1] & ties_inside) | (width >= scaled.shape[-1])
    return scaled.masked_fill(scaled < threshold, _NEG_INF), ok


def _mask_top_k_top_p(
    scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """Set to -inf every entry below the row's top-k / top-p threshold.

    Thresholds are *values*, so tied logits are kept or dropped together whatever the device's
    sort order: top-k keeps values ``≥`` the k-th largest; top-p then keeps the smallest prefix
    of the (top-k renormalised, best-first) distribution whose mass before each kept entry is
    ``< top_p``. ``scaled``: [B, V] float32; ``top_k``: [B] int64 (0 = off); ``top_p``: [B].
    """
    return _by_head(_mask_rows, scaled, top_k, top_p.to(scaled.dtype))


def _ambiguous_rows(scaled, top_k, top_p, tol, *, width: int):
    vocab = scaled.shape[-1]
    vals, idx, k, kept_k, probs, before = _head(scaled, top_k, width)
    two_tol = (2.0 * tol)[:, None]  # [B, 1]
    rank = torch.arange(width, device=scaled.device)[None, :]
    last = vals[:, -1:]
    k_on = (top_k > 0) & (top_k < vocab)
    kth = vals.gather(1, (k.clamp(max=width) - 1)[:, None])
    nxt = vals.masked_fill(kept_k, _NEG_INF).amax(-1, keepdim=True)  # first dropped by top-k
    amb = k_on[:, None] & ((kept_k & (vals <= nxt + two_tol)) | (~kept_k & (vals >= kth - two_tol)))
    ok = ~k_on | (last < kth - two_tol)[:, 0] | (width >= vocab)
    p_on = top_p < 1.0
    if bool(p_on.any()):
        k_mass = (probs * amb).sum(-1, keepdim=True)  # mass the top-k cut could move
        factor = torch.exp(two_tol) * (1.0 + k_mass) / (1.0 - k_mass).clamp(min=1e-12)
        p = top_p[:, None]
        core = kept_k & (before * factor >= p) & (before / factor < p)
        n_keep = (kept_k & (before < p)).sum(-1).clamp(min=1)  # [B]
        last_kept = vals.gather(1, (n_keep - 1)[:, None])
        first_out = vals.gather(1, n_keep.clamp(max=width - 1)[:, None])
        n_k = kept_k.sum(-1)
        pair = ((n_keep < n_k) & (n_keep < width))[:, None] & (last_kept - first_out <= two_tol)
        core |= pair & ((rank == (n_keep - 1)[:, None]) | (rank == n_keep[:, None]))
        inf = torch.full_like(vals, float("inf"))
        hi = torch.where(core, vals, -inf).amax(-1, keepdim=True)
        lo = torch.where(core, vals, inf).amin(-1, keepdim=True)
        band = (vals <= hi + two_tol) & (vals >= lo - two_tol) & kept_k
        amb |= p_on[:, None] & core.any(-1, keepdim=True) & band
        # every entry past the prefix must be surely dropped and outside the tie band
        tail_safe = (~kept_k[:, -1:] | (before[:, -1:] / factor >= p)) & (last < lo - two_tol)
        ok &= ~p_on | tail_safe[:, 0] | (width >= vocab)
    out = torch.zeros(scaled.shape, dtype=torch.bool, device=scaled.device)
    return out.scatter_(1, idx, amb), ok


def _mask_ambiguous(
    scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, tol: torch.Tensor
) -> torch.Tensor:
    """Tokens whose top-k / top-p membership could flip if every logit moved by ``≤ tol``.

    ``scaled``: [B, V] temperature-scaled logits; ``tol``: [B] the same bound in scaled units.
    Returns a bool [B, V]. Top-k: a kept token within ``2·tol`` of the first dropped one (or a
    dropped one within ``2·tol`` of the k-th) could swap with it. Top-p: moving every logit by
    ``≤ tol`` scales each probability, and so the mass before a token, by at most
    ``e^{±2·tol}`` (times the mass the top-k cut could add or take); a token whose mass-before
    lies within that factor of ``top_p``, or that ties (within ``2·tol``) with such a token or
    with the last kept/first dropped pair, could be kept or dropped. Conservative by design: an
    ambiguous token only makes the replay undecided at positions where it could matter.
    """
    return _by_head(_ambiguous_rows, scaled, top_k, top_p.to(scaled.dtype), tol.to(scaled.dtype))


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
    mask_tolerance: float = 0.0,
    claimed: torch.Tensor | None = None,
) -> SampleOutput:
    """Choose one token per row by Gumbel-max (greedy where temperature is 0).

    Args:
        logits: [B, V] raw model logits (any float dtype; computed in float32).
        temperature: [B] float, >= 0.
        seeds: [B] int64 (uint64 bits, see :func:`seed_to_int64`).
        positions: [B] int64 output positions (0 for the first generated token).
        top_k: [B] int64, 0 = off. top_p: [B] float in (0, 1], 1 = off.
        mask_tolerance: verifiers only — a bound (raw logit units) on how far another engine's
            logits may differ from these. Where moving every logit by that much could flip a
            token's top-k/top-p membership in a way that changes the choice, the margin is
            lowered accordingly (0 if the chosen token itself could be masked out), so a
            replay never counts a mask decided by noise. 0 (the executor's case) = plain margin.
        claimed: [B] int64 verifiers only — the tokens an executor reported; adds
            ``claimed_margins`` (how far each claim falls below the replayed choice).
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
    unmasked = logits / safe_t[:, None]
    if bool(needs_mask.any()):
        masked = _mask_top_k_top_p(scaled, top_k, top_p)
        scaled = torch.where(needs_mask[:, None], masked, scaled)
    noise = gumbel_noise(seeds.to(device), positions.to(device), vocab, device=device)
    scores = torch.where(greedy[:, None], logits, scaled + noise)  # [B, V]
    tokens, margins = _best_two(scores)
    claimed_margins = None
    if claimed is not None:
        claimed = claimed.to(device=device, dtype=torch.int64)
        best_all = scores.gather(1, tokens[:, None])[:, 0]
        claimed_margins = best_all - scores.gather(1, claimed[:, None])[:, 0]  # inf if masked
        claimed_margins = torch.where(
            claimed == tokens, torch.zeros_like(claimed_margins), claimed_margins
        )
    if mask_tolerance > 0 and bool(needs_mask.any()):
        rows = torch.nonzero(needs_mask).flatten()
        amb = _mask_ambiguous(
            unmasked[rows], top_k[rows], top_p[rows], mask_tolerance / safe_t[rows]
        )  # [R, V]
        chosen_amb = amb.gather(1, tokens[rows][:, None])[:, 0]
        free = torch.where(
            amb, (unmasked[rows] + noise[rows]), torch.full_like(noise[rows], _NEG_INF)
        )
        best = scores[rows].gather(1, tokens[rows][:, None])[:, 0]
        gap = (best - free.amax(-1)).clamp(min=0.0)
        m = torch.minimum(margins[rows], gap)
        margins = margins.clone()
        margins[rows] = torch.where(chosen_amb, torch.zeros_like(m), m)
        if claimed_margins is not None:
            # a claim that a mask noise could decide might have been kept: its unmasked score
            c = claimed[rows][:, None]
            c_free = (best - free.gather(1, c)[:, 0]).clamp(min=0.0)
            cm = torch.where(amb.gather(1, c)[:, 0], c_free, claimed_margins[rows])
            claimed_margins = claimed_margins.clone()
            claimed_margins[rows] = torch.where(chosen_amb, torch.zeros_like(cm), cm)
    return SampleOutput(tokens=tokens, margins=margins, claimed_margins=claimed_margins)


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
