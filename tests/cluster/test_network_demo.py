"""The demo scenario (a local federation, protocol only: the fake engine, a cheater sampling at
the wrong temperature, a newcomer joining),
and the transport agent's first token on the shared loopback Ray."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gonka_ray import crypto, wire
from gonka_ray.demo import demo_network_config
from gonka_ray.network import launch, participant_key, wait_ready
from gonka_ray.sdk import Client

REQUESTS = 80  # half before the newcomer joins, half after
DEMO_TIMEOUT_S = 780


@pytest.mark.timeout(900)
def test_demo_federation_catches_the_cheater_and_a_newcomer_joins(tmp_path: Path) -> None:
    # NOTE: `gonka-ray demo` in a child process: the demo attaches to p0's Ray cluster, which a
    # process already connected to the tests' Ray cannot do.
    results = tmp_path / "demo.json"
    epoch = ("epoch_blocks=150", "poc_sprint_blocks=44", "poc_validation_blocks=28")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gonka_ray.cli",
            "demo",
            "--model",
            "fake",
            "--engine",
            "fake",
            "--cheat",
            "wrong_temperature",
            "--requests",
            str(REQUESTS),
            "--max-tokens",
            "8",
            "--results",
            str(results),
            *[a for e in epoch for a in ("--epoch", e)],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        stdout, stderr = proc.communicate(timeout=DEMO_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # SIGTERM: the demo stops its nodes
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=120)
        raise AssertionError(f"the demo ran over {DEMO_TIMEOUT_S} s:\n{stdout[-5000:]}") from None
    out = stdout + stderr[-5000:]
    assert proc.returncode == 0, out
    doc = json.loads(results.read_text())
    s = doc["summary"]
    assert s["participant_clusters"] == 5, s  # four genesis participants and the newcomer
    assert REQUESTS <= s["requests"] <= REQUESTS + 80  # + rounds until the newcomer worked
    # NOTE: traffic starts once every participant has PoC weight (two epochs in), so the
    # genesis participants, the cheater too, have some reputation by then and only part of
    # their work is sampled; the cheater's checks still catch it and the newcomer's work is all
    # checked. Caught = it forfeited an epoch: one vote-confirmed invalidation is enough
    # (DESIGN §4), five in a row make it INVALID. It is not required to reach INVALID: a
    # cheater that forfeits sits out the next epochs with weight 0, takes no more draws and so
    # may never collect five (a run did exactly that: 4 invalidations in its one epoch of
    # traffic, then weight 0, and was counted "not caught" while INVALID was the only catch).
    assert s["cheaters_caught"] == 1, (s, doc["participants"])
    assert s["honest_invalidated"] == 0 and s["honest_receipts_broken"] == 0
    assert s["refund_share"] == 1.0
    # every newcomer inference checked: the report is read after the last epoch settled, long
    # after the primary validator's check (drawn when the Finish commits)
    assert s["newcomer_inferences"] >= 1
    assert s["verified_share_new_participants"] >= 0.95, s
    assert s["epochs_settled"] >= 2 and s["cheater_paid_in_invalid_epochs"] == 0
    rows = {r["participant"]: r for r in doc["participants"]}
    # forfeited (paid nothing), then weight 0 while it sits out; it may earn weight again later
    assert rows["p3"]["invalidated"] >= 1
    caught = [r for r in doc["epochs"] if r["note"].endswith(": paid nothing")]
    assert caught and all(r["participant"] == "p3" and r["reward"] == 0 for r in caught)
    first_caught = min(r["epoch"] for r in caught)
    after = [
        r["note"] for r in doc["epochs"] if r["participant"] == "p3" and r["epoch"] > first_caught
    ]
    assert not [n for n in after if "not caught yet" in n], doc["epochs"]
    honest = ("p0", "p1", "p2", "p4")
    assert all(rows[p]["status"] != "INVALID" and rows[p]["invalidated"] == 0 for p in honest)
    # the newcomer joined the running network, earned weight, executed and validated. NOTE:
    # draws and checks are random (it served 2-7 and checked 4-7 of 32-40 requests after its
    # join in four runs); the demo sends up to ten more rounds of 8 until it did both, so it
    # fails here only if the newcomer cannot (P(no draw of it in 80 more) < 1e-4).
    assert s["joined_mid_run"] == 1 and s["joiner_weight_after_s"] is not None, s
    assert s["joiner_served"] > 0 and s["joiner_validated"] > 0, (s, rows["p4"])
    assert "stopped: 5 of 5 cleanly" in stdout, out


def test_first_token_does_not_wait_for_the_ledger_and_self_validation_is_rejected(
    ray_session,
) -> None:
    config = demo_network_config(model="fake", cheat="wrong_temperature", engine="fake")
    config = config.model_copy(update={"name": "fasttest"})
    net = launch(config, namespace="gonka_ray_tests")

    async def scenario() -> None:
        await wait_ready(net)
        client = Client(
            net.client_key(),
            {n: net.ta(n) for n in ("p0", "p1", "p2")},
            "fake",
            chain=net.chain_id,
        )
        results = [
            await client.chat([{"role": "user", "content": f"q{i}"}], ta="p0", max_tokens=4, seed=i)
            for i in range(6)
        ]
        for _ in range(100):  # the Start commits after the stream ended; wait for the last one
            stats = await net.handle("p0", "ta").stats.remote()
            timings = [t for t in stats["timings"] if "start_commit_s" in t]
            if len(timings) == 6:
                break
            await asyncio.sleep(0.1)
        assert len(timings) == 6
        # measured: the first token reaches the TA before the StartInference commit
        faster = sum(t["first_token_s"] < t["start_commit_s"] for t in timings)
        assert faster >= 4, timings
        # a participant sends a Validation of its own inference straight to the ledger
        own = results[0].done
        executor_name = net.name_of(own.executor)
        key = participant_key(config, executor_name)
        tx = wire.seal(
            wire.Validation(
                inference_id=own.inference_id,
                passed=True,
                replay_mismatches=0,
                similarity=1.0,
                logprob_deviation=0.0,
                nonce=12345,
            ),
            key,
            net.chain_id,
        )
        from gonka_ray.actors.handles import HandleCache
        from gonka_ray.actors.replica import ReplicaLedgerPort

        port = ReplicaLedgerPort(net.specs[executor_name], HandleCache(net.namespace))
        outcome = await port.submit(tx)
        assert not outcome.ok and outcome.reason == "self_validation"
        stranger = crypto.KeyPair.from_seed("not-a-participant")
        tx = wire.seal(
            wire.Vote(inference_id=own.inference_id, valid=False, nonce=1), stranger, net.chain_id
        )
        outcome = await port.submit(tx)
        assert not outcome.ok and outcome.reason == "not_participant"

    try:
        asyncio.run(scenario())
    finally:
        net.teardown()
