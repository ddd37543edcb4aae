from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gonka_ray.exceptions import WireError
from gonka_ray.verification.artifact import Artifact
from gonka_ray.verification.checks import (
    VerifierScores,
    float16_half_spacing,
    gonka_distance,
    replay,
    verify,
)


def make_artifact(n: int = 64, k: int = 5, vocab: int = 49_152, seed: int = 0) -> Artifact:
    rng = np.random.default_rng(seed)
    top_ids = (
        np.stack([rng.choice(vocab, size=k, replace=False) for _ in range(n)])
        if n
        else np.zeros((0, k))
    )
    top_lp = np.sort(rng.uniform(-8, 0, size=(n, k)), axis=1)[:, ::-1]
    return Artifact.build(
        prompt_ids=rng.integers(0, vocab, size=32),
        output_ids=top_ids[:, 0] if n else [],
        token_logprobs=top_lp[:, 0] if n else [],
        top_ids=top_ids,
        top_logprobs=top_lp,
        seed=1234,
        temperature=0.7,
        top_p=0.95,
        top_k=0,
        finish_reason="length",
    )


def scores_from(art: Artifact, noise: float = 0.0, seed: int = 1) -> VerifierScores:
    rng = np.random.default_rng(seed)
    lp = art.top_logprobs.astype(np.float64) + rng.normal(0, noise, art.top_logprobs.shape)
    return VerifierScores(
        top_ids=art.top_ids.astype(np.int64),
        top_logprobs=lp,
        token_logprobs=art.token_logprobs.astype(np.float64),
        choice=art.output_ids.astype(np.int64),
        margin=np.full(art.num_output_tokens, 1.0),
    )


def test_compact_roundtrip_hash_and_size() -> None:
    art = make_artifact()
    data = art.to_compact()
    back = Artifact.from_compact(data)
    assert back.hash() == art.hash()
    assert np.array_equal(back.top_ids, art.top_ids)
    assert np.array_equal(back.top_logprobs, art.top_logprobs)
    assert back.finish_reason == "length" and back.seed == 1234
    # uint32 ids of a 49k vocabulary with float16 logprobs compress under 24 bytes per token
    assert art.bytes_per_token() < 24 * 1.4  # random ids are the worst case; see benchmark
    # the prompt ids cost once per request, not per output token
    assert art.bytes_per_token() < art.bytes_per_token(include_prompt=True)


def test_hash_changes_with_any_field() -> None:
    art = make_artifact()
    other = Artifact.build(
        prompt_ids=art.prompt_ids,
        output_ids=art.output_ids,
        token_logprobs=art.token_logprobs,
        top_ids=art.top_ids,
        top_logprobs=art.top_logprobs,
        seed=art.seed + 1,
        temperature=art.temperature,
        top_p=art.top_p,
        top_k=art.top_k,
        finish_reason="length",
    )
    assert other.hash() != art.hash()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_compact_bytes_are_typed(blob: bytes) -> None:
    try:
        Artifact.from_compact(blob)
    except WireError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_flipped_compact_byte_never_yields_a_different_artifact_silently(data) -> None:
    art = make_artifact(n=8)
    blob = bytearray(art.to_compact())
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        back = Artifact.from_compact(bytes(blob))
    except WireError:
        return
    assert back.hash() != art.hash()  # decodes only as a *different* artifact


def test_build_rejects_inconsistent_shapes() -> None:
    with pytest.raises(WireError):
        Artifact.build(
            prompt_ids=[1],
            output_ids=[1, 2],
            token_logprobs=[0.0],
            top_ids=[[1], [2]],
            top_logprobs=[[0.0], [0.0]],
            seed=1,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            finish_reason="stop",
        )
    with pytest.raises(WireError):
        make_artifact(k=21)
    with pytest.raises(WireError):
        Artifact.build(
            prompt_ids=[-1],
            output_ids=[],
            token_logprobs=[],
            top_ids=np.zeros((0, 5)),
            top_logprobs=np.zeros((0, 5)),
            seed=1,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            finish_reason="stop",
        )


def test_distance_zero_for_identical_and_matches_formula() -> None:
    art = make_artifact(n=4, k=2)
    s = scores_from(art)
    assert gonka_distance(
        art.top_ids, art.top_logprobs, s.top_ids, s.top_logprobs
    ) == pytest.approx(0, abs=1e-9)
    # hand-computed: one position, verifier tokens {1: -1, 2: -2}, executor {1: -1.5, 3: -3}
    d = gonka_distance(
        np.array([[1, 3]]), np.array([[-1.5, -3.0]]), np.array([[1, 2]]), np.array([[-1.0, -2.0]])
    )
    impute = -3.0 - (-1.5 - -3.0)  # m1 - (m2 - m1) with m1 = -3 (lowest), m2 = -1.5
    expected = (
        abs(-1 + 1.5) / (1e-6 + 1 + 1.5) / 2 + abs(-2 - impute) / (1e-6 + 2 + abs(impute)) / 2
    ) / (100 * 2)
    assert d == pytest.approx(expected)


