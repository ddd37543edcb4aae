"""A local federation: four participants, each its own Ray cluster in its own process.

They share only the network config (public keys and peer addresses; each secret key stays in its
node's directory); requests sent to one participant's HTTP front door are
executed by others (over the peer transport) and the records reach every participant's
ledger. The SDK attaches to its own participant's cluster and is served there. Another
participant's actors cannot be looked up from a participant's Ray (the
clusters are distinct: their GCS addresses differ). SIGTERM stops each node gracefully. (A
participant joining a running federation: ``tests/cluster/test_network_demo.py``.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from gonka_ray.demo import demo_network_config
from gonka_ray.federation import LocalFederation
from gonka_ray.network import participant_key

API_KEY = "sk-federation-test"
PROBE = """
import sys, ray, gonka_ray
ray.init(address=sys.argv[1], namespace=sys.argv[2], log_to_driver=False)
for name in sys.argv[3:]:
    try:
        ray.get_actor(name)
        print(name, "found")
    except ValueError:
        print(name, "missing")
client = gonka_ray.connect(namespace=sys.argv[2])  # the SDK attaches to its own participant
done = client.chat_sync([{"role": "user", "content": "sdk"}], max_tokens=2).done
print("sdk", ",".join(client.participant_names), done.completion_tokens)
"""


def chat(url: str, content: str) -> dict:
    r = httpx.post(
        url + "v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": content}], "max_tokens": 3},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r.json()


def record(url: str, inference_id: str) -> dict | None:
    r = httpx.get(
        url + f"v1/inferences/{inference_id}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    return r.json() if r.status_code == 200 else None


@pytest.mark.timeout(600)
def test_four_participants_in_four_ray_clusters_serve_and_agree(tmp_path) -> None:
    config = demo_network_config(model="fake", cheat=None, engine="fake")
    config = config.model_copy(update={"name": "fedtest"})
    fed = LocalFederation(config, tmp_path, api_keys={API_KEY: 0})
    # each runs with a key of its own: the shared config holds only public keys, not the ones
    # its seed would derive
    shared = fed.config.participants
    assert all(p.public_key != participant_key(config, p.name).public_key.hex() for p in shared)
    try:
        fed.start()
        nodes = fed.wait_ready()
        assert sorted(nodes) == ["p0", "p1", "p2", "p3"]
        assert len({n.gcs_address for n in nodes.values()}) == 4  # four separate clusters
        assert len({n.pid for n in nodes.values()}) == 4

        answers = [chat(nodes["p0"].url, f"q{i}") for i in range(4)]
        ids = [a["inference_id"] for a in answers]
        for name in ("p1", "p2", "p3"):  # every participant's ledger has every record
            deadline = time.monotonic() + 60
            recs = [record(nodes[name].url, i) for i in ids]
            while not all(r and r["status"] != "started" for r in recs):
                assert time.monotonic() < deadline, (name, recs)
                time.sleep(0.5)
                recs = [record(nodes[name].url, i) for i in ids]
            executors = {r["executor_name"] for r in recs}
            assert executors <= {"p1", "p2", "p3"}, executors  # never p0's own executor

        # from p0's Ray cluster, p0's actors are there and nobody else's are
        own = [f"fedtest.p0.{role}" for role in ("executor", "ledger")]
        others = [f"fedtest.p{i}.{role}" for i in (1, 2, 3) for role in ("executor", "ledger")]
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, nodes["p0"].gcs_address, "gonka_ray", *own, *others],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        )
        seen = dict(line.split()[:2] for line in probe.stdout.splitlines() if " " in line)
        assert {n: seen.get(n) for n in own} == dict.fromkeys(own, "found"), probe.stderr[-2000:]
        assert {n: seen.get(n) for n in others} == dict.fromkeys(others, "missing")
        assert seen.get("sdk") == "p0", probe.stdout  # only its own participant, and it serves
        assert "sdk p0 2" in probe.stdout.splitlines(), probe.stdout
    finally:
        codes = fed.stop()
    assert codes == dict.fromkeys(["p0", "p1", "p2", "p3"], 0), codes
