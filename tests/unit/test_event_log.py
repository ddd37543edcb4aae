"""The replica's event log, which verifiers follow: it does not verify an applied transaction's
signature a second time, ``since`` answers from a binary search that agrees with a scan, and a
long poll returns with the next block that brings events (from the loop or an apply thread)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gonka_ray import crypto, wire
from gonka_ray.actors import ledger_port
from gonka_ray.actors.ledger_port import EventLog
from gonka_ray.exceptions import MalformedMessage
from gonka_ray.ledger import merkle
from gonka_ray.ledger.state import BlockResult, TxResult

CHAIN = "eventlog-test"
KEY = crypto.KeyPair.from_seed("eventlog/voter")


def _votes(n: int, start: int = 0) -> list[bytes]:
    return [
        wire.seal(wire.Vote(inference_id=bytes([i % 256]) * 32, valid=True, nonce=i), KEY, CHAIN)
        for i in range(start, start + n)
    ]


def _block(height: int, txs: list[bytes], ok: bool = True) -> BlockResult:
    receipts = tuple(
        TxResult(wire.envelope_id(t), merkle.tx_hash(t), ok, "" if ok else "no") for t in txs
    )
    return BlockResult(height, b"\x00" * 32, b"\x00" * 32, receipts)


def test_applied_transactions_become_events_without_a_second_signature_check(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(ledger_port.wire.codec.crypto, "verify", lambda *a: calls.append(a))
    log = EventLog(CHAIN)
    txs = _votes(3)
    log.feed(_block(1, txs), txs)
    log.feed(_block(2, _votes(2, 3), ok=False), _votes(2, 3))  # rejected: no events
    assert calls == []
    assert [(e.seq, e.height, e.kind, e.sender) for e in log.events] == [
        (i + 1, 1, "Vote", KEY.address) for i in range(3)
    ]
    assert [e.inference_id for e in log.events] == [bytes([i]) * 32 for i in range(3)]


def test_open_applied_reads_what_open_envelope_verifies() -> None:
    tx = _votes(1)[0]
    read, opened = wire.open_applied(tx), wire.open_envelope(tx, chain=CHAIN)
    assert (read.message, read.signer, read.signature, read.raw) == (
        opened.message,
        opened.signer,
        opened.signature,
        opened.raw,
    )
    with pytest.raises(MalformedMessage):
        wire.open_applied(wire.encode(wire.Vote(inference_id=b"\x01" * 32, valid=True, nonce=1)))


def test_since_agrees_with_a_scan_also_after_old_events_are_dropped() -> None:
    log = EventLog(CHAIN, max_events=25)
    for h in range(1, 9):
        txs = _votes(7, 7 * h)
        log.feed(_block(h, txs), txs)
    assert len(log.events) == 25 and log.events[0].seq == 56 - 25 + 1
    for seq in range(-1, 60):
        assert log.since(seq) == [e for e in log.events if e.seq > seq], seq


async def test_a_long_poll_returns_with_the_next_block_that_brings_events() -> None:
    log = EventLog(CHAIN)
    t0 = time.monotonic()
    task = asyncio.create_task(log.wait_since(0, 5.0))
    await asyncio.sleep(0.05)
    rejected = _votes(1, 50)
    log.feed(_block(1, rejected, ok=False), rejected)  # a block without events: still waiting
    await asyncio.sleep(0.05)
    assert not task.done()
    txs = _votes(2)
    log.feed(_block(2, txs), txs)
    got = await asyncio.wait_for(task, 1.0)
    assert [e.seq for e in got] == [1, 2] and time.monotonic() - t0 < 1.0
    t1 = time.monotonic()
    assert await log.wait_since(2, 0.1) == [] and time.monotonic() - t1 >= 0.1  # times out empty
    assert [e.seq for e in await log.wait_since(1, 5.0)] == [2]  # something new: no wait
    task = asyncio.create_task(log.wait_since(2, 5.0))
    await asyncio.sleep(0.02)
    more = _votes(1, 9)
    await asyncio.to_thread(log.feed, _block(3, more), more)  # applied in a worker thread
    assert [e.seq for e in await asyncio.wait_for(task, 1.0)] == [3]


class _Follower:
    """A ledger port stand-in for the verifier's loop: ``events_since`` only (events without a
    Finish or a failed Validation, so no check runs), counting the asks."""

    chain = None

    def __init__(self, log: EventLog) -> None:
        self.log, self.asks = log, 0

    async def events_since(self, seq: int, wait_s: float = 0.0):
        self.asks += 1
        return await self.log.wait_since(seq, wait_s)


async def test_the_verifier_asks_once_per_long_poll_idle_and_at_most_once_per_interval_busy() -> (
    None
):
    from gonka_ray.actors.role import RoleContext
    from gonka_ray.actors.verifier import Verifier

    log = EventLog(CHAIN)
    port = _Follower(log)
    ctx = RoleContext(participant="v", key=KEY, ledger=port, engine=None, model="fake")
    v = Verifier(ctx, executors=lambda _a: None, epoch_seed=b"\x00" * 32)
    task = asyncio.create_task(v.run(poll_interval_s=0.1, wait_s=0.5))
    await asyncio.sleep(1.05)  # idle: asks at 0, 0.5, 1.0
    assert port.asks <= 3, port.asks
    txs = _votes(1)
    log.feed(_block(1, txs), txs)
    await asyncio.sleep(0.02)
    assert v.cursor == 1  # the waiting ask returned with the block
    port.asks, t0 = 0, time.monotonic()
    for h in range(2, 22):  # busy: a block with events every 10 ms
        more = _votes(1, h)
        log.feed(_block(h, more), more)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.15)
    busy_s = time.monotonic() - t0
    v.stop()
    await asyncio.wait_for(task, 2.0)
    assert v.cursor == 21
    assert port.asks <= busy_s / 0.1 + 2 and port.asks < 20, (port.asks, busy_s)  # not per block
