"""Calibration: the false-positive model's maths, and the ``calibrate`` tool on the tiny model —
its thresholds accept fresh honest runs (other prompts, seeds, batch and thread count) and reject
cheats, each by the check that should catch it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gonka_ray.engine.models import load_hf, truncate_layers
from gonka_ray.protocol.verification_policy import Thresholds, decide
from gonka_ray.verification import calibration as cal
from gonka_ray.verification import harness as H
from gonka_ray.verification.adversary import cheat_model
from gonka_ray.verification.calibrate import calibrate, update_table
from gonka_ray.verification.checks import verify

MODEL = "tiny-llama"
T = 0.7
N = 12


def test_binomial_tail_matches_brute_force() -> None:
    n, p = 20, 0.03
    for m in (0, 1, 3):
        exact = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(m + 1, n + 1))
        assert cal.binomial_tail(n, p, m) == pytest.approx(exact, rel=1e-9)
    assert cal.binomial_tail(256, 1e-12, 0) == pytest.approx(256e-12, rel=1e-6)


def test_gate_meets_its_target_and_grows_with_noise() -> None:
    small = cal.gate_for(5e-4, 1e-4, 0.2, 256)
    big = cal.gate_for(5e-4, 5e-2, 0.2, 256)
    assert small == cal.MIN_GATE < big
    assert cal.replay_fpr(big, 5e-2, 0.2, 256) <= 5e-4
    assert cal.replay_fpr(big * 0.9, 5e-2, 0.2, 256) > 5e-4


def test_fit_thresholds_is_above_every_honest_value_and_reports_its_model() -> None:
    rng = np.random.default_rng(0)
    recs = [
        cal.HonestRecord("a", 64, float(x), rng.normal(0, 1e-4, 64))
        for x in rng.lognormal(np.log(3e-4), 0.2, 200)
    ]
    recs.append(cal.HonestRecord("b", 64, 4e-4, np.zeros(64), flip_margins=(0.2,)))
    row = cal.fit_thresholds(recs, target_fpr=1e-3)
    assert row["max_logprob_deviation"] >= 1.5 * max(r.logprob_deviation for r in recs)
    assert row["replay_gate"] >= 0.3  # an honest flip seen at 0.2 sets the floor (× safety)
    assert row["implied_fpr"]["total"] <= 1e-3
    assert row["honest_samples"] == 201 and row["variants"] == ["a", "b"]


def test_update_table_keeps_other_models(tmp_path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"default": {"float32": {"replay_gate": 0.5}}}))
    update_table("m", {"float32": {"replay_gate": 0.1}}, path)
    table = json.loads(path.read_text())
    assert table["default"]["float32"]["replay_gate"] == 0.5
    assert table["m"]["float32"]["replay_gate"] == 0.1


@pytest.fixture(scope="module")
def tiny():
    threads = torch.get_num_threads()
    rows = calibrate(MODEL, prompts=3, tokens=(N,), bf16=False)
    torch.set_num_threads(threads)
    model, tok = load_hf(MODEL)
    row = rows["float32"]
    thr = Thresholds(
        replay_gate=row["replay_gate"],
        max_replay_mismatches=row["max_replay_mismatches"],
        max_logprob_deviation=row["max_logprob_deviation"],
    )
    texts = ["Tell me about owls.", "What is rain?", "Count to five.", "Hello there!", "Why?"]
    ids = [H.chat_ids(tok, t) for t in texts]
    return model, ids, [77 + i for i in range(len(ids))], thr, row


def _verdicts(verifier, execs, thr, claimed_t=T):
    """(result, verdict) per row of ``execs``, scored by ``verifier`` under ``thr``."""
    scores = H.verify_batch(verifier, execs, list(range(len(execs.prompts))), temperature=claimed_t)
    out = []
    for i, s in enumerate(scores):
        res = verify(execs.artifact(i, temperature=claimed_t), s, replay_gate=thr.replay_gate)
        out.append((res, decide(res, thr)))
    return out


def test_calibrated_row_has_the_policy_keys_and_a_modelled_fpr(tiny) -> None:
    *_, row = tiny
    assert {"replay_gate", "max_replay_mismatches", "max_logprob_deviation"} <= set(row)
    assert row["implied_fpr"]["total"] <= row["target_fpr"]


def test_fresh_honest_runs_pass(tiny) -> None:
    model, ids, seeds, thr, _ = tiny
    # honest variation the calibration never saw: other prompts and seeds, odd batch, 1 thread
    torch.set_num_threads(1)
    execs = H.generate(model, ids, seeds, N, temperature=T)
    verdicts = [v for _, v in _verdicts(model, execs, thr)]
    assert all(v.passed for v in verdicts), [v.reason for v in verdicts]


@pytest.mark.parametrize("kind", ["int8", "truncate"])
def test_model_cheats_fail(tiny, kind) -> None:
    model, ids, seeds, thr, _ = tiny
    cheap = truncate_layers(model, 1) if kind == "truncate" else cheat_model(model, kind)
    graded = _verdicts(model, H.generate(cheap, ids, seeds, N, temperature=T), thr)
    assert not any(v.passed for _, v in graded)
    if kind == "int8":  # the check that must catch int8 is the logprob deviation
        assert all(r.logprob_deviation > thr.max_logprob_deviation for r, _ in graded)
    else:  # a truncated model picks other tokens where the honest one is confident
        assert all(r.replay_mismatches > thr.max_replay_mismatches for r, _ in graded)


def test_laundering_fails_replay(tiny) -> None:
    model, ids, seeds, thr, _ = tiny
    execs = H.generate(truncate_layers(model, 1), ids, seeds, N, temperature=T)
    honest = H.verify_batch(model, execs, list(range(len(ids))), temperature=T)
    for i, s in enumerate(honest):  # the cheater copies an honest prefill's logprobs
        execs.token_logprobs[i], execs.top_ids[i], execs.top_logprobs[i] = (
            s.token_logprobs,
            s.top_ids,
            s.top_logprobs,
        )
    verdicts = [v for _, v in _verdicts(model, execs, thr)]
    assert not any(v.passed for v in verdicts)
    assert all(v.reason.startswith("replay") for v in verdicts)


def test_harness_score_replays_like_the_sampler() -> None:
    """The verifier's blocked replay equals one sampler call over all positions."""
    from gonka_ray.engine import sampler

    logits = torch.randn(40, 300, generator=torch.Generator().manual_seed(0)) * 3
    out = list(range(40))
    got = H.score(logits, out, seed=9, temperature=T)
    ref = sampler.sample(
        logits,
        temperature=torch.full((40,), T),
        seeds=torch.full((40,), 9, dtype=torch.int64),
        positions=torch.arange(40),
    )
    assert np.array_equal(got.choice, ref.tokens.numpy())
    assert np.array_equal(got.margin, ref.margins.numpy())
