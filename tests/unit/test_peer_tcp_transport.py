"""TcpPeerTransport between two endpoints on loopback: batching and order, the bounded queue,
sync requests and their failures, and the same on uvloop."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from gonka_ray import crypto
from gonka_ray.exceptions import PeerUnavailable
from gonka_ray.peer.limits import PeerLimits
from gonka_ray.peer.tcp import TcpPeerTransport
from tests.peer_harness import Recorder, free_addresses, wait_for
from tests.peer_harness import endpoint as harness_endpoint

CHAIN = "tcp-transport"
KEYS = [crypto.KeyPair.from_seed(f"tcp-transport-{i}") for i in range(3)]
LIMITS = PeerLimits(outbound_queue_msgs=20, request_timeout_s=0.3, reconnect_min_s=0.02)


def endpoint(i: int, addresses: list[str | None], limits: PeerLimits = LIMITS) -> TcpPeerTransport:
    return harness_endpoint(KEYS, i, addresses, chain_id=CHAIN, limits=limits)


async def pair(local1=None) -> tuple[TcpPeerTransport, TcpPeerTransport, Recorder, Recorder]:
    addresses = [*free_addresses(2), None]
    a, b = endpoint(0, addresses), endpoint(1, addresses)
    ra, rb = Recorder(), local1 or Recorder()
    await a.start(ra)
    await b.start(rb)
    await a.wait_connected([1], 5.0)
    await b.wait_connected([0], 5.0)
    return a, b, ra, rb


async def test_one_turns_messages_leave_as_one_frame_in_order() -> None:
    a, b, _, rb = await pair()
    try:
        for k in range(5):
            a.send(1, b"m%d" % k)
        a.send(2, b"to a peer with no address: waits, bounded")
        await wait_for(lambda: len(rb.got) == 5)
        assert rb.got == [(0, b"m%d" % k) for k in range(5)]
        assert a.stats.sent_frames == 1 and a.stats.sent_msgs == 5
        b.send(0, b"back")
        await wait_for(lambda: b.stats.sent_msgs == 1)
    finally:
        await a.close()
        await b.close()


async def test_the_outbound_queue_is_bounded_and_counts_drops() -> None:
    addresses = free_addresses(2)
    a = endpoint(0, [*addresses, None])  # peer 1 never comes up
    await a.start(Recorder())
    try:
        for k in range(LIMITS.outbound_queue_msgs + 7):
            a.send(1, b"%d" % k)
        a.send(1, b"x" * (LIMITS.max_frame_bytes + 1))  # could never fit a frame
        assert a.stats.dropped[1] == 8 and a.stats.sent_msgs == 0
        b = endpoint(1, [*addresses, None])
        rb = Recorder()
        await b.start(rb)  # the queued messages leave once it is up
        await wait_for(lambda: len(rb.got) == LIMITS.outbound_queue_msgs)
        assert rb.got[0] == (0, b"0")
        await b.close()
    finally:
        await a.close()


class BigOffer(Recorder):
    async def snapshot_offer(self):
        big = b"s" * 10_000  # over the frame cap of these endpoints
        return {
            "height": 3,
            "block": b"",
            "certificate": b"",
            "state_hash": bytes(32),
            "snapshot": big,
        }


async def test_an_answer_too_large_to_send_is_refused_without_blame() -> None:
    small = dataclasses.replace(LIMITS, max_frame_bytes=4096)
    addresses = [*free_addresses(2), None]
    a, b = endpoint(0, addresses, small), endpoint(1, addresses, small)
    await a.start(Recorder())
    await b.start(BigOffer())
    try:
        await a.wait_connected([1], 5.0)
        with pytest.raises(PeerUnavailable, match="too_large"):
            await a.sync_peers()[0].snapshot_offer()
        assert not a.stats.cuts and not b.stats.cuts and a.connected() == [1]
    finally:
        await a.close()
        await b.close()


class Slow(Recorder):
    async def attest_state(self, height: int):
        await asyncio.sleep(10)


async def test_sync_requests_answer_or_fail_as_peer_unavailable() -> None:
    a, b, _, _ = await pair()
    try:
        (peer,) = a.sync_peers()
        assert (await peer.attest_state(7))[1] == bytes([7]) * 32
        assert await peer.snapshot_offer() is None
        with pytest.raises(PeerUnavailable):
            await a.request(2, "attest_state", 1)  # not connected
        resp = await a.request(1, "no_such_method")
        assert resp.error == "unknown_method"
    finally:
        await a.close()
        await b.close()
    a, b, _, _ = await pair(Slow())
    try:
        with pytest.raises(PeerUnavailable, match="in time"):
            await a.sync_peers()[0].attest_state(1)
    finally:
        await a.close()
        await b.close()


def test_the_transport_runs_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        a, b, ra, rb = await pair()
        try:
            a.send(1, b"ping")
            b.send(0, b"pong")
            await wait_for(lambda: rb.got == [(0, b"ping")] and ra.got == [(1, b"pong")])
            assert (await b.sync_peers()[0].attest_state(3))[1] == bytes([3]) * 32
        finally:
            await a.close()
            await b.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


async def test_concurrent_starts_bind_once() -> None:
    # a replica actor's own autostart and launch()'s explicit start() race at startup
    addresses = [*free_addresses(2), None]
    a = endpoint(0, addresses)
    try:
        await asyncio.gather(*(a.start(Recorder()) for _ in range(3)))
        assert a.port == int(addresses[0].rsplit(":", 1)[1])
    finally:
        await a.close()
