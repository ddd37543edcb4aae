"""The shared Gumbel-max sampler as a vLLM (V1 runner) logits processor. Imports vllm.

vLLM builds one :class:`GumbelLogitsProcessor` per worker and tells it which request sits in
which batch row through ``BatchUpdate`` (removed, then added, then moved). A request opts in
by putting :data:`EXTRA_KEY` in ``SamplingParams.extra_args`` with its seed, temperature,
top-k and top-p; :meth:`apply` then replaces that row's logits by 0 at the token
:func:`gonka_ray.engine.sampler.sample` picks and -inf elsewhere. The engine runs such requests
with vLLM's own temperature 0 (greedy), so vLLM's argmax returns exactly our token, while the
logprobs vLLM reports stay raw (``logprobs_mode="raw_logprobs"`` computes them before any
processor).

The output position is ``len(output_tok_ids)``: vLLM hands us a live reference to the
request's running output list. NOTE: this needs synchronous scheduling (the engine sets
``async_scheduling=False``); with async scheduling that list can lag one step behind.

Generation only: scoring replays the sampler from prompt-position logits, which no logits
processor sees; that is the worker hook in :mod:`gonka_ray.engine.vllm_replay`.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from gonka_ray.engine import sampler
from gonka_ray.hashing import seed_to_int64

EXTRA_KEY = "gonka_sampler"  # SamplingParams.extra_args[EXTRA_KEY] = {seed, temperature, ...}


def extra_args(seed: int, temperature: float, top_k: int, top_p: float) -> dict[str, Any]:
    """The ``extra_args`` a request passes to opt in to the replayable sampler."""
    return {
        EXTRA_KEY: {
            "seed": int(seed),
            "temperature": float(temperature),
            "top_k": int(top_k),
            "top_p": float(top_p),
        }
    }


class GumbelLogitsProcessor(LogitsProcessor):
    """Forces each opted-in row to the shared sampler's choice (see the module docstring)."""

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        spec = (sampling_params.extra_args or {}).get(EXTRA_KEY)
        if spec is None:
            return
        if not isinstance(spec, dict) or not {"seed", "temperature", "top_k", "top_p"} <= set(spec):
            raise ValueError(f"extra_args[{EXTRA_KEY!r}] needs seed, temperature, top_k, top_p")
        seed_to_int64(int(spec["seed"]))

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.device = device
        # batch row -> (int64 seed, temperature, top_k, top_p, live output token list)
        self.rows: dict[int, tuple[int, float, int, float, list[int]]] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # it decides the token, so it must run for greedy rows too

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def new_state(params: Any, _prompt: Any, output_ids: list[int]) -> Any:
            spec = (params.extra_args or {}).get(EXTRA_KEY)
            if spec is None:
                return None
            return (
                seed_to_int64(int(spec["seed"])),
                float(spec["temperature"]),
                int(spec["top_k"]),
                float(spec["top_p"]),
                output_ids,
            )

        process_dict_updates(self.rows, batch_update, new_state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        idx = sorted(i for i in self.rows if i < logits.shape[0])
        if not idx:
            return logits
        states = [self.rows[i] for i in idx]
        dev = logits.device
        index = torch.tensor(idx, dtype=torch.long, device=dev)
        chosen = sampler.sample(
            logits.index_select(0, index),
            temperature=torch.tensor([s[1] for s in states], device=dev),
            seeds=torch.tensor([s[0] for s in states], dtype=torch.int64, device=dev),
            positions=torch.tensor([len(s[4]) for s in states], dtype=torch.int64, device=dev),
            top_k=torch.tensor([s[2] for s in states], dtype=torch.int64, device=dev),
            top_p=torch.tensor([s[3] for s in states], dtype=torch.float32, device=dev),
        )
        forced = torch.full(
            (len(idx), logits.shape[1]), float("-inf"), dtype=logits.dtype, device=dev
        )
        forced.scatter_(1, chosen.tokens[:, None], 0.0)
        logits.index_copy_(0, index, forced)
        return logits
