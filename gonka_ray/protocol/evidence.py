"""Epoch evidence: one executor's checked inferences of an epoch judged together (pure, integer
inputs, deterministic).

Why: in half-precision networks an honest executor's logprobs differ from a verifier's as much
as an int8-quantised executor's do on one output (measured on SmolLM2: mean |Δ| 0.030 against
0.050), so no per-inference threshold separates them without accusing honest work. Over the
epoch — the unit of punishment — the difference is clear: each ``Validation`` carries the
verifier's evidence about the output (Σ logprob excess beyond float16 rounding and Σ of the
tokens' weights ``w = max(1 − p, 0.01)``, in millionths), and at settlement the ledger pools it
per executor into ``R = Σ excess / Σ w`` and applies the calibrated
:class:`~gonka_ray.protocol.verification_policy.EpochRule` (``R`` above
``safety·(μ + z·κ/√Σw)`` with at least ``min_inferences`` inferences). A convicted executor is
treated as INVALID for that epoch: it forfeits its fees (refunded to its clients) and its
minted share, its reputation resets, and it sits out the next epoch.

Against lying validators (who could report inflated evidence to frame an honest executor):

- only evidence from validations the validator's **revealed seed required** counts (known at
  settlement, after the reveals), so a validator cannot choose to check, and weigh in on, every
  inference of its target — its share of the evidence follows its weight;
- an inference's weight is the one its **executor committed** in ``FinishInference``
  (verifiers recompute it from the artifact and fail a mismatch), so a validator only reports
  the excess it measured and cannot give its own reports more weight;
- an inference's evidence is the mean over its required validators, and its excess is capped at
  ``CLAMP_RATIO · μ · w``: a validator holding a share ``s`` of the evidence weight moves ``R``
  up by at most ``s·(CLAMP_RATIO − 1)·μ`` (0.17 μ at s = 1/3, under the rule's ``safety``
  margin of 0.2 μ). The cap also bounds a cheater's pooled ratio at ``CLAMP_RATIO·μ``, so the
  rule convicts only with enough evidence weight that ``safety·(μ + z·κ/√W)`` falls below it
  (``benchmarks/detection_report.py`` measures the int8 detection rate with the cap applied).
- What it cannot stop: colluding validators *under*-reporting. A colluder holding a share ``s``
  of a cheater's required checks dilutes its evidence by ``(1 − s)``; per-inference checks of
  gross cheats are unaffected, but an int8 executor in a half-precision network whose checks
  are a third in friendly hands can escape the epoch rule (SECURITY.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gonka_ray.protocol.verification_policy import EpochRule

MICRO = 1_000_000
CLAMP_RATIO = 1.5  # an inference's excess counts up to this many times μ·w


@dataclass(frozen=True)
class Tally:
    """One executor's pooled evidence for an epoch (float sums of the integer inputs / 1e6)."""

    executor: str
    excess: float
    weight: float
    inferences: int
    threshold: float
    convicted: bool

    @property
    def ratio(self) -> float:
        return self.excess / self.weight if self.weight > 0 else 0.0


def tally(
    records: Iterable[tuple[bytes, str, int]],
    evidence: Mapping[tuple[bytes, str], int],
    required: Mapping[str, frozenset[bytes]],
    rule: EpochRule,
) -> dict[str, Tally]:
    """Pool the required validators' evidence per executor and apply ``rule``.

    Args:
        records: ``(inference_id, executor, weight_micro)`` of the epoch's finished inferences;
            the weight is the executor's committed ``Σ max(1 − p, 0.01)`` (verifiers fail an
            inference whose committed weight differs from its artifact's).
        evidence: ``(inference_id, validator) → excess_micro`` as submitted.
        required: validator → the inference ids its revealed seed required it to check.
        rule: the network's epoch rule (from the genesis).

    Returns:
        executor → :class:`Tally` for every executor with at least one counted inference.
    """
    judges: dict[bytes, list[int]] = {}
    for (iid, validator), excess in sorted(evidence.items()):
        if iid in required.get(validator, frozenset()):
            judges.setdefault(iid, []).append(int(excess))
    sums: dict[str, list[float]] = {}
    for iid, executor, weight in sorted(records):
        found = judges.get(iid)
        if not found or weight <= 0:
            continue
        w = weight / MICRO
        a = min(sum(found) / (len(found) * MICRO), CLAMP_RATIO * rule.mu * w)
        acc = sums.setdefault(executor, [0.0, 0.0, 0])
        acc[0] += a
        acc[1] += w
        acc[2] += 1
    out = {}
    for executor, (a, w, m) in sorted(sums.items()):
        out[executor] = Tally(
            executor=executor,
            excess=a,
            weight=w,
            inferences=int(m),
            threshold=rule.threshold(w),
            convicted=rule.flagged(a, w, int(m)),
        )
    return out
