"""gonka_ray: decentralized, verifiable LLM inference on Ray.

The public API is what this module exports.
"""

from gonka_ray.config import NetworkConfig, load_config
from gonka_ray.crypto import KeyPair
from gonka_ray.exceptions import GonkaError
from gonka_ray.sdk import NetworkClient, connect, openai_client

__version__ = "0.1.0"
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
