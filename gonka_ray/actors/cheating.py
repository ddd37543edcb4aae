"""ADVERSARIAL: an MLNode that serves a cheaper model than the network's (demos and tests)."""

from __future__ import annotations

from gonka_ray.actors.mlnode import MLNode
from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.verification.adversary import adversarial_engine


class CheatingMLNode(MLNode):
    """An MLNode whose engine runs ``cheat_model(model, kind)`` (int4, truncated, ...)."""

    def __init__(self, model: ModelConfig, config: EngineConfig, kind: str) -> None:
        super().__init__(engine=adversarial_engine(model, config, kind))
