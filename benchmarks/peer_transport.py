"""Peer transports side by side: Ray actor calls vs the framed-TCP peer transport, and what a
heartbeat block costs when 4 replicas talk over TCP from separate OS processes.

Run: ``nice -n 10 .venv/bin/python benchmarks/peer_transport.py`` (writes
``results/peer_transport.json``; ``--no-write`` only prints). Starts its own loopback Ray. In one
run, for 256-byte messages on loopback:

- **round trip** (p50, p99): one message out, its echo back, one at a time;
- **pipelined** (echoed messages per second): up to ``--window`` messages in flight;

over (a) a Ray actor call (``await actor.echo.remote(msg)``; pipelined: ``gather`` of a window of
calls), (b) :class:`~gonka_ray.peer.tcp.TcpPeerTransport` on the default asyncio loop and (c) the
same on uvloop. For (b) and (c) the echo side is a second transport in a child process whose
replica sends every message straight back; both sides run the whole stack (batching per loop
turn, ChaCha20-Poly1305 per frame, inbound limits lifted so that the bench measures the
transport, not the flood guard).

**What a block costs** (``block_cost``): 4 idle replicas making heartbeat blocks (one every
100 ms, 20 ms ticks), CPU ms per committed block per replica: in this process over the
in-memory transport and as Ray actors (``benchmarks/ledger.py``'s two figures, measured again
here), and as 4 OS processes over TCP (CPU from ``/proc``), on the default loop and on uvloop.
The machine's 1-minute load average at the start and the end goes into the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._common import print_table, write_results
from gonka_ray import crypto
from gonka_ray.peer.limits import PeerLimits
from gonka_ray.peer.tcp import TcpPeerTransport
from tests.peer_harness import endpoint, free_addresses

MESSAGE = bytes(range(256))
CHAIN = "peerbench"
KEYS = [crypto.KeyPair.from_seed(f"bench/peer-{i}") for i in range(2)]
UNLIMITED = 1e15  # inbound limits lifted: the bench measures the transport, not the guard


def bench_limits() -> PeerLimits:
    return PeerLimits(
        inbound_msgs_per_s=UNLIMITED,
        inbound_msgs_burst=UNLIMITED,
        inbound_bytes_per_s=UNLIMITED,
        inbound_burst_bytes=UNLIMITED,
        outbound_queue_msgs=10**7,
        outbound_queue_bytes=1 << 40,
    )


def run_on(loop_kind: str, coro: Any) -> Any:
    """Run ``coro`` on a fresh loop of ``loop_kind`` (``asyncio`` or ``uvloop``)."""
    if loop_kind == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def transport(i: int, addresses: list[str]) -> TcpPeerTransport:
    return endpoint(KEYS, i, addresses, chain_id=CHAIN, limits=bench_limits())


# --- TCP round trips -----------------------------------------------------------------------


class Echo:
    """The child's replica: every message goes straight back to its sender."""

    def __init__(self) -> None:
        self.transport: TcpPeerTransport | None = None

    async def deliver(self, data: bytes, sender: int) -> None:
        self.transport.send(sender, data)

    async def deliver_many(self, batch: list[bytes], sender: int) -> None:
        for data in batch:
            self.transport.send(sender, data)

    async def snapshot_offer(self) -> None:
        return None

    async def attest_state(self, height: int) -> None:
        return None


def echo_process(addresses: list[str], loop_kind: str, ready: Any, stop: Any) -> None:
    async def main() -> None:
        echo = Echo()
        echo.transport = transport(1, addresses)
        await echo.transport.start(echo)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await echo.transport.close()

    run_on(loop_kind, main())


class Sink:
    """The measuring side's replica: counts echoes and wakes whoever waits for a count."""

    def __init__(self) -> None:
        self.count = 0
        self._target = 0
        self._waiter: asyncio.Future | None = None

    async def deliver(self, data: bytes, sender: int) -> None:
        self._got(1)

    async def deliver_many(self, batch: list[bytes], sender: int) -> None:
        self._got(len(batch))

    def _got(self, n: int) -> None:
        self.count += n
        if self._waiter is not None and self.count >= self._target and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_count(self, target: int) -> None:
        if self.count >= target:
            return
        self._target = target
        self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(self._waiter, 30)

    async def snapshot_offer(self) -> None:
        return None

    async def attest_state(self, height: int) -> None:
        return None


