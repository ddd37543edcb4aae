"""MLNode: hosts one engine for a participant; the Executor and Verifier call it (DESIGN §1).

A plain class (STYLE §3): unit tests construct it directly; :func:`mlnode_options` gives the
Ray options that reserve its resources (``tensor_parallel_size × pipeline_parallel_size`` GPUs
when it runs vLLM on a GPU host, else CPUs) and :func:`gonka_ray.raykit.remote` turns
it into an actor. Across the actor boundary :meth:`MLNode.generate` is an async generator, so
Ray streams it: ``node.generate.options(num_returns="streaming").remote(request)`` yields
object refs of :class:`~gonka_ray.engine.base.TokenChunk` as they are produced.

It also runs the participant's Proof-of-Compute sprint and recomputes samples of others'
claims (:mod:`gonka_ray.engine.poc`, rules in :mod:`gonka_ray.protocol.poc`) on the same
hardware. Only the participant's own actors call it, so it takes engine dataclasses, not
signed wire messages. Construction loads the model: a restarted actor reloads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.constants import MLNODE_MAX_CONCURRENCY
from gonka_ray.engine.base import (
    EngineRequest,
    GenerationResult,
    InferenceEngine,
    ModelInfo,
    SamplingParams,
    ScoreResult,
    TokenChunk,
)
from gonka_ray.engine.poc import PocModel, run_sprint, verify_claim
from gonka_ray.protocol.poc import ClaimCheck, PocParams, SprintResult
from gonka_ray.raykit import ActorOptions


class MLNode:
    """One engine behind generate / score / tokenization.

    Args:
        model: the model to serve.
        config: engine settings (``kind`` picks the engine).
        engine: an already built engine (tests); default: built from ``model`` and ``config``.
    """

    def __init__(
        self,
        model: ModelConfig | None = None,
        config: EngineConfig | None = None,
        *,
        engine: InferenceEngine | None = None,
    ) -> None:
        if engine is None:
            from gonka_ray.engine.factory import create_engine

            engine = create_engine(model or ModelConfig(), config or EngineConfig())
        self.engine = engine
        self._poc_cache: dict[tuple[bytes, float, int], PocModel] = {}

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenChunk]:
        """Stream the output of ``request`` chunk by chunk (a Ray streaming generator).

        Raises:
            InvalidRequest / ModelNotFound: bad input, before any chunk.
            EngineError: the engine failed (recoverable).
        """
        async for chunk in self.engine.generate(request):
            yield chunk

    async def generate_full(self, request: EngineRequest) -> GenerationResult:
        """The whole output of ``request`` in one result."""
        return await self.engine.generate_full(request)

    async def score(
        self, prompt_ids: Sequence[int], output_ids: Sequence[int], sampling: SamplingParams
    ) -> ScoreResult:
        """One prefill over ``prompt + output`` (see ``InferenceEngine.score``)."""
        return await self.engine.score(prompt_ids, output_ids, sampling)

    def model_info(self) -> ModelInfo:
        return self.engine.model_info()

    def tokenize(self, text: str) -> list[int]:
        return self.engine.tokenize(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.engine.detokenize(ids)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Each id decoded on its own (logprob tables of the HTTP layer), in one call."""
        return [self.engine.detokenize([int(i)], skip_special_tokens=False) for i in ids]

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return self.engine.apply_chat_template(messages)

    async def poc_sprint(
        self,
        seed: bytes,
        participant: str,
        *,
        difficulty: float,
        budget_s: float,
        max_nonces: int | None = None,
        calibration_nonces: int = PocParams.calibration_nonces,
    ) -> SprintResult:
        """Run a Proof-of-Compute sprint for ``participant`` on this node's hardware (a thread:
        generation streams keep flowing meanwhile)."""
        model = self._poc_model(seed, difficulty, calibration_nonces)
        return await asyncio.to_thread(
            run_sprint, model, participant, budget_s=budget_s, max_nonces=max_nonces
        )

    async def poc_verify(
        self,
        seed: bytes,
        participant: str,
        nonces: Sequence[int],
        validator_seed: bytes,
        *,
        difficulty: float,
        calibration_nonces: int = PocParams.calibration_nonces,
    ) -> ClaimCheck:
        """Recompute a sample (picked by ``validator_seed``) of another participant's claim."""
        model = self._poc_model(seed, difficulty, calibration_nonces)
        return await asyncio.to_thread(
            verify_claim, model, participant, [int(n) for n in nonces], validator_seed
        )

    async def poc_prepare(
        self,
        seed: bytes,
        *,
        difficulty: float,
        calibration_nonces: int = PocParams.calibration_nonces,
    ) -> float:
        """Build (and cache) the epoch's PoC model; returns its distance threshold."""
        model = await asyncio.to_thread(self._poc_model, seed, difficulty, calibration_nonces)
        return model.threshold

    def _poc_model(self, seed: bytes, difficulty: float, calibration_nonces: int) -> PocModel:
        key = (bytes(seed), difficulty, calibration_nonces)
        model = self._poc_cache.get(key)
        if model is None:
            device = getattr(self.engine, "device", "cpu")
            params = PocParams(calibration_nonces=calibration_nonces)
            model = PocModel(seed, difficulty, params=params, device=device)
            self._poc_cache = {key: model}  # one epoch at a time
        return model

    async def close(self) -> None:
        """Stop the engine (call before killing the actor to free GPU memory promptly)."""
        await self.engine.close()


def mlnode_options(
    config: EngineConfig,
    *,
    name: str | None = None,
    namespace: str | None = None,
    resources: Mapping[str, float] | None = None,
    gpu_host: bool | None = None,
) -> ActorOptions:
    """Ray options for an MLNode running ``config``.

    On a GPU host (``gpu_host``; default: ``config.device`` is ``cuda``, or ``auto`` with a
    visible GPU) it reserves ``tensor_parallel_size × pipeline_parallel_size`` GPUs; otherwise
    one CPU per torch thread (at least one).
    """
    if gpu_host is None:
        gpu_host = config.device == "cuda"
        if config.device == "auto":
            import torch

            gpu_host = torch.cuda.is_available()
    gpus = config.tensor_parallel_size * config.pipeline_parallel_size if gpu_host else 0
    cpus = 1 if gpu_host else max(1, config.torch_threads)
    return ActorOptions(
        name=name,
        namespace=namespace,
        max_restarts=1,
        max_concurrency=MLNODE_MAX_CONCURRENCY,
        num_cpus=cpus,
        num_gpus=gpus or None,
        resources=dict(resources or {}),
    )
