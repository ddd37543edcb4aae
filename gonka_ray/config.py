"""Network configuration: one pydantic model, loadable from YAML, strict at every level.

``NetworkConfig`` describes a whole network: its participants, the model they serve, the engine
settings, the ledger and epoch parameters and pricing. Unknown keys are errors
(``extra="forbid"``); :func:`load_config` turns pydantic's errors into one
:class:`~gonka_ray.exceptions.ConfigError` that lists each bad field by its dotted path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gonka_ray.constants import (
    DEFAULT_MODEL,
    DEFAULT_PRICE_PER_TOKEN,
    ENGINE_MAX_BATCH_SIZE,
    EPOCH_BLOCKS,
    EPOCHS_TO_MAX_REPUTATION,
    LEDGER_BLOCK_INTERVAL_MS,
    LEDGER_BLOCK_MAX_TXS,
    LEDGER_EMPTY_BLOCK_INTERVAL_MS,
    LEDGER_EXPIRY_BLOCKS,
    LEDGER_MIN_BLOCK_INTERVAL_MS,
    LEDGER_VIEW_TIMEOUT_MS,
    WEIGHT_CAP_SHARE,
)
from gonka_ray.exceptions import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


EngineKind = Literal["transformers", "vllm", "fake"]
AdversaryKind = Literal[
    "truncate_layers_2",
    "truncate_layers_6",
    "int8",
    "int4",
    "wrong_temperature",
    "greedy",
    "ignore_seed",
    "replace_1_in_64",
    "launder",
    "drop_system",
    "truncate_output",
    "withhold_payload",
]


class EngineConfig(_Strict):
    """How a participant's MLNode runs its model."""

    kind: EngineKind = Field("transformers", description="engine implementation")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="weights and activations dtype (auto = the engine's choice)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="torch device")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="vLLM tensor parallel GPUs")
    pipeline_parallel_size: int = Field(1, ge=1, le=64, description="vLLM pipeline stages")
    max_model_len: int = Field(2048, ge=16, le=1_048_576, description="context length in tokens")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="vLLM GPU share")
    max_batch_size: int = Field(
        ENGINE_MAX_BATCH_SIZE, ge=1, le=1024, description="concurrent sequences per step"
    )
    torch_threads: int = Field(0, ge=0, le=1024, description="torch threads, 0 = auto")
    fake_token_delay_ms: float = Field(
        0.0, ge=0.0, le=10_000.0, description="FakeEngine only: service time per token"
    )


class ModelConfig(_Strict):
    """Which model the network serves."""

    name: str = Field(DEFAULT_MODEL, min_length=1, max_length=128, description="model id")
    path: str | None = Field(None, description="local model folder; default: built-in model")


class LedgerConfig(_Strict):
    """Replica group parameters (DESIGN §6)."""

    block_max_txs: int = Field(LEDGER_BLOCK_MAX_TXS, ge=1, le=100_000)
    block_interval_ms: int = Field(LEDGER_BLOCK_INTERVAL_MS, ge=0, le=60_000)
    view_timeout_ms: int = Field(LEDGER_VIEW_TIMEOUT_MS, ge=10, le=600_000)
    empty_block_interval_ms: int = Field(
        LEDGER_EMPTY_BLOCK_INTERVAL_MS,
        ge=0,
        le=600_000,
        description="an idle leader proposes an empty block after this long in its view, so "
        "committed height (the epoch clock) advances on an idle chain; 0 disables",
    )
    min_block_interval_ms: int = Field(
        LEDGER_MIN_BLOCK_INTERVAL_MS,
        ge=0,
        le=600_000,
        description="a leader waits about this long in its view (whole consensus ticks of "
        "block_interval_ms; less than one tick is off) before proposing a block, so that "
        "transactions arriving meanwhile share it (fewer blocks, each a round of signed "
        "messages on every replica); must stay below half the view timeout; 0 proposes as soon "
        "as the previous block has its QC",
    )
    expiry_blocks: int = Field(LEDGER_EXPIRY_BLOCKS, ge=1)
    storage_dir: str | None = Field(None, description="SQLite folder; default: a temp dir")
    on_corrupt_store: Literal["refuse", "resync"] = Field(
        "refuse",
        description="a replica whose SQLite file is damaged: 'refuse' to start (CorruptStore "
        "says which file and how), or 'resync': rename the file to <name>.corrupt-<time>, start "
        "empty and snapshot-sync from the peers",
    )

    @model_validator(mode="after")
    def _pacing_below_the_view_timeout(self) -> LedgerConfig:
        # NOTE: a leader that waits as long as its followers' view timeout never gets a block
        # certified: every view would end in a timeout.
        if self.min_block_interval_ms * 2 >= self.view_timeout_ms:
            raise ValueError(
                f"min_block_interval_ms ({self.min_block_interval_ms}) must be below half of "
                f"view_timeout_ms ({self.view_timeout_ms})"
            )
        return self


