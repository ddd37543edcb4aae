"""The transport agent and the ledger's commit: the answer waits for a replica to *accept* the
Start, never for the commit (in one process, FakeEngine: protocol only).

A gate in front of the TA's LedgerPort holds every commit until the test opens it, while the
acceptance (the replica took the transaction) is reported at once, as the replica group does.
"""

from __future__ import annotations

import asyncio

import pytest

from gonka_ray import wire
from gonka_ray.actors.ledger_port import TxOutcome
from gonka_ray.exceptions import InsufficientBalance, TxRejected
from gonka_ray.protocol.lifecycle import InferenceStatus
from tests.sim.participants import CHAIN, Net


class GatedLedger:
    """The TA's ledger port with commits held at a gate (acceptance is reported at once).

    ``refuse`` makes every held submission come back refused instead of being applied;
    ``accept`` = False reports no acceptance (the outcome is then the first thing known)."""

    def __init__(self, inner, *, refuse: str = "", accept: bool = True) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.refuse = refuse
        self.accept = accept
        self.held = 0

    async def submit(self, tx: bytes, *, accepted: asyncio.Event | None = None) -> TxOutcome:
        if accepted is not None and self.accept:
            accepted.set()
        self.held += 1
        await self.gate.wait()
        if self.refuse:
            return TxOutcome(False, self.refuse, 0, b"")
        return await self.inner.submit(tx)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _stop_finishes(net: Net) -> None:
    """Cancel the executors' background Finish submissions."""
    for ex in net.executors.values():
        for task in list(ex._tasks._tasks):
            task.cancel()


async def _answer(net: Net, env: bytes) -> list:
    return [wire.decode(b) async for b in net.tas["p0"].submit(env)]


async def test_the_answer_does_not_wait_for_the_start_to_commit(tmp_path) -> None:
    net = Net(tmp_path)
    gated = GatedLedger(net.ledger)
    net.tas["p0"].ledger = gated
    env = net.request()
    iid = wire.open_envelope(env, chain=CHAIN).id
    items = await asyncio.wait_for(_answer(net, env), 10)
    assert isinstance(items[-1], wire.InferenceDone) and items[-1].inference_id == iid
    assert gated.held == 1 and await net.ledger.inference(iid) is None  # not committed yet
    gated.gate.set()
    await net.settle()
    record = await net.ledger.inference(iid)
    assert record is not None and record.status is InferenceStatus.FINISHED
    assert net.tas["p0"].stats()["unpaid_answers"] == 0


