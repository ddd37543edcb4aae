"""TransformersEngine on the tiny model: batch invariance, scoring, streaming, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.base import EngineRequest, SamplingParams
from gonka_ray.engine.transformers_engine import TransformersEngine
from gonka_ray.exceptions import InvalidRequest, ModelNotFound
from tests.tiny_model import diverse_tiny_dir

# score() and generate() run the same weights on the same device; only the KV-cached decode
# path differs from the one-pass prefill, so raw logprobs agree to float32 rounding.
SCORE_LOGPROB_TOL = 1e-4


@pytest.fixture(scope="module")
def engine() -> Iterator[TransformersEngine]:
    # NOTE: the engine's step thread serves any event loop, so one engine serves every test.
    eng = TransformersEngine(
        ModelConfig(name="tiny-llama", path=str(diverse_tiny_dir())),
        EngineConfig(torch_threads=1, max_model_len=512, max_batch_size=8),
    )
    yield eng
    eng.shutdown()


def mixed_requests(engine: TransformersEngine) -> list[EngineRequest]:
    """Eight requests with different prompts, lengths, seeds and sampling parameters."""
    base = engine.tokenize("The quick brown fox jumps over the lazy dog and then")
    variants = [
        {"temperature": 1.0},
        {"temperature": 0.0},
        {"temperature": 0.7, "top_k": 50},
        {"temperature": 1.3, "top_p": 0.9},
        {"temperature": 1.0, "top_k": 5, "top_p": 0.8},
        {"temperature": 0.5, "logprobs": 20},
        {"temperature": 1.0, "logprobs": 0},
        {"temperature": 2.0, "top_k": 1000},
    ]
    return [
        EngineRequest(
            f"r{i}",
            tuple(base[: 4 + 2 * i]),
            SamplingParams(max_tokens=8 + 3 * i, seed=1000 + i, **v),
        )
        for i, v in enumerate(variants)
    ]


async def test_same_seed_same_tokens_alone_and_in_a_batch_of_8(engine: TransformersEngine) -> None:
    reqs = mixed_requests(engine)
    engine.max_rows_seen = 0  # the engine is module-scoped: measure this test's batches only
    alone = [await engine.generate_full(r) for r in reqs]
    assert engine.max_rows_seen == 1  # each really ran alone
    engine.max_rows_seen = 0
    batched = await asyncio.gather(*[engine.generate_full(r) for r in reqs])
    assert engine.max_rows_seen >= 4  # really ran as one batch
    for a, b, r in zip(alone, batched, reqs, strict=True):
        assert a.output_ids == b.output_ids, r.request_id
        assert len(a.output_ids) == r.sampling.max_tokens
        assert b.logprobs == pytest.approx(a.logprobs, abs=SCORE_LOGPROB_TOL)
        assert all(len(t) == r.sampling.logprobs for t in b.top_ids)
    # the sampled requests really are random: distinct tokens within most outputs
    assert len(set().union(*(a.output_ids for a in alone))) > 15


async def test_different_seed_gives_different_tokens(engine: TransformersEngine) -> None:
    req = mixed_requests(engine)[7]
    a = await engine.generate_full(req)
    other = EngineRequest(
        "o", req.prompt_ids, SamplingParams(**{**req.sampling.__dict__, "seed": 5})
    )
    b = await engine.generate_full(other)
    assert a.output_ids != b.output_ids


async def test_score_reproduces_generate(engine: TransformersEngine) -> None:
    for req in mixed_requests(engine)[:6]:
        res = await engine.generate_full(req)
        sc = await engine.score(req.prompt_ids, res.output_ids, req.sampling)
        assert len(sc.token_logprobs) == len(res.output_ids)
        assert sc.token_logprobs == pytest.approx(res.logprobs, abs=SCORE_LOGPROB_TOL)
        assert sc.sampled_ids == res.output_ids
        k = max(1, req.sampling.logprobs)
        assert all(len(t) == k for t in sc.top_ids)
        if req.sampling.logprobs:
            assert [t[0] for t in sc.top_ids] == [t[0] for t in res.top_ids]
        assert all(m >= 0 for m in sc.margins)


async def test_score_of_a_changed_token_disagrees(engine: TransformersEngine) -> None:
    req = mixed_requests(engine)[1]  # greedy: the replayed choice is the argmax
    res = await engine.generate_full(req)
    forged = list(res.output_ids)
    forged[3] = (forged[3] + 1) % engine.info.vocab_size
    sc = await engine.score(req.prompt_ids, forged, req.sampling)
    assert sc.sampled_ids[3] != forged[3]
    assert sc.token_logprobs[3] < res.logprobs[3]


async def test_streaming_equals_non_streaming_and_is_incremental(
    engine: TransformersEngine,
) -> None:
    req = mixed_requests(engine)[3]
    full = await engine.generate_full(req)
    chunks = []
    async for c in engine.generate(req):
        chunks.append(c)
        if len(chunks) == 1:
            assert c.finish_reason is None  # the first token arrives before the last
    assert tuple(c.token_id for c in chunks) == full.output_ids
    assert "".join(c.text for c in chunks) == full.text
    assert chunks[-1].finish_reason == "length"


async def test_abandoned_stream_frees_its_slot(engine: TransformersEngine) -> None:
    req = EngineRequest("long", (1, 2, 3), SamplingParams(max_tokens=400, seed=1))
    gen = engine.generate(req)
    async for _ in gen:
        break
    await gen.aclose()
    res = await asyncio.wait_for(engine.generate_full(mixed_requests(engine)[0]), timeout=60)
    assert len(res.output_ids) == 8


async def test_stop_string(engine: TransformersEngine) -> None:
    req = mixed_requests(engine)[0]
    full = await engine.generate_full(req)
    stop = full.text[len(full.text) // 2 :][:3]
    cut = await engine.generate_full(
        EngineRequest(
            "s", req.prompt_ids, SamplingParams(**{**req.sampling.__dict__, "stop": (stop,)})
        )
    )
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.output_ids == full.output_ids[: len(cut.output_ids)]


async def test_bad_input_names_the_field(engine: TransformersEngine) -> None:
    with pytest.raises(InvalidRequest) as err:
        engine.generate(EngineRequest("x", (1,) * 512, SamplingParams(max_tokens=1)))
    assert err.value.field == "prompt"
    with pytest.raises(InvalidRequest) as err:
        engine.generate(EngineRequest("x", (1, 2), SamplingParams(max_tokens=511)))
    assert err.value.field == "max_tokens"
    with pytest.raises(InvalidRequest) as err:
        await engine.score((1, 2), (3,) * 511, SamplingParams())
    assert err.value.field == "output"


def test_unknown_model_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound) as err:
        TransformersEngine(ModelConfig(name="no-such-model"), EngineConfig())
    assert err.value.field == "model"


async def test_chat_template_uses_the_model_template(engine: TransformersEngine) -> None:
    ids = engine.apply_chat_template([{"role": "user", "content": "Hi there"}])
    text = engine.detokenize(ids, skip_special_tokens=False)
    assert "Hi there" in text and "<|im_start|>assistant" in text
    assert engine.model_info().vocab_size == 49152
