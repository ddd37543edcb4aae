"""LedgerClient without Ray: replicas behind fake handles whose ``.remote`` returns coroutines."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from gonka_ray import wire
from gonka_ray.exceptions import CommitTimeout, LedgerError
from gonka_ray.ledger.client import LedgerClient
from gonka_ray.wire import TxReceipt
from tests.sim.replicas import GENESIS, Bus, transfer


def handle(obj, broken: set[str] = frozenset(), tamper: bool = False):
    def method(name):
        async def call(*args):
            if name in broken:
                raise RuntimeError(f"{name} failed (actor died)")
            out = await getattr(obj, name)(*args)
            if tamper and name == "wait_receipt":
                r = wire.decode(out, TxReceipt)
                out = wire.encode(dataclasses.replace(r, index=r.index + 1))
            return out

        return SimpleNamespace(remote=call)

    return SimpleNamespace(
        submit=method("submit"), wait_receipt=method("wait_receipt"), balance=method("balance")
    )


async def test_client_returns_verified_receipt_and_fails_over(tmp_path) -> None:
    bus = Bus()
    reps = [bus.make(i, tmp_path) for i in range(4)]
    dead = handle(reps[0], broken={"submit", "wait_receipt"})
    client = LedgerClient([dead, handle(reps[1])], GENESIS, timeout_s=10, seed=3)
    tx = transfer(1, 0)
    receipt = await client.submit(tx)  # whichever it tries first, it ends on replica 1
    assert receipt.ok and receipt.reason == ""
    assert await client.balance(bus.replicas[1].sm.genesis.accounts[1].address) == 999
    for r in reps:
        await r.stop()


async def test_client_rejects_a_receipt_that_does_not_verify(tmp_path) -> None:
    bus = Bus()
    reps = [bus.make(i, tmp_path) for i in range(4)]
    client = LedgerClient([handle(reps[2], tamper=True)], GENESIS, timeout_s=10)
    with pytest.raises(LedgerError):
        await client.submit(transfer(1, 0))
    for r in reps:
        await r.stop()


async def test_client_times_out_when_every_replica_fails(tmp_path) -> None:
    bus = Bus()
    reps = [bus.make(i, tmp_path) for i in range(4)]
    client = LedgerClient([handle(reps[0], broken={"submit"})], GENESIS, timeout_s=1)
    with pytest.raises(CommitTimeout):
        await client.submit(transfer(1, 0))
    for r in reps:
        await r.stop()


async def test_prefer_first_always_tries_the_own_replica_first(tmp_path) -> None:
    bus = Bus()
    reps = [bus.make(i, tmp_path) for i in range(4)]
    calls: list[int] = []

    def counting(i: int):
        h = handle(reps[i])
        inner = h.submit.remote

        async def submit(*args):
            calls.append(i)
            return await inner(*args)

        h.submit = SimpleNamespace(remote=submit)
        return h

    for seed in range(5):
        client = LedgerClient(
            [counting(2), counting(0), counting(1)],
            GENESIS,
            timeout_s=10,
            seed=seed,
            prefer_first=True,
        )
        calls.clear()
        receipt = await client.submit(transfer(1, seed))
        assert receipt.ok and calls == [2]  # the preferred replica answered; no other was asked
    for r in reps:
        await r.stop()