async def tcp_figures(addresses: list[str], rt: int, pipelined: int, window: int) -> dict:
    sink = Sink()
    t = transport(0, addresses)
    await t.start(sink)
    await t.wait_connected([1], 30)
    for _ in range(100):  # warm up
        t.send(1, MESSAGE)
        await sink.wait_count(sink.count + 1)
    lat = []
    for _ in range(rt):
        t0 = time.perf_counter()
        target = sink.count + 1
        t.send(1, MESSAGE)
        await sink.wait_count(target)
        lat.append(time.perf_counter() - t0)
    base, sent = sink.count, 0
    t0 = time.perf_counter()
    while sent < pipelined:
        burst = min(window - (sent - (sink.count - base)), pipelined - sent)
        for _ in range(burst):
            t.send(1, MESSAGE)
        sent += burst
        await sink.wait_count(base + sent - window // 2 if sent < pipelined else base + sent)
    elapsed = time.perf_counter() - t0
    stats = t.stats
    await t.close()
    return {
        **latency(lat),
        "msg_per_s": round(pipelined / elapsed),
        "msgs_per_frame": round(stats.sent_msgs / max(1, stats.sent_frames), 1),
        "dropped": sum(stats.dropped.values()),
    }


def tcp_row(loop_kind: str, rt: int, pipelined: int, window: int) -> dict:
    ctx = mp.get_context("spawn")
    addresses = free_addresses(2)
    ready, stop = ctx.Event(), ctx.Event()
    child = ctx.Process(target=echo_process, args=(addresses, loop_kind, ready, stop))
    child.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the echo process did not come up")
        fig = run_on(loop_kind, tcp_figures(addresses, rt, pipelined, window))
    finally:
        stop.set()
        child.join(10)
        if child.is_alive():
            child.kill()
    return {"transport": f"tcp ({loop_kind})", **fig}


def latency(lat_s: list[float]) -> dict:
    ms = np.array(lat_s) * 1000
    return {
        "rt_p50_ms": round(float(np.percentile(ms, 50)), 3),
        "rt_p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


# --- Ray actor calls ----------------------------------------------------------------------


class EchoActor:
    def echo(self, data: bytes) -> bytes:
        return data


async def ray_figures(ray: Any, rt: int, pipelined: int, window: int) -> dict:
    actor = ray.remote(EchoActor).options(num_cpus=0).remote()
    for _ in range(100):
        await actor.echo.remote(MESSAGE)
    lat = []
    for _ in range(rt):
        t0 = time.perf_counter()
        await actor.echo.remote(MESSAGE)
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    done = 0
    while done < pipelined:
        n = min(window, pipelined - done)
        await asyncio.gather(*[actor.echo.remote(MESSAGE) for _ in range(n)])
        done += n
    elapsed = time.perf_counter() - t0
    ray.kill(actor)
    return {"transport": "ray actor call", **latency(lat), "msg_per_s": round(pipelined / elapsed)}


# --- block cost ----------------------------------------------------------------------------


def replica_process(
    i: int,
    addresses: list[str],
    genesis: bytes,
    seed: bytes,
    storage_dir: str,
    loop_kind: str,
    height: Any,
    ready: Any,
    stop: Any,
) -> None:
    from gonka_ray.ledger.replica import LedgerReplica

    async def main() -> None:
        t = TcpPeerTransport.for_genesis(
            genesis, index=i, key=crypto.KeyPair.from_seed(seed), addresses=addresses
        )
        r = LedgerReplica(
            index=i,
            key_seed=seed,
            genesis=genesis,
            storage_dir=storage_dir,
            transport=t,
            tick_ms=20,
            timeout_ticks=100,
            empty_block_interval_ms=100,
        )
        await t.start(r)
        await r.start()
        ready.set()
        while not stop.is_set():
            height.value = r.core.committed_height
            await asyncio.sleep(0.05)
        await r.close()
        await t.close()

    run_on(loop_kind, main())


def block_cost_over_tcp(tmp: str, loop_kind: str, seconds: float) -> float:
    """CPU ms per heartbeat block per replica: 4 replica processes joined by TCP."""
    from benchmarks.ledger import _proc_cpu_s, genesis_of, keys

    keys_ = keys("blockcost", 4)
    genesis = genesis_of(keys_, f"blockcost-tcp-{loop_kind}")
    addresses = free_addresses(4)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    heights = [ctx.Value("q", 0) for _ in range(4)]
    readies = [ctx.Event() for _ in range(4)]
    procs = [
        ctx.Process(
            target=replica_process,
            args=(
                i,
                addresses,
                genesis,
                k.seed,
                f"{tmp}/tcp-{loop_kind}",
                loop_kind,
                heights[i],
                readies[i],
                stop,
            ),
        )
        for i, k in enumerate(keys_)
    ]
    for p in procs:
        p.start()
    try:
        for e in readies:
            if not e.wait(60):
                raise RuntimeError("a replica process did not come up")
        time.sleep(2.0)
        h0, c0 = heights[0].value, sum(_proc_cpu_s(p.pid) for p in procs)
        time.sleep(seconds)
        blocks = heights[0].value - h0
        cpu = sum(_proc_cpu_s(p.pid) for p in procs) - c0
    finally:
        stop.set()
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.kill()
    return round(1000 * cpu / max(1, blocks) / 4, 2)


def block_costs(ray: Any, seconds: float) -> dict[str, float]:
    from benchmarks.ledger import block_cost_actors, block_cost_in_process

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out["in_process"] = asyncio.run(block_cost_in_process(tmp, seconds))
        if ray is not None:
            out["over_ray"] = asyncio.run(block_cost_actors(ray, tmp, "ray", seconds))
        out["over_tcp_asyncio"] = block_cost_over_tcp(tmp, "asyncio", seconds)
        out["over_tcp_uvloop"] = block_cost_over_tcp(tmp, "uvloop", seconds)
    return out


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rt", type=int, default=2_000, help="round trips per transport")
    ap.add_argument("--pipelined", type=int, default=200_000, help="messages per transport")
    ap.add_argument("--window", type=int, default=1_024, help="messages in flight, at most")
    ap.add_argument("--block-seconds", type=float, default=8.0, help="block-cost window")
    ap.add_argument("--skip-ray", action="store_true", help="no Ray (no row a, no over_ray)")
    ap.add_argument("--skip-block-cost", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    ray = None
    rows = []
    if not args.skip_ray:
        import ray

        ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            namespace="gonka_ray_bench",
            log_to_driver=False,
        )
        rows.append(asyncio.run(ray_figures(ray, args.rt, args.pipelined, args.window)))
        print(rows[-1])
    for loop_kind in ("asyncio", "uvloop"):
        rows.append(tcp_row(loop_kind, args.rt, args.pipelined, args.window))
        print(rows[-1])
    costs = {} if args.skip_block_cost else block_costs(ray, args.block_seconds)
    if ray is not None:
        ray.shutdown()
    print_table(rows, ["transport", "rt_p50_ms", "rt_p99_ms", "msg_per_s"])
    if costs:
        print()
        print_table(
            [{"block cost": k, "cpu_ms_per_block_per_replica": v} for k, v in costs.items()]
        )
    by = {r["transport"]: r for r in rows}
    summary: dict[str, Any] = {}
    for name, key in (
        ("ray", "ray actor call"),
        ("tcp", "tcp (asyncio)"),
        ("tcp_uv", "tcp (uvloop)"),
    ):
        if key in by:
            summary[f"{name}_rt_p50_ms"] = by[key]["rt_p50_ms"]
            summary[f"{name}_msg_per_s"] = by[key]["msg_per_s"]
    summary.update({f"block_cpu_ms_per_replica_{k}": v for k, v in costs.items()})
    load = {"start": round(load_start, 1), "end": round(os.getloadavg()[0], 1)}
    print(f"\n{summary}\n1-minute load average: {load}")
    if not args.no_write:
        path = write_results(
            "peer_transport",
            summary,
            rows=rows,
            block_cost=costs,
            message_bytes=len(MESSAGE),
            counts={"rt": args.rt, "pipelined": args.pipelined, "window": args.window},
            load_avg_1m=load,
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
