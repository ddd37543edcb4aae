"""Honest short answers at the OpenAI defaults pass verification — SmolLM2-135M, fp32, shipped
thresholds, the engine's own generate and score paths.

Regression for the reported false positive: ``"weather?"``, ``max_tokens=4``, temperature 1.0,
seed 7955076047201834953 gave "ABC2 Lightning." with token logprobs −11.38, −5.72, −9.31, −1.95;
float16 rounding of those alone moved the mean |Δlogprob| past the old bound, and every verifier
failed the honest executor.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.base import EngineRequest, SamplingParams
from gonka_ray.protocol.verification_policy import decide, thresholds_for
from gonka_ray.verification import traffic
from gonka_ray.verification.artifact import Artifact
from gonka_ray.verification.checks import VerifierScores, verify

MODEL = "smollm2-135m-instruct"
OLD_BOUND = 0.00096  # the mean |Δlogprob| bound shipped before the fix


@pytest.fixture(scope="module")
def engine():
    from gonka_ray.engine.transformers_engine import TransformersEngine

    eng = TransformersEngine(
        ModelConfig(name=MODEL), EngineConfig(kind="transformers", max_batch_size=8)
    )
    yield eng
    eng.shutdown()


async def _check(engine, messages, sampling: SamplingParams):
    thr = thresholds_for(MODEL)
    ids = engine.apply_chat_template(messages)
    res = await engine.generate_full(EngineRequest("r", tuple(ids), sampling))
    art = Artifact.build(
        prompt_ids=ids,
        output_ids=res.output_ids,
        token_logprobs=res.logprobs,
        top_ids=res.top_ids,
        top_logprobs=res.top_logprobs,
        seed=sampling.seed,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        finish_reason=res.finish_reason,
    )
    sc = await engine.score(
        ids, list(res.output_ids), replace(sampling, replay_tolerance=thr.replay_gate)
    )
    scores = VerifierScores(
        np.asarray(sc.top_ids),
        np.asarray(sc.top_logprobs),
        np.asarray(sc.token_logprobs),
        np.asarray(sc.sampled_ids),
        np.asarray(sc.margins),
    )
    result = verify(art, scores, replay_gate=thr.replay_gate)
    return res, result, decide(result, thr)


def test_the_reported_request_passes(engine) -> None:
    sampling = SamplingParams(temperature=1.0, max_tokens=4, seed=7955076047201834953)
    res, result, verdict = asyncio.run(
        _check(engine, [{"role": "user", "content": "weather?"}], sampling)
    )
    # precondition: this is the reported output, and the old rule would have failed it
    assert res.text == "ABC2 Lightning."
    assert result.logprob_deviation > OLD_BOUND
    assert verdict.passed, verdict.reason


def test_short_answers_at_temperature_one_pass(engine) -> None:
    """48 held-out traffic prompts (one word to a paragraph), 1–4 tokens, temperature 1.0,
    top_p/top_k from the grid, generated concurrently (the engine batches them)."""
    reqs = [
        r
        for r in traffic.requests("heldout", 64, seed=11)
        if r.prompt_size in ("word", "sentence", "paragraph")
    ][:48]
    assert len(reqs) == 48

    async def run_all():
        return await asyncio.gather(
            *[
                _check(
                    engine,
                    r.chat(),
                    SamplingParams(
                        temperature=1.0,
                        top_p=r.top_p,
                        top_k=r.top_k,
                        max_tokens=1 + i % 4,
                        seed=r.seed,
                        stop=r.stop,
                    ),
                )
                for i, r in enumerate(reqs)
            ]
        )

    outcomes = asyncio.run(run_all())
    failed = [(r.text, v.reason) for r, _, v in outcomes if not v.passed]
    assert not failed
    # the regime the old bound failed in is exercised: improbable tokens, coarse float16 spacing
    assert sum(res.logprob_deviation > OLD_BOUND for _, res, _ in outcomes) >= 3
