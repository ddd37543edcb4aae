"""Four ledger replicas in one process, joined only by TcpPeerTransport over loopback: they
commit and agree, a wiped replica syncs a snapshot over TCP, a restarted one rejoins."""

from __future__ import annotations

from typing import Any

from gonka_ray import wire
from gonka_ray.ledger import merkle
from gonka_ray.ledger.replica import LedgerReplica
from gonka_ray.peer.limits import PeerLimits
from gonka_ray.peer.tcp import TcpPeerTransport
from tests.peer_harness import free_addresses, wait_for
from tests.sim.network import sim_key
from tests.sim.replicas import GENESIS, transfer

LIMITS = PeerLimits(reconnect_min_s=0.02, reconnect_max_s=0.2)
B = 4  # blocks per epoch in the snapshot test


class Gate:
    """A replica's receiving side that can be held shut (its consensus input is dropped; sync
    requests are still answered)."""

    def __init__(self, replica: LedgerReplica, *, open_: bool = True) -> None:
        self.replica = replica
        self.open = open_

    async def deliver(self, data: bytes, sender: int) -> None:
        if self.open:
            await self.replica.deliver(data, sender)

    async def deliver_many(self, batch: list[bytes], sender: int) -> None:
        if self.open:
            await self.replica.deliver_many(batch, sender)

    async def snapshot_offer(self) -> Any:
        return await self.replica.snapshot_offer()

    async def attest_state(self, height: int) -> Any:
        return await self.replica.attest_state(height)


class TcpGroup:
    """Replicas of the sim genesis, each with its own TcpPeerTransport on a loopback port."""

    def __init__(self, tmp_path, **options: Any) -> None:
        self.tmp_path = tmp_path
        self.addresses = free_addresses(4)
        self.options = {"tick_ms": 5, "timeout_ticks": 40, "snapshot_every": 3, **options}
        self.replicas: dict[int, LedgerReplica] = {}
        self.transports: dict[int, TcpPeerTransport] = {}
        self.gates: dict[int, Gate] = {}

    async def start(self, i: int, *, open_: bool = True) -> LedgerReplica:
        t = TcpPeerTransport.for_genesis(
            GENESIS,
            index=i,
            key=sim_key(f"replica-{i}"),
            addresses=self.addresses,
            limits=LIMITS,
            seed=i,
        )
        r = LedgerReplica(
            index=i,
            key_seed=sim_key(f"replica-{i}").seed,
            genesis=wire.encode(GENESIS),
            storage_dir=str(self.tmp_path / f"r{i}"),
            transport=t,
            **self.options,
        )
        self.gates[i] = Gate(r, open_=open_)
        await t.start(self.gates[i])
        if open_:
            await r.start()
        self.replicas[i], self.transports[i] = r, t
        return r

    async def kill(self, i: int) -> None:
        """Stop replica ``i`` and its transport, as a crashed process would vanish."""
        await self.replicas[i].close()
        await self.transports[i].close()

    async def close(self) -> None:
        for i in list(self.replicas):
            await self.kill(i)


async def test_four_replicas_over_tcp_commit_and_agree(tmp_path) -> None:
    g = TcpGroup(tmp_path)
    try:
        reps = [await g.start(i) for i in range(4)]
        for i, t in g.transports.items():
            await t.wait_connected([j for j in range(4) if j != i], 10.0)
        txs = [transfer(1, n) for n in range(5)]
        await reps[0].submit_many(txs[:3])
        await reps[2].submit_many(txs[3:])
        for r in reps:
            await r.wait_receipt(merkle.tx_hash(txs[-1]), timeout_s=20)
        h = min(r.sm.height for r in reps)
        hashes = {await r.committed_hash(h) for r in reps}
        assert len(hashes) == 1
        for r in reps:
            assert await r.balance(sim_key("client-1").address) == 1_000 - 5
        for t in g.transports.values():
            assert t.stats.received_msgs > 0 and not t.stats.cuts, t.stats
    finally:
        await g.close()


async def test_a_wiped_replica_syncs_a_snapshot_over_tcp_then_follows(tmp_path) -> None:
    g = TcpGroup(tmp_path, snapshot_every=1000, empty_block_interval_ms=10, epoch_blocks=B)
    try:
        reps = [await g.start(i) for i in range(3)]
        await reps[0].submit_many([transfer(1, n) for n in range(4)])
        await wait_for(lambda: min(r.sm.height for r in reps) >= 3 * B + 1, 30, "three epochs")
        wiped = await g.start(3, open_=False)  # connected, but hears no consensus yet
        await g.transports[3].wait_connected([0, 1, 2], 10.0)
        assert wiped.core.committed_height == 0
        h = await wiped.snapshot_sync()  # asks the transport's sync peers, over TCP
        assert h >= 2 * B - 1 and (h + 1) % B == 0
        assert wiped.sm.height == h == wiped.core.committed_height
        assert wiped.sm.state_hash == reps[0].store.committed_block(h)[2]
        g.gates[3].open = True
        tx = transfer(2, 0)
        await reps[0].submit(tx)
        await wiped.wait_receipt(merkle.tx_hash(tx), timeout_s=20)
        assert wiped.sm.balance(sim_key("client-1").address) == 1_000 - 4
    finally:
        await g.close()


async def test_a_restarted_replica_rejoins_on_the_same_port(tmp_path) -> None:
    g = TcpGroup(tmp_path)
    try:
        reps = [await g.start(i) for i in range(4)]
        first = transfer(1, 0)
        await reps[0].submit(first)
        await reps[2].wait_receipt(merkle.tx_hash(first), timeout_s=20)
        height = reps[2].core.committed_height
        await g.kill(2)  # its peers see the connections drop
        await wait_for(lambda: 2 not in g.transports[0].connected(), 5, "the drop")
        again = await g.start(2)  # a new transport on the same address, the same store
        assert again.recovered_height >= height
        for i in (0, 1, 3):
            await g.transports[i].wait_connected([2], 10.0)  # 0 and 1 redial, 2 dials 3
        more = [transfer(2, n) for n in range(3)]
        await reps[1].submit_many(more)
        await again.wait_receipt(merkle.tx_hash(more[-1]), timeout_s=20)
        assert await again.balance(sim_key("client-2").address) == 1_000 - 3
    finally:
        await g.close()
