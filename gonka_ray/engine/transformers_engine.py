"""TransformersEngine: the CPU engine (works on CUDA too) with dynamic batching and a KV cache.

One background thread owns the model and runs a step loop:

1. take new work from the inbox (generation requests, score jobs); run score jobs (one prefill
   of ``prompt + output`` each, batch 1);
2. admit waiting requests up to ``max_batch_size``: prefill each alone (batch 1, no padding, so
   the first token's logits match :meth:`score` exactly), sample position 0, and merge its KV
   cache into the running batch by left-padding the shorter caches;
3. one decode step for every running sequence at once: ``input_ids`` [B, 1], a 2-D attention
   mask that hides the left padding, and explicit per-row ``position_ids``;
4. sample every row with the shared sampler (keyed by the row's seed and output position, so a
   row's token never depends on its neighbours beyond float rounding), stream the chunks, drop
   finished rows and trim all-padding columns from the cache.

NOTE: batching changes matmul shapes, so logits inside a batch may differ from batch 1 in the
last float bits; the sampler's token is unaffected unless the margin is that small (the replay
check's margin gate exists for exactly this). Chunks reach each caller's asyncio loop through
``call_soon_threadsafe``; torch releases the GIL inside kernels, so the event loop stays live.

Threads: ``torch_threads`` from the engine config is applied with ``torch.set_num_threads``
(process-wide) so several engines on one machine do not oversubscribe its cores. No Ray.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine import sampler, scoring
from gonka_ray.engine.base import (
    Detokenizer,
    EngineRequest,
    InferenceEngine,
    ModelInfo,
    SamplingParams,
    ScoreResult,
    TokenChunk,
)
from gonka_ray.engine.models import load_hf
from gonka_ray.exceptions import EngineError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` → bfloat16 on CUDA, float32 on CPU."""
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    return dtype


