"""The ``ray up`` YAMLs in ``clusters/`` pass Ray's own cluster-config checks, and the network
configs they start are valid and pin one participant per host/node type."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from gonka_ray.config import load_config

CLUSTERS = Path(__file__).resolve().parents[2] / "clusters"
# cluster YAML -> the network config its head starts with `gonka-ray up`
PAIRS = {"local.yaml": "local-network.yaml", "aws-gpu.yaml": "aws-gpu-network.yaml"}


def _ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_cluster_yaml_passes_rays_schema_and_validation(name: str) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTERS / name).read_text())
    jsonschema.validate(raw, _ray_schema())  # as written
    prepared = prepare_config(copy.deepcopy(raw))  # what `ray up` does before validating
    validate_config(prepared)
    assert prepared["cluster_name"].startswith("gonka-")


@pytest.mark.parametrize(("name", "network"), sorted(PAIRS.items()))
def test_cluster_starts_its_network_with_one_participant_per_resource(name, network) -> None:
    raw = yaml.safe_load((CLUSTERS / name).read_text())
    text = (CLUSTERS / name).read_text()
    config = load_config(CLUSTERS / network)
    head = " ".join(raw["head_start_ray_commands"])
    assert f"gonka-ray up ~/gonka_ray/clusters/{network}" in head and "--address auto" in head
    assert any("make install" in c for c in raw["setup_commands"])
    for p in config.participants:
        assert p.resources == {f"participant:{p.name}": 1}, p.name
        # the cluster offers that resource: a node type's resources or a host's start command
        assert f"participant:{p.name}" in text or re.search(rf"\b{p.name}\b", text), p.name
    if raw["provider"]["type"] == "aws":
        types = raw["available_node_types"]
        offered = {r for t in types.values() for r in t.get("resources", {})}
        assert offered == {f"participant:{p.name}" for p in config.participants}
        tps = {p.name: config.engine_for(p.name).tensor_parallel_size for p in config.participants}
        assert set(tps.values()) == {1, 4}  # per-participant tensor parallelism
        assert all(config.engine_for(p.name).kind == "vllm" for p in config.participants)
        assert all(config.engine_for(p.name).device == "cuda" for p in config.participants)
