"""Participants reach each other only over the signed peer transport.

A launched network (fake engine): every replica holds an authenticated TCP session with every
other one; each request's execution crosses as a peer call answered by the executing
participant's endpoint; a client that leaves mid-stream cancels the other participant's
executor through that hop (it stops long before ``max_tokens``)."""

from __future__ import annotations

import asyncio
import time

from gonka_ray import wire
from gonka_ray.demo import demo_network_config
from gonka_ray.network import launch, wait_ready
from gonka_ray.sdk import Client, stream_items

TOKEN_DELAY_MS = 50
LONG = 400  # tokens: 20 s at TOKEN_DELAY_MS, were the stream not cancelled


def test_participants_reach_each_other_only_over_the_peer_transport(ray_session) -> None:
    config = demo_network_config(model="fake", cheat=None, engine="fake")
    config = config.model_copy(
        update={
            "name": "peerboundary",
            "participants": config.participants[:3],
            "engine": config.engine.model_copy(update={"fake_token_delay_ms": TOKEN_DELAY_MS}),
        }
    )
    net = launch(config, namespace="gonka_ray_tests")
    names = list(net.specs)

    async def peer_stats() -> dict[str, dict]:
        return {n: await net.handle(n, "ledger").peer_stats.remote() for n in names}

    async def inflight() -> dict[str, int]:
        return {n: (await net.handle(n, "executor").stats.remote())["inflight"] for n in names}

    async def scenario() -> None:
        await wait_ready(net)
        client = Client(net.client_key(), {"p0": net.ta("p0")}, "fake", chain=net.chain_id)
        before = await peer_stats()
        results = [
            await client.chat([{"role": "user", "content": f"q{i}"}], max_tokens=3, seed=i)
            for i in range(4)
        ]
        executors = [net.name_of(r.done.executor) for r in results]
        assert all(e != "p0" for e in executors), executors
        after = await peer_stats()
        for i, n in enumerate(names):
            assert after[n]["connected"] == [j for j in range(3) if j != i], after
        for n in ("p1", "p2"):  # each execution was a call answered by its executor's endpoint
            served = after[n]["calls_served"] - before[n]["calls_served"]
            assert served >= executors.count(n), (n, served, executors)

        envelope = client._sign([{"role": "user", "content": "a long one"}], None, max_tokens=LONG)
        stream = stream_items(net.ta("p0"), envelope)
        chunks = [await anext(stream) for _ in range(3)]
        assert all(isinstance(c, wire.StreamChunk) for c in chunks)
        busy = await inflight()
        assert sum(busy.values()) == 1 and busy["p0"] == 0, busy  # the precondition: it runs
        t0 = time.monotonic()
        await stream.aclose()  # the client leaves
        while sum((await inflight()).values()) and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.05)
        stopped_s = time.monotonic() - t0
        assert sum((await inflight()).values()) == 0
        assert stopped_s < 5.0, stopped_s  # far below the 20 s the stream had left
        # no call stays open (the verifiers' payload fetches come and go: wait them out)
        end = await peer_stats()
        while any(s["calls_open"] for s in end.values()) and time.monotonic() - t0 < 15:
            await asyncio.sleep(0.1)
            end = await peer_stats()
        assert all(s["calls_open"] == 0 for s in end.values()), end

    try:
        asyncio.run(scenario())
    finally:
        net.teardown()
