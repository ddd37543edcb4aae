"""The replica shell without Ray: four replicas over an in-memory transport, SQLite on tmp_path."""

from __future__ import annotations

import asyncio

from gonka_ray import wire
from gonka_ray.ledger import merkle
from gonka_ray.ledger.receipts import verify_receipt
from gonka_ray.ledger.replica import validators_of
from gonka_ray.ledger.storage import LedgerStore
from gonka_ray.wire import ConsensusSafety, TxReceipt
from tests.sim.network import sim_key
from tests.sim.replicas import GENESIS, Bus, transfer


async def test_replicas_commit_give_receipts_and_recover(tmp_path) -> None:
    bus = Bus()
    reps = [bus.make(i, tmp_path) for i in range(4)]
    for r in reps:
        await r.start()
    txs = [transfer(1, n) for n in range(5)]
    for tx in txs:
        await reps[0].submit(tx)
    raw = await reps[1].wait_receipt(merkle.tx_hash(txs[-1]), timeout_s=10)
    receipt = wire.decode(raw, TxReceipt)
    vs = validators_of(GENESIS)
    chain = reps[1].core.chain
    assert receipt.ok and verify_receipt(receipt, vs, chain, txs[-1])
    assert not verify_receipt(receipt, vs, chain, txs[0])  # another tx's bytes
    # Let everyone catch up, then compare state.
    for _ in range(500):
        st = [await r.status() for r in reps]
        if len({s["state_hash"] for s in st}) == 1 and st[0]["state_height"] >= 1:
            break
        await asyncio.sleep(0.01)
    assert len({s["state_hash"] for s in st}) == 1
    assert await reps[2].balance(sim_key("client-1").address) == 1_000 - 5 + 0
    # "Kill" replica 2 and rebuild it from its SQLite file.
    await reps[2].stop()
    bus.down.add(2)
    height_before = reps[2].core.committed_height
    hash_before = reps[2].sm.state_hash
    reps[2].store.close()
    bus.down.discard(2)
    again = bus.make(2, tmp_path)
    assert again.recovered_height == height_before
    assert again.sm.state_hash == hash_before
    assert again.core.last_voted_view == reps[2].core.last_voted_view
    # It keeps participating: new transactions commit everywhere.
    await again.start()
    more = [transfer(2, n) for n in range(3)]
    await reps[0].submit_many(more)
    await again.wait_receipt(merkle.tx_hash(more[-1]), timeout_s=10)
    for r in [reps[0], reps[1], reps[3], again]:
        await r.stop()


def _stored_safety(r):
    row = r.store.db.execute("SELECT data FROM safety WHERE id = 1").fetchone()
    return wire.decode(row[0], ConsensusSafety) if row else None


async def test_every_message_leaves_after_the_safety_record_it_rests_on_is_durable(
    tmp_path,
) -> None:
    # A Ready that only moves the lock or the high QC is written with the next write (the
    # replica docstring); the invariant that matters still holds at every send: what SQLite
    # holds is the core's current safety record, so nothing sent can be forgotten by a crash.
    bus = Bus()
    reps = [bus.make(i, tmp_path) for i in range(4)]
    sends, stale, deferred = [], [], []
    for r in reps:
        send, carry_out = r._transport.send, r._carry_out
        initial = r.core.safety_record()  # what a replica with nothing stored recovers to

        def checked(dest, data, r=r, send=send, initial=initial):
            sends.append(r.index)
            stored, now = _stored_safety(r), r.core.safety_record()
            if stored != now and not (stored is None and now == initial):
                stale.append((r.index, r.core.cur_view))
            send(dest, data)

        def counting(ready, r=r, carry_out=carry_out):
            carry_out(ready)
            if r._unsaved_safety is not None:
                deferred.append(r.index)

        r._transport.send, r._carry_out = checked, counting
    for r in reps:
        await r.start()
    for wave in range(3):  # later waves are gossiped by replicas holding a record back
        txs = [transfer(1, 3 * wave + n) for n in range(3)]
        for tx in txs:
            await reps[wave].submit(tx)
        await reps[3].wait_receipt(merkle.tx_hash(txs[-1]), timeout_s=10)
    for r in reps:
        await r.stop()
        assert _stored_safety(r) == r.core.safety_record()  # stop() writes what was held back
    assert sends and deferred  # the path was taken, and messages were checked
    assert stale == []


def test_store_roundtrip_of_safety_and_blocks(tmp_path) -> None:
    from gonka_ray.ledger.quorum import genesis_block

    store = LedgerStore(tmp_path / "s.sqlite")
    g = genesis_block(b"x")
    store.persist([g])
    rec = store.load()
    assert rec.blocks == [g] and rec.safety is None and rec.committed_hashes == []
    store.close()


async def test_a_full_mempool_refuses_a_new_transaction_instead_of_dropping_it(tmp_path) -> None:
    import pytest

    from gonka_ray.exceptions import Overloaded

    bus = Bus()
    r = bus.make(0, tmp_path)  # alone: nothing commits, the mempool only fills
    r.core.mempool_max_txs = 1
    first = transfer(1, 0)
    await r.submit(first)
    assert await r.submit(first) == merkle.tx_hash(first)  # a known one is still taken
    with pytest.raises(Overloaded):
        await r.submit(transfer(1, 1))
    await r.stop()


async def test_a_replica_started_with_other_rule_parameters_takes_no_part(tmp_path) -> None:
    """The rule parameters are in the genesis, whose hash every consensus signature binds: a
    replica configured with another expiry window (a joiner's edited config) commits nothing and
    counts for nothing, instead of applying other rules to the same blocks in silence (headers
    carry no state hash that would show it)."""
    from dataclasses import replace

    from gonka_ray.demo import demo_network_config
    from gonka_ray.ledger.replica import LedgerReplica
    from gonka_ray.network import ledger_params

    params = ledger_params(demo_network_config(model="fake", cheat=None, engine="fake"))
    ours = replace(GENESIS, params=params)
    theirs = replace(GENESIS, params=replace(params, expiry_blocks=params.expiry_blocks + 1))
    assert wire.digest(ours) != wire.digest(theirs)
    bus = Bus()
    reps = [
        LedgerReplica(
            index=i,
            key_seed=sim_key(f"replica-{i}").seed,
            genesis=wire.encode(theirs if i == 3 else ours),
            storage_dir=str(tmp_path),
            transport=bus.transport(i),
            tick_ms=2,
            timeout_ticks=25,
        )
        for i in range(4)
    ]
    for i, r in enumerate(reps):
        bus.add(i, r)
        await r.start()
    txs = [transfer(1, n) for n in range(3)]
    for tx in txs:
        await reps[0].submit(tx)
    for r in reps[:3]:  # three of four are a quorum: the matching replicas go on
        receipt = wire.decode(
            await r.wait_receipt(merkle.tx_hash(txs[-1]), timeout_s=10), TxReceipt
        )
        assert receipt.ok
    await asyncio.sleep(0.5)  # ~250 ticks: time enough for the odd one to follow, were it able to
    assert reps[3].core.committed_height == 0 and reps[0].core.committed_height >= 1
    assert await reps[3].balance(sim_key("client-1").address) == 1_000  # nothing applied
    for r in reps:
        await r.stop()
