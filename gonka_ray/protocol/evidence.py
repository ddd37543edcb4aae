"""Epoch evidence: one executor's checked inferences of an epoch judged together (pure,
integer inputs, deterministic).

Why: in half-precision networks an honest executor's logprobs differ from a verifier's as much
as an int8-quantised executor's do on one output (measured on SmolLM2: mean |Δ| 0.030 against
0.050), so no per-inference threshold separates them without accusing honest work. Over the
epoch — the unit of punishment — the difference is clear. Each ``Validation`` carries the
excess the verifier measured (Σ over tokens of the logprob excess beyond float16 rounding, in
millionths); each ``FinishInference`` carries the output's evidence weight ``Σ w``,
``w = max(1 − p, 0.01)`` per token (a near-certain token's logprob barely moves, so it says
little). At settlement the ledger computes, per executor, ``T``: the ``w``-weighted mean of its
inferences' ratios ``excess / Σw`` after trimming ``trim`` (30%) of the weight from each end,
and applies the calibrated :class:`~gonka_ray.protocol.verification_policy.EpochRule`. A
convicted executor is treated as INVALID for that epoch: it forfeits its fees (refunded to its
clients) and its minted share, its reputation resets, and it sits out the next epoch.

Against dishonest validators:

- only evidence from validations the validator's **revealed seed required** counts (known at
  settlement, after the reveals), so a validator cannot choose to check, and weigh in on, every
  inference of its target — its share of the evidence follows its weight;
- an inference's weight is the one its **executor committed** (verifiers recompute it from the
  artifact and fail a mismatch), so a validator only reports the excess it measured;
- the statistic is **trimmed**: reports holding less than ``trim`` of an executor's evidence
  weight cannot move ``T`` beyond the honest reports' range, in either direction — neither
  inflated reports framing an honest executor nor zero reports shielding a cheating one;
- each inference's ratio is **capped** at ``EVIDENCE_CLAMP_RATIO · μ``, so a coalition just
  above the trimmed share adds a bounded bias, not an unbounded one;
- a conviction must **stand without each single validator's reports** (the threshold scaled to
  the inferences left): one validator cannot frame an executor, whatever share of its checks it
  drew. Several colluding validators holding well over ``trim`` of one executor's
  required checks can still frame it, and can shield it; SECURITY.md states the bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gonka_ray.constants import EVIDENCE_CLAMP_RATIO
from gonka_ray.protocol.verification_policy import EpochRule

MICRO = 1_000_000


def trimmed_ratio(pairs: list[tuple[float, float]], trim: float) -> float:
    """The ``w``-weighted mean of ``a / w`` over ``(a, w)`` pairs after dropping ``trim`` of the
    total weight from each end of the ratio order (the boundary pair counts in part).
    Deterministic: ties in the ratio are ordered by the pair itself."""
    items = sorted((a / w, a, w) for a, w in pairs if w > 0)
    total = sum(w for _, _, w in items)
    if total <= 0:
        return 0.0
    lo, hi = trim * total, (1.0 - trim) * total
    acc = kept_a = kept_w = 0.0
    for ratio, _a, w in items:
        start, end = acc, acc + w
        acc = end
        part = max(0.0, min(end, hi) - max(start, lo))
        if part > 0:
            kept_a += ratio * part
            kept_w += part
    return kept_a / kept_w if kept_w > 0 else items[len(items) // 2][0]


@dataclass(frozen=True)
class Tally:
    """One executor's evidence for an epoch."""

    executor: str
    statistic: float  # the trimmed weighted mean ratio T
    weight: float  # Σ w of its counted inferences (the rule's bound narrows as it grows)
    inferences: int
    threshold: float
    convicted: bool


def tally(
    records: Iterable[tuple[bytes, str, int]],
    evidence: Mapping[tuple[bytes, str], int],
    required: Mapping[str, frozenset[bytes]],
    rule: EpochRule,
) -> dict[str, Tally]:
    """Pool the required validators' evidence per executor and apply ``rule``.

    Args:
        records: ``(inference_id, executor, weight_micro)`` of the epoch's finished inferences;
            the weight is the executor's committed ``Σ max(1 − p, 0.01)``.
        evidence: ``(inference_id, validator) → excess_micro`` as submitted.
        required: validator → the inference ids its revealed seed required it to check.
        rule: the network's epoch rule (from the genesis).

    Returns:
        executor → :class:`Tally` for every executor with at least one counted inference.
    """
    judges: dict[bytes, dict[str, int]] = {}
    for (iid, validator), excess in sorted(evidence.items()):
        if iid in required.get(validator, frozenset()):
            judges.setdefault(iid, {})[validator] = int(excess)
    per_executor: dict[str, list[tuple[dict[str, int], float]]] = {}
    for iid, executor, weight in sorted(records):
        found = judges.get(iid)
        if found and weight > 0:
            per_executor.setdefault(executor, []).append((found, weight / MICRO))
    out = {}
    for executor, items in sorted(per_executor.items()):
        stat, m, weight = _statistic(items, rule, None)
        convicted = rule.flagged(stat, m, weight)
        # NOTE: leave one validator out: a conviction must also stand on the other validators'
        # reports alone (threshold scaled to their count), so that no single validator, whatever
        # share of the checks it drew, can frame an executor on its own.
        for v in sorted({v for found, _ in items for v in found}) if convicted else ():
            stat_v, m_v, w_v = _statistic(items, rule, v)
            if m_v == 0 or not _over(rule, stat_v, m_v, w_v):
                convicted = False
                break
        out[executor] = Tally(
            executor=executor,
            statistic=stat,
            weight=weight,
            inferences=m,
            threshold=rule.threshold(m, weight),
            convicted=convicted,
        )
    return out


def _over(rule: EpochRule, statistic: float, inferences: int, weight: float) -> bool:
    """``statistic`` above the rule's threshold for ``inferences`` holding ``weight`` (no
    minimum count)."""
    return not statistic <= rule.threshold(inferences, weight)


def _statistic(
    items: list[tuple[dict[str, int], float]], rule: EpochRule, without: str | None
) -> tuple[float, int, float]:
    """The trimmed statistic over ``items`` (each: validator → excess, and the weight), leaving
    out validator ``without``'s reports; returns it, the number of inferences counted and their
    evidence weight."""
    pairs = []
    for found, w in items:
        reports = [x for v, x in found.items() if v != without]
        if not reports:
            continue
        a = min(sum(reports) / (len(reports) * MICRO), EVIDENCE_CLAMP_RATIO * rule.mu * w)
        pairs.append((a, w))
    stat = trimmed_ratio(pairs, rule.trim) if pairs else 0.0
    return stat, len(pairs), sum(w for _, w in pairs)
