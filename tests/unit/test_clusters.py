"""The ``ray up`` YAMLs in ``clusters/`` pass Ray's own cluster-config checks, and the network
configs they start are valid and pin one participant per host/node type."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from gonka_ray.config import load_config

CLUSTERS = Path(__file__).resolve().parents[2] / "clusters"
# cluster YAML -> the network config its head starts with `gonka-ray up`
PAIRS = {"local.yaml": "local-network.yaml", "aws-gpu.yaml": "aws-gpu-network.yaml"}
# a participant's own cluster (a federation node) -> the federation's network config
NODES = {"participant-gpu.yaml": "federation-network.yaml"}


def _ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.mark.parametrize("name", sorted([*PAIRS, *NODES]))
def test_cluster_yaml_passes_rays_schema_and_validation(name: str) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTERS / name).read_text())
    jsonschema.validate(raw, _ray_schema())  # as written
    prepared = prepare_config(copy.deepcopy(raw))  # what `ray up` does before validating
    validate_config(prepared)
    assert prepared["cluster_name"].startswith("gonka-")


def _hosts_by_participant(raw: dict) -> dict[str, list[str]]:
    """Participant name -> the hosts (local provider) or node types (cloud) offering its resource.

    Local provider: the head's ``ray start --resources`` and the workers' IP -> participant table
    in ``worker_start_ray_commands``; cloud: each node type's ``resources``.
    """
    offered: dict[str, list[str]] = {}
    if raw["provider"]["type"] == "local":
        head = " ".join(raw["head_start_ray_commands"])
        for name in re.findall(r"--resources='\{\"participant:(\w+)\": 1\}'", head):
            offered.setdefault(name, []).append(raw["provider"]["head_ip"])
        worker = " ".join(raw["worker_start_ray_commands"])
        assert '--resources="{\\"participant:$P\\": 1}"' in worker  # workers start with their $P
        for ip, name in re.findall(r"([\d.]+)\) P=(\w+) ;;", worker):
            offered.setdefault(name, []).append(ip)
    else:
        for node_type, spec in raw["available_node_types"].items():
            for res in spec.get("resources", {}):
                name = res.removeprefix("participant:")
                offered.setdefault(name, []).append(node_type)
    return offered


def test_hosts_by_participant_sees_a_wrong_table() -> None:
    raw = yaml.safe_load((CLUSTERS / "local.yaml").read_text())
    good = _hosts_by_participant(raw)
    raw["worker_start_ray_commands"] = [
        c.replace("P=carol", "P=bob") for c in raw["worker_start_ray_commands"]
    ]
    bad = _hosts_by_participant(raw)
    assert "carol" in good and "carol" not in bad and len(bad["bob"]) == 2


@pytest.mark.parametrize(("name", "network"), sorted(PAIRS.items()))
def test_cluster_starts_its_network_with_one_participant_per_resource(name, network) -> None:
    raw = yaml.safe_load((CLUSTERS / name).read_text())
    config = load_config(CLUSTERS / network)
    head = " ".join(raw["head_start_ray_commands"])
    assert f"gonka-ray up ~/gonka_ray/clusters/{network}" in head and "--address auto" in head
    assert any("make install" in c for c in raw["setup_commands"])
    # every `ray start` hands Serve's proxy the body limit (gonka_ray.serve.body_limit)
    from gonka_ray.serve.body_limit import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    commands = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    starts = [c for c in commands if "ray start" in c]
    assert starts and all(f"{PROXY_CALLBACK_ENV}={PROXY_CALLBACK}" in c for c in starts)
    offered = _hosts_by_participant(raw)
    # every participant's resource is offered by exactly one host or node type, and nothing else
    assert sorted(offered) == sorted(p.name for p in config.participants)
    assert all(len(hosts) == 1 for hosts in offered.values()), offered
    for p in config.participants:
        assert p.resources == {f"participant:{p.name}": 1}, p.name
    if raw["provider"]["type"] == "local":
        hosts = sorted(h for hs in offered.values() for h in hs)
        assert hosts == sorted([raw["provider"]["head_ip"], *raw["provider"]["worker_ips"]])
    if raw["provider"]["type"] == "aws":
        tps = {p.name: config.engine_for(p.name).tensor_parallel_size for p in config.participants}
        assert set(tps.values()) == {1, 4}  # per-participant tensor parallelism
        assert all(config.engine_for(p.name).kind == "vllm" for p in config.participants)
        assert all(config.engine_for(p.name).device == "cuda" for p in config.participants)


@pytest.mark.parametrize(("name", "network"), sorted(NODES.items()))
def test_a_participants_own_cluster_runs_one_node_of_the_federation(
    name, network, tmp_path
) -> None:
    raw = yaml.safe_load((CLUSTERS / name).read_text())
    config = load_config(CLUSTERS / network)
    head = " ".join(raw["head_start_ray_commands"])
    (node,) = [c for c in raw["head_start_ray_commands"] if "gonka-ray" in c]
    (participant,) = re.findall(r"PARTICIPANT=(\w+);", head)
    # the command really runs `node` (key in place), or `join` when PEERS is set
    argv = _run_node_command(tmp_path / "node", node, peers="")
    assert argv[:2] == ["node", str(tmp_path / "node/gonka_ray/clusters" / network)], argv
    joined = _run_node_command(tmp_path / "join", node, peers="198.51.100.2:7700")
    assert joined[0] == "join" and joined[-4:] == [
        "--peers",
        "198.51.100.2:7700",
        "--peer-address",
        "203.0.113.9:7700",  # this machine's public address (from the instance metadata)
    ], joined
    for args, home in ((argv, tmp_path / "node"), (joined, tmp_path / "join")):
        opts = " ".join(args)
        for option in (
            f"--participant {participant}",
            f"--key {home}/participant.key",
            "--address auto",
            "--peer-listen-host 0.0.0.0",
        ):
            assert option in opts, (option, opts)
    assert participant in {p.name for p in config.participants}
    # strangers: every participant names its own public key and where its endpoint listens
    assert all(p.public_key and p.peer_address for p in config.participants)
    assert len({p.public_key for p in config.participants}) == len(config.participants)
    assert raw["max_workers"] == 0 and not raw["worker_start_ray_commands"]  # one machine
    from gonka_ray.serve.body_limit import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    starts = [c for c in raw["head_start_ray_commands"] if "ray start" in c]
    assert starts and all(f"{PROXY_CALLBACK_ENV}={PROXY_CALLBACK}" in c for c in starts)


def _run_node_command(home: Path, command: str, *, peers: str) -> list[str]:
    """Run a cluster YAML's node start command under a fake home (a stand-in ``gonka-ray``
    that records its arguments, a stand-in ``curl`` for the instance metadata) with ``PEERS``
    set to ``peers``; returns the recorded arguments."""
    fake = home / "gonka_ray" / ".venv" / "bin"
    fake.mkdir(parents=True)
    tools = home / "tools"
    tools.mkdir()
    for path, body in (
        (fake / "gonka-ray", 'echo "$@" > "$HOME/argv"'),
        (tools / "curl", "echo 203.0.113.9"),
    ):
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    (home / "participant.key").write_text("stand-in")
    assert "PEERS=;" in command
    env = {"HOME": str(home), "PATH": f"{tools}:/usr/bin:/bin"}
    command = command.replace("PEERS=;", f"PEERS={peers};")
    subprocess.run(["sh", "-c", command], env=env, check=True, timeout=30)
    argv = home / "argv"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # nohup ... & runs it in the background
        text = argv.read_text() if argv.exists() else ""
        if text.endswith("\n"):
            return text.split()
        time.sleep(0.05)
    raise AssertionError(f"the command never ran gonka-ray: {command}")