class EpochConfig(_Strict):
    """Epoch, Proof-of-Compute and reward parameters (DESIGN §4–§5)."""

    epoch_blocks: int = Field(EPOCH_BLOCKS, ge=4, description="blocks per epoch")
    # NOTE: ~8 blocks/s on an idle chain (heartbeats); a phase must fit building the PoC model,
    # the sprint and a commit on a loaded machine, so a few seconds at least.
    poc_sprint_blocks: int = Field(80, ge=1, description="blocks of the PoC sprint phase")
    poc_validation_blocks: int = Field(48, ge=1, description="blocks of PoC validation")
    epochs_to_max_reputation: int = Field(EPOCHS_TO_MAX_REPUTATION, ge=1)
    reward_per_epoch: int = Field(1_000_000, ge=0, description="minted per epoch, in units")
    weight_cap_share: float = Field(WEIGHT_CAP_SHARE, gt=0.0, le=1.0)
    poc_difficulty: float = Field(0.05, gt=0.0, le=1.0, description="share of nonces that pass")
    poc_calibration_nonces: int = Field(
        4096,
        ge=64,
        le=1_000_000,
        description="public nonces that fix the PoC threshold (fewer: faster, coarser difficulty)",
    )
    poc_budget_s: float = Field(
        2.0, gt=0.0, le=3600.0, description="most seconds of compute in one PoC sprint"
    )

    @model_validator(mode="after")
    def _phases_fit(self) -> EpochConfig:
        if self.poc_sprint_blocks + self.poc_validation_blocks >= self.epoch_blocks:
            raise ValueError(
                "poc_sprint_blocks + poc_validation_blocks must leave room for inference "
                f"in an epoch of {self.epoch_blocks} blocks"
            )
        return self


class PricingConfig(_Strict):
    price_per_token: int = Field(DEFAULT_PRICE_PER_TOKEN, ge=0, description="units per token")
    genesis_client_balance: int = Field(10_000_000, ge=0, description="demo client funds")


class ParticipantConfig(_Strict):
    """One participant: a key, a weight, and optionally its own engine or an adversary role."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    weight: int = Field(100, ge=0, description="initial weight until the first PoC")
    engine: EngineConfig | None = Field(None, description="overrides the network engine")
    adversary: AdversaryKind | None = Field(None, description="demo/test cheater strategy")
    poc_max_nonces: int | None = Field(
        None,
        ge=1,
        description="cap on PoC nonces tried per sprint (stands in for a slower machine)",
    )
    resources: dict[str, float] = Field(default_factory=dict, description="Ray resources")
    public_key: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description=(
            "hex Ed25519 public key; its secret key stays with the participant (gonka-ray node "
            "--key). None: a demo key derived from the network's name and seed, which anyone "
            "holding the config can derive (local networks only)"
        ),
    )
    peer_address: str | None = Field(
        None,
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$",
        description="host:port of the participant's peer endpoint (default: a free loopback port)",
    )


class NetworkConfig(_Strict):
    """A whole network (DESIGN §1)."""

    name: str = Field("gonka", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    participants: list[ParticipantConfig] = Field(min_length=1)
    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    epoch: EpochConfig = Field(default_factory=EpochConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    seed: int = Field(0, ge=0, lt=2**63, description="seed for demo keys and simulations")

    @field_validator("participants")
    @classmethod
    def _unique_names(cls, value: list[ParticipantConfig]) -> list[ParticipantConfig]:
        names = [p.name for p in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"participant names must be unique; repeated: {', '.join(dupes)}")
        if sum(p.weight for p in value) <= 0:
            raise ValueError("total participant weight must be positive")
        return value

    def engine_for(self, participant: str) -> EngineConfig:
        """The engine a participant runs: its override, else the network's."""
        for p in self.participants:
            if p.name == participant:
                return p.engine or self.engine
        raise ConfigError(f"no participant named {participant!r}", field="participants")

    @property
    def max_faulty(self) -> int:
        """f: byzantine replicas tolerated by n = len(participants) (n ≥ 3f + 1)."""
        return (len(self.participants) - 1) // 3


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {path}: {err['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, *, source: str = "config") -> NetworkConfig:
    """Validate a plain dict into a :class:`NetworkConfig`.

    Raises:
        ConfigError: listing every invalid field by dotted path.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return NetworkConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source} is invalid:\n{_format_errors(exc)}") from None


def load_config(path: str | Path) -> NetworkConfig:
    """Load a YAML file into a :class:`NetworkConfig`.

    Raises:
        ConfigError: missing file, YAML syntax error, or invalid fields.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_config(data, source=str(path))


def demo_config(n_participants: int = 4, **overrides: Any) -> NetworkConfig:
    """A network of ``n_participants`` named p0..pN-1 with equal weight (for demos and tests)."""
    data: dict[str, Any] = {
        "participants": [{"name": f"p{i}", "weight": 100} for i in range(n_participants)]
    }
    data.update(overrides)
    return parse_config(data, source="demo_config")
