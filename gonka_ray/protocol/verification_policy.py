"""Accept or reject a verification (DESIGN §3): thresholds per model, decision in one place.

The checks in :mod:`gonka_ray.verification.checks` grade an artifact; this module turns the grade
into a verdict with thresholds calibrated on honest variation and shipped as package data
(``gonka_ray/data/verification_thresholds.json``, keyed by model then by the verifier's dtype).
Structural failures (payload missing or not matching the ledger's hashes, a prompt that is not
the one the transport agent committed, a "stop" that did not stop) fail outright.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from gonka_ray.verification.checks import VerificationResult


@dataclass(frozen=True)
class Thresholds:
    replay_gate: float  # raw-logit margins above this must replay exactly (also the engine's
    # replay_tolerance: top-k/top-p memberships this much noise could flip are undecided)
    max_replay_mismatches: int  # gated mismatches tolerated
    max_logprob_excess: float  # mean per-token |executor − verifier| beyond float16 rounding


@dataclass(frozen=True)
class EpochRule:
    """Epoch evidence about one executor (:mod:`gonka_ray.protocol.evidence`): ``T``, the
    ``w``-weighted mean of its checked inferences' ratios ``excess / w`` after trimming ``trim``
    of the weight from each end, over ``m ≥ min_inferences`` inferences holding evidence weight
    ``W = Σ w``; flagged when ``T > safety·(mu + z·spread)``.

    ``spread`` is honest ``T``'s sd for that epoch. With ``sigma > 0`` it is ``sigma / √W``:
    the sd shrinks with the evidence weight, not the count (measured on SmolLM2 bf16, held out:
    ``sd(T)·√W`` stays within 0.048–0.080 from 1-token to 256-token outputs, while ``sd(T)`` at
    20 inferences runs from 0.013 to 0.0013), so twenty 1-token answers get a wide bound and
    twenty 64-token ones a tight one. Without ``sigma`` (older genesis files) it is
    ``kappa·√(min_inferences/m)``, blind to length. Both are calibrated in
    :mod:`gonka_ray.verification.calibration`."""

    mu: float
    kappa: float
    z: float
    safety: float
    min_inferences: int
    trim: float = 0.3
    sigma: float = 0.0  # sd of honest T times √W; 0: use kappa

    def threshold(self, inferences: int, weight: float | None = None) -> float:
        """The bound on ``T`` for an epoch of ``inferences`` holding evidence ``weight``
        (required when ``sigma`` is set)."""
        if self.sigma > 0:
            if weight is None:
                raise ValueError("this rule scales with the evidence weight: pass weight")
            spread = self.sigma / math.sqrt(max(weight, 1e-9))
        else:
            spread = self.kappa * math.sqrt(self.min_inferences / max(inferences, 1))
        return self.safety * (self.mu + self.z * spread)

    def flagged(self, statistic: float, inferences: int, weight: float | None = None) -> bool:
        """Whether the epoch's statistic convicts (NaN convicts too: only malformed evidence
        produces it)."""
        if inferences < self.min_inferences:
            return False
        return not statistic <= self.threshold(inferences, weight)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # "" when passed


@lru_cache(maxsize=1)
def _table() -> dict:
    text = resources.files("gonka_ray").joinpath("data/verification_thresholds.json").read_text()
    return json.loads(text)


HALF_PRECISION = ("bfloat16", "float16", "auto")  # "auto" is half precision on GPUs


def _row(model: str, dtype: str) -> dict:
    table = _table()
    entry = table.get(model, table["default"])
    row = entry.get(dtype)
    if row is None and dtype in HALF_PRECISION:
        row = entry.get("bfloat16") or table["default"]["bfloat16"]
    return row or entry["float32"]


def thresholds_for(model: str, dtype: str = "float32") -> Thresholds:
    """The calibrated thresholds of ``model`` when the network runs in ``dtype``.

    Every participant runs the network's configured dtype, so an honest executor's noise is at
    least that of ``dtype``: a half-precision network (or ``auto``) takes the model's
    ``bfloat16`` row, whichever half type it uses (the ``default`` entry if the model has none).
    """
    row = _row(model, dtype)
    return Thresholds(
        replay_gate=float(row["replay_gate"]),
        max_replay_mismatches=int(row["max_replay_mismatches"]),
        max_logprob_excess=float(row["max_logprob_excess"]),
    )


def epoch_rule_for(model: str, dtype: str = "float32") -> EpochRule | None:
    """The calibrated epoch-evidence rule of ``model`` in ``dtype`` (None when the row has none:
    uncalibrated models are judged per inference only)."""
    row = _row(model, dtype)
    ep = row.get("epoch")
    if not ep:
        return None
    return EpochRule(
        mu=float(ep["mu"]),
        kappa=float(ep["kappa"]),
        z=float(ep["z"]),
        safety=float(ep["safety"]),
        min_inferences=int(ep["min_inferences"]),
        trim=float(ep.get("trim", 0.3)),
        sigma=float(ep.get("sigma", 0.0)),
    )


def decide(result: VerificationResult, thresholds: Thresholds) -> Verdict:
    """Pass iff no structural error, gated replay mismatches and logprob deviation within bounds."""
    if result.structural_error:
        return Verdict(False, f"structural: {result.structural_error}")
    if result.replay_mismatches > thresholds.max_replay_mismatches:
        return Verdict(
            False,
            f"replay: {result.replay_mismatches} confident positions chose other tokens "
            f"(first at {list(result.replay_mismatch_positions[:3])})",
        )
    # NOTE: written so NaN fails: an executor reporting NaN logprobs made ``nan > bound`` False
    # and passed the logprob check (found by fuzzing the verifier with forged payloads).
    if not result.logprob_excess <= thresholds.max_logprob_excess:
        return Verdict(
            False,
            f"logprobs: mean deviation beyond float16 rounding {result.logprob_excess:.5f} > "
            f"{thresholds.max_logprob_excess}",
        )
    return Verdict(True, "")


def failed_structurally(reason: str, positions: int = 0) -> VerificationResult:
    """A result for a verification that could not even be scored (payload missing, bad hash)."""
    return VerificationResult.unscorable(reason, positions=positions)
