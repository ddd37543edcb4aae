"""A replica's consensus memory stays bounded by an epoch or two of blocks, however long the
chain, and a replica cut off for several epochs still catches up (its peers serve the blocks
they no longer hold in memory from their stores)."""

from __future__ import annotations

import asyncio
import random

from gonka_ray.ledger import merkle
from tests.sim.network import SimNetwork, scenario_txs
from tests.sim.replicas import Bus, transfer, until

B = 6  # blocks per epoch


def _held_heights(core) -> list[int]:
    return sorted(b.header.height for h, b in core.blocks.items() if h != core.genesis_hash)


def test_memory_holds_the_previous_and_current_epoch_only_and_a_laggard_catches_up() -> None:
    net = SimNetwork(7, epoch_blocks=B, empty_block_ticks=2, max_delay=2)
    batch = scenario_txs(random.Random(7), 30)
    first, late = batch[:15], batch[15:]
    for tx in first:
        net.submit(0, tx)
        net.run(2)
    assert net.run_until(lambda: net.all_committed({merkle.tx_hash(t) for t in first}), 400)
    # replica 3 is cut off while the others go on for more than three epochs
    net.set_partition([{0, 1, 2}, {3}])
    cut_at = net.nodes[3].core.committed_height
    for tx in late:
        net.submit(1, tx)
        net.run(2)
    others = net.nodes[:3]
    assert net.run_until(lambda: min(nd.core.epoch for nd in others) >= cut_at // B + 4, 2000)
    for nd in others:
        core = nd.core
        keep_from = (core.epoch - 1) * B - 1
        heights = _held_heights(core)
        assert heights and heights[0] >= keep_from, (core.epoch, heights[:5])
        # the previous epoch, the current one and an uncommitted suffix at most
        assert len(heights) <= 2 * B + 8, len(heights)
        assert all(h >= keep_from for h in core.committed_txs.values())
        assert core.genesis_hash in core.blocks
        # ... while its store has every block (what it serves a laggard from)
        assert len(nd.stored) >= core.committed_height
    assert net.nodes[3].core.committed_height <= cut_at + 1  # it really was behind
    net.set_partition(None)
    target = net.nodes[0].core.committed_height
    assert net.run_until(lambda: net.nodes[3].core.committed_height >= target, 3000)
    assert net.nodes[3].commits[:target] == net.nodes[0].commits[:target]
    assert net.all_committed({merkle.tx_hash(t) for t in late})
    assert net.safety_violations() == []


def test_a_restarted_replica_loads_only_recent_blocks_and_goes_on(tmp_path) -> None:
    async def scenario() -> None:
        bus = Bus(empty_block_interval_ms=4, epoch_blocks=4)
        reps = await bus.started(tmp_path)
        assert await until(lambda: min(r.core.epoch for r in reps) >= 5)
        await reps[2].stop()
        bus.down.add(2)
        stored = reps[2].store.load().blocks  # everything on its disk
        reps[2].store.close()
        bus.down.discard(2)
        again = bus.make(2, tmp_path)
        core = again.core
        keep_from = (core.epoch - 1) * 4 - 1
        held = _held_heights(core)
        assert held[0] >= keep_from and len(held) < len(stored), (held[:3], len(stored))
        # the whole committed chain is known, loaded or not, and is the others' chain
        n = core.committed_height + 1
        assert n > keep_from + 2 and core.committed_hashes == reps[0].core.committed_hashes[:n]
        await again.start()
        tx = transfer(1, 0)
        await reps[0].submit(tx)
        await again.wait_receipt(merkle.tx_hash(tx), timeout_s=10)
        h = again.core.committed_height
        assert h > n and await again.committed_hash(h) == await reps[0].committed_hash(h)
        for r in [reps[0], reps[1], reps[3], again]:
            await r.stop()

    asyncio.run(scenario())
