"""Ledger replicas without Ray: real :class:`LedgerReplica` shells (SQLite on disk) joined by the
in-process peer transport. Shared by the replica, reconfiguration and snapshot-sync tests."""

from __future__ import annotations

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
