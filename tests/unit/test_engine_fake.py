"""FakeEngine (protocol tests only) and the base-class contract it shares with real engines."""

from __future__ import annotations

import pytest

from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.constants import ENGINE_MAX_TOP_K_LOGPROBS
from gonka_ray.engine.base import EngineRequest, SamplingParams, collect
from gonka_ray.engine.fake import FAKE_EOS, FakeEngine
from gonka_ray.exceptions import InvalidRequest, ModelNotFound


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(ModelConfig(name="fake-model"), EngineConfig(kind="fake", max_model_len=64))


def _req(engine: FakeEngine, **sampling: object) -> EngineRequest:
    params = {"temperature": 1.0, "max_tokens": 12, "seed": 3, "logprobs": 5} | sampling
    return EngineRequest("r1", tuple(engine.tokenize("hello")), SamplingParams(**params))


async def test_generate_is_deterministic_with_real_shapes(engine: FakeEngine) -> None:
    a = await engine.generate_full(_req(engine))
    b = await engine.generate_full(_req(engine))
    assert a == b
    assert len(a.output_ids) == 12 and a.finish_reason == "length"
    assert all(len(t) == 5 for t in a.top_ids) and all(len(t) == 5 for t in a.top_logprobs)
    assert all(lp <= 0 for lp in a.logprobs)
    assert all(list(t) == sorted(t, reverse=True) for t in a.top_logprobs)
    other = await engine.generate_full(_req(engine, seed=4))
    assert other.output_ids != a.output_ids


async def test_score_reproduces_generate_exactly(engine: FakeEngine) -> None:
    req = _req(engine, temperature=0.9, top_k=20)
    res = await engine.generate_full(req)
    sc = await engine.score(req.prompt_ids, res.output_ids, req.sampling)
    assert sc.sampled_ids == res.output_ids
    assert sc.token_logprobs == pytest.approx(res.logprobs, abs=1e-6)
    assert sc.top_ids == res.top_ids
    assert all(m > 0 for m in sc.margins)


async def test_stop_string_ends_output_before_the_stop_text(engine: FakeEngine) -> None:
    full = await engine.generate_full(_req(engine, max_tokens=20))
    stop = full.text[5:7]
    cut = await engine.generate_full(_req(engine, max_tokens=20, stop=(stop,)))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]
    assert stop not in cut.text


async def test_eos_finishes_with_stop_and_adds_no_text(engine: FakeEngine) -> None:
    for seed in range(200):
        res = await engine.generate_full(_req(engine, seed=seed, max_tokens=40, temperature=2.0))
        if res.output_ids[-1] == FAKE_EOS:
            assert res.finish_reason == "stop"
            assert res.text == engine.detokenize(res.output_ids[:-1])
            return
    pytest.fail("no seed produced EOS")


async def test_streaming_equals_non_streaming(engine: FakeEngine) -> None:
    req = _req(engine)
    chunks = [c async for c in engine.generate(req)]
    full = await collect(engine.generate(req), req)
    assert tuple(c.token_id for c in chunks) == full.output_ids
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)


@pytest.mark.parametrize(
    ("prompt", "sampling", "field"),
    [
        ((), {}, "prompt"),
        ((1,) * 64, {}, "prompt"),
        ((1, 999), {}, "prompt"),
        ((1, 2), {"max_tokens": 0}, "max_tokens"),
        ((1, 2), {"max_tokens": 63}, "max_tokens"),
        ((1, 2), {"logprobs": ENGINE_MAX_TOP_K_LOGPROBS + 1}, "logprobs"),
        ((1, 2), {"temperature": -0.1}, "temperature"),
        ((1, 2), {"temperature": float("nan")}, "temperature"),
        ((1, 2), {"top_p": 0.0}, "top_p"),
        ((1, 2), {"top_k": -1}, "top_k"),
        ((1, 2), {"seed": 2**64}, "seed"),
        ((1, 2), {"stop": ("",)}, "stop"),
    ],
)
def test_bad_input_raises_typed_error_naming_the_field(
    engine: FakeEngine, prompt: tuple[int, ...], sampling: dict, field: str
) -> None:
    with pytest.raises(InvalidRequest) as err:
        params = SamplingParams(**({"max_tokens": 8} | sampling))
        engine.generate(EngineRequest("bad", prompt, params))
    assert err.value.field == field
    assert err.value.to_dict()["param"] == field


def test_unknown_model_raises_model_not_found(engine: FakeEngine) -> None:
    with pytest.raises(ModelNotFound) as err:
        engine.generate(EngineRequest("x", (1, 2), SamplingParams(), model="gpt-9"))
    assert err.value.field == "model"


async def test_score_rejects_empty_output(engine: FakeEngine) -> None:
    with pytest.raises(InvalidRequest) as err:
        await engine.score((1, 2), (), SamplingParams())
    assert err.value.field == "output"


def test_chat_template_and_tokenization_roundtrip(engine: FakeEngine) -> None:
    ids = engine.apply_chat_template([{"role": "user", "content": "héllo"}])
    assert "héllo" in engine.detokenize(ids)
    with pytest.raises(InvalidRequest) as err:
        engine.apply_chat_template([])
    assert err.value.field == "messages"
    assert engine.model_info().name == "fake-model"
