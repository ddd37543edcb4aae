"""Proof of Compute: weight earned by running a seed-initialised transformer (DESIGN §5).

**The puzzle.** The epoch seed (public, from the ledger: :func:`~gonka_ray.protocol.epochs.epoch_seed`)
deterministically initialises a small transformer (float32 parameters drawn on the CPU from a
``torch.Generator`` seeded with the seed, then moved to the engine's device) and a unit
*target* vector. A participant's nonce ``n`` becomes ``seq_len`` token ids by the counter hash
``hash_u64(key_P, n, position) mod vocab`` (the splitmix64 hash of the sampler, integer ops, same
on every device), where ``key_P = sha256(seed ‖ participant)``: nonces are bound to their
participant, so nobody can submit another's. The model maps the tokens to a vector ``y``
(final position, final layer norm, output projection); the nonce **passes** when
``‖y/‖y‖ − target‖ ≤ threshold``.

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

Pure torch: no Ray, no global RNG (every random draw uses an explicit generator).
Shapes: ``B`` nonces per batch, ``L`` tokens per nonce, ``D`` model width, ``V`` vocabulary.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gonka_ray.engine.sampler import hash_u64, seed_to_int64
from gonka_ray.protocol.settlement import binomial_tail

POC_TOLERANCE = 1e-4  # verifier slack on the distance for float differences between devices
MAX_NONCE = 1 << 62  # claimed nonces must lie in [0, MAX_NONCE)
CALIBRATION_PARTICIPANT = "calibration"  # reserved key of the public calibration nonces
DEFAULT_SAMPLE_SIZE = 100  # nonces each validator recomputes per claim
DEFAULT_HONEST_FAIL_RATE = 0.01  # failure rate an honest claim may show (device mismatch)
DEFAULT_ALPHA = 1e-3  # reject a claim when P(≥ failures | honest rate) is below this
_U63 = (1 << 63) - 1


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


def nonce_tokens(key: int, nonces: torch.Tensor, seq_len: int, vocab: int) -> torch.Tensor:
    """Token ids ``[B, L]`` for ``nonces [B]`` (int64) by the counter hash, on ``nonces.device``."""
    positions = torch.arange(seq_len, dtype=torch.int64, device=nonces.device)
    seeds = torch.full((1, 1), key, dtype=torch.int64, device=nonces.device)
    h = hash_u64(seeds, nonces.to(torch.int64)[:, None], positions[None, :])  # [B, L]
    return (h & _U63) % vocab


class PocModel:
    """The epoch's PoC transformer and target, built deterministically from the seed.

    Args:
        seed: the epoch seed (32 bytes).
        difficulty: share of nonces that pass (config ``poc_difficulty``).
        params: model size; every participant must use the same.
        device: where to evaluate (parameters are drawn on the CPU, then moved).
    """

    def __init__(
        self,
        seed: bytes,
        difficulty: float,
        *,
        params: PocParams | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not 0.0 < difficulty <= 1.0:
            raise ValueError("difficulty must be in (0, 1]")
        self.seed = bytes(seed)
        self.difficulty = difficulty
        self.params = params or PocParams()
        self.device = torch.device(device)
        p = self.params
        if p.d_model % p.n_heads:
            raise ValueError("d_model must be a multiple of n_heads")
        gen = torch.Generator(device="cpu")
        gen.manual_seed(
            int.from_bytes(hashlib.sha256(self.seed + b"/poc/init").digest()[:8], "big")
        )

        def draw(*shape: int, std: float) -> torch.Tensor:
            return (torch.randn(*shape, generator=gen, dtype=torch.float32) * std).to(self.device)

        d = p.d_model
        self.embed = draw(p.vocab, d, std=1.0)  # [V, D]
        self.pos = draw(p.seq_len, d, std=1.0)  # [L, D]
        self.layers = [
            {
                "wqkv": draw(d, 3 * d, std=1 / math.sqrt(d)),
                "wo": draw(d, d, std=1 / math.sqrt(d)),
                "w1": draw(d, 4 * d, std=1 / math.sqrt(d)),
                "w2": draw(4 * d, d, std=1 / math.sqrt(4 * d)),
            }
            for _ in range(p.n_layers)
        ]
        self.w_out = draw(d, d, std=1 / math.sqrt(d))  # [D, D]
        target = torch.randn(d, generator=gen, dtype=torch.float32)
        self.target = (target / target.norm()).to(self.device)  # [D]
        self.threshold = self._calibrate()

    # --- evaluation ------------------------------------------------------------------------

    @torch.inference_mode()
    def outputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit vectors ``[B, D]`` for token ids ``[B, L]``."""
        p = self.params
        b, seq = tokens.shape
        h = self.embed[tokens] + self.pos[:seq]  # [B, L, D]
        hd = p.d_model // p.n_heads
        for layer in self.layers:
            x = F.layer_norm(h, (p.d_model,))
            q, k, v = (x @ layer["wqkv"]).split(p.d_model, dim=-1)  # 3 × [B, L, D]
            q, k, v = (t.view(b, seq, p.n_heads, hd).transpose(1, 2) for t in (q, k, v))
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, L, hd]
            h = h + att.transpose(1, 2).reshape(b, seq, p.d_model) @ layer["wo"]
            x = F.layer_norm(h, (p.d_model,))
            h = h + F.gelu(x @ layer["w1"]) @ layer["w2"]
        y = F.layer_norm(h[:, -1], (p.d_model,)) @ self.w_out  # [B, D]
        return y / y.norm(dim=-1, keepdim=True)

    def distances(self, participant: str, nonces: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Distance to the target for each nonce of ``participant`` (float64 ``[B]``, CPU)."""
        n = torch.as_tensor(nonces, dtype=torch.int64, device=self.device).reshape(-1)
        if n.numel() == 0:
            return torch.empty(0, dtype=torch.float64)
        tokens = nonce_tokens(
            participant_key(self.seed, participant), n, self.params.seq_len, self.params.vocab
        )
        y = self.outputs(tokens)
        return (y - self.target).norm(dim=-1).to("cpu", torch.float64)

    def _calibrate(self) -> float:
        n = self.params.calibration_nonces
        dists = torch.cat(
            [
                self.distances(CALIBRATION_PARTICIPANT, torch.arange(i, min(n, i + 1024)))
                for i in range(0, n, 1024)
            ]
        )
        k = max(1, math.ceil(self.difficulty * n))
        return float(torch.sort(dists).values[k - 1])


# --- sprint ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SprintResult:
    participant: str
    nonces: tuple[int, ...]  # passing nonces, ascending
    tried: int
    elapsed_s: float

    @property
    def pass_rate(self) -> float:
        return len(self.nonces) / self.tried if self.tried else 0.0


def run_sprint(
    model: PocModel,
    participant: str,
    *,
    max_nonces: int | None = None,
    budget_s: float | None = None,
    start_nonce: int = 0,
    batch_size: int = 512,
    clock: Callable[[], float] = time.monotonic,
    progress: bool = False,
) -> SprintResult:
    """Evaluate nonces ``start_nonce, start_nonce+1, …`` until a budget runs out.

    Args:
        max_nonces: stop after this many nonces tried.
        budget_s: stop after this much time by ``clock`` (checked between batches).
        progress: show a tqdm bar.

    Raises:
        ValueError: neither budget given, or the nonce range leaves ``[0, MAX_NONCE)``.
    """
    if max_nonces is None and budget_s is None:
        raise ValueError("give max_nonces or budget_s")
    if start_nonce < 0:
        raise ValueError("start_nonce must be >= 0")
    t0 = clock()
    found: list[int] = []
    tried = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max_nonces, desc=f"PoC {participant}", unit="nonce")
    try:
        while True:
            if max_nonces is not None and tried >= max_nonces:
                break
            if budget_s is not None and clock() - t0 >= budget_s:
                break
            size = batch_size if max_nonces is None else min(batch_size, max_nonces - tried)
            lo = start_nonce + tried
            if lo + size > MAX_NONCE:
                raise ValueError("nonce range exhausted")
            batch = torch.arange(lo, lo + size, dtype=torch.int64)
            ok = model.distances(participant, batch) <= model.threshold
            found.extend((batch[ok] if ok.any() else batch[:0]).tolist())
            tried += size
            if bar is not None:
                bar.update(size)
    finally:
        if bar is not None:
            bar.close()
    return SprintResult(participant, tuple(found), tried, clock() - t0)


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
    honest_fail_rate: float = DEFAULT_HONEST_FAIL_RATE,
    alpha: float = DEFAULT_ALPHA,
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


def verify_claim(
    model: PocModel,
    participant: str,
    nonces: Sequence[int],
    validator_seed: bytes,
    *,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    tolerance: float = POC_TOLERANCE,
    honest_fail_rate: float = DEFAULT_HONEST_FAIL_RATE,
    alpha: float = DEFAULT_ALPHA,
) -> ClaimCheck:
    """One validator's verdict on ``participant``'s claim of ``nonces``."""
    claimed = len(nonces)
    if participant == CALIBRATION_PARTICIPANT:
        return ClaimCheck(participant, claimed, 0, 0, False, "reserved participant")
    if len(set(nonces)) != claimed:
        return ClaimCheck(participant, claimed, 0, 0, False, "duplicate nonce")
    if any(type(n) is not int or not 0 <= n < MAX_NONCE for n in nonces):
        return ClaimCheck(participant, claimed, 0, 0, False, "nonce out of range")
    sample = sample_nonces(nonces, validator_seed, participant, sample_size)
    dists = model.distances(participant, sample)
    failed = int((dists > model.threshold + tolerance).sum())
    ok = accept_claim(failed, len(sample), honest_fail_rate=honest_fail_rate, alpha=alpha)
    return ClaimCheck(participant, claimed, len(sample), failed, ok, "" if ok else "failed sample")
