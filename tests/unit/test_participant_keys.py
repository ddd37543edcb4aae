"""Which key a participant runs with: its own key file when the config names its public key
(checked to match), the demo key the config's seed derives only when it names none."""

from __future__ import annotations

import pytest

from gonka_ray import crypto
from gonka_ray.demo import demo_network_config
from gonka_ray.exceptions import ConfigError
from gonka_ray.network import build_genesis, own_key, participant_key, public_key_of


def test_a_configured_public_key_needs_its_own_secret_key() -> None:
    config = demo_network_config(model="fake", cheat=None, engine="fake")
    mine = crypto.KeyPair.from_seed("p1's own key")
    parts = [
        p.model_copy(update={"public_key": mine.public_key.hex()}) if p.name == "p1" else p
        for p in config.participants
    ]
    config = config.model_copy(update={"participants": parts})
    assert public_key_of(config, "p1") == mine.public_key
    genesis = {g.name: g.public_key for g in build_genesis(config).participants}
    assert genesis["p1"] == mine.public_key  # the genesis names the participant's own key
    assert own_key(config, "p1", {"p1": mine}) is mine
    with pytest.raises(ConfigError, match="give its key file"):
        own_key(config, "p1")  # the demo key would not be its key
    with pytest.raises(ConfigError, match="not its configured public key"):
        own_key(config, "p1", {"p1": crypto.KeyPair.from_seed("someone else")})
    # a participant without a configured public key runs with the derived demo key
    assert own_key(config, "p0").public_key == participant_key(config, "p0").public_key
