"""Verification checks: pure functions of an executor's artifact and a verifier's prefill scores.

Three statistics, each graded, none raising on a bad artifact (a failed check is a result):

- ``gonka_distance`` — Gonka's metric, kept as a baseline (DESIGN §3): over the verifier's top-k
  at every position, ``|v − o| / (1e-6 + |v| + |o|) / 2`` where ``o`` is the executor's logprob for
  that token, or, when the executor did not report it, ``m1 − (m2 − m1)`` from the executor's two
  lowest reported logprobs; ``distance = Σ / (max(100, N) · k)``. It compares distributions, not
  choices, so an executor that picks tokens with a cheap model and copies logprobs from one honest
  prefill ("laundering") passes it.
- ``replay`` — recompute the deterministic Gumbel-max choice from the verifier's own logits at
  every position; count positions where the executor's token differs **and** the verifier's margin
  exceeds ``gate``. The gate is in **raw logit units** (the score margin times the temperature;
  greedy margins are logit differences already): a logit difference of ``ε`` between two
  engines moves a score margin by at most ``2ε / T``, so one gate covers every temperature.
  Honest numeric noise can only flip near-ties (and top-k/top-p memberships the engine's
  ``replay_tolerance`` marks as undecided), which the gate excludes; laundering, a wrong
  temperature, an ignored seed and a replaced token flip positions with large margins.
- ``logprob_excess`` — per chosen token, how far the executor's reported logprob ``o`` lies from
  the verifier's ``v`` **beyond the artifact's own precision**: ``max(0, |v − o| − h(o))`` where
  ``h(o)`` is half the float16 spacing at ``o`` (the most the executor's float32 value can have
  moved when it was rounded into the artifact: 2⁻⁸ at ``|o|`` in [8, 16), 2⁻¹² near −1). The
  statistic is the mean over the output. For an honest executor each token's excess is at most
  the engines' raw numeric difference ``|v − e|`` (``e`` the executor's unrounded value), so the
  mean is bounded by the largest per-token noise whatever the temperature (which decides how
  improbable — how far from 0, how coarsely rounded — the chosen tokens are) or the length.
  Quantised or truncated models report measurably different logprobs even where they pick the
  same tokens. ``logprob_deviation`` (the plain mean ``|v − o|``) is reported beside it.

Thresholds are calibrated from honest variation (``calibration.py``) and the accept/reject
decision is made in ``gonka_ray.protocol``, not here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gonka_ray.constants import DISTANCE_MIN_TOKENS, EVIDENCE_W_FLOOR, MAX_PLAUSIBLE_LOGPROB
from gonka_ray.verification.artifact import Artifact


@dataclass(frozen=True, eq=False)
class VerifierScores:
    """What a verifier's single prefill pass yields for N output positions.

    Shapes: ``top_ids [N, k]`` int, ``top_logprobs [N, k]`` float, ``token_logprobs [N]`` (the
    verifier's logprob of the executor's token), ``choice [N]`` (the deterministic sampler's pick
    from the verifier's logits) and ``margin [N]`` (best minus runner-up perturbed score; +inf
    where only one token survives the masks); ``claimed_margin [N]`` where filled, best minus
    the executor's token's perturbed score (0 where they agree; see ``sampler.sample``).
    """

    top_ids: np.ndarray
    top_logprobs: np.ndarray
    token_logprobs: np.ndarray
    choice: np.ndarray
    margin: np.ndarray
    claimed_margin: np.ndarray | None = None


@dataclass(frozen=True)
class VerificationResult:
    """The graded outcome of one verification. ``passed`` is filled by the protocol policy."""

    positions: int
    distance: float
    similarity: float
    replay_mismatches: int
    replay_positions_gated: int
    replay_mismatch_positions: tuple[int, ...]
    logprob_deviation: float
    max_logprob_deviation: float
    logprob_excess: float = 0.0
    max_logprob_excess: float = 0.0
    evidence_excess: float = 0.0  # Σ per-token excess (epoch evidence, protocol/evidence.py)
    evidence_weight: float = 0.0  # Σ per-token max(1 − p, EVIDENCE_W_FLOOR)
    structural_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def unscorable(cls, reason: str, positions: int = 0, mismatches: int = 0) -> VerificationResult:
        """A failed result for an output that could not be scored at all (``reason``)."""
        inf = float("inf")
        return cls(
            positions=positions,
            distance=1.0,
            similarity=0.0,
            replay_mismatches=mismatches,
            replay_positions_gated=mismatches,
            replay_mismatch_positions=(),
            logprob_deviation=inf,
            max_logprob_deviation=inf,
            logprob_excess=inf,
            max_logprob_excess=inf,
            structural_error=reason,
        )


def gonka_distance(
    exec_top_ids: np.ndarray,
    exec_top_logprobs: np.ndarray,
    ver_top_ids: np.ndarray,
    ver_top_logprobs: np.ndarray,
) -> float:
    """Gonka's top-k distance (see module docstring). Shapes ``[N, k]``; 0 for N = 0."""
    n = exec_top_ids.shape[0]
    if n == 0 or ver_top_ids.shape[1] == 0:
        return 0.0
    k = ver_top_ids.shape[1]
    e_lp = exec_top_logprobs.astype(np.float64)
    v_lp = ver_top_logprobs.astype(np.float64)
    # [N, k_ver, k_exec]: where does each verifier token appear among the executor's?
    match = ver_top_ids[:, :, None].astype(np.int64) == exec_top_ids[:, None, :].astype(np.int64)
    found = match.any(axis=2)
    o = np.where(found, (match * e_lp[:, None, :]).sum(axis=2), 0.0)
    if e_lp.shape[1] >= 2:
        srt = np.sort(e_lp, axis=1)
        m1, m2 = srt[:, 0], srt[:, 1]
        impute = m1 - (m2 - m1)
    else:
        impute = e_lp[:, 0] if e_lp.shape[1] else np.full(n, -100.0)
    o = np.where(found, o, impute[:, None])
    per = np.abs(v_lp - o) / (1e-6 + np.abs(v_lp) + np.abs(o)) / 2
    return float(per.sum() / (max(DISTANCE_MIN_TOKENS, n) * k))


