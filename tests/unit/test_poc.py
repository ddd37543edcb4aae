"""Proof of Compute: deterministic puzzle, honest claims accepted, inflated or copied ones rejected."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gonka_ray.constants import POC_TOLERANCE
from gonka_ray.engine.poc import PocModel, nonce_tokens, run_sprint, verify_claim
from gonka_ray.protocol import poc, votes
from gonka_ray.protocol.settlement import epoch_weights

SEED = hashlib.sha256(b"epoch-7").digest()
PARAMS = poc.PocParams(calibration_nonces=2048)
DIFFICULTY = 0.05


@pytest.fixture(scope="module")
def model() -> PocModel:
    return PocModel(SEED, DIFFICULTY, params=PARAMS)


@pytest.fixture(scope="module")
def alice(model: PocModel) -> poc.SprintResult:
    return run_sprint(model, "alice", max_nonces=3072, batch_size=1024)


def vseed(name: str) -> bytes:
    return hashlib.sha256(b"validator-" + name.encode()).digest()


def test_model_is_a_deterministic_function_of_the_seed(model: PocModel) -> None:
    again = PocModel(SEED, DIFFICULTY, params=PARAMS)
    assert again.threshold == model.threshold
    assert torch.equal(again.distances("alice", range(64)), model.distances("alice", range(64)))
    other = PocModel(hashlib.sha256(b"epoch-8").digest(), DIFFICULTY, params=PARAMS)
    assert not torch.equal(other.distances("alice", range(64)), model.distances("alice", range(64)))


def test_nonces_are_bound_to_their_participant(model: PocModel) -> None:
    a = nonce_tokens(poc.participant_key(SEED, "alice"), torch.arange(8), 16, 512)
    b = nonce_tokens(poc.participant_key(SEED, "bob"), torch.arange(8), 16, 512)
    assert a.shape == (8, 16) and int(a.min()) >= 0 and int(a.max()) < 512
    assert not torch.equal(a, b)


def test_sprint_pass_rate_matches_difficulty(alice: poc.SprintResult) -> None:
    # 3072 tries at 5%: mean 154, sd 12; the threshold's own error adds ~0.5% of share
    assert 0.03 < alice.pass_rate < 0.07
    assert list(alice.nonces) == sorted(set(alice.nonces))


def test_sprint_respects_a_time_budget(model: PocModel) -> None:
    ticks = iter(range(100))
    res = run_sprint(model, "carol", budget_s=3, batch_size=64, clock=lambda: next(ticks))
    assert res.tried == 2 * 64  # clock: 0 at start; 1 and 2 run a batch; 3 stops


def test_honest_claim_is_accepted(model: PocModel, alice: poc.SprintResult) -> None:
    for v in ("v1", "v2", "v3"):
        check = verify_claim(model, "alice", list(alice.nonces), vseed(v))
        assert check.accepted and check.failed == 0
        assert check.weight == len(alice.nonces)


def test_inflated_claim_is_rejected(model: PocModel, alice: poc.SprintResult) -> None:
    honest = list(alice.nonces)
    fakes = [n for n in range(10_000, 10_000 + len(honest)) if n not in set(honest)]
    inflated = honest + fakes[: len(honest) // 3]  # a quarter of the claim is made up
    for v in ("v1", "v2", "v3"):
        check = verify_claim(model, "alice", inflated, vseed(v))
        assert not check.accepted and check.failed > 5 and check.weight == 0


def test_copied_nonces_fail_for_another_participant(
    model: PocModel, alice: poc.SprintResult
) -> None:
    check = verify_claim(model, "mallory", list(alice.nonces), vseed("v1"))
    assert not check.accepted


def test_malformed_claims_are_rejected(model: PocModel, alice: poc.SprintResult) -> None:
    nonces = list(alice.nonces)
    assert verify_claim(model, "alice", [*nonces, nonces[0]], vseed("v")).reason == (
        "duplicate nonce"
    )
    assert not verify_claim(model, "alice", [-1], vseed("v")).accepted
    assert not verify_claim(model, poc.CALIBRATION_PARTICIPANT, [0], vseed("v")).accepted


def test_sample_is_private_to_the_validator_and_deterministic() -> None:
    nonces = list(range(1000))
    s1 = poc.sample_nonces(nonces, vseed("a"), "alice", 50)
    assert s1 == poc.sample_nonces(reversed(nonces), vseed("a"), "alice", 50)
    assert s1 != poc.sample_nonces(nonces, vseed("b"), "alice", 50)
    assert len(s1) == 50 and set(s1) <= set(nonces)


def test_binomial_acceptance_thresholds() -> None:
    assert poc.accept_claim(0, 100) and poc.accept_claim(2, 100)
    assert not poc.accept_claim(10, 100)


def test_tolerance_band_adds_little_weight(model: PocModel) -> None:
    d = model.distances("dave", torch.arange(6_000))
    passing = int((d <= model.threshold).sum())
    band = int(((d > model.threshold) & (d <= model.threshold + POC_TOLERANCE)).sum())
    assert passing > 0 and band <= 0.02 * passing


def test_verdicts_combine_by_weight_and_weights_are_capped() -> None:
    w = {"c": 40, "v1": 10, "v2": 10, "v3": 30}  # judges of c's claim: 50
    assert votes.poc_claim_outcome({"v1": False, "v2": False, "v3": True}, w, "c")
    assert not votes.poc_claim_outcome({"v1": True, "v2": True, "v3": False}, {**w, "v3": 50}, "c")
    assert not votes.poc_claim_outcome({"v1": True}, w, "c")  # 10 of 50: not above a third
    assert not votes.poc_claim_outcome({"v1": True, "v2": True, "v3": False}, {**w, "v3": 20}, "c")
    assert votes.poc_claim_outcome({}, w, "c") is None  # nobody judged: keep current weight
    assert votes.poc_claim_outcome({"c": True, "v1": True}, w, "c") is False  # own verdict: 10
    weights = epoch_weights({"a": 900, "b": 100, "c": 100, "d": 100, "e": 100}, (), 0.25)
    assert 4 * weights["a"] <= sum(weights.values())


def test_protocol_rules_import_without_torch() -> None:
    # a fresh interpreter (this one has torch and the engine loaded), run from the repo root so
    # it imports this checkout's gonka_ray
    script = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys
        import gonka_ray.protocol as protocol
        names = [m.name for m in pkgutil.iter_modules(protocol.__path__, "gonka_ray.protocol.")]
        for name in names:
            importlib.import_module(name)
        heavy = [m for m in sys.modules if m.split(".")[0] in ("torch", "tqdm")]
        heavy += [m for m in sys.modules if m.startswith("gonka_ray.engine")]
        print(json.dumps({"modules": names, "heavy": sorted(heavy)}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    got = json.loads(run.stdout)
    assert (
        "gonka_ray.protocol.poc" in got["modules"] and "gonka_ray.protocol.epochs" in got["modules"]
    )
    assert got["heavy"] == []
