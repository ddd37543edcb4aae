"""gonka_ray: decentralized, verifiable LLM inference on Ray.

The public API is what this module exports.
"""

from gonka_ray.config import NetworkConfig, load_config
from gonka_ray.crypto import KeyPair
from gonka_ray.exceptions import GonkaError

__version__ = "0.1.0"
__all__ = ["GonkaError", "KeyPair", "NetworkConfig", "__version__", "load_config"]