def test_replay_counts_only_gated_mismatches() -> None:
    out = np.array([1, 2, 3, 4])
    choice = np.array([1, 9, 9, 4])
    margin = np.array([5.0, 0.01, 3.0, 0.0])
    assert replay(out, choice, margin, gate=0.1) == (1, 2, (2,))


def test_verify_reports_structural_errors_instead_of_raising() -> None:
    art = make_artifact(n=8)
    s = scores_from(make_artifact(n=4))
    res = verify(art, s, replay_gate=0.1)
    assert res.structural_error and res.similarity == 0.0


def test_verify_grades_honest_and_tampered() -> None:
    art = make_artifact()
    honest = verify(art, scores_from(art, noise=1e-4), replay_gate=0.1)
    assert honest.replay_mismatches == 0 and honest.similarity > 0.999
    s = scores_from(art)
    choice = s.choice.copy()
    choice[::8] += 1  # a verifier whose sampler disagrees at every 8th position with margin 1.0
    tampered = verify(
        art,
        VerifierScores(s.top_ids, s.top_logprobs, s.token_logprobs, choice, s.margin),
        replay_gate=0.1,
    )
    assert tampered.replay_mismatches == 8
    assert tampered.replay_mismatch_positions[:2] == (0, 8)


def test_shipped_thresholds_every_row_has_the_policy_keys() -> None:
    """Every row of the package data file (pilot or calibrated) reads as policy thresholds; the
    calibration's extra keys (false-positive model, sample counts) are ignored by the policy."""
    from gonka_ray.protocol.verification_policy import _table, thresholds_for

    for model, entry in _table().items():
        if model.startswith("_"):
            continue
        for dtype in entry:
            thr = thresholds_for(model, dtype)
            assert thr.replay_gate > 0 and thr.max_replay_mismatches >= 0
            assert 0 < thr.max_logprob_excess <= 2
    assert thresholds_for("no-such-model") == thresholds_for("default")


def test_a_half_precision_network_takes_the_half_precision_row() -> None:
    """Honest bf16 executors deviate ~0.03 in mean logprob (single tokens up to ~0.35), far above
    float32 noise: a network configured in half precision (or ``auto``) must be judged by the
    bf16 row, or every honest participant would be invalidated."""
    from gonka_ray.protocol.verification_policy import thresholds_for

    fp32 = thresholds_for("no-such-model", "float32")
    half = [thresholds_for("no-such-model", d) for d in ("bfloat16", "float16", "auto")]
    assert all(h == half[0] for h in half)
    assert half[0].max_logprob_excess >= 0.35 > fp32.max_logprob_excess
    assert half[0].replay_gate > fp32.replay_gate


@pytest.mark.parametrize("forged", [-65504.0, -65510.0, float("nan"), float("-inf"), -2e4])
def test_logprobs_no_model_produces_fail_structurally(forged) -> None:
    """float16's largest value has an infinite spacing above it: a forged −65504 would have made
    every token's excess 0 (and weighed the most in the epoch evidence). No model reports such
    logprobs, so the artifact fails outright."""
    art = make_artifact(n=8)
    lp = np.full(8, forged)
    bad = Artifact.build(
        prompt_ids=art.prompt_ids,
        output_ids=art.output_ids,
        token_logprobs=lp,
        top_ids=art.top_ids,
        top_logprobs=art.top_logprobs,
        seed=1,
        temperature=0.7,
        top_p=1.0,
        top_k=0,
        finish_reason="length",
    )
    res = verify(bad, scores_from(art), replay_gate=0.1)
    assert res.structural_error and not res.logprob_excess <= 1.0


def test_half_spacing_bounds_float16_rounding_everywhere() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            -np.exp(rng.uniform(-12, np.log(60000), 200_000)),
            -(2.0 ** np.arange(-14, 16)),
            -np.nextafter(2.0 ** np.arange(-14, 16), 0),
            [-0.0, -65504.0, -65519.0],
        ]
    ).astype(np.float32)
    o = x.astype(np.float16)
    assert np.all(np.abs(o.astype(np.float64) - x) <= float16_half_spacing(o))
