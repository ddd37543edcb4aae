"""Accept or reject a verification (DESIGN §3): thresholds per model, decision in one place.

The checks in :mod:`gonka_ray.verification.checks` grade an artifact; this module turns the grade
into a verdict with thresholds calibrated on honest variation and shipped as package data
(``gonka_ray/data/verification_thresholds.json``, keyed by model then by the verifier's dtype).
Structural failures (payload missing or not matching the ledger's hashes, a prompt that is not
the one the transport agent committed, a "stop" that did not stop) fail outright.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from gonka_ray.verification.checks import VerificationResult


@dataclass(frozen=True)
class Thresholds:
    replay_gate: float  # margins above this must replay exactly
    max_replay_mismatches: int  # gated mismatches tolerated
    max_logprob_deviation: float  # mean |executor − verifier| logprob of the chosen tokens


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # "" when passed


@lru_cache(maxsize=1)
def _table() -> dict:
    text = resources.files("gonka_ray").joinpath("data/verification_thresholds.json").read_text()
    return json.loads(text)


HALF_PRECISION = ("bfloat16", "float16", "auto")  # "auto" is half precision on GPUs


def thresholds_for(model: str, dtype: str = "float32") -> Thresholds:
    """The calibrated thresholds of ``model`` when the network runs in ``dtype``.

    Every participant runs the network's configured dtype, so an honest executor's noise is at
    least that of ``dtype``: a half-precision network (or ``auto``) takes the model's
    ``bfloat16`` row, whichever half type it uses (the ``default`` entry if the model has none).
    """
    table = _table()
    entry = table.get(model, table["default"])
    row = entry.get(dtype)
    if row is None and dtype in HALF_PRECISION:
        row = entry.get("bfloat16") or table["default"]["bfloat16"]
    row = row or entry["float32"]
    return Thresholds(
        replay_gate=float(row["replay_gate"]),
        max_replay_mismatches=int(row["max_replay_mismatches"]),
        max_logprob_deviation=float(row["max_logprob_deviation"]),
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
    if not result.logprob_deviation <= thresholds.max_logprob_deviation:
        return Verdict(
            False,
            f"logprobs: mean deviation {result.logprob_deviation:.4f} > "
            f"{thresholds.max_logprob_deviation}",
        )
    return Verdict(True, "")


def failed_structurally(reason: str, positions: int = 0) -> VerificationResult:
    """A result for a verification that could not even be scored (payload missing, bad hash)."""
    return VerificationResult(
        positions=positions,
        distance=1.0,
        similarity=0.0,
        replay_mismatches=0,
        replay_positions_gated=0,
        replay_mismatch_positions=(),
        logprob_deviation=float("inf"),
        max_logprob_deviation=float("inf"),
        structural_error=reason,
    )
