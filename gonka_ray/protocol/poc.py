"""Proof of Compute: weight earned by running a seed-initialised transformer (DESIGN §5).

**The puzzle.** The epoch seed (public, from the ledger: :func:`~gonka_ray.protocol.epochs.epoch_seed`)
deterministically initialises a small transformer (float32 parameters drawn on the CPU from a
``torch.Generator`` seeded with the seed, then moved to the engine's device) and a unit
*target* vector. A participant's nonce ``n`` becomes ``seq_len`` token ids by the counter hash
``hash_u64(key_P, n, position) mod vocab`` (the splitmix64 hash of the sampler, integer ops, same
on every device: :mod:`gonka_ray.hashing`), where ``key_P = sha256(seed ‖ participant)``:
nonces are bound to their participant, so nobody can submit another's. The model maps the
tokens to a vector ``y`` (final position, final layer norm, output projection); the nonce
**passes** when ``‖y/‖y‖ − target‖ ≤ threshold``.

**Difficulty.** ``poc_difficulty`` (config) is the share of nonces that pass. The threshold is
the ``ceil(difficulty · N)``-th smallest distance over a public *calibration set*: nonces
``0..N-1`` under the reserved participant key ``"calibration"`` (which nobody can claim).
Everyone computes the same threshold from the seed alone; the pass share is
``difficulty ± sqrt(d(1-d)/N)``.

**Float tolerance.** A verifier recomputes a claimed nonce on its own device and accepts it when
its distance is ≤ ``threshold + tolerance`` (``POC_TOLERANCE`` = 1e-4 by default). Distances are
float32 computed through two small layers: CPU runs differ from CUDA by ~1e-6 (TF32 must stay
off for matmuls, torch's default) and a verifier's threshold may differ from the miner's by the
same; 1e-4 is ~100× that, while the extra nonces it lets through are ~0.3% of the pass band
(the distance density near the threshold times 1e-4: with the default sizes, 1e-3 would let an
attacker add ~3%; a test pins the bound), so the tolerance gives an attacker nothing worth having. The miner itself submits only nonces within
``threshold`` (no tolerance), so honest claims practically never fail.

**Claims and acceptance.** A participant submits its passing nonces (its claim). Each validator
verifies a sample it picks with *its own* secret seed (:func:`sample_nonces`: the ``k`` nonces
with the smallest ``sha256(validator_seed ‖ participant ‖ nonce)``), so the claimant cannot
know which nonces will be checked. A claim with a duplicate or out-of-range nonce is rejected
outright; otherwise it is accepted unless a one-sided binomial test says its failure rate
exceeds ``honest_fail_rate`` (default 1%, covering device mismatches) at level ``alpha``
(default 1e-3). An inflated claim with a fake share ``f`` fails ``≈ f·(1 − difficulty)`` of its
sample, so with 100 samples inflation above ~8% is rejected almost surely and inflation
below it buys at most that much extra weight. Validators' verdicts combine by weighted
vote on the ledger (:func:`gonka_ray.protocol.votes.poc_claim_outcome`). Weight = accepted
nonce count, capped at 25% of the total by
:func:`~gonka_ray.protocol.settlement.epoch_weights` (iterative water-filling).

NOTE: the nonce count a participant could have computed in the sprint is not bounded here; the
sprint's length (blocks) bounds it in practice, because the seed is unknown before the epoch.

This module holds the rules (sizes, participant keys, calibration rank, the claim checks and
the acceptance test) and imports neither torch nor the engine; the model itself, the sprint and
the recomputation a validator runs are :mod:`gonka_ray.engine.poc`, which calls these rules.
Pure Python: no Ray, no clock, no global RNG.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gonka_ray.constants import (
    DEFAULT_POC_ALPHA,
    DEFAULT_POC_HONEST_FAIL_RATE,
    DEFAULT_POC_SAMPLE_SIZE,
    POC_MAX_NONCE,
    POC_TOLERANCE,
)
from gonka_ray.hashing import seed_to_int64
from gonka_ray.protocol.settlement import binomial_tail

CALIBRATION_PARTICIPANT = "calibration"  # reserved key of the public calibration nonces


@dataclass(frozen=True)
class PocParams:
    """Size of the PoC transformer and of the calibration set (public protocol constants)."""

    vocab: int = 512
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    seq_len: int = 16
    calibration_nonces: int = 4096


def participant_key(seed: bytes, participant: str) -> int:
    """int64 hash key binding nonces to ``participant`` under the epoch ``seed``."""
    digest = hashlib.sha256(seed + b"/poc/" + participant.encode()).digest()
    return seed_to_int64(int.from_bytes(digest[:8], "big"))


def calibration_rank(difficulty: float, calibration_nonces: int) -> int:
    """1-based rank, among the calibration distances sorted ascending, of the threshold.

    Raises:
        ValueError: ``difficulty`` is outside ``(0, 1]``.
    """
    if not 0.0 < difficulty <= 1.0:
        raise ValueError("difficulty must be in (0, 1]")
    return max(1, math.ceil(difficulty * calibration_nonces))


@dataclass(frozen=True)
class SprintResult:
    """What a sprint found: ``nonces`` is the participant's claim."""

    participant: str
    nonces: tuple[int, ...]  # passing nonces, ascending
    tried: int
    elapsed_s: float

    @property
    def pass_rate(self) -> float:
        return len(self.nonces) / self.tried if self.tried else 0.0


