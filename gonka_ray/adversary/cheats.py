"""ADVERSARIAL: the cheats as plain functions of a model or of sampling parameters (see the
package docstring for the catalogue).

``launder``, ``replace_1_in_64``, ``drop_system`` and ``truncate_output`` rewrite artifacts and
are built by :class:`~gonka_ray.adversary.actors.CheatingExecutor` or by the detection benchmark
from an honest and a cheap run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.base import SamplingParams
from gonka_ray.engine.models import fake_quantize, truncate_layers

MODEL_CHEATS = ("truncate_layers_2", "truncate_layers_6", "int8", "int4")
SAMPLING_CHEATS = ("wrong_temperature", "greedy", "ignore_seed")


def cheat_model(model: Any, kind: str) -> Any:
    """The cheaper model a cheater of ``kind`` would run instead of ``model``."""
    if kind == "truncate_layers_2":
        return truncate_layers(model, 2)
    if kind == "truncate_layers_6":
        return truncate_layers(model, 6)
    if kind == "int8":
        return fake_quantize(model, 8)
    if kind == "int4":
        return fake_quantize(model, 4)
    raise ValueError(f"{kind!r} is not a model cheat; known: {', '.join(MODEL_CHEATS)}")


def adversarial_engine(model: ModelConfig, config: EngineConfig, kind: str):
    """A transformers engine whose weights were replaced by :func:`cheat_model`."""
    from gonka_ray.engine.transformers_engine import TransformersEngine

    engine = TransformersEngine(model, config)
    engine.model = cheat_model(engine.model, kind).eval()
    return engine


def sampling_hook(kind: str) -> Callable[[SamplingParams], SamplingParams]:
    """A rewrite of the client's sampling parameters for a sampling cheat."""
    if kind == "wrong_temperature":
        return lambda s: replace(s, temperature=s.temperature * 2.0 + 0.3)
    if kind == "greedy":
        return lambda s: replace(s, temperature=0.0)
    if kind == "ignore_seed":
        return lambda s: replace(s, seed=(s.seed * 6364136223846793005 + 1) % 2**64)
    raise ValueError(f"{kind!r} is not a sampling cheat; known: {', '.join(SAMPLING_CHEATS)}")
