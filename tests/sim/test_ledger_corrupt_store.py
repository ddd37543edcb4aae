"""A replica whose SQLite file is damaged refuses to start, naming the file and the fix; with
``on_corrupt_store="resync"`` it moves the file aside, starts empty, snapshot-syncs from its
peers and rejoins at their height and state hash."""

from __future__ import annotations

import asyncio
import time

import pytest

from gonka_ray.exceptions import CorruptStore
from gonka_ray.ledger import merkle
from tests.sim.replicas import Bus, transfer

B = 4


async def _until(cond, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_corrupt_store_is_refused_then_resynced_from_peers(tmp_path) -> None:
    async def scenario() -> None:
        bus = Bus(snapshot_every=1000, empty_block_interval_ms=4, epoch_blocks=B)
        reps = [bus.make(i, tmp_path / f"r{i}") for i in range(4)]
        for r in reps:
            await r.start()
        await _until(lambda: min(r.sm.height for r in reps) >= 2 * B + 1, "two epochs")
        await reps[3].close()
        bus.down.add(3)
        path = tmp_path / "r3" / "replica-3.sqlite"
        with open(path, "r+b") as f:
            f.write(b"\x00" * 100)  # the SQLite header
        damaged = path.read_bytes()

        # Refuse (the default): a typed error naming the file, the damage and the fix.
        with pytest.raises(CorruptStore) as err:
            bus.make(3, tmp_path / "r3")
        msg = str(err.value)
        assert str(path) in msg and "not a database" in msg and "resync" in msg
        assert path.read_bytes() == damaged  # left as it was for the operator

        # Resync: the file goes aside, the replica starts empty and snapshot-syncs.
        again = bus.make(3, tmp_path / "r3", on_corrupt_store="resync")
        assert again.moved_aside is not None
        assert again.moved_aside.name.startswith("replica-3.sqlite.corrupt-")
        assert again.moved_aside.read_bytes() == damaged
        assert again.core.committed_height == 0
        # Still cut off from consensus messages, so only snapshot sync can bring it up; its
        # snapshot-sync calls reach the peers.
        again._transport.sync_peers = lambda: reps[:3]
        await again.start()
        await _until(lambda: again.core.committed_height >= 2 * B - 1, "the snapshot")
        assert (again.core.committed_height + 1) % B == 0  # an epoch-end snapshot
        for _ in range(100):  # the resync task ends right after the install
            if not (await again.status())["resyncing"]:
                break
            await asyncio.sleep(0.01)
        assert (await again.status())["resyncing"] is False
        h = again.core.committed_height
        assert again.sm.state_hash == reps[0].store.committed_block(h)[2]

        # It rejoins: follows the chain, commits new transactions, agrees on state.
        bus.down.discard(3)
        tx = transfer(2, 0)
        await reps[0].submit(tx)
        await again.wait_receipt(merkle.tx_hash(tx), timeout_s=20)
        await _until(
            lambda: again.core.committed_height >= reps[0].core.committed_height - 1, "catch-up"
        )
        top = min(r.sm.height for r in [*reps[:3], again])  # applied and recorded everywhere
        assert top > h
        for r in reps[:3]:
            assert await r.committed_hash(top) == await again.committed_hash(top)
            assert r.store.committed_block(top)[2] == again.store.committed_block(top)[2]
        for r in [*reps[:3], again]:
            await r.close()

    asyncio.run(scenario())