# --- verification ------------------------------------------------------------------------------


def sample_nonces(
    nonces: Iterable[int], validator_seed: bytes, participant: str, sample_size: int
) -> list[int]:
    """The ``sample_size`` claimed nonces a validator recomputes, picked by its secret seed."""
    prefix = bytes(validator_seed) + b"/poc-sample/" + participant.encode() + b"/"
    ranked = sorted(
        set(nonces), key=lambda n: hashlib.sha256(prefix + n.to_bytes(8, "big")).digest()
    )
    return sorted(ranked[:sample_size])


def accept_claim(
    failed: int,
    sampled: int,
    *,
    honest_fail_rate: float = DEFAULT_POC_HONEST_FAIL_RATE,
    alpha: float = DEFAULT_POC_ALPHA,
) -> bool:
    """Binomial test: accept unless ``failed`` of ``sampled`` is implausible for an honest claim."""
    return binomial_tail(failed, sampled, honest_fail_rate) >= alpha


@dataclass(frozen=True)
class ClaimCheck:
    participant: str
    claimed: int
    sampled: int
    failed: int
    accepted: bool
    reason: str = ""

    @property
    def weight(self) -> int:
        """The claim's weight before the cap: its nonce count if accepted, else 0."""
        return self.claimed if self.accepted else 0


def check_claim(
    participant: str,
    nonces: Sequence[int],
    validator_seed: bytes,
    distances: Callable[[list[int]], Iterable[float]],
    threshold: float,
    *,
    sample_size: int = DEFAULT_POC_SAMPLE_SIZE,
    tolerance: float = POC_TOLERANCE,
    honest_fail_rate: float = DEFAULT_POC_HONEST_FAIL_RATE,
    alpha: float = DEFAULT_POC_ALPHA,
) -> ClaimCheck:
    """One validator's verdict on ``participant``'s claim of ``nonces``.

    Args:
        distances: recomputes the distance of each of ``participant``'s sampled nonces (the
            validator's PoC model: :func:`gonka_ray.engine.poc.verify_claim` passes it); not
            called for a claim rejected on its form.
        threshold: the epoch's calibrated distance threshold; a sampled nonce fails when its
            distance exceeds ``threshold + tolerance``.
    Returns:
        The verdict; a malformed claim (reserved participant, duplicate or out-of-range nonce)
        is rejected without sampling.
    """
    claimed = len(nonces)
    if participant == CALIBRATION_PARTICIPANT:
        return ClaimCheck(participant, claimed, 0, 0, False, "reserved participant")
    if len(set(nonces)) != claimed:
        return ClaimCheck(participant, claimed, 0, 0, False, "duplicate nonce")
    if any(type(n) is not int or not 0 <= n < POC_MAX_NONCE for n in nonces):
        return ClaimCheck(participant, claimed, 0, 0, False, "nonce out of range")
    sample = sample_nonces(nonces, validator_seed, participant, sample_size)
    failed = sum(1 for d in distances(sample) if d > threshold + tolerance)
    ok = accept_claim(failed, len(sample), honest_fail_rate=honest_fail_rate, alpha=alpha)
    return ClaimCheck(participant, claimed, len(sample), failed, ok, "" if ok else "failed sample")
