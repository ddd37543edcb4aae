"""Batched honest (and cheating) executions for calibration and the detection benchmark.

An executor here is a Hugging Face causal LM decoding with a KV cache and the shared replayable
sampler (:mod:`gonka_ray.engine.sampler`), many sequences per step; a verifier is one batched
prefill of ``prompt + output`` per sequence, scored with :func:`gonka_ray.engine.scoring` maths.
This mirrors the transformers engine's arithmetic while letting one process run thousands of
sequences; the vLLM engine is driven through its own interface by :mod:`calibrate`.

Not used by participants. Uses torch (the checks themselves stay in the pure modules).

Shapes: ``B`` sequences, ``N`` output tokens, ``V`` vocabulary, ``K`` top-k of the artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gonka_ray.engine import sampler
from gonka_ray.verification.artifact import Artifact
from gonka_ray.verification.checks import VerifierScores

ARTIFACT_K = 5  # top-k of the artifact (DESIGN §3 default)
SCORE_BLOCK = 16  # positions per sampler call when a verifier replays a prefill


@dataclass
class Executions:
    """What executors produced for ``B`` sequences of ``N`` tokens (numpy, CPU).

    ``token_logprobs [B, N]`` are the executor's raw float32 logprobs of its tokens (before the
    artifact's float16 rounding); ``top_ids`` / ``top_logprobs`` ``[B, N, K]``.
    """

    prompts: list[list[int]]
    seeds: list[int]
    temperature: float
    output_ids: np.ndarray
    token_logprobs: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray

    def artifact(
        self, i: int, n: int | None = None, *, temperature: float | None = None
    ) -> Artifact:
        """Row ``i``'s artifact over its first ``n`` tokens, claiming ``temperature`` (default:
        the one it ran with — a sampling cheat claims the client's instead)."""
        n = self.output_ids.shape[1] if n is None else n
        return Artifact.build(
            prompt_ids=self.prompts[i],
            output_ids=self.output_ids[i, :n].tolist(),
            token_logprobs=self.token_logprobs[i, :n],
            top_ids=self.top_ids[i, :n],
            top_logprobs=self.top_logprobs[i, :n],
            seed=self.seeds[i],
            temperature=self.temperature if temperature is None else temperature,
            top_p=1.0,
            top_k=0,
            finish_reason="length",
        )


