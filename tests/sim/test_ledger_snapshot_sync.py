"""Snapshot sync: a wiped replica installs a verified peer snapshot, then block-syncs."""

from __future__ import annotations

import asyncio
import dataclasses

import msgpack

from gonka_ray.ledger import merkle
from gonka_ray.ledger.replica import LedgerReplica
from tests.sim.network import make_genesis, sim_key
from tests.sim.replicas import Bus, transfer

B = 4


@dataclasses.dataclass
class Forger:
    """A peer that offers an honest peer's snapshot with one balance changed."""

    honest: LedgerReplica

    async def snapshot_offer(self):
        offer = dict(await self.honest.snapshot_offer())
        height, tables = msgpack.unpackb(offer["snapshot"], raw=False, strict_map_key=False)
        rows = dict(tables)["account"]
        rows[0] = [rows[0][0], [rows[0][1][0] + 10**6, rows[0][1][1]]]
        from gonka_ray.ledger.state import StateMachine, canonical_pack

        sm = StateMachine(make_genesis(4), epoch_blocks=B)
        offer["snapshot"] = canonical_pack([height, tables])
        sm.restore(offer["snapshot"])
        offer["state_hash"] = sm.state_hash  # self-consistent, but nobody honest attests it
        return offer

    async def attest_state(self, height):
        return await self.honest.attest_state(height)  # cannot sign for the forged hash


def test_wiped_replica_syncs_from_a_verified_snapshot_then_follows(tmp_path) -> None:
    async def scenario() -> None:
        bus = Bus(snapshot_every=1000, empty_block_interval_ms=4, epoch_blocks=B)
        reps = [bus.make(i, tmp_path / f"r{i}") for i in range(4)]
        for r in reps[:3]:
            await r.start()
        bus.down.add(3)  # replica 3 never hears anything: it is "wiped"
        txs = [transfer(1, n) for n in range(4)]
        await reps[0].submit_many(txs)
        for _ in range(3000):
            if min(r.sm.height for r in reps[:3]) >= 3 * B + 1:
                break
            await asyncio.sleep(0.005)
        assert reps[3].core.committed_height == 0
        # A forged offer alone is refused: no honest replica attests its state hash.
        assert await reps[3].snapshot_sync(peers=[Forger(reps[0])]) == 0
        assert reps[3].core.committed_height == 0
        h = await reps[3].snapshot_sync(peers=reps[:3])
        assert h >= 2 * B - 1 and (h + 1) % B == 0
        assert reps[3].sm.height == h and reps[3].core.committed_height == h
        assert reps[3].core.epoch == (h + 1) // B
        found = reps[0].store.committed_block(h)
        assert reps[3].sm.state_hash == found[2]
        bus.down.discard(3)
        # It block-syncs from there and takes part: a new transaction commits on it too.
        tx = transfer(2, 0)
        await reps[0].submit(tx)
        await reps[3].wait_receipt(merkle.tx_hash(tx), timeout_s=20)
        assert reps[3].sm.balance(sim_key("client-1").address) == 1_000 - 4
        # And it restarts from its synced store.
        await reps[3].stop()
        reps[3].store.close()
        again = bus.make(3, tmp_path / "r3")
        assert again.core.committed_height >= reps[3].core.committed_height
        for r in [*reps[:3]]:
            await r.stop()

    asyncio.run(scenario())
