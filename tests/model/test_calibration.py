"""Calibration: the false-positive model's maths, and the ``calibrate`` tool on the tiny model —
its thresholds accept fresh honest runs of the held-out traffic split (other prompts, seeds,
sampling params, batch and thread count) and reject cheats, each by the check that should
catch it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from gonka_ray.adversary.cheats import cheat_model
from gonka_ray.constants import CALIBRATION_MIN_EXCESS, CALIBRATION_MIN_GATE
from gonka_ray.engine.base import SamplingParams
from gonka_ray.engine.models import load_hf, truncate_layers
from gonka_ray.protocol.verification_policy import EpochRule, Thresholds, decide
from gonka_ray.verification import calibration as cal
from gonka_ray.verification import harness, traffic
from gonka_ray.verification.calibrate import calibrate, update_table
from gonka_ray.verification.checks import verify

MODEL = "tiny-llama"
N = 12


def _record(rng, sd: float, n: int = 64, variant: str = "a", flips=()) -> cal.HonestRecord:
    e = -rng.exponential(1.0, n)
    d = rng.normal(0, sd, n)
    return cal.HonestRecord(variant, d, e.astype(np.float16), e + d, flip_margins=flips)


def test_token_tail_quantile_inverts_its_survival_function() -> None:
    rng = np.random.default_rng(0)
    tail = cal.TokenTail.fit(np.abs(rng.normal(0, 1.0, 100_000)))
    assert tail.q == pytest.approx(0.01, rel=0.01)
    for p in (1e-3, 1e-6, 1e-9):
        assert tail.sf(tail.quantile(p)) == pytest.approx(p, rel=1e-9)
    # an exponential tail over-states a normal's: the fit errs towards higher thresholds
    assert tail.sf(4.0) > 2 * 0.5 * (1 - __import__("math").erf(4.0 / 2**0.5))


def test_fit_thresholds_is_above_every_honest_value_and_reports_its_model() -> None:
    rng = np.random.default_rng(0)
    recs = [_record(rng, 0.02) for _ in range(200)] + [_record(rng, 0.02, flips=(0.3,))]
    row = cal.fit_thresholds(recs, target_fpr=1e-3)
    assert row["max_logprob_excess"] >= 1.5 * max(float(r.excess().mean()) for r in recs)
    assert row["max_logprob_excess"] >= 1.5 * row["token_tail"]["x0"]
    assert row["replay_gate"] >= 1.5 * 0.3  # an honest flip seen at 0.3 sets the floor
    assert row["implied_fpr"]["total"] <= 1e-3
    assert {"replay_gate", "max_replay_mismatches", "max_logprob_excess", "epoch"} <= set(row)
    # an fp32-sized noise hits the floors
    tiny = cal.fit_thresholds([_record(rng, 1e-6) for _ in range(50)])
    assert tiny["replay_gate"] == CALIBRATION_MIN_GATE
    assert tiny["max_logprob_excess"] == CALIBRATION_MIN_EXCESS


def test_excess_discounts_the_artifacts_float16_rounding() -> None:
    """A token at logprob −11.38 (float16 spacing 2⁻⁷ there) reported exactly and rounded: its
    excess is 0 although |v − o| is ~1e-3 — the false positive of the issue report."""
    v = np.array([-11.381584, -5.720082, -9.314544, -1.953845])
    o = v.astype(np.float16)
    assert np.abs(o.astype(np.float64) - v).mean() > 9.6e-4
    rec = cal.HonestRecord("x", np.zeros(4), o, v)
    assert rec.excess().max() == 0.0


def test_epoch_rule_separates_inflated_noise_from_honest_over_many_inferences() -> None:
    """Honest records of 2-token and 64-token answers: the bound is wide for an epoch of short
    answers (their T is noisy) and tight for long ones, so neither honest epoch is flagged and
    inflated noise over long answers is."""
    rng = np.random.default_rng(1)
    honest = [_record(rng, 0.03, n=64 if i % 2 else 2, variant=f"v{i % 3}") for i in range(600)]
    row = cal.fit_epoch(honest, min_inferences=20)
    keys = ("mu", "kappa", "z", "safety", "min_inferences", "trim", "sigma")
    rule = EpochRule(**{k: row[k] for k in keys})

    def flagged(sd: float, n: int, trials: int = 300) -> float:
        hits = 0
        for _ in range(trials):
            ev = np.array([_record(rng, sd, n=n).evidence() for _ in range(20)])
            stat = float(cal.trimmed_ratios(ev[None, :, 0], ev[None, :, 1], rule.trim)[0])
            hits += rule.flagged(stat, 20, float(ev[:, 1].sum()))
        return hits / trials

    assert flagged(0.03, 2) <= 0.01 and flagged(0.03, 64) <= 0.01
    assert flagged(0.05, 64) >= 0.99
    assert rule.threshold(20, 20.0) > rule.threshold(20, 640.0)  # 2-token vs 64-token epochs
    assert not rule.flagged(1e9, 19, 1e4)  # below min_inferences nothing is judged
    assert rule.flagged(float("nan"), 20, 1e4)  # NaN evidence never passes
    with pytest.raises(ValueError):
        rule.threshold(20)  # a weight-scaled rule needs the epoch's weight


def test_update_table_replaces_one_model_and_keeps_the_rest(tmp_path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"default": {"float32": {"replay_gate": 0.5}}}))
    update_table("m", {"float32": {"replay_gate": 0.1}}, path)
    table = json.loads(path.read_text())
    assert table["default"]["float32"]["replay_gate"] == 0.5
    assert table["m"]["float32"]["replay_gate"] == 0.1


@pytest.fixture(scope="module")
def tiny():
    threads = torch.get_num_threads()
    row = calibrate(MODEL, requests=24, max_tokens=N)
    torch.set_num_threads(threads)
    model, tok = load_hf(MODEL)
    thr = Thresholds(
        replay_gate=row["replay_gate"],
        max_replay_mismatches=row["max_replay_mismatches"],
        max_logprob_excess=row["max_logprob_excess"],
    )
    reqs = [r for r in traffic.requests("heldout", 12, seed=5) if r.prompt_size != "near_context"]
    ids = [harness.messages_ids(tok, r.chat()) for r in reqs]
    params = [
        SamplingParams(
            temperature=r.temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            max_tokens=N,
            seed=r.seed,
            ignore_eos=True,
        )
        for r in reqs
    ]
    return model, ids, params, thr, row


def _verdicts(verifier, execs, thr, claimed=None):
    """(result, verdict) per execution, scored by ``verifier`` under ``thr``."""
    scores = harness.verify_batch(verifier, execs, tolerance=thr.replay_gate, claimed=claimed)
    out = []
    for i, (ex, s) in enumerate(zip(execs, scores, strict=True)):
        art = ex.artifact(sampling=claimed[i] if claimed else None)
        res = verify(art, s, replay_gate=thr.replay_gate)
        out.append((res, decide(res, thr)))
    return out


def test_calibrated_row_has_the_policy_keys_and_a_modelled_fpr(tiny) -> None:
    *_, row = tiny
    assert {"replay_gate", "max_replay_mismatches", "max_logprob_excess"} <= set(row)
    assert row["implied_fpr"]["total"] <= row["target_fpr"]


def test_fresh_honest_runs_pass(tiny) -> None:
    model, ids, params, thr, _ = tiny
    # honest variation the calibration never saw: held-out prompts, seeds and params, 1 thread
    torch.set_num_threads(1)
    execs = harness.generate(model, ids, params)
    verdicts = [v for _, v in _verdicts(model, execs, thr)]
    assert all(v.passed for v in verdicts), [v.reason for v in verdicts]


@pytest.mark.parametrize("kind", ["int8", "truncate"])
def test_model_cheats_fail(tiny, kind) -> None:
    model, ids, params, thr, _ = tiny
    cheap = truncate_layers(model, 1) if kind == "truncate" else cheat_model(model, kind)
    graded = _verdicts(model, harness.generate(cheap, ids, params), thr)
    assert not any(v.passed for _, v in graded)
    if kind == "int8":  # the check that must catch int8 is the logprob excess
        assert all(r.logprob_excess > thr.max_logprob_excess for r, _ in graded)


def test_laundering_fails_replay(tiny) -> None:
    model, ids, params, thr, _ = tiny
    sampled = [replace(p, temperature=max(p.temperature, 0.7)) for p in params]
    execs = harness.generate(truncate_layers(model, 1), ids, sampled)
    honest = harness.verify_batch(model, execs, tolerance=thr.replay_gate)
    for ex, s in zip(execs, honest, strict=True):  # the cheater copies an honest prefill
        ex.token_logprobs, ex.top_ids, ex.top_logprobs = (
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
    sp = SamplingParams(temperature=0.7, top_p=0.9, top_k=40, seed=9, replay_tolerance=0.01)
    got = harness.score(logits, out, sp)
    ref = sampler.sample(
        logits,
        temperature=torch.full((40,), 0.7),
        seeds=torch.full((40,), 9, dtype=torch.int64),
        positions=torch.arange(40),
        top_k=torch.full((40,), 40),
        top_p=torch.full((40,), 0.9),
        mask_tolerance=0.01,
    )
    assert np.array_equal(got.choice, ref.tokens.numpy())
    assert np.array_equal(got.margin, ref.margins.numpy())
