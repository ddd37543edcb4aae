"""Thresholds from honest variation at a target false-positive rate: the pure maths.

Input: one :class:`HonestRecord` per honest verification (any engine, batch composition, thread
count or dtype the verifier row must accept). Output: a thresholds row for
``gonka_ray/data/verification_thresholds.json`` (read by
:mod:`gonka_ray.protocol.verification_policy`) with the false-positive model that justifies it.

False-positive model (documented in every row it writes):

- The policy rejects if **either** check fires, so the target ``α`` is split between them
  (union bound): ``α/2`` each; the shipped row's ``implied_fpr.total`` is the sum.
- **Replay** (gated mismatches, tolerated count ``m = 0``): honest executor and verifier logits
  differ by numeric noise. Per output position the verifier's chosen-token logprob minus the
  executor's raw one, ``δ``, is modelled as ``N(0, σ²)`` per token; a flip of the Gumbel-max
  choice needs the best-minus-runner-up score to move by more than its margin, and that move is
  ``(δ_a − δ_b) / T ~ N(0, 2σ²/T²)``. So a gated position flips with probability at most
  ``p = 2·Φ̄(gate·T / (√2·σ))`` and an ``n``-token output is falsely rejected with probability
  ``P(Binomial(n, p) > m)``. ``σ`` is the RMS of the observed ``δ`` times ``safety``, ``T`` is
  the lowest temperature the row covers (``min_temperature``; noise in score units grows as
  ``1/T``) and ``n`` a reference output length (``ref_tokens``). The gate is the smallest value
  meeting ``α/2`` under this model, never below ``MIN_GATE`` and never below ``safety`` times the
  largest margin at which an honest run was actually seen to flip.
- **Logprob deviation** (mean ``|δ|`` over the output, after the artifact's float16 rounding):
  the per-output statistic is fitted with a log-normal (positive, right-skewed; its tail decays
  slower than a normal's, so the fit errs high), and the threshold is ``safety`` times the larger
  of its ``1 − α/2`` quantile and the largest honest value seen. Outputs of every length given
  are pooled (short outputs have the widest spread, so they set the threshold).

The fit's own estimate of the false-positive rate at the shipped thresholds (without the safety
factor's slack) is reported as ``implied_fpr``. Pure: numpy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

# NOTE: a floor on the gate in score units: below it a margin counts as a near-tie whatever the
# noise model says (insurance against noise the calibration never saw). It was 0.05, 160× the
# gate the fitted fp32 noise asks for (σ ≈ 3e-6 logprob on SmolLM2, T = 0.2), and that let a
# swapped token at a 0.04 margin pass; 0.005 keeps a 16× cushion and shrinks that blind spot
# tenfold. A half-precision row's gate comes from its own, much larger noise.
MIN_GATE = 0.005
DEFAULT_TARGET_FPR = 1e-3  # per verified output, both checks together
DEFAULT_SAFETY = 1.5  # multiplies σ, the fitted quantile and the worst honest value seen
DEFAULT_MIN_TEMPERATURE = 0.2  # gate is sized for requests down to this temperature
DEFAULT_REF_TOKENS = 256  # output length the replay false-positive rate is quoted for
_NORMAL = NormalDist()
_LOG_FLOOR = 1e-9  # log-normal fit: statistics of exactly 0 are clamped here


@dataclass(frozen=True)
class HonestRecord:
    """One honest verification, as calibration needs it.

    Attributes:
        variant: which honest variation produced it (e.g. ``"fp32/threads=1/batch=16"``).
        positions: output tokens checked.
        logprob_deviation: the check's statistic (mean ``|δ|``, artifact float16 rounding in).
        deltas: per-position raw ``δ`` (verifier minus executor chosen-token logprob, before the
            artifact's rounding) where available, else the rounded ones.
        flip_margins: the verifier's margin at every position where its replayed choice differs
            from the executor's token (ungated), i.e. where honest noise flipped a choice.
    """

    variant: str
    positions: int
    logprob_deviation: float
    deltas: np.ndarray = field(repr=False)
    flip_margins: tuple[float, ...] = ()


def normal_sf(z: float) -> float:
    """P(N(0, 1) > z)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def flip_probability(gate: float, sigma: float, temperature: float) -> float:
    """Per-position probability that honest noise of sd ``sigma`` (logprob units) moves a
    choice's score margin by more than ``gate`` at ``temperature`` (two-sided, conservative)."""
    if sigma <= 0:
        return 0.0
    sd = math.sqrt(2.0) * sigma / max(temperature, 1e-6)
    return min(1.0, 2.0 * normal_sf(gate / sd))


def binomial_tail(n: int, p: float, m: int) -> float:
    """P(Binomial(n, p) > m), computed stably for tiny ``p``."""
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0 if n > m else 0.0
    below = 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    for j in range(0, min(m, n) + 1):
        below += math.exp(
            math.lgamma(n + 1)
            - math.lgamma(j + 1)
            - math.lgamma(n - j + 1)
            + j * log_p
            + (n - j) * log_q
        )
    return max(0.0, 1.0 - below) if below < 0.5 else _upper_sum(n, p, m)


def _upper_sum(n: int, p: float, m: int) -> float:
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for j in range(m + 1, n + 1):
        term = math.exp(
            math.lgamma(n + 1)
            - math.lgamma(j + 1)
            - math.lgamma(n - j + 1)
            + j * log_p
            + (n - j) * log_q
        )
        total += term
        if term < total * 1e-16:
            break
    return total


def replay_fpr(gate: float, sigma: float, temperature: float, n: int, m: int = 0) -> float:
    """Per-output false-positive rate of the replay check under the noise model."""
    return binomial_tail(n, flip_probability(gate, sigma, temperature), m)


def gate_for(
    alpha: float, sigma: float, temperature: float, n: int, m: int = 0, *, floor: float = MIN_GATE
) -> float:
    """The smallest gate ``≥ floor`` whose modelled replay false-positive rate is ``≤ alpha``."""
    if replay_fpr(floor, sigma, temperature, n, m) <= alpha:
        return floor
    lo, hi = floor, floor
    while replay_fpr(hi, sigma, temperature, n, m) > alpha:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if replay_fpr(mid, sigma, temperature, n, m) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class LogNormalFit:
    """``log X ~ N(mu, s²)`` fitted to positive statistics."""

    mu: float
    s: float

    @classmethod
    def fit(cls, values: Sequence[float]) -> LogNormalFit:
        logs = np.log(np.maximum(np.asarray(values, dtype=np.float64), _LOG_FLOOR))
        s = float(logs.std(ddof=1)) if logs.size > 1 else 1.0
        return cls(float(logs.mean()), max(s, 1e-6))

    def quantile(self, q: float) -> float:
        return math.exp(self.mu + self.s * _NORMAL.inv_cdf(q))

    def sf(self, x: float) -> float:
        if x <= 0:
            return 1.0
        return normal_sf((math.log(x) - self.mu) / self.s)


def fit_thresholds(
    records: Iterable[HonestRecord],
    *,
    target_fpr: float = DEFAULT_TARGET_FPR,
    safety: float = DEFAULT_SAFETY,
    min_temperature: float = DEFAULT_MIN_TEMPERATURE,
    ref_tokens: int = DEFAULT_REF_TOKENS,
    max_replay_mismatches: int = 0,
) -> dict:
    """A thresholds row (the policy's three keys plus the model that justifies them).

    Raises:
        ValueError: no records, or a target outside (0, 1).
    """
    recs = list(records)
    if not recs:
        raise ValueError("calibration needs at least one honest record")
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    alpha = target_fpr / 2  # union bound over the two checks
    deltas = np.concatenate([np.asarray(r.deltas, dtype=np.float64).ravel() for r in recs])
    sigma_obs = float(np.sqrt(np.mean(deltas**2))) if deltas.size else 0.0
    sigma = sigma_obs * safety
    flips = [m for r in recs for m in r.flip_margins if math.isfinite(m)]
    floor = max(MIN_GATE, safety * max(flips, default=0.0))
    gate = gate_for(alpha, sigma, min_temperature, ref_tokens, max_replay_mismatches, floor=floor)

    stats = [r.logprob_deviation for r in recs]
    fit = LogNormalFit.fit(stats)
    q = fit.quantile(1 - alpha)
    max_dev = safety * max(q, max(stats))

    fpr_replay = replay_fpr(gate, sigma_obs, min_temperature, ref_tokens, max_replay_mismatches)
    fpr_dev = fit.sf(max_dev)
    variants = sorted({r.variant for r in recs})
    return {
        "replay_gate": _round_up(gate),
        "max_replay_mismatches": max_replay_mismatches,
        "max_logprob_deviation": _round_up(max_dev),
        "target_fpr": target_fpr,
        "implied_fpr": {
            "replay": fpr_replay,
            "logprob_deviation": fpr_dev,
            "total": fpr_replay + fpr_dev,
        },
        "honest_samples": len(recs),
        "honest_max_logprob_deviation": max(stats),
        "honest_flips_seen": len(flips),
        "noise_sd_logprob": sigma_obs,
        "lognormal_fit": {"mu": fit.mu, "s": fit.s},
        "fp_model": (
            f"union of two checks at {alpha:g} each; replay: per-token logprob noise "
            f"N(0, ({safety}·σ)²), flip if |Δmargin| > gate at T = {min_temperature}, "
            f"Binomial over {ref_tokens} tokens, ≤ {max_replay_mismatches} tolerated; "
            f"logprob deviation: log-normal fit, {safety} × max(quantile, worst seen)"
        ),
        "variants": variants,
    }


def _round_up(x: float, digits: int = 3) -> float:
    """``x`` rounded *up* to ``digits`` significant digits (a shipped threshold never drops
    below the one the model asked for)."""
    if x <= 0 or not math.isfinite(x):
        return x
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale * (1 - 1e-12)) / scale


def implied_fpr(row: dict, *, sigma: float, fit: LogNormalFit, temperature: float, n: int) -> float:
    """The modelled per-output false-positive rate of ``row`` for ``n``-token outputs at
    ``temperature`` (replay plus logprob deviation, union bound)."""
    return replay_fpr(
        row["replay_gate"], sigma, temperature, n, row["max_replay_mismatches"]
    ) + fit.sf(row["max_logprob_deviation"])