def chat_ids(tokenizer, text: str, system: str | None = None) -> list[int]:
    """Prompt ids of a one-turn chat (optionally with a system message), generation prompt on."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    out = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    ids = out["input_ids"] if hasattr(out, "keys") else out
    return [int(t) for t in ids]


def _left_pad(prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(list(p))
        mask[i, width - len(p) :] = 1
    return ids, mask


@torch.no_grad()
def generate(
    model,
    prompts: Sequence[Sequence[int]],
    seeds: Sequence[int],
    n_tokens: int,
    *,
    temperature: float | Sequence[float],
    k: int = ARTIFACT_K,
    start_positions: Sequence[int] | None = None,
) -> Executions:
    """Decode ``n_tokens`` for every prompt at once (left-padded batch, KV cache).

    Every row runs to ``n_tokens`` (EOS is just another token here): the statistics are per
    position and a fixed length keeps them comparable.
    """
    ids, mask = _left_pad(prompts)  # [B, P]
    b = ids.shape[0]
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1].float()  # [B, V]
    seeds_t = torch.tensor([sampler.seed_to_int64(s) for s in seeds], dtype=torch.int64)
    temps = [float(temperature)] * b if isinstance(temperature, (int, float)) else temperature
    temp_t = torch.tensor([float(t) for t in temps])
    next_pos = pos[:, -1] + 1
    start = torch.tensor(list(start_positions) if start_positions is not None else [0] * b)
    toks = np.zeros((b, n_tokens), dtype=np.int64)
    tok_lp = np.zeros((b, n_tokens), dtype=np.float32)
    top_ids = np.zeros((b, n_tokens, k), dtype=np.int64)
    top_lp = np.zeros((b, n_tokens, k), dtype=np.float32)
    for step in range(n_tokens):
        chosen = sampler.sample(
            logits, temperature=temp_t, seeds=seeds_t, positions=start + step
        ).tokens  # [B]
        logp = torch.log_softmax(logits, -1)  # [B, V]
        top = torch.topk(logp, k, -1)
        toks[:, step] = chosen.numpy()
        tok_lp[:, step] = logp.gather(1, chosen[:, None])[:, 0].numpy()
        top_ids[:, step] = top.indices.numpy()
        top_lp[:, step] = top.values.numpy()
        if step + 1 == n_tokens:
            break
        mask = torch.cat([mask, torch.ones(b, 1, dtype=torch.long)], 1)
        out = model(
            input_ids=chosen[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            past_key_values=past,
            use_cache=True,
        )
        past, logits = out.past_key_values, out.logits[:, -1].float()
        next_pos = next_pos + 1
    t_claim = float(temps[0]) if len(set(temps)) == 1 else float("nan")
    return Executions(
        [list(p) for p in prompts], list(seeds), t_claim, toks, tok_lp, top_ids, top_lp
    )


@torch.no_grad()
def prefill_logits(
    model, prompts: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]]
) -> list[torch.Tensor]:
    """One batched prefill of ``prompt + output`` per row (right-padded).

    Returns, per row, the float32 logits ``[N_i, V]`` that predicted each output token.
    """
    seqs = [list(p) + list(o) for p, o in zip(prompts, outputs, strict=True)]
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits  # [B, W, V]
    rows = []
    for i, (p, o) in enumerate(zip(prompts, outputs, strict=True)):
        rows.append(logits[i, len(p) - 1 : len(p) - 1 + len(o)].float())
    return rows


def score(
    logits: torch.Tensor,
    output_ids: Sequence[int],
    *,
    seed: int,
    temperature: float,
    k: int = ARTIFACT_K,
) -> VerifierScores:
    """The verifier's :class:`VerifierScores` for one row from its prefill ``logits [N, V]``."""
    n = len(output_ids)
    logp = torch.log_softmax(logits.float(), -1)  # [N, V]
    t = torch.tensor(list(output_ids), dtype=torch.long)
    top = torch.topk(logp, k, -1)
    choice, margin = [], []
    # NOTE: rows are independent; blocks of SCORE_BLOCK keep the [rows, V] int64 hash
    # temporaries in cache (about 2x faster on CPU than all N rows at once).
    for lo in range(0, n, SCORE_BLOCK):
        m = min(n, lo + SCORE_BLOCK) - lo
        s = sampler.sample(
            logits[lo : lo + m],
            temperature=torch.full((m,), float(temperature)),
            seeds=torch.full((m,), sampler.seed_to_int64(seed), dtype=torch.int64),
            positions=torch.arange(lo, lo + m),
        )
        choice.append(s.tokens)
        margin.append(s.margins)
    return VerifierScores(
        top_ids=top.indices.numpy(),
        top_logprobs=top.values.numpy(),
        token_logprobs=logp.gather(1, t[:, None])[:, 0].numpy(),
        choice=torch.cat(choice).numpy() if n else np.zeros(0, np.int64),
        margin=torch.cat(margin).numpy() if n else np.zeros(0, np.float32),
    )


def verify_batch(
    model, execs: Executions, rows: Sequence[int], *, temperature: float, batch_size: int = 16
) -> list[VerifierScores]:
    """Score executions ``rows`` of ``execs`` with ``model``: batched prefills, per-row replay."""
    out: list[VerifierScores] = []
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo : lo + batch_size]
        logits = prefill_logits(
            model, [execs.prompts[i] for i in chunk], [execs.output_ids[i].tolist() for i in chunk]
        )
        for i, lg in zip(chunk, logits, strict=True):
            out.append(
                score(
                    lg, execs.output_ids[i].tolist(), seed=execs.seeds[i], temperature=temperature
                )
            )
    return out


def truncate_scores(s: VerifierScores, n: int) -> VerifierScores:
    """The scores of the first ``n`` positions (what a prefill of a shorter output yields)."""
    return VerifierScores(
        s.top_ids[:n], s.top_logprobs[:n], s.token_logprobs[:n], s.choice[:n], s.margin[:n]
    )
