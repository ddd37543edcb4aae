"""Ledger replicas without Ray: real :class:`LedgerReplica` shells (SQLite on disk) joined by the
in-process peer transport. Shared by the replica, reconfiguration and snapshot-sync tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gonka_ray import wire
from gonka_ray.ledger.replica import LedgerReplica
from gonka_ray.ledger.transport import InProcessNetwork
from gonka_ray.wire import Transfer
from tests.sim.network import SIM_CHAIN as CHAIN
from tests.sim.network import make_genesis, sim_key

GENESIS = make_genesis(4)


class Bus(InProcessNetwork):
    """Replicas of the sim genesis on the in-process network; ``make`` builds and joins one
    (``options``, then ``make``'s own, override the replica's keyword arguments)."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options

    async def started(self, path, n: int = 4) -> list[LedgerReplica]:
        """``n`` replicas made and started."""
        reps = [self.make(i, path) for i in range(n)]
        for r in reps:
            await r.start()
        return reps

    def make(self, i: int, path, **options: Any) -> LedgerReplica:
        r = LedgerReplica(
            index=i,
            key_seed=sim_key(f"replica-{i}").seed,
            genesis=wire.encode(GENESIS),
            storage_dir=str(path),
            transport=self.transport(i),
            **{"tick_ms": 2, "timeout_ticks": 25, "snapshot_every": 3, **self.options, **options},
        )
        self.add(i, r)
        return r


def transfer(k: int, nonce: int) -> bytes:
    to = sim_key("client-0").address
    return wire.seal(Transfer(to=to, amount=1, nonce=nonce), sim_key(f"client-{k}"), CHAIN)


async def until(done: Callable[[], bool], *, polls: int = 4000, every_s: float = 0.005) -> bool:
    """Poll ``done`` until it holds (bounded); returns whether it did."""
    for _ in range(polls):
        if done():
            return True
        await asyncio.sleep(every_s)
    return done()