def float16_half_spacing(values: np.ndarray) -> np.ndarray:
    """Half the float16 spacing at each of ``values`` (float64): the largest error rounding a
    float32 value to the float16 ``values`` can have introduced (the spacing above ``|x|`` is
    used, so a value rounded up across a power of two is covered too; at the largest finite
    float16, whose spacing above is infinite, the one below). Callers refuse values beyond
    :data:`MAX_PLAUSIBLE_LOGPROB` before relying on this."""
    mag = np.abs(np.asarray(values, dtype=np.float16))
    up = np.spacing(mag).astype(np.float64)
    down = (mag - np.nextafter(mag, np.float16(0))).astype(np.float64)
    return np.where(np.isfinite(up), up, down) / 2.0


def evidence_weights(token_logprobs: np.ndarray) -> np.ndarray:
    """Per-token epoch-evidence weight ``max(1 − p, EVIDENCE_W_FLOOR)`` of reported logprobs."""
    o = np.asarray(token_logprobs, dtype=np.float64)
    return np.maximum(-np.expm1(np.minimum(o, 0.0)), EVIDENCE_W_FLOOR)


def evidence_weight_micro(token_logprobs: np.ndarray) -> int:
    """The committed evidence weight of an artifact's token logprobs, in millionths (what the
    executor puts in ``FinishInference`` and a verifier recomputes; deterministic)."""
    o = np.asarray(token_logprobs, dtype=np.float16)
    if o.size == 0 or not np.all(np.isfinite(o)):
        return 0
    return round(float(evidence_weights(o).sum()) * 1_000_000)


def logprob_excess(executor: np.ndarray, verifier: np.ndarray) -> np.ndarray:
    """Per token ``max(0, |v − o| − h(o))`` (see the module docstring). Shapes ``[N]``."""
    o = np.asarray(executor)
    dev = np.abs(o.astype(np.float64) - np.asarray(verifier, dtype=np.float64))
    return np.maximum(0.0, dev - float16_half_spacing(o))


def logit_margins(margin: np.ndarray, temperature: float) -> np.ndarray:
    """Score margins in raw logit units: ``margin · T`` (greedy margins already are)."""
    m = np.asarray(margin, dtype=np.float64)
    return m * temperature if temperature > 0 else m


def replay(
    output_ids: np.ndarray,
    choice: np.ndarray,
    margin: np.ndarray,
    gate: float,
    temperature: float = 1.0,
) -> tuple[int, int, tuple[int, ...]]:
    """Gated replay mismatches; ``margin`` in score units, ``gate`` in logit units.

    Returns:
        (mismatches, positions whose margin exceeds the gate, mismatch positions).
    """
    gated = logit_margins(margin, temperature) > gate
    bad = (output_ids.astype(np.int64) != choice.astype(np.int64)) & gated
    return int(bad.sum()), int(gated.sum()), tuple(int(i) for i in np.flatnonzero(bad))


def verify(artifact: Artifact, scores: VerifierScores, *, replay_gate: float) -> VerificationResult:
    """Run every check; structural problems (length mismatch) are reported, never raised.
    ``replay_gate`` is in raw logit units (see :func:`replay`)."""
    n = artifact.num_output_tokens
    shapes_ok = (
        scores.top_ids.shape[0] == n
        and scores.token_logprobs.shape == (n,)
        and scores.choice.shape == (n,)
        and scores.margin.shape == (n,)
    )
    lp = artifact.token_logprobs.astype(np.float64)
    if shapes_ok and not (np.all(np.isfinite(lp)) and np.all(np.abs(lp) <= MAX_PLAUSIBLE_LOGPROB)):
        shapes_ok, why = False, "artifact logprobs are not finite model logprobs"
    else:
        why = "scores do not match artifact length"
    if not shapes_ok:
        return VerificationResult.unscorable(why, positions=n, mismatches=n)
    dist = gonka_distance(
        artifact.top_ids, artifact.top_logprobs, scores.top_ids, scores.top_logprobs
    )
    mism, gated, where = replay(
        artifact.output_ids, scores.choice, scores.margin, replay_gate, artifact.temperature
    )
    dev = np.abs(
        artifact.token_logprobs.astype(np.float64) - scores.token_logprobs.astype(np.float64)
    )
    excess = logprob_excess(artifact.token_logprobs, scores.token_logprobs)
    weight = evidence_weights(artifact.token_logprobs)
    return VerificationResult(
        positions=n,
        distance=dist,
        similarity=1.0 - dist,
        replay_mismatches=mism,
        replay_positions_gated=gated,
        replay_mismatch_positions=where,
        logprob_deviation=float(dev.mean()) if n else 0.0,
        max_logprob_deviation=float(dev.max()) if n else 0.0,
        logprob_excess=float(excess.mean()) if n else 0.0,
        max_logprob_excess=float(excess.max()) if n else 0.0,
        evidence_excess=float(excess.sum()),
        evidence_weight=float(weight.sum()),
    )
