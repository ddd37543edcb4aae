"""The demo scenario on the shared loopback Ray: the tiny model, one int4 cheater."""

from __future__ import annotations

import asyncio

from gonka_ray import crypto, wire
from gonka_ray.demo import demo_network_config, run_demo
from gonka_ray.network import launch, participant_key, wait_ready
from gonka_ray.sdk import Client


def test_demo_scenario_catches_the_cheater(ray_session) -> None:
    config = demo_network_config(
        model="tiny-llama",
        cheat="int4",
        epoch={"epoch_blocks": 200, "poc_sprint_blocks": 56, "poc_validation_blocks": 32},
    )
    # NOTE: the cheater serves ~1/3 of the 64 requests and, a newcomer, has every inference
    # checked (its primary validator, DESIGN §4): ~21 checks, it needs five to be INVALID.
    report = asyncio.run(
        run_demo(config, requests=64, max_tokens=8, results_path=None, echo=lambda *a, **k: None)
    )
    s = report.summary
    assert s["requests"] == 64
    assert s["cheaters_caught"] == 1, (s, report.rows)
    assert s["honest_invalidated"] == 0
    assert s["refund_share"] == 1.0
    assert s["checks_per_inference"] >= 1.0  # a primary check on top of the sampled ones
    # every newcomer inference checked (secret sampling alone left 14-33% unchecked); the
    # share is of committed validations when the report is read, so allow one late check
    assert s["newcomer_inferences"] >= 32
    assert s["verified_share_new_participants"] >= 0.95, s
    assert s["epochs_settled"] >= 2 and s["cheater_paid_in_invalid_epochs"] == 0
    rows = {r["participant"]: r for r in report.rows}
    # INVALID, then weight 0 for the next epoch; after that it may earn weight again (RAMPING)
    assert rows["p3"]["invalidated"] >= 5
    invalid = [r for r in report.epochs if r["note"].startswith("INVALID")]
    assert invalid and all(r["participant"] == "p3" and r["reward"] == 0 for r in invalid)
    assert all(
        rows[p]["status"] != "INVALID" and rows[p]["invalidated"] == 0 for p in ("p0", "p1", "p2")
    )


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
