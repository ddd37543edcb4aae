"""Proof of Compute on the engine's device: the seed-initialised model, the sprint, recomputation.

The rules (sizes, participant keys, calibration rank, claim checks, acceptance) and the design
are :mod:`gonka_ray.protocol.poc`; this module runs the model they describe. Parameters are
float32, drawn on the CPU from a ``torch.Generator`` seeded with the epoch seed, then moved to
the engine's device; nonce tokens come from the sampler's counter hash
(:func:`gonka_ray.engine.sampler.hash_u64`), integer ops that agree on every device.

Pure torch: no Ray, no global RNG (every random draw uses an explicit generator).
Shapes: ``B`` nonces per batch, ``L`` tokens per nonce, ``D`` model width, ``V`` vocabulary.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from gonka_ray.constants import POC_MAX_NONCE
from gonka_ray.engine.sampler import hash_u64
from gonka_ray.protocol.poc import (
    CALIBRATION_PARTICIPANT,
    ClaimCheck,
    PocParams,
    SprintResult,
    calibration_rank,
    check_claim,
    participant_key,
)

_U63 = (1 << 63) - 1


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
    Raises:
        ValueError: ``difficulty`` outside ``(0, 1]`` or ``d_model`` not a multiple of
            ``n_heads``.
    """

    def __init__(
        self,
        seed: bytes,
        difficulty: float,
        *,
        params: PocParams | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.seed = bytes(seed)
        self.difficulty = difficulty
        self.params = params or PocParams()
        self._rank = calibration_rank(difficulty, self.params.calibration_nonces)
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
        return float(torch.sort(dists).values[self._rank - 1])


# --- sprint ------------------------------------------------------------------------------------


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
        ValueError: neither budget given, or the nonce range leaves ``[0, POC_MAX_NONCE)``.
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
            if lo + size > POC_MAX_NONCE:
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


def verify_claim(
    model: PocModel,
    participant: str,
    nonces: Sequence[int],
    validator_seed: bytes,
    **rules: Any,
) -> ClaimCheck:
    """One validator's verdict on ``participant``'s claim of ``nonces``, recomputing its sample
    on ``model``.

    Args:
        rules: keyword arguments of :func:`gonka_ray.protocol.poc.check_claim` (``sample_size``,
            ``tolerance``, ``honest_fail_rate``, ``alpha``; its defaults where left out).
    """
    return check_claim(
        participant,
        nonces,
        validator_seed,
        lambda sample: model.distances(participant, sample).tolist(),
        model.threshold,
        **rules,
    )
