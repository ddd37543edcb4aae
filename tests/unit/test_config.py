from __future__ import annotations

import pytest

from gonka_ray import constants
from gonka_ray.config import demo_config, load_config, parse_config
from gonka_ray.exceptions import ConfigError

GOOD = """
name: testnet
participants:
  - {name: alice, weight: 300}
  - {name: bob, weight: 100, adversary: int4}
  - {name: carol}
  - {name: dave, engine: {kind: fake}}
engine: {kind: transformers, max_batch_size: 4}
epoch: {epoch_blocks: 100, poc_sprint_blocks: 10, poc_validation_blocks: 10}
"""


def test_yaml_loads_with_defaults_and_overrides(tmp_path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert [p.name for p in cfg.participants] == ["alice", "bob", "carol", "dave"]
    assert cfg.participants[1].adversary == "int4"
    assert cfg.engine_for("dave").kind == "fake"
    assert cfg.engine_for("alice").max_batch_size == 4
    assert cfg.max_faulty == 1
    assert cfg.ledger.expiry_blocks == constants.LEDGER_EXPIRY_BLOCKS


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"participants": []}, "participants"),
        ({"participants": [{"name": "a"}], "bogus": 1}, "bogus"),
        ({"participants": [{"name": "a"}, {"name": "a"}]}, "repeated: a"),
        ({"participants": [{"name": "a b"}]}, "participants.0.name"),
        ({"participants": [{"name": "a", "weight": -1}]}, "participants.0.weight"),
        (
            {"participants": [{"name": "a"}], "engine": {"tensor_parallel_size": 0}},
            "tensor_parallel",
        ),
        ({"participants": [{"name": "a"}], "engine": {"kind": "tgi"}}, "engine.kind"),
        ({"participants": [{"name": "a", "adversary": "nice"}]}, "adversary"),
        ({"participants": [{"name": "a"}], "epoch": {"epoch_blocks": 10}}, "room for inference"),
        (
            {"participants": [{"name": "a"}], "ledger": {"min_block_interval_ms": 1000}},
            "below half of view_timeout_ms",
        ),
    ],
)
def test_bad_values_name_the_field(data, needle) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert needle in str(info.value)


def test_yaml_errors_are_typed(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("participants: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(top)


def test_demo_config() -> None:
    cfg = demo_config(4)
    assert len(cfg.participants) == 4 and cfg.max_faulty == 1
    with pytest.raises(ConfigError):
        cfg.engine_for("nobody")


def test_env_parsing(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GONKA_TORCH_THREADS", "3")
    assert constants.env("GONKA_TORCH_THREADS") == 3
    monkeypatch.setenv("GONKA_TORCH_THREADS", "-1")
    with pytest.raises(ConfigError, match="GONKA_TORCH_THREADS"):
        constants.env("GONKA_TORCH_THREADS")
    monkeypatch.setenv("GONKA_SKIP_VLLM", "maybe")
    with pytest.raises(ConfigError):
        constants.env("GONKA_SKIP_VLLM")
    with pytest.raises(ConfigError):
        constants.env("GONKA_NOT_DECLARED")
    monkeypatch.setenv("GONKA_CACHE_DIR", str(tmp_path / "c"))
    assert constants.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
