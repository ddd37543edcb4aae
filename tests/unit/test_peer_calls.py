"""Calls between two TcpPeerTransport endpoints on loopback: streamed replies in order, unary
calls, errors, cancellation reaching the callee's handler, a dropped connection failing the
caller, and the per-connection bound on open calls (one more cuts the caller)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gonka_ray import crypto, wire
from gonka_ray.exceptions import PeerCallFailed, PeerUnavailable
from gonka_ray.peer.calls import first
from gonka_ray.peer.framing import Kind
from gonka_ray.peer.limits import PeerLimits
from gonka_ray.peer.tcp import TcpPeerTransport
from gonka_ray.wire import PeerCall
from tests.peer_harness import Recorder, free_addresses, wait_for
from tests.peer_harness import endpoint as harness_endpoint

CHAIN = "peer-calls"
KEYS = [crypto.KeyPair.from_seed(f"peer-calls-{i}") for i in range(2)]
LIMITS = PeerLimits(max_inflight_calls=4, call_idle_timeout_s=2.0, reconnect_min_s=0.02)


@contextlib.asynccontextmanager
async def pair(limits: PeerLimits = LIMITS) -> AsyncIterator[tuple[TcpPeerTransport, ...]]:
    """Two connected endpoints, closed on exit."""
    addresses = free_addresses(2)
    a = harness_endpoint(KEYS, 0, addresses, chain_id=CHAIN, limits=limits)
    b = harness_endpoint(KEYS, 1, addresses, chain_id=CHAIN, limits=limits)
    try:
        await a.start(Recorder())
        await b.start(Recorder())
        await a.wait_connected([1], 5.0)
        await b.wait_connected([0], 5.0)
        yield a, b
    finally:
        await a.close()
        await b.close()


@contextlib.asynccontextmanager
async def ticking() -> AsyncIterator[tuple[TcpPeerTransport, TcpPeerTransport, Served, Any]]:
    """Endpoint 0 calling endpoint 1's endless ``forever``, its first reply read."""
    async with pair() as (a, b):
        served = Served()
        b.serve("forever", served.forever)
        stream = a.call_stream(1, "forever", b"")
        assert await anext(stream) == b"tick"
        yield a, b, served, stream


class Served:
    """Handlers that record what happened to them."""

    def __init__(self) -> None:
        self.callers: list[int] = []
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()

    async def count(self, body: bytes, caller: int):
        self.callers.append(caller)
        for k in range(int(body)):
            yield b"%d" % k

    async def forever(self, body: bytes, caller: int):
        self.started.set()
        try:
            while True:
                yield b"tick"
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def broken(self, body: bytes, caller: int):
        yield b"one"
        raise RuntimeError("the handler failed")


async def test_a_streamed_call_yields_every_reply_in_order_and_names_the_caller() -> None:
    async with pair() as (a, b):
        served = Served()
        b.serve("count", served.count)
        got = [item async for item in a.call_stream(1, "count", b"5")]
        assert got == [b"0", b"1", b"2", b"3", b"4"]
        assert served.callers == [0]
        assert await first(a.call_stream(1, "count", b"1")) == b"0"
        assert b.calls.served == 2


async def test_errors_come_back_typed() -> None:
    async with pair() as (a, b):
        served = Served()
        b.serve("broken", served.broken)
        b.serve("count", served.count)
        with pytest.raises(PeerCallFailed) as unknown:
            await first(a.call_stream(1, "nobody", b""))
        assert unknown.value.reason == "unknown_method"
        got: list[bytes] = []
        with pytest.raises(PeerCallFailed) as failed:
            async for item in a.call_stream(1, "broken", b""):
                got.append(item)
        assert got == [b"one"] and failed.value.reason == "failed"
        with pytest.raises(PeerCallFailed) as empty:
            await first(a.call_stream(1, "count", b"0"))
        assert empty.value.reason == "empty"
        with pytest.raises(PeerUnavailable):
            await first(a.call_stream(7, "count", b"1"))  # no such peer


async def test_closing_the_stream_early_cancels_the_callee_handler() -> None:
    async with ticking() as (_, b, served, stream):
        await stream.aclose()  # the client left
        await asyncio.wait_for(served.cancelled.wait(), 2.0)
        await wait_for(lambda: not any(c.serving for c in b._conns.values()))


async def test_a_dropped_connection_fails_the_caller_and_cancels_the_callee() -> None:
    async with ticking() as (_, b, served, stream):
        await b.close()  # the callee's process goes away
        with pytest.raises(PeerUnavailable):
            async for _ in stream:
                pass
        assert served.cancelled.is_set()


async def test_more_open_calls_than_the_bound_cut_the_caller() -> None:
    async with ticking() as (a, b, _, first_stream):
        streams = [first_stream]
        streams += [a.call_stream(1, "forever", b"") for _ in range(LIMITS.max_inflight_calls - 1)]
        for s in streams[1:]:
            assert await anext(s) == b"tick"
        with pytest.raises(PeerUnavailable):  # an honest caller stops itself at the bound
            await anext(a.call_stream(1, "forever", b""))
        conn = a._conns[1]  # a caller that ignores the bound gets cut
        conn.send(Kind.CALL, wire.encode(PeerCall(10_000, "forever", b"")))
        await wait_for(lambda: b.stats.cuts["too_many_calls"] == 1)
        for s in streams:
            with pytest.raises(PeerUnavailable):
                async for _ in s:
                    pass
