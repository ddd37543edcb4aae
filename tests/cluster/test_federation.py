"""A local federation: four participants, each its own Ray cluster in its own process.

They share only the network config (public keys and peer addresses; each secret key stays in its
node's directory); requests sent to one participant's HTTP front door are
executed by others (over the peer transport) and the records reach every participant's
ledger. The SDK attaches to its own participant's cluster and is served there. Another
participant's actors cannot be looked up from a participant's Ray (the
clusters are distinct: their GCS addresses differ). A fifth participant, not in the genesis,
joins the running network, earns weight and works. SIGTERM stops each node gracefully.
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

        # a newcomer outside the genesis joins the running network (gonka-ray join): it
        # registers through a peer, syncs, serves its front door at once, and with the weight
        # it earns in the next epoch's Proof of Compute it executes and validates others' work
        fed.join("p4")
        nodes = fed.wait_ready()
        assert len({n.gcs_address for n in nodes.values()}) == 5
        first = chat(nodes["p4"].url, "from the newcomer")
        assert wait_for(lambda: record(nodes["p1"].url, first["inference_id"]), 60)
        newcomer = wait_for(lambda: weighted(nodes["p0"].url, "p4"), JOINER_WEIGHT_TIMEOUT_S)
        assert newcomer is not None, explorer_row(nodes["p0"].url, "p4")
        assert newcomer["status"] in ("RAMPING", "ACTIVE"), newcomer

        def worked() -> dict | None:
            for i in range(8):
                chat(nodes[f"p{i % 4}"].url, f"after the join {i}")
            row = explorer_row(nodes["p2"].url, "p4")
            return row if row["served"] > 0 and row["validations_done"] > 0 else None

        row = wait_for(worked, JOINER_WORK_TIMEOUT_S)
        assert row is not None, explorer_row(nodes["p2"].url, "p4")
    finally:
        codes = fed.stop()
    assert codes == dict.fromkeys(["p0", "p1", "p2", "p3", "p4"], 0), codes


JOINER_WEIGHT_TIMEOUT_S = 150.0  # the next epoch boundary (~35 s epochs) and its settlement
JOINER_WORK_TIMEOUT_S = 150.0


def wait_for(probe, timeout_s: float):
    """The first true answer of ``probe()`` within ``timeout_s`` (polled), or None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(1.0)
    return None


def explorer_row(url: str, name: str) -> dict:
    rows = httpx.get(url + "v1/explorer", timeout=30).json()["participants"]
    return next(r for r in rows if r["name"] == name)


def weighted(url: str, name: str) -> dict | None:
    row = explorer_row(url, name)
    return row if row["weight"] > 0 else None
