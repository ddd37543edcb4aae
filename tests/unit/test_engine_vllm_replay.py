"""VLLMEngine's replay from top candidates (pure; no vllm needed): exact where it claims to be."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from gonka_ray.engine import sampler
from gonka_ray.engine.base import SamplingParams
from gonka_ray.engine.vllm_engine import SCORE_CANDIDATES, replay_from_candidates

VOCAB = 400


@dataclass
class FakeLogprob:
    logprob: float
    rank: int


def _entries(logits: torch.Tensor, tokens: list[int]) -> list[dict[int, FakeLogprob]]:
    """What vLLM's prompt_logprobs returns: the top SCORE_CANDIDATES plus the actual token."""
    logp = torch.log_softmax(logits, -1)
    out = []
    for row, tok in zip(logp, tokens, strict=True):
        order = torch.argsort(row, descending=True, stable=True).tolist()
        rank = {t: r + 1 for r, t in enumerate(order)}
        keep = set(order[:SCORE_CANDIDATES]) | {tok}
        out.append({t: FakeLogprob(float(row[t]), rank[t]) for t in keep})
    return out


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.0, seed=1),
        SamplingParams(temperature=1.0, seed=2),
        SamplingParams(temperature=0.7, top_k=20, seed=3),
        SamplingParams(temperature=1.2, top_k=50, top_p=0.8, seed=4),
        SamplingParams(temperature=1.0, top_p=0.9, seed=5),
        SamplingParams(temperature=0.8, top_p=0.95, seed=6),
    ],
)
def test_replay_never_claims_a_wrong_choice(params: SamplingParams) -> None:
    g = torch.Generator().manual_seed(params.seed)
    n = 60
    logits = torch.randn(n, VOCAB, generator=g) * 4  # peaked, like a real LM
    truth = sampler.sample(
        logits,
        temperature=torch.full((n,), params.temperature),
        seeds=torch.full((n,), params.seed, dtype=torch.int64),
        positions=torch.arange(n),
        top_k=torch.full((n,), params.top_k, dtype=torch.int64),
        top_p=torch.full((n,), params.top_p),
    )
    executor = truth.tokens.tolist()
    res = replay_from_candidates(_entries(logits, executor), executor, params, 5, VOCAB)
    decided = [m > 0 for m in res.margins]
    for i in range(n):
        if decided[i]:
            assert res.sampled_ids[i] == executor[i], i
    exact = params.temperature == 0 or 0 < params.top_k <= SCORE_CANDIDATES
    if exact:
        assert list(res.sampled_ids) == executor
        assert res.margins == pytest.approx(truth.margins.tolist(), abs=1e-4)
    assert sum(decided) >= n // 4  # the bounds decide a useful share of positions
    logp = torch.log_softmax(logits, -1)
    assert res.token_logprobs == pytest.approx(
        [float(logp[i, t]) for i, t in enumerate(executor)], abs=1e-5
    )
    assert all(len(t) == 5 for t in res.top_ids)
