"""Batched honest (and cheating) executions for calibration and the detection benchmark.

An executor here is a Hugging Face causal LM decoding with a KV cache and the shared replayable
sampler (:mod:`gonka_ray.engine.sampler`), many sequences per step, each with its own sampling
parameters, stopping at EOS or a stop string like the engines do (the
:class:`gonka_ray.engine.base.Detokenizer` decides stop strings); a verifier is one batched
prefill of ``prompt + output`` per sequence, scored with the verifier's replay tolerance. This
mirrors the transformers engine's arithmetic while letting one process run thousands of
sequences; the engines themselves are driven through their own interface by the benchmark.

Not used by participants. Uses torch (the checks themselves stay in the pure modules).

Shapes: ``B`` sequences, ``N`` output tokens, ``V`` vocabulary, ``K`` top-k of the artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from gonka_ray.constants import DEFAULT_TOP_K_LOGPROBS, SCORE_BLOCK_POSITIONS
from gonka_ray.engine import sampler
from gonka_ray.engine.base import Detokenizer, SamplingParams
from gonka_ray.hashing import seed_to_int64
from gonka_ray.verification.artifact import Artifact
from gonka_ray.verification.checks import VerifierScores


@dataclass
class Execution:
    """What an executor produced for one request (numpy, CPU).

    ``token_logprobs [N]`` are the executor's raw float32 logprobs of its tokens (before the
    artifact's float16 rounding); ``top_ids`` / ``top_logprobs`` ``[N, K]``.
    """

    prompt_ids: list[int]
    sampling: SamplingParams
    output_ids: np.ndarray
    token_logprobs: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray
    finish_reason: str = "length"

    @property
    def n(self) -> int:
        return int(self.output_ids.shape[0])

    def artifact(self, n: int | None = None, *, sampling: SamplingParams | None = None) -> Artifact:
        """The artifact over the first ``n`` tokens, claiming ``sampling`` (default: the params it
        ran with — a sampling cheat claims the client's instead)."""
        n = self.n if n is None else n
        s = sampling or self.sampling
        return Artifact.build(
            prompt_ids=self.prompt_ids,
            output_ids=self.output_ids[:n].tolist(),
            token_logprobs=self.token_logprobs[:n],
            top_ids=self.top_ids[:n],
            top_logprobs=self.top_logprobs[:n],
            seed=s.seed,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            finish_reason=self.finish_reason if n == self.n else "length",
        )


def chat_ids(tokenizer, text: str, system: str | None = None) -> list[int]:
    """Prompt ids of a one-turn chat (optionally with a system message), generation prompt on."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    return messages_ids(tokenizer, msgs)


def messages_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Prompt ids of chat ``messages`` under the tokenizer's template, generation prompt on."""
    out = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    ids = out["input_ids"] if hasattr(out, "keys") else out
    return [int(t) for t in ids]


def eos_ids(model, tokenizer) -> tuple[int, ...]:
    """The EOS ids the engines stop at (tokenizer's and generation config's)."""
    eos = {tokenizer.eos_token_id}
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos |= set(gen) if isinstance(gen, list) else {gen}
    return tuple(sorted(int(e) for e in eos if e is not None))


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
    params: Sequence[SamplingParams],
    *,
    k: int = DEFAULT_TOP_K_LOGPROBS,
    tokenizer=None,
    eos: Sequence[int] = (),
    start_positions: Sequence[int] | None = None,
) -> list[Execution]:
    """Decode every prompt at once (left-padded batch, KV cache), each row with its own params.

    A row ends at ``max_tokens``, at an EOS id in ``eos`` (unless ``ignore_eos``) or when its
    text contains one of its stop strings (needs ``tokenizer``); the batch runs until every row
    ended. ``start_positions`` offsets the sampler's output positions (a continuation).
    """
    ids, mask = _left_pad(prompts)  # [B, P]
    b = ids.shape[0]
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1
    )
    past, logits = out.past_key_values, out.logits[:, -1].float()  # [B, V]
    t = {
        "temperature": torch.tensor([p.temperature for p in params], dtype=torch.float32),
        "seeds": torch.tensor([seed_to_int64(p.seed) for p in params], dtype=torch.int64),
        "top_k": torch.tensor([p.top_k for p in params], dtype=torch.int64),
        "top_p": torch.tensor([p.top_p for p in params], dtype=torch.float32),
    }
    start = torch.tensor(list(start_positions) if start_positions is not None else [0] * b)
    next_pos = pos[:, -1] + 1
    eos_set = frozenset(int(e) for e in eos)
    detoks = [
        Detokenizer(tokenizer, p.stop, tuple(eos_set)) if p.stop and tokenizer else None
        for p in params
    ]
    limit = max(p.max_tokens for p in params)
    toks, tok_lp, top_i, top_l = ([[] for _ in range(b)] for _ in range(4))
    finish: list[str | None] = [None] * b
    for step in range(limit):
        chosen = sampler.sample(logits, positions=start + step, **t).tokens  # [B]
        logp = torch.log_softmax(logits, -1)  # [B, V]
        top = torch.topk(logp, k, -1)
        c_lp = logp.gather(1, chosen[:, None])[:, 0]
        for r in range(b):
            if finish[r] is not None:
                continue
            tok = int(chosen[r])
            toks[r].append(tok)
            tok_lp[r].append(float(c_lp[r]))
            top_i[r].append(top.indices[r].tolist())
            top_l[r].append(top.values[r].tolist())
            is_eos = tok in eos_set and not params[r].ignore_eos
            if detoks[r] is not None:
                detoks[r].add(tok, final=is_eos or len(toks[r]) == params[r].max_tokens)
            if is_eos or (detoks[r] is not None and detoks[r].stopped):
                finish[r] = "stop"
            elif len(toks[r]) == params[r].max_tokens:
                finish[r] = "length"
        if all(f is not None for f in finish):
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
    return [
        Execution(
            prompt_ids=list(prompts[r]),
            sampling=params[r],
            output_ids=np.asarray(toks[r], dtype=np.int64),
            token_logprobs=np.asarray(tok_lp[r], dtype=np.float32),
            top_ids=np.asarray(top_i[r], dtype=np.int64).reshape(-1, k),
            top_logprobs=np.asarray(top_l[r], dtype=np.float32).reshape(-1, k),
            finish_reason=finish[r] or "length",
        )
        for r in range(b)
    ]


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
    # NOTE: the LM head runs on the output positions only: a [B, W, V] logits tensor over
    # 2,000-token prompts would take gigabytes (the engines do the same with logits_to_keep)
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, W, H]
    rows = []
    for i, (p, o) in enumerate(zip(prompts, outputs, strict=True)):
        rows.append(model.lm_head(hidden[i, len(p) - 1 : len(p) - 1 + len(o)]).float())
    return rows


