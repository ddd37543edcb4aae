"""Build the engine an :class:`~gonka_ray.config.EngineConfig` names (imports it lazily)."""

from __future__ import annotations

from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.base import InferenceEngine


def create_engine(model: ModelConfig, config: EngineConfig) -> InferenceEngine:
    """A new engine of ``config.kind`` serving ``model``.

    Raises:
        ModelNotFound: unknown model name.
        EngineLoadError: missing model files or packages (e.g. vllm not installed).
    """
    if config.kind == "fake":
        from gonka_ray.engine.fake import FakeEngine

        return FakeEngine(model, config)
    if config.kind == "vllm":
        from gonka_ray.engine.vllm_engine import VLLMEngine

        return VLLMEngine(model, config)
    from gonka_ray.engine.transformers_engine import TransformersEngine

    return TransformersEngine(model, config)
