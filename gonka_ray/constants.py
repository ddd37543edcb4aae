"""Defaults in one place, each with its unit in the name, plus ``GONKA_*`` environment parsing.

Every tunable the code reads from the environment is declared in :data:`ENV_VARS` and parsed by
:func:`env`; a bad value raises :class:`~gonka_ray.exceptions.ConfigError` naming the variable.
Nothing here reads the environment at import time, so tests can set variables freely.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gonka_ray.exceptions import ConfigError

# --- wire ----------------------------------------------------------------------------------
WIRE_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # largest envelope we decode (payload responses)
WIRE_MAX_STR_CHARS = 1024 * 1024  # default cap on a string field
WIRE_MAX_BYTES_LEN = 8 * 1024 * 1024  # default cap on a bytes field
WIRE_MAX_LIST_LEN = 65_536  # default cap on list fields
WIRE_SIGNATURE_DOMAIN = b"gonka_ray/v1/"  # domain tag prefixed to every signed byte string
WIRE_CHAIN_ID_MAX_CHARS = 64  # a network's chain id
LEDGER_MAX_BLOCK_TXS = 100_000  # hard cap on transactions in one block (config caps it lower)
LEDGER_MAX_VALIDATORS = 1_024  # validators in one set (wire cap on indexes and certificates)
POC_MAX_CLAIMED_NONCES = 65_536  # passing nonces in one PoC claim (about 0.5 MiB)
# The protocol rules version a new network starts with (gonka_ray/protocol/versions.py lists them;
# a genesis names its starting version and any scheduled upgrades by height).
PROTOCOL_VERSION = 2

# --- requests ------------------------------------------------------------------------------
REQUEST_MAX_AGE_S = 60.0  # a signed request older than this is rejected
# public lookups (GET /v1/inferences/{id}, /v1/explorer) per client address: a ledger read each
LOOKUP_RATE_PER_S = 10.0
LOOKUP_BURST = 30
REQUEST_MAX_SKEW_AHEAD_S = 30.0  # ... and one dated further in the future too
DEFAULT_TOP_K_LOGPROBS = 5  # k of the verification artifact
MAX_TOP_K_LOGPROBS = 20  # the OpenAI API's top_logprobs limit
DEFAULT_MAX_TOKENS = 128  # completion tokens when the client names none
DEFAULT_PRICE_PER_TOKEN = 1  # integer units per prompt or completion token

# --- ledger --------------------------------------------------------------------------------
NETWORK_STOP_DRAIN_TIMEOUT_S = 30.0  # graceful stop: the most each drain or flush step waits
LEDGER_BLOCK_MAX_TXS = 2_000  # transactions per block
LEDGER_BLOCK_INTERVAL_MS = 20  # leader waits this long to batch before proposing
LEDGER_VIEW_TIMEOUT_MS = 2_000  # view change when no progress for this long
LEDGER_EMPTY_BLOCK_INTERVAL_MS = 100  # idle leader proposes an empty block after this (0 = off)
LEDGER_MIN_BLOCK_INTERVAL_MS = (
    60  # a leader waits this long in its view before any proposal (pacing)
)
LEDGER_EXPIRY_BLOCKS = 600  # a Start with no Finish in this many blocks is refunded

# --- epochs and reputation -------------------------------------------------------------------
EPOCH_BLOCKS = 600  # blocks per epoch
EPOCHS_TO_MAX_REPUTATION = 30  # reputation reaches 100 after this many clean epochs
WEIGHT_CAP_SHARE = 0.25  # no participant's weight exceeds this share of the total
VALIDATION_FPR = 0.05  # assumed false-positive rate of one check (status rule)
INVALID_PROBABILITY_THRESHOLD = 1e-6  # fpr ** consecutive_invalid below this => INVALID

# --- engines -------------------------------------------------------------------------------
DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-llama"
ENGINE_MAX_BATCH_SIZE = 8  # concurrent sequences per engine step (transformers engine)


@dataclass(frozen=True)
class EnvVar:
    """One ``GONKA_*`` variable: its parser, default and meaning."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be one of 1/0, true/false, yes/no, on/off")


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gonka_ray"


ENV_VARS: dict[str, EnvVar] = {
    v.name: v
    for v in [
        EnvVar("GONKA_CACHE_DIR", Path, None, "converted models and other caches"),
        EnvVar("GONKA_LOG_LEVEL", _log_level, "INFO", "logging level"),
        EnvVar("GONKA_TORCH_THREADS", _non_negative_int, 0, "torch threads per engine, 0 = auto"),
        EnvVar("GONKA_MAX_BATCH_SIZE", _positive_int, ENGINE_MAX_BATCH_SIZE, "engine batch size"),
        EnvVar("GONKA_NAMESPACE", str, "gonka_ray", "Ray namespace of the network's actors"),
        EnvVar("GONKA_SKIP_VLLM", _bool, False, "skip vLLM tests even when vllm imports"),
        EnvVar(
            "GONKA_LOOPBACK",
            _bool,
            True,
            "drivers joining a running Ray bind 127.0.0.1 (one host); 0 on a multi-host cluster",
        ),
    ]
}


def env(name: str) -> Any:
    """Return the parsed value of ``GONKA_*`` variable ``name`` (its default when unset).

    Raises:
        ConfigError: the variable is set to a value its parser rejects, or is undeclared.
    """
    spec = ENV_VARS.get(name)
    if spec is None:
        raise ConfigError(f"{name} is not a declared GONKA_* variable", field=name)
    raw = os.environ.get(name)
    if raw is None:
        return spec.default
    try:
        return spec.parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}={raw!r} is invalid: {exc}", field=name) from None


def cache_dir() -> Path:
    """The cache directory (``GONKA_CACHE_DIR`` or ``~/.cache/gonka_ray``), created if missing."""
    path = env("GONKA_CACHE_DIR") or _default_cache_dir()
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