@dataclass
class _Seq:
    """One running generation (owned by the step thread, except ``cancelled``)."""

    request: EngineRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any]
    detok: Detokenizer
    output_ids: list[int] = field(default_factory=list)
    cancelled: bool = False
    done: bool = False

    def deliver(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening
            self.cancelled = True


@dataclass
class _ScoreJob:
    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    sampling: SamplingParams
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[ScoreResult]


_STOP = object()


class TransformersEngine(InferenceEngine):
    """A transformers model behind a dynamic-batching step loop (see the module docstring).

    Args:
        model: which model (``ModelConfig``; default SmolLM2-135M-Instruct).
        config: engine settings; uses ``device``, ``dtype``, ``max_model_len``,
            ``max_batch_size`` and ``torch_threads``.

    Raises:
        ModelNotFound: unknown model name.
        EngineLoadError: model files or packages missing.
    """

    def __init__(self, model: ModelConfig | None = None, config: EngineConfig | None = None):
        model = model or ModelConfig()
        self.config = config or EngineConfig()
        if self.config.torch_threads > 0:
            torch.set_num_threads(self.config.torch_threads)
        self.device = resolve_device(self.config.device)
        dtype = resolve_dtype(self.config.dtype, self.device)
        self.model, self.tokenizer = load_hf(
            model.name, path=model.path, dtype=dtype, device=self.device
        )
        eos = {self.tokenizer.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        max_len = min(
            self.config.max_model_len,
            int(getattr(self.model.config, "max_position_embeddings", self.config.max_model_len)),
        )
        self.info = ModelInfo(
            name=model.name,
            engine="transformers",
            vocab_size=vocab,
            max_model_len=max_len,
            eos_token_ids=tuple(sorted(int(e) for e in eos if e is not None)),
            dtype=dtype,
            device=self.device,
        )
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # step-thread state: running rows, their KV cache and padding mask [B, S]
        self._rows: list[_Seq] = []
        self._waiting: list[_Seq] = []
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer [B, H, S, D]
        self._mask: torch.Tensor | None = None
        self.steps = 0  # decode steps run (for tests and benchmarks)
        self.max_rows_seen = 0  # largest decode batch so far

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="gonka-transformers-engine", daemon=True
                )
                self._thread.start()

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.shutdown)

    def shutdown(self) -> None:
        """Stop the step thread (blocking); running requests get an EngineError. Idempotent."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._inbox.put(_STOP)
            thread.join()

    # --- public operations --------------------------------------------------------------

    async def _generate(self, request: EngineRequest) -> AsyncIterator[TokenChunk]:
        self._ensure_thread()
        s = request.sampling
        seq = _Seq(
            request=request,
            loop=asyncio.get_running_loop(),
            out=asyncio.Queue(),
            detok=Detokenizer(self.tokenizer, s.stop, self.info.eos_token_ids),
        )
        self._inbox.put(seq)
        try:
            while True:
                item = await seq.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            seq.cancelled = True

    async def score(
        self, prompt_ids: Sequence[int], output_ids: Sequence[int], sampling: SamplingParams
    ) -> ScoreResult:
        self.validate_score(prompt_ids, output_ids, sampling)
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        job = _ScoreJob(tuple(prompt_ids), tuple(output_ids), sampling, loop, loop.create_future())
        self._inbox.put(job)
        return await job.future

    # --- step thread ----------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                block = not self._rows and not self._waiting
                try:
                    while True:
                        item = self._inbox.get(block=block)
                        block = False
                        if item is _STOP:
                            self._fail_all(EngineError("engine closed"))
                            return
                        if isinstance(item, _ScoreJob):
                            self._run_score(item)
                        else:
                            self._waiting.append(item)
                        if self._rows or self._waiting:
                            block = False
                except queue.Empty:
                    pass
                try:
                    self._step()
                except Exception as exc:  # report to callers, keep serving
                    log.exception("engine step failed")
                    self._fail_all(EngineError(f"engine step failed: {exc}"))

    def _fail_all(self, exc: Exception) -> None:
        for seq in self._rows + self._waiting:
            seq.deliver(exc)
        self._rows, self._waiting, self._cache, self._mask = [], [], [], None

    def _run_score(self, job: _ScoreJob) -> None:
        try:
            ids = torch.tensor([list(job.prompt_ids) + list(job.output_ids)], device=self.device)
            n_out = len(job.output_ids)
            # NOTE: only the last N+1 positions need the LM head; position T-1 predicts nothing
            logits = self.model(input_ids=ids, use_cache=False, logits_to_keep=n_out + 1).logits
            rows = logits[0, :n_out]  # [N, V]: row i predicts output token i
            result: Any = scoring.score_logits(rows, job.output_ids, job.sampling)
        except Exception as exc:
            log.exception("score failed")
            result = EngineError(f"score failed: {exc}")

        def settle() -> None:
            if job.future.done():
                return
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:
            pass

    def _step(self) -> None:
        self._drop(lambda s: s.cancelled)
        self._waiting = [s for s in self._waiting if not s.cancelled]
        while self._waiting and len(self._rows) < self.config.max_batch_size:
            self._admit(self._waiting.pop(0))
        if self._rows:
            self._decode()

    def _admit(self, seq: _Seq) -> None:
        """Prefill one sequence alone, sample its first token, merge its cache."""
        ids = torch.tensor([list(seq.request.prompt_ids)], device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        self._emit([seq], out.logits[:, -1, :])
        if seq.done:
            return
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        mask = torch.ones(1, ids.shape[1], dtype=torch.long, device=self.device)
        if not self._rows:
            self._rows, self._cache, self._mask = [seq], layers, mask
            return
        assert self._mask is not None
        width = max(self._mask.shape[1], mask.shape[1])

        def pad(t: torch.Tensor, dim_from_end: int) -> torch.Tensor:
            extra = width - t.shape[-dim_from_end]
            if extra == 0:
                return t
            spec = [0, 0] * (dim_from_end - 1) + [extra, 0]
            return F.pad(t, spec)

        self._cache = [
            (torch.cat([pad(k0, 2), pad(k1, 2)]), torch.cat([pad(v0, 2), pad(v1, 2)]))
            for (k0, v0), (k1, v1) in zip(self._cache, layers, strict=True)
        ]
        self._mask = torch.cat([pad(self._mask, 1), pad(mask, 1)])
        self._rows.append(seq)

    def _decode(self) -> None:
        """One decode step for all running rows."""
        from transformers import DynamicCache

        assert self._mask is not None
        rows = self._rows
        last = torch.tensor([[s.output_ids[-1]] for s in rows], device=self.device)  # [B, 1]
        positions = self._mask.sum(dim=1, keepdim=True)  # [B, 1] real tokens so far
        mask = torch.cat([self._mask, torch.ones_like(positions)], dim=1)  # [B, S+1]
        cache = DynamicCache(ddp_cache_data=self._cache)
        out = self.model(
            input_ids=last,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        self._cache = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        self._mask = mask
        self.steps += 1
        self.max_rows_seen = max(self.max_rows_seen, len(rows))
        self._emit(rows, out.logits[:, -1, :])
        self._drop(lambda s: s.done)

    def _emit(self, rows: list[_Seq], logits: torch.Tensor) -> None:
        """Sample ``rows`` from ``logits`` [B, V], deliver one chunk each, mark finished rows."""
        params = [(s.request.sampling, len(s.output_ids)) for s in rows]
        chosen = sampler.sample(logits, **scoring.sampling_tensors(params, logits.device))
        art = scoring.artifacts(logits, chosen.tokens, [p.logprobs for p, _ in params])
        for i, (seq, token) in enumerate(zip(rows, chosen.tokens.tolist(), strict=True)):
            s = seq.request.sampling
            seq.output_ids.append(int(token))
            n = len(seq.output_ids)
            eos = token in self.info.eos_token_ids and not s.ignore_eos
            last = n >= s.max_tokens
            text = seq.detok.add(int(token), final=last or eos)
            finish = "stop" if eos or seq.detok.stopped else ("length" if last else None)
            seq.done = finish is not None
            seq.deliver(
                TokenChunk(
                    index=n - 1,
                    token_id=int(token),
                    text=text,
                    logprob=art.token_logprobs[i],
                    top_ids=art.top_ids[i],
                    top_logprobs=art.top_logprobs[i],
                    finish_reason=finish,
                )
            )

    def _drop(self, gone: Any) -> None:
        """Remove rows for which ``gone(row)`` holds; trim columns that are padding for all."""
        if not self._rows or not any(gone(s) for s in self._rows):
            return
        keep = [i for i, s in enumerate(self._rows) if not gone(s)]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache, self._mask = [], None
            return
        assert self._mask is not None
        idx = torch.tensor(keep, device=self.device)
        mask = self._mask.index_select(0, idx)
        start = int((mask.sum(dim=0) > 0).nonzero()[0, 0])
        self._mask = mask[:, start:]
        self._cache = [
            (k.index_select(0, idx)[:, :, start:], v.index_select(0, idx)[:, :, start:])
            for k, v in self._cache
        ]