async def test_a_client_cannot_spend_one_balance_twice_through_one_ta(tmp_path) -> None:
    first = Net(tmp_path / "probe")
    items = await first.ask("p0", first.request())
    escrow_of_one = items[-1].prompt_tokens + 12  # max_tokens of Net.request
    net = Net(tmp_path / "net", client_balance=escrow_of_one + escrow_of_one // 2)
    gated = GatedLedger(net.ledger)
    net.tas["p0"].ledger = gated
    ta = net.tas["p0"]
    items = await asyncio.wait_for(_answer(net, net.request()), 10)
    assert isinstance(items[-1], wire.InferenceDone)
    assert ta.stats()["pending_escrow"] == escrow_of_one  # its Start has not committed
    with pytest.raises(InsufficientBalance, match="still starting"):
        await _answer(net, net.request())
    gated.gate.set()
    await net.settle()
    assert ta.stats()["pending_escrow"] == 0  # released once the ledger decided the Start
    with pytest.raises(InsufficientBalance):  # and the ledger's balance now holds the escrow
        await _answer(net, net.request())


async def test_a_start_refused_before_the_answer_ends_is_the_clients_error(tmp_path) -> None:
    net = Net(tmp_path)
    gated = GatedLedger(net.ledger, refuse="insufficient_balance", accept=False)
    gated.gate.set()
    net.tas["p0"].ledger = gated
    with pytest.raises(TxRejected, match="nothing was charged") as err:
        await _answer(net, net.request())
    assert err.value.reason == "insufficient_balance"


async def test_a_start_refused_after_the_answer_went_out_is_counted(tmp_path) -> None:
    net = Net(tmp_path)
    gated = GatedLedger(net.ledger, refuse="insufficient_balance")
    net.tas["p0"].ledger = gated
    items = await asyncio.wait_for(_answer(net, net.request()), 10)
    assert isinstance(items[-1], wire.InferenceDone)
    gated.gate.set()
    await net.tas["p0"].drain()  # no OutputDelivered is sent for a Start that was refused
    assert gated.held == 1
    assert net.tas["p0"].stats()["unpaid_answers"] == 1
    assert net.tas["p0"].stats()["pending_escrow"] == 0
    _stop_finishes(net)  # the executor's Finish waits for a Start that will never commit


class CountingLedger:
    """Counts participant-set reads; everything else goes to the real ledger."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.reads = 0

    async def participants(self):
        self.reads += 1
        return await self.inner.participants()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


async def test_executor_checks_draws_on_a_recent_copy_and_rereads_before_refusing(
    tmp_path,
) -> None:
    from gonka_ray.protocol.selection import eligible_weights, select_executor

    net = Net(tmp_path)
    ta = net.keys["p0"]
    now = [0.0]
    counting = {}
    for name, ex in net.executors.items():
        ex.ledger = counting[name] = CountingLedger(net.ledger)
        ex.monotonic = lambda: now[0]
    weights = eligible_weights(await net.ledger.participants())

    async def execute_msg(env: bytes) -> tuple[bytes, str]:
        client = wire.open_envelope(env, chain=CHAIN)
        drawn = select_executor(client.id, 0, weights, exclude={ta.address})
        prompt = await net.executors["p0"].engine.request_prompt_ids(client.message)
        msg = wire.ExecuteRequest(request=env, attempt=0, prompt_ids=tuple(prompt))
        return wire.seal(msg, ta, CHAIN), drawn

    async def run(ex, sealed: bytes) -> list:
        return [wire.decode(b) async for b in ex.execute(sealed)]

    # two requests drawn for one executor within the TTL: one read of the participant set
    target = next(ex for ex in net.executors.values() if ex.address != ta.address)
    sealed = []
    while len(sealed) < 2:
        s, drawn = await execute_msg(net.request())
        if drawn == target.address:
            sealed.append(s)
    for s in sealed:
        assert isinstance((await run(target, s))[-1], wire.StreamChunk)
    name = next(n for n, e in net.executors.items() if e is target)
    assert counting[name].reads == 1
    # a copy under which the draw lands elsewhere is re-read before refusing: no false refusal
    stale = {a: p for a, p in (await net.ledger.participants()).items() if a != target.address}
    target._participants = (now[0], stale)
    s, drawn = await execute_msg(net.request())
    while drawn != target.address:
        s, drawn = await execute_msg(net.request())
    assert isinstance((await run(target, s))[-1], wire.StreamChunk)
    assert counting[name].reads == 2
    # past the TTL the set is read again
    now[0] += 10.0
    s, drawn = await execute_msg(net.request())
    while drawn != target.address:
        s, drawn = await execute_msg(net.request())
    await run(target, s)
    assert counting[name].reads == 3
    _stop_finishes(net)  # no TA started these: their Finish would wait for a Start


class SlowBalance:
    """The TA's ledger port with a slow balance read, so concurrent admissions overlap."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def balance(self, address: str) -> int:
        await asyncio.sleep(0.05)
        return await self.inner.balance(address)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


async def test_two_concurrent_requests_cannot_share_one_balance(tmp_path) -> None:
    probe = Net(tmp_path / "probe")
    escrow_of_one = (await probe.ask("p0", probe.request()))[-1].prompt_tokens + 12
    net = Net(tmp_path / "net", client_balance=escrow_of_one + escrow_of_one // 2)
    net.tas["p0"].ledger = SlowBalance(net.ledger)
    outcomes = await asyncio.gather(
        _answer(net, net.request()), _answer(net, net.request()), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, InsufficientBalance)]
    answered = [o for o in outcomes if isinstance(o, list)]
    assert len(refused) == 1 and len(answered) == 1, outcomes
    await net.settle()
    assert net.tas["p0"].stats()["unpaid_answers"] == 0
    assert net.tas["p0"].stats()["pending_escrow"] == 0


async def test_an_absurd_attempt_is_refused_before_any_draw(tmp_path) -> None:
    net = Net(tmp_path)
    ta = net.keys["p0"]
    msg = wire.ExecuteRequest(request=net.request(), attempt=2**32 - 1, prompt_ids=(1, 2, 3))
    ex = next(iter(net.executors.values()))
    items = await asyncio.wait_for(_collect(ex.execute(wire.seal(msg, ta, CHAIN))), 5)
    assert isinstance(items[0], wire.ExecutionError) and "attempt" in items[0].message


async def _collect(agen) -> list:
    return [wire.decode(b) async for b in agen]


async def test_a_stream_the_client_abandons_is_billed_for_what_was_generated(tmp_path) -> None:
    net = Net(tmp_path)
    balance0 = await net.ledger.balance(net.client.address)
    env = net.request(max_tokens=12)
    iid = wire.open_envelope(env, chain=CHAIN).id
    stream = net.tas["p0"].submit(env)
    got = [wire.decode(await stream.__anext__()) for _ in range(3)]
    assert all(isinstance(c, wire.StreamChunk) for c in got)
    await stream.aclose()  # the client goes away after three tokens
    for _ in range(20):  # the abandoned inner streams are closed by the event loop
        await asyncio.sleep(0.01)
    await net.settle()
    rec = await net.ledger.inference(iid)
    assert rec is not None and rec.status is InferenceStatus.FINISHED
    assert rec.finish_reason == "abort" and rec.completion_tokens == 3
    assert rec.delivered_hash == rec.response_hash  # the TA recorded the three it sent
    assert await net.ledger.balance(net.client.address) == balance0 - rec.cost
    await net.verify_all()  # an honest aborted output passes verification
    rec = await net.ledger.inference(iid)
    assert rec.status is InferenceStatus.VALIDATED, rec
