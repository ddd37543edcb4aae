"""Four ledger replica actors on the shared loopback Ray, joined by the TCP peer transport: load
while one is killed and restarted (Ray restarts it; it binds its address again by itself)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gonka_ray import wire
from gonka_ray.ledger.client import LedgerClient
from gonka_ray.ledger.replica import LedgerReplica
from gonka_ray.peer.tcp import TcpPeerTransport
from gonka_ray.raykit import ActorOptions, remote
from gonka_ray.wire import Transfer
from tests.peer_harness import free_addresses
from tests.sim.network import SIM_CHAIN as CHAIN
from tests.sim.network import make_genesis, sim_key

N = 4


def transfer(k: int, nonce: int) -> bytes:
    to = sim_key("client-3").address
    return wire.seal(Transfer(to=to, amount=1, nonce=nonce), sim_key(f"client-{k}"), CHAIN)


async def wait_for(cond, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await cond():
            return True
        await asyncio.sleep(0.1)
    return await cond()


@pytest.mark.timeout(120)
async def test_kill_and_restart_a_replica_under_load(ray_session, tmp_path) -> None:
    ray = ray_session
    ns = ray.get_runtime_context().namespace
    genesis = make_genesis(N)
    names = [f"ledger-test-{i}" for i in range(N)]
    addresses = free_addresses(N)
    handles = []
    for i in range(N):
        cls = remote(
            LedgerReplica, ActorOptions(name=names[i], namespace=ns, max_restarts=2, num_cpus=0)
        )
        handles.append(
            cls.remote(
                index=i,
                key_seed=sim_key(f"replica-{i}").seed,
                genesis=wire.encode(genesis),
                storage_dir=str(tmp_path),
                transport=TcpPeerTransport.for_genesis(
                    genesis, index=i, key=sim_key(f"replica-{i}"), addresses=addresses
                ),
                autostart=True,
                tick_ms=20,
                timeout_ticks=25,
                snapshot_every=5,
            )
        )
    try:
        await asyncio.gather(*[h.start.remote() for h in handles])
        client = LedgerClient(handles, genesis, timeout_s=15)
        committed = []
        for n in range(6):
            committed.append(await client.submit(transfer(0, n)))
        assert all(r.ok for r in committed)

        ray.kill(handles[2], no_restart=False)  # Ray restarts it; its constructor recovers
        live = [h for i, h in enumerate(handles) if i != 2]
        client_live = LedgerClient(live, genesis, timeout_s=15)
        for n in range(6):
            r = await client_live.submit(transfer(1, n))
            assert r.ok, r.reason

        async def restarted_caught_up() -> bool:
            try:
                sts = await asyncio.gather(*[h.status.remote() for h in handles])
            except Exception:
                return False
            return (
                len({s["state_hash"] for s in sts}) == 1
                and min(s["state_height"] for s in sts) >= max(s["state_height"] for s in sts)
                and sts[2]["recovered_height"] > 0
            )

        # Nudge consensus so the restarted replica sees fresh QCs, then wait for it.
        r = await client.submit(transfer(2, 0))
        assert r.ok
        assert await wait_for(restarted_caught_up, 40)
        st = await handles[2].status.remote()
        assert st["recovered_height"] >= 1  # it reloaded from SQLite, not from scratch
        # No committed transaction was lost: balances add up on every replica.
        dest = sim_key("client-3").address
        for h in handles:
            assert await h.balance.remote(dest) == 1_000 + 13
    finally:
        for h in handles:
            ray.kill(h, no_restart=True)
