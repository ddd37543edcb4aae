"""What a participant's actors are built from: :class:`ParticipantSpec`, plain picklable data.

Each actor is built from its participant's spec (names, the participant's key seed, the genesis
bytes, which carry the rule parameters, and its local settings), so a restart
(``max_restarts``) rebuilds it from the same spec.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from gonka_ray import wire
from gonka_ray.actors.epoch_worker import PocSettings
from gonka_ray.config import EpochConfig
from gonka_ray.exceptions import ConfigError
from gonka_ray.ledger import epoch_app, inference_app
from gonka_ray.protocol.versions import Chain, chain_of


@dataclass(frozen=True)
class ParticipantSpec:
    """Everything a participant's actors need to (re)build themselves. Plain, picklable data."""

    network: str
    namespace: str
    name: str
    index: int  # place in the peer directory (the genesis position for a genesis participant)
    key_seed: bytes  # NOTE: the participant's own secret, handed only to its own actors
    genesis: bytes  # encoded LedgerGenesis
    model: str
    storage_dir: str
    adversary: str | None = None
    poc: PocSettings = field(default_factory=PocSettings)
    extra: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"  # the network's model dtype: picks the verification thresholds
    # host:port of every participant's peer endpoint, by directory index (None: unknown, not
    # dialed); the ledger's announced endpoints take over once the replica has synced
    peer_addresses: tuple[str | None, ...] = ()
    # the public keys by directory index when not just the genesis's (a joiner's spec: its own
    # place is past the genesis participants)
    peer_keys: tuple[bytes, ...] = ()
    # where its peer endpoint binds when not its own address's host (0.0.0.0 behind a NAT)
    peer_listen_host: str | None = None

    def actor_name(self, role: str, participant: str | None = None) -> str:
        return f"{self.network}.{participant or self.name}.{role}"

    @property
    def rules(self) -> wire.LedgerParams:
        """The rule parameters fixed in the genesis: the only copy a participant's actors read.

        Raises:
            ConfigError: the genesis carries none.
        """
        params = wire.decode(self.genesis, wire.LedgerGenesis).params
        if params is None:
            raise ConfigError("a participant's genesis must carry the rule parameters")
        return params

    @property
    def app_config(self) -> inference_app.InferenceAppConfig:
        """The lifecycle's parameters (the genesis's)."""
        p = self.rules
        return inference_app.InferenceAppConfig(
            price_per_token=p.price_per_token,
            expiry_blocks=p.expiry_blocks,
            vote_blocks=p.vote_blocks,
        )

    @property
    def chain(self) -> Chain:
        """The network's chain id and rule schedule (from the genesis)."""
        return chain_of(wire.decode(self.genesis, wire.LedgerGenesis))

    @property
    def epoch_app_config(self) -> epoch_app.EpochAppConfig:
        """The epoch parameters: the genesis's, with this participant's own PoC budget."""
        p = self.rules
        epochs = EpochConfig(
            epoch_blocks=p.epoch_blocks,
            poc_sprint_blocks=p.poc_sprint_blocks,
            poc_validation_blocks=p.poc_validation_blocks,
            epochs_to_max_reputation=p.epochs_to_max_reputation,
            reward_per_epoch=p.reward_per_epoch,
            weight_cap_share=p.weight_cap_share,
            poc_difficulty=p.poc_difficulty,
            poc_calibration_nonces=p.poc_calibration_nonces,
            poc_budget_s=self.poc.max_budget_s,
        )
        return epoch_app.EpochAppConfig(epoch=epochs, chain_id=self.chain.id)

    def epoch_seed(self, epoch: int) -> bytes:
        """This participant's secret seed for ``epoch`` (derived from its secret key seed)."""
        return hashlib.sha256(
            b"gonka_ray/epoch-seed/" + self.key_seed + epoch.to_bytes(8, "big")
        ).digest()
