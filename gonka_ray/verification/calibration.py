"""Thresholds from honest variation at a target false-positive rate: the pure maths.

Input: one :class:`HonestRecord` per honest verification (any engine, batch composition, thread
count, sampling parameters, length; one network dtype per fit). Output: a thresholds row for
``gonka_ray/data/verification_thresholds.json`` (read by
:mod:`gonka_ray.protocol.verification_policy`) with the false-positive model that justifies it.

**Per-token noise model.** Everything rests on ``δ = v − e``, the verifier's minus the
executor's *unrounded* logprob of a chosen token: honest engines differ only by numeric noise.
Its upper tail is fitted by peaks-over-threshold with an exponential tail (:class:`TokenTail`:
above the 99th percentile ``x0``, ``P(|δ| > x) = q·exp(−(x − x0)/β)``, ``β`` the mean
exceedance — the maximum-likelihood fit; a heavier tail would show up as honest values beyond
the fit, and the shipped value is never below ``safety`` × the largest one seen).

- **Logprob excess** (mean over the output of ``max(0, |v − o| − h(o))``, ``h`` the artifact's
  float16 half-spacing): every honest token's excess is at most its ``|δ|``, so the mean is at
  most the largest ``|δ|`` of the output and ``P(mean > τ) ≤ n · P(|δ| > τ)`` **for any length
  and temperature**. ``τ`` is the tail quantile meeting ``α/2`` at ``ref_tokens`` (the longest
  output the row covers), times ``safety``, never below ``CALIBRATION_MIN_EXCESS``.
- **Replay** (gate ``g`` in raw logit units): a decided position flips only if the two
  competing tokens' noises differ by more than ``g``, so one of them exceeds ``g/2`` in
  magnitude: ``P ≤ 2·P(|δ| > g/2)`` per position, ``n`` times that per output (union bound).
  ``g`` meets ``α/2`` at ``ref_tokens``, times ``safety``, never below ``CALIBRATION_MIN_GATE``
  nor below ``safety`` × the largest logit margin at which an honest run was seen to flip.

**Epoch evidence** (:func:`fit_epoch`). In half precision honest noise is as large as int8
weights' (measured on SmolLM2: mean ``|δ|`` 0.030 bf16-vs-bf16 against 0.050 for an int8
executor), so one output cannot separate them; many can. Per token the expected honest
``|δ|`` grows with ``w = 1 − p`` of the chosen token (a near-certain token's logprob barely
moves), so each inference gives a ratio ``Σ excess / Σ w`` and an epoch's statistic ``T`` is
their ``w``-weighted mean after trimming 30% of the weight from each end
(:mod:`gonka_ray.protocol.evidence`: robust to dishonest validators either way). Honest ``T``
over ``min_inferences`` inferences is resampled from groups of honest records (per variant,
per output length); the worst group's mean ``mu`` and the spread ``sigma`` of ``T·√W`` (``W``
the epoch's evidence weight: honest ``T``'s sd falls as ``1/√W``) give the rule
``T > safety·(mu + z·sigma/√W)``.

Pure: numpy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from gonka_ray.constants import (
    CALIBRATION_EPOCH_FPR,
    CALIBRATION_EPOCH_SAFETY,
    CALIBRATION_MIN_EPOCH_MU,
    CALIBRATION_MIN_EXCESS,
    CALIBRATION_MIN_GATE,
    CALIBRATION_MIN_INFERENCES,
    CALIBRATION_REF_TOKENS,
    CALIBRATION_SAFETY,
    CALIBRATION_TAIL_QUANTILE,
    CALIBRATION_TARGET_FPR,
    CALIBRATION_TRIM,
    EVIDENCE_W_FLOOR,
)
from gonka_ray.verification.checks import float16_half_spacing

_NORMAL = NormalDist()


@dataclass(frozen=True)
class HonestRecord:
    """One honest verification, as calibration needs it.

    Attributes:
        variant: which honest variation produced it (e.g. ``"fp32/exec_batch=64"``).
        deltas: per-token raw ``δ`` (verifier minus executor chosen-token logprob, before the
            artifact's rounding).
        logprobs: the executor's reported (float16-rounded) chosen-token logprobs ``o``.
        verifier_logprobs: the verifier's ``v`` of the same tokens.
        flip_margins: the verifier's margin in raw logit units at every *decided* position
            (margin > 0) where its replayed choice differs from the executor's token.
        temperature: the request's temperature (reported, not used by the fit).
    """

    variant: str
    deltas: np.ndarray = field(repr=False)
    logprobs: np.ndarray = field(repr=False)
    verifier_logprobs: np.ndarray = field(repr=False)
    flip_margins: tuple[float, ...] = ()
    temperature: float = 1.0

    @property
    def positions(self) -> int:
        return len(self.deltas)

    def excess(self) -> np.ndarray:
        o = np.asarray(self.logprobs, dtype=np.float16)
        dev = np.abs(o.astype(np.float64) - np.asarray(self.verifier_logprobs, np.float64))
        return np.maximum(0.0, dev - float16_half_spacing(o))

    def evidence(self) -> tuple[float, float]:
        """This output's epoch evidence ``(Σ excess, Σ w)`` (see the module docstring)."""
        return evidence(self.logprobs, self.excess())


def evidence(logprobs: np.ndarray, excess: np.ndarray) -> tuple[float, float]:
    """``(Σ excess, Σ w)`` with ``w = max(1 − exp(o), EVIDENCE_W_FLOOR)`` per token."""
    o = np.asarray(logprobs, dtype=np.float64)
    w = np.maximum(-np.expm1(np.minimum(o, 0.0)), EVIDENCE_W_FLOOR)
    return float(np.sum(excess)), float(np.sum(w))


@dataclass(frozen=True)
class TokenTail:
    """Exponential upper tail of per-token ``|δ|``: ``P(|δ| > x) = q·exp(−(x − x0)/β)``, x ≥ x0."""

    x0: float
    q: float
    beta: float
    count: int
    max_seen: float

    @classmethod
    def fit(cls, abs_deltas: np.ndarray, quantile: float = CALIBRATION_TAIL_QUANTILE) -> TokenTail:
        x = np.sort(np.abs(np.asarray(abs_deltas, dtype=np.float64)).ravel())
        if x.size == 0:
            return cls(0.0, 1.0, 1e-12, 0, 0.0)
        x0 = float(np.quantile(x, quantile))
        over = x[x > x0]
        q = max(over.size / x.size, 1.0 / x.size)
        beta = float((over - x0).mean()) if over.size else max(x0, 1e-12) * 0.1
        return cls(x0, q, max(beta, 1e-12), int(x.size), float(x[-1]))

    def sf(self, x: float) -> float:
        if x <= self.x0:
            return 1.0
        return min(1.0, self.q * math.exp(-(x - self.x0) / self.beta))

    def quantile(self, p: float) -> float:
        """The ``x`` with ``sf(x) = p`` (``x0`` if ``p ≥ q``)."""
        if p >= self.q:
            return self.x0
        return self.x0 + self.beta * math.log(self.q / p)


def excess_fpr(tail: TokenTail, threshold: float, n: int) -> float:
    """Modelled per-output false-positive rate of the excess check for ``n``-token outputs."""
    return min(1.0, n * tail.sf(threshold))


def replay_fpr(tail: TokenTail, gate: float, n: int, m: int = 0) -> float:
    """Modelled per-output false-positive rate of the replay check (``m`` mismatches
    tolerated; ``m > 0`` takes the union bound of any ``m + 1`` positions flipping)."""
    p = min(1.0, 2.0 * tail.sf(gate / 2.0))
    return min(1.0, math.comb(n, m + 1) * p ** (m + 1)) if p < 1 else 1.0


def fit_thresholds(
    records: Iterable[HonestRecord],
    *,
    target_fpr: float = CALIBRATION_TARGET_FPR,
    safety: float = CALIBRATION_SAFETY,
    ref_tokens: int = CALIBRATION_REF_TOKENS,
    max_replay_mismatches: int = 0,
    epoch: bool = True,
) -> dict:
    """A thresholds row (the policy's keys plus the model that justifies them).

    Raises:
        ValueError: no records, or a target outside (0, 1).
    """
    recs = [r for r in records if r.positions > 0]
    if not recs:
        raise ValueError("calibration needs at least one honest record")
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    alpha = target_fpr / 2  # union bound over the two checks
    deltas = np.concatenate([np.abs(np.asarray(r.deltas, np.float64)) for r in recs])
    tail = TokenTail.fit(deltas)
    means = [float(r.excess().mean()) for r in recs]
    tau = tail.quantile(alpha / ref_tokens)
    max_excess = max(CALIBRATION_MIN_EXCESS, safety * max(tau, max(means)))
    flips = [m for r in recs for m in r.flip_margins if math.isfinite(m)]
    half_gate = tail.quantile(alpha / (2.0 * ref_tokens))
    gate = max(CALIBRATION_MIN_GATE, safety * max(2.0 * half_gate, max(flips, default=0.0)))
    row = {
        "replay_gate": _round_up(gate),
        "max_replay_mismatches": max_replay_mismatches,
        "max_logprob_excess": _round_up(max_excess),
        "target_fpr": target_fpr,
        "ref_tokens": ref_tokens,
        "implied_fpr": {
            "replay": replay_fpr(tail, gate, ref_tokens, max_replay_mismatches),
            "logprob_excess": excess_fpr(tail, max_excess, ref_tokens),
        },
        "token_tail": {
            "x0": tail.x0,
            "q": tail.q,
            "beta": tail.beta,
            "tokens": tail.count,
            "max_abs_delta_seen": tail.max_seen,
        },
        "honest_samples": len(recs),
        "honest_max_logprob_excess": max(means),
        "honest_flips_seen": len(flips),
        "honest_max_flip_margin": max(flips, default=0.0),
        "fp_model": (
            f"union of two checks at {alpha:g} each for outputs up to {ref_tokens} tokens; "
            f"per-token |δ| tail: exponential above its {CALIBRATION_TAIL_QUANTILE:.0%} "
            f"quantile; excess: mean ≤ max |δ|, n·P(|δ| > τ); replay: n·2·P(|δ| > g/2); "
            f"{safety} × max(fit, worst seen); "
            f"floors {CALIBRATION_MIN_EXCESS} / {CALIBRATION_MIN_GATE}"
        ),
        "variants": sorted({r.variant for r in recs}),
    }
    row["implied_fpr"]["total"] = sum(row["implied_fpr"].values())
    if epoch:
        row["epoch"] = fit_epoch(recs)
    return row


def trimmed_ratios(a: np.ndarray, w: np.ndarray, trim: float) -> np.ndarray:
    """Row-wise :func:`gonka_ray.protocol.evidence.trimmed_ratio` of ``a, w [E, m]`` (numpy)."""
    r = a / w
    order = np.argsort(r, axis=1, kind="stable")
    r_s = np.take_along_axis(r, order, 1)
    w_s = np.take_along_axis(w, order, 1)
    end = np.cumsum(w_s, axis=1)
    start = end - w_s
    total = end[:, -1:]
    part = np.clip(np.minimum(end, (1 - trim) * total) - np.maximum(start, trim * total), 0, None)
    return (r_s * part).sum(1) / part.sum(1)


EPOCH_LENGTH_BUCKETS = (1, 2, 4, 16, 64, 256)  # output tokens; longer outputs form one more


def length_bucket(n: int) -> int:
    """The output-length class ``n`` falls in (its upper bound; 0 for the longest class)."""
    return next((b for b in EPOCH_LENGTH_BUCKETS if n <= b), 0)


def fit_epoch(
    records: Sequence[HonestRecord],
    *,
    epoch_fpr: float = CALIBRATION_EPOCH_FPR,
    safety: float = CALIBRATION_EPOCH_SAFETY,
    min_inferences: int = CALIBRATION_MIN_INFERENCES,
    trim: float = CALIBRATION_TRIM,
    draws: int = 4000,
    seed: int = 0,
) -> dict:
    """The epoch-evidence rule (see the module docstring and
    :class:`~gonka_ray.protocol.verification_policy.EpochRule`). Honest epochs of
    ``min_inferences`` inferences are resampled (seeded) from groups of honest records (each
    with ≥ 20 records): per variant (an executor may run under one condition all epoch) and per
    output-length class (it may serve only short answers).

    - ``mu``: the largest mean of the trimmed statistic ``T`` over those groups.
    - ``sigma``: the largest ``sd((T − mean)·√W)`` over the length classes, ``W`` the epoch's
      evidence weight — the bound's spread is ``sigma/√W``, wide for short outputs, tight for
      long ones.
    - ``kappa``: the sd of ``T`` over epochs drawn from all records pooled (the count-scaled
      spread of rules without ``sigma``). A per-variant sd is not used: a variant's 20–64
      records come from one or two batches of one output length, so it measures that batch,
      not the condition."""
    rng = np.random.default_rng(seed)
    by_variant: dict[str, list[tuple[float, float]]] = {}
    by_length: dict[int, list[tuple[float, float]]] = {}
    for r in records:
        ev = r.evidence()
        by_variant.setdefault(r.variant, []).append(ev)
        by_length.setdefault(length_bucket(r.positions), []).append(ev)
    everything = [e for v in by_variant.values() for e in v]

    def resampled(pool) -> tuple[np.ndarray, np.ndarray]:
        arr = np.array(pool, np.float64)  # [n, 2]
        idx = rng.integers(0, len(arr), size=(draws, min_inferences))
        return trimmed_ratios(arr[idx, 0], arr[idx, 1], trim), arr[idx, 1].sum(1)

    groups = [v for v in (*by_variant.values(), *by_length.values()) if len(v) >= 20]
    means = [float(resampled(pool)[0].mean()) for pool in groups or [everything]]
    sigmas = []
    for pool in [v for v in by_length.values() if len(v) >= 20] or [everything]:
        t, w = resampled(pool)
        sigmas.append(float(np.std((t - t.mean()) * np.sqrt(w), ddof=1)))
    return {
        "mu": max(CALIBRATION_MIN_EPOCH_MU, max(means)),
        "kappa": float(resampled(everything)[0].std(ddof=1)),
        "sigma": max(sigmas),
        "z": _NORMAL.inv_cdf(1.0 - epoch_fpr),
        "safety": safety,
        "min_inferences": min_inferences,
        "trim": trim,
        "epoch_fpr": epoch_fpr,
        "variants": len(by_variant),
        "length_classes": len(sigmas),
        "rule": (
            "T = w-weighted mean of excess/w over the epoch's checked inferences, "
            f"{trim:.0%} of the weight trimmed from each end; W = their evidence weight Σw; "
            "flag iff m ≥ min_inferences and T > safety·(mu + z·sigma/√W)"
        ),
    }


def _round_up(x: float, digits: int = 3) -> float:
    """``x`` rounded *up* to ``digits`` significant digits (a shipped threshold never drops
    below the one the model asked for)."""
    if x <= 0 or not math.isfinite(x):
        return x
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale * (1 - 1e-12)) / scale