def score(
    logits: torch.Tensor,
    output_ids: Sequence[int],
    sampling: SamplingParams,
    *,
    k: int = DEFAULT_TOP_K_LOGPROBS,
) -> VerifierScores:
    """The verifier's :class:`VerifierScores` for one row from its prefill ``logits [N, V]``,
    replayed with ``sampling`` (its ``replay_tolerance`` marks noise-decided masks)."""
    n = len(output_ids)
    logp = torch.log_softmax(logits.float(), -1)  # [N, V]
    t = torch.tensor(list(output_ids), dtype=torch.long)
    top = torch.topk(logp, k, -1)
    choice, margin, claimed_margin = [], [], []
    # NOTE: rows are independent; blocks of SCORE_BLOCK_POSITIONS keep the [rows, V] int64 hash
    # temporaries in cache (about 2x faster on CPU than all N rows at once).
    for lo in range(0, n, SCORE_BLOCK_POSITIONS):
        m = min(n, lo + SCORE_BLOCK_POSITIONS) - lo
        s = sampler.sample(
            logits[lo : lo + m],
            temperature=torch.full((m,), float(sampling.temperature)),
            seeds=torch.full((m,), seed_to_int64(sampling.seed), dtype=torch.int64),
            positions=torch.arange(lo, lo + m),
            top_k=torch.full((m,), int(sampling.top_k), dtype=torch.int64),
            top_p=torch.full((m,), float(sampling.top_p)),
            mask_tolerance=sampling.replay_tolerance,
            claimed=t[lo : lo + m],
        )
        choice.append(s.tokens)
        margin.append(s.margins)
        claimed_margin.append(s.claimed_margins)
    return VerifierScores(
        top_ids=top.indices.numpy(),
        top_logprobs=top.values.numpy(),
        token_logprobs=logp.gather(1, t[:, None])[:, 0].numpy(),
        choice=torch.cat(choice).numpy() if n else np.zeros(0, np.int64),
        margin=torch.cat(margin).numpy() if n else np.zeros(0, np.float32),
        claimed_margin=torch.cat(claimed_margin).numpy() if n else np.zeros(0, np.float32),
    )


def verify_batch(
    model,
    execs: Sequence[Execution],
    *,
    tolerance: float,
    claimed: Sequence[SamplingParams] | None = None,
    batch_size: int = 16,
) -> list[VerifierScores]:
    """Score ``execs`` with ``model``: batched prefills, per-row replay of the params each
    claims (``claimed``, default the ones it ran with) at replay tolerance ``tolerance``."""
    out: list[VerifierScores] = []
    claims = list(claimed) if claimed is not None else [e.sampling for e in execs]
    for lo in range(0, len(execs), batch_size):
        chunk = list(range(lo, min(len(execs), lo + batch_size)))
        logits = prefill_logits(
            model, [execs[i].prompt_ids for i in chunk], [execs[i].output_ids for i in chunk]
        )
        for i, lg in zip(chunk, logits, strict=True):
            sp = replace(claims[i], replay_tolerance=tolerance)
            out.append(score(lg, execs[i].output_ids.tolist(), sp))
    return out


def truncate_scores(s: VerifierScores, n: int) -> VerifierScores:
    """The scores of the first ``n`` positions (what a prefill of a shorter output yields)."""
    return VerifierScores(
        s.top_ids[:n],
        s.top_logprobs[:n],
        s.token_logprobs[:n],
        s.choice[:n],
        s.margin[:n],
        None if s.claimed_margin is None else s.claimed_margin[:n],
    )
