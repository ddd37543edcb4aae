"""gonka_ray: decentralized, verifiable LLM inference on Ray.

The public API is what this module exports.

NOTE: the exports load on first use (PEP 562 ``__getattr__``), so importing a submodule, say the
pure protocol rules, does not pull in the SDK and through it the actors and the engine.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gonka_ray.config import NetworkConfig, load_config
    from gonka_ray.crypto import KeyPair
    from gonka_ray.exceptions import GonkaError
    from gonka_ray.sdk import NetworkClient, connect, openai_client

__version__ = "0.1.0"

_EXPORTS = {  # public name -> module that defines it
    "GonkaError": "gonka_ray.exceptions",
    "KeyPair": "gonka_ray.crypto",
    "NetworkClient": "gonka_ray.sdk",
    "NetworkConfig": "gonka_ray.config",
    "connect": "gonka_ray.sdk",
    "load_config": "gonka_ray.config",
    "openai_client": "gonka_ray.sdk",
}

__all__ = [
    "GonkaError",
    "KeyPair",
    "NetworkClient",
    "NetworkConfig",
    "__version__",
    "connect",
    "load_config",
    "openai_client",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gonka_ray' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
