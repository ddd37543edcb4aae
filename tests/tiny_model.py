"""Engine test helper: a tiny model whose next-token distributions are not degenerate.

``models.tiny_dir()``'s model puts almost all probability on one token (its embeddings are
scaled ×40, so every sampled token is the argmax and seeds cannot matter). Engine tests need
real randomness, so :func:`diverse_tiny_dir` saves a copy with the embeddings scaled back by
:data:`DIVERSE_EMBED_SCALE` (mean entropy ≈ 3.5 nats, top token ≈ 0.7 probability). Built once
into the cache folder, atomically, like every other model.
"""

from __future__ import annotations

from pathlib import Path

from gonka_ray import constants
from gonka_ray.engine import models

DIVERSE_EMBED_SCALE = 0.25


def diverse_tiny_dir() -> Path:
    """Safetensors folder of the tiny model with non-degenerate sampling (see module doc)."""

    def build(tmp: Path) -> None:
        import torch

        model, tok = models.load_hf(constants.TINY_MODEL)
        with torch.no_grad():
            model.model.embed_tokens.weight.mul_(DIVERSE_EMBED_SCALE)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return models.atomic_build(constants.cache_dir() / "models" / "tiny-llama-diverse-v1", build)
