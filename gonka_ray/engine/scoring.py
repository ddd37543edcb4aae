"""Torch helpers shared by the torch-based engines: raw-logprob artifacts and prefill scoring.

Everything here works on raw logits (before temperature), in float32, and never on batch
composition: each row is handled on its own, so a row's result does not depend on its
neighbours. No Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gonka_ray.engine import sampler
from gonka_ray.engine.base import SamplingParams, ScoreResult
from gonka_ray.hashing import seed_to_int64


@dataclass(frozen=True)
class Artifacts:
    """Per-row raw logprob artifacts (Python lists, ready to send).

    ``token_logprobs[i]`` is the logprob of row i's token; ``top_ids[i]`` / ``top_logprobs[i]``
    its top-k, best first (k may differ per row).
    """

    token_logprobs: list[float]
    top_ids: list[tuple[int, ...]]
    top_logprobs: list[tuple[float, ...]]


def artifacts(logits: torch.Tensor, tokens: torch.Tensor, ks: Sequence[int]) -> Artifacts:
    """Raw log-softmax artifacts for ``logits`` [B, V] and chosen ``tokens`` [B], top-``ks[i]``."""
    logp = torch.log_softmax(logits.to(torch.float32), dim=-1)  # [B, V]
    token_lp = logp.gather(1, tokens.to(logp.device, torch.int64)[:, None])[:, 0]
    kmax = max(ks) if len(ks) else 0
    if kmax > 0:
        top = torch.topk(logp, kmax, dim=-1)
        vals, ids = top.values.cpu().tolist(), top.indices.cpu().tolist()
    else:
        vals = ids = [[] for _ in ks]
    return Artifacts(
        token_logprobs=[float(x) for x in token_lp.cpu().tolist()],
        top_ids=[tuple(int(t) for t in ids[i][:k]) for i, k in enumerate(ks)],
        top_logprobs=[tuple(float(v) for v in vals[i][:k]) for i, k in enumerate(ks)],
    )


def sampling_tensors(
    rows: Sequence[tuple[SamplingParams, int]], device: torch.device
) -> dict[str, torch.Tensor]:
    """Keyword tensors for :func:`sampler.sample` from ``(params, output position)`` rows."""
    return {
        "temperature": torch.tensor(
            [p.temperature for p, _ in rows], dtype=torch.float32, device=device
        ),
        "seeds": torch.tensor(
            [seed_to_int64(p.seed) for p, _ in rows], dtype=torch.int64, device=device
        ),
        "positions": torch.tensor([pos for _, pos in rows], dtype=torch.int64, device=device),
        "top_k": torch.tensor([p.top_k for p, _ in rows], dtype=torch.int64, device=device),
        "top_p": torch.tensor([p.top_p for p, _ in rows], dtype=torch.float32, device=device),
    }


def score_logits(
    logits: torch.Tensor, output_ids: Sequence[int], sampling: SamplingParams
) -> ScoreResult:
    """Score ``output_ids`` given the logits that predicted them.

    Args:
        logits: [N, V]; row i is the model's prediction for output position i.
        output_ids: the executor's N tokens.
        sampling: the request's params (seed, temperature, top-k/top-p, logprobs k).
    """
    n = len(output_ids)
    tokens = torch.tensor(list(output_ids), dtype=torch.int64, device=logits.device)
    k = max(1, sampling.logprobs)
    art = artifacts(logits, tokens, [k] * n)
    chosen = sampler.sample(
        logits,
        **sampling_tensors([(sampling, i) for i in range(n)], logits.device),
        mask_tolerance=sampling.replay_tolerance,
    )
    return ScoreResult(
        top_ids=tuple(art.top_ids),
        top_logprobs=tuple(art.top_logprobs),
        token_logprobs=tuple(art.token_logprobs),
        sampled_ids=tuple(int(t) for t in chosen.tokens.cpu().tolist()),
        margins=tuple(float(m) for m in chosen.margins.cpu().tolist()),
    )
