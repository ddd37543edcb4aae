"""The request flow and background verification, wired in one process (FakeEngine: protocol only).

Four participants share a LocalLedger (the real state machine without replication); each has an
MLNode on the fake engine, an executor, a transport agent and a verifier. No Ray: the actor
classes are plain classes called directly.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from gonka_ray import crypto, wire
from gonka_ray.actors.ledger_port import TxOutcome
from gonka_ray.constants import (
    PAYLOAD_FETCH_RETRY_S,
    VERIFIER_OWN_FAILURE_RETRIES,
    VERIFIER_RETRY_MAX_S,
)
from gonka_ray.exceptions import (
    BadSignature,
    CommitTimeout,
    ExpiredRequest,
    InsufficientBalance,
    ModelNotFound,
    PeerUnavailable,
    ReplayedRequest,
)
from gonka_ray.protocol.lifecycle import InferenceStatus
from tests.sim.participants import CHAIN, NOW, BadExecutor, Net


async def test_honest_network_serves_records_and_validates(tmp_path) -> None:
    net = Net(tmp_path)
    balance0 = await net.ledger.balance(net.client.address)
    items = await net.ask("p0", net.request())
    *chunks, done = items
    assert isinstance(done, wire.InferenceDone) and chunks
    assert all(isinstance(c, wire.StreamChunk) for c in chunks)
    assert done.executor != net.keys["p0"].address  # never the TA's own participant
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.FINISHED and rec.delivered_hash == rec.response_hash
    assert await net.ledger.balance(net.client.address) == balance0 - done.cost
    await net.verify_all()
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.VALIDATED
    assert rec.validations and all(rec.validations.values())
    assert rec.executor not in rec.validations


async def test_every_newcomer_inference_is_checked(tmp_path) -> None:
    net = Net(tmp_path)
    ids = []
    for i in range(12):
        *_, done = await net.ask(f"p{i % 4}", net.request())
        ids.append(done.inference_id)
    await net.verify_all()
    checks = [len((await net.ledger.inference(i)).validations) for i in ids]
    # the primary validator checks every one; secret-seed sampling adds ~1 more on average
    assert all(1 <= c <= 3 for c in checks), checks


async def test_cheater_is_caught_voted_invalid_refunded_and_kicked_out(tmp_path) -> None:
    net = Net(tmp_path, cheater="p3")
    cheater = net.keys["p3"].address
    served = []
    # NOTE: traffic until the cheater is INVALID (five invalidations in a row), at most 90
    # requests (~30 of them drawn to it). A wrong-temperature answer that happens to equal the
    # honest one passes — it did no harm — and restarts the run; the test is deterministic
    # (fixed keys, seeds and nonces), so this bound is not a retry.
    for i in range(90):
        *_, done = await net.ask(f"p{i % 3}", net.request())
        if done.executor == cheater:
            served.append(done.inference_id)
        await net.verify_all(rounds=2)
        if (await net.ledger.participants())[cheater].status == "INVALID":
            break
    parts = await net.ledger.participants()
    assert parts[cheater].status == "INVALID", len(served)
    recs = [await net.ledger.inference(i) for i in served]
    invalidated = [r for r in recs if r.status is InferenceStatus.INVALIDATED]
    assert len(invalidated) >= 5
    # the invalidated answers' fees left its pending fees; what is left (answers that passed)
    # is forfeited with its INVALID epoch at settlement (test_settlement, test_epoch_app)
    kept = sum(r.cost for r in recs if r.status is not InferenceStatus.INVALIDATED)
    assert parts[cheater].record.pending_fees == kept
    # every invalidated answer went back to the client in full
    assert all(r.refunded == r.cost > 0 for r in invalidated)
    for name in ("p0", "p1", "p2"):
        assert parts[net.keys[name].address].status != "INVALID"
    # kicked out: no further work goes to the cheater
    for _ in range(8):
        *_, done = await net.ask("p0", net.request())
        assert done.executor != cheater


async def test_withheld_payload_counts_as_failed_check(tmp_path) -> None:
    # fetch window 0: the clock here stands still (the window's end is tested in test_exploits)
    net = Net(tmp_path, withhold="p2", fetch_window_s=0)
    for _ in range(30):
        *_, done = await net.ask("p0", net.request())
        if done.executor == net.keys["p2"].address:
            break
    await net.verify_all()
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status in (InferenceStatus.VOTING, InferenceStatus.INVALIDATED)
    assert False in rec.validations.values()


async def test_a_payload_out_of_reach_for_a_while_is_asked_again_not_failed(tmp_path) -> None:
    # Guards Verifier._opened's fetch window: an honest executor that cannot be reached when
    # its validator first asks (restarting, a peer link down) is asked again and passes once it
    # answers. Before the window one failed fetch was a failed check, and the crash-fault run
    # invalidated honest executors that way.
    net = Net(tmp_path)
    target = net.executors["p2"]
    serve, down = target.payload, [True]

    async def out_of_reach(envelope: bytes) -> bytes:
        if down[0]:
            raise PeerUnavailable("executor restarting")
        return await serve(envelope)

    target.payload = out_of_reach
    for _ in range(30):
        *_, done = await net.ask("p0", net.request())
        if done.executor == target.address:
            break
    assert done.executor == target.address
    await net.verify_all(rounds=1)
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.FINISHED and not rec.validations  # nothing decided
    assert sum(v.stats()["waiting_to_retry"] for v in net.verifiers.values()) >= 1
    down[0] = False
    net.now += PAYLOAD_FETCH_RETRY_S
    await net.verify_all(rounds=1)
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.VALIDATED
    assert rec.validations and all(rec.validations.values())
    assert all(v.stats()["waiting_to_retry"] == 0 for v in net.verifiers.values())


class _Restarting:
    """An MLNode whose scoring fails while ``failing[0]`` (killed, restarting)."""

    def __init__(self, engine, failing: list[bool]) -> None:
        self.engine, self.failing = engine, failing

    def __getattr__(self, name):
        return getattr(self.engine, name)

    async def score(self, *args, **kwargs):
        if self.failing[0]:
            raise RuntimeError("MLNode restarting")
        return await self.engine.score(*args, **kwargs)


async def test_a_check_that_fails_on_the_verifiers_own_side_is_asked_again(tmp_path) -> None:
    # Guards Verifier._checking's retry: a check whose own engine fails (its MLNode
    # restarting) is put off and done later, not lost (a lost check is a missed duty for an
    # honest validator, and left the inference unchecked).
    net = Net(tmp_path)
    *_, done = await net.ask("p0", net.request())
    failing = [True]
    for v in net.verifiers.values():
        v.engine = _Restarting(v.engine, failing)
    await net.verify_all(rounds=1)
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.FINISHED and not rec.validations
    retried = sum(v.stats()["retried_after_own_failure"] for v in net.verifiers.values())
    assert retried >= 1
    failing[0] = False
    net.now += PAYLOAD_FETCH_RETRY_S
    await net.verify_all(rounds=1)
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.VALIDATED and all(rec.validations.values())
    assert all(v.stats()["waiting_to_retry"] == 0 for v in net.verifiers.values())


async def test_a_check_whose_ledger_link_is_down_is_kept_and_retried_with_backoff(
    tmp_path,
) -> None:
    # Guards Verifier._put_off (reads nothing from the ledger: it read the height, which raised
    # when the ledger link was what failed, and the check was lost) and _retry_due's window
    # end in blocks (tried once: an entry past its window was due on every call, so failures
    # here used up their retries in a few blocks instead of backing off).
    net = Net(tmp_path)
    *_, done = await net.ask("p0", net.request())
    rec = await net.ledger.inference(done.inference_id)
    judge = next(v for v in net.verifiers.values() if v.address != rec.executor)
    submit, real_height = judge._submit, net.ledger.height

    async def down(*_args, **_kw):
        raise ConnectionError("ledger link down")

    judge._submit = down
    net.ledger.height = down
    assert await judge._checking(rec) == 0  # put off, nothing raised
    assert judge.stats()["waiting_to_retry"] == 1
    net.ledger.height = real_height
    waiting = next(iter(judge._waiting.values()))
    waiting.last_height = 0  # its window has ended in blocks
    for _ in range(5):  # the clock stands still: one try at the window's end, then backoff
        await judge.run_once()
    assert judge.stats()["retried_after_own_failure"] == 2
    judge._submit = submit
    net.now += VERIFIER_RETRY_MAX_S
    assert await judge.run_once() == 1  # the link is back: the check goes in
    rec = await net.ledger.inference(done.inference_id)
    assert rec.validations == {judge.address: True}
    assert judge.stats()["waiting_to_retry"] == 0


async def test_a_check_failing_on_the_verifiers_own_side_for_good_is_given_up(tmp_path) -> None:
    # Guards Verifier._put_off's bound: work failing here every time (a bug, an engine that
    # never comes back) backs off and is given up after VERIFIER_OWN_FAILURE_RETRIES tries,
    # never failing the executor; it does not retry every 2 s until settlement.
    net = Net(tmp_path)
    *_, done = await net.ask("p0", net.request())
    for v in net.verifiers.values():
        v.engine = _Restarting(v.engine, [True])
    for _ in range(VERIFIER_OWN_FAILURE_RETRIES + 3):
        await net.verify_all(rounds=1)
        net.now += VERIFIER_RETRY_MAX_S
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.FINISHED and not rec.validations
    stats = [v.stats() for v in net.verifiers.values()]
    assert all(st["waiting_to_retry"] == 0 for st in stats)
    tried = [st["retried_after_own_failure"] for st in stats if st["retried_after_own_failure"]]
    assert tried and all(n == VERIFIER_OWN_FAILURE_RETRIES + 1 for n in tried), tried


async def test_a_verifier_votes_before_it_works_through_its_sampled_checks(tmp_path) -> None:
    # Guards Verifier.run_once's order: a vote has a deadline of a few blocks (a lone
    # accusation lapses at it from v5), a sampled check has until the epoch settles; behind a
    # backlog of checks the votes came too late.
    net = Net(tmp_path, cheater="p3")
    ids = []
    for _ in range(20):
        *_, done = await net.ask("p0", net.request())
        ids.append(done.inference_id)
    await net.verifiers["p0"].run_once()
    records = [await net.ledger.inference(i) for i in ids]
    accusations = [
        r
        for r in records
        if r.status is InferenceStatus.VOTING and r.accuser == net.keys["p0"].address
    ]
    assert accusations  # precondition: p0 failed a cheated inference, a vote is open
    late = net.verifiers["p1"]
    sent: list[str] = []
    submit = late._submit

    async def recording(msg) -> None:
        sent.append(type(msg).__name__)
        await submit(msg)

    late._submit = recording
    await late.run_once()
    assert "Vote" in sent and "Validation" in sent, sent  # it had both to do
    assert sent.index("Validation") > max(i for i, k in enumerate(sent) if k == "Vote"), sent


async def test_bad_requests_fail_before_anything_is_escrowed(tmp_path) -> None:
    net = Net(tmp_path, client_balance=100)
    bal = await net.ledger.balance(net.client.address)
    env = bytearray(net.request())
    env[-5] ^= 1
    with pytest.raises(BadSignature):
        await net.ask("p0", bytes(env))
    with pytest.raises(ExpiredRequest):
        await net.ask("p0", net.request(ts=NOW - 120))
    with pytest.raises(ModelNotFound):
        await net.ask("p0", net.request(model="gpt-5"))
    with pytest.raises(InsufficientBalance):
        await net.ask("p0", net.request(max_tokens=500))
    with pytest.raises(InsufficientBalance):
        await net.ask("p0", net.request(max_escrow=3))
    ok = net.request(max_tokens=4)
    await net.ask("p0", ok)
    with pytest.raises(ReplayedRequest):
        await net.ask("p0", ok)
    assert await net.ledger.height() >= 1
    assert await net.ledger.balance(net.client.address) < bal  # only the one good request paid


async def test_executor_refuses_work_it_was_not_drawn_for(tmp_path) -> None:
    net = Net(tmp_path)
    env = net.request()
    ta = net.keys["p0"]
    wrong = next(e for e in net.executors.values() if e.address != ta.address)
    prompt = await net.executors["p1"].engine.request_prompt_ids(
        wire.open_envelope(env, chain=CHAIN).message
    )
    msg = wire.ExecuteRequest(request=env, attempt=0, prompt_ids=tuple(prompt))
    for ex in net.executors.values():
        items = [wire.decode(b) async for b in ex.execute(wire.seal(msg, ta, CHAIN))]
        if ex is wrong and len(items) > 1:
            break
    refused = 0
    for ex in net.executors.values():
        items = [wire.decode(b) async for b in ex.execute(wire.seal(msg, ta, CHAIN))]
        refused += isinstance(items[0], wire.ExecutionError)
    assert refused == 3  # exactly one executor is the draw; the TA's own is never it
    stranger = crypto.KeyPair.from_seed("stranger")
    items = [wire.decode(b) async for b in wrong.execute(wire.seal(msg, stranger, CHAIN))]
    assert isinstance(items[0], wire.ExecutionError) and not items[0].started
    await asyncio.sleep(0)


@pytest.mark.parametrize("mode", ["garbage", "nothing"])
async def test_executor_failing_before_first_token_is_retried_elsewhere(tmp_path, mode) -> None:
    net = Net(tmp_path)
    bad_addr = net.keys["p1"].address
    bad = BadExecutor(mode)
    real = {e.address: e for e in net.executors.values()}
    net.tas["p0"].executors = lambda a: bad if a == bad_addr else real[a]
    for _ in range(20):
        items = await net.ask("p0", net.request())
        if bad.calls:
            break
    assert bad.calls >= 1
    done = items[-1]
    assert isinstance(done, wire.InferenceDone) and done.executor != bad_addr
    assert done.attempt >= 1 and net.tas["p0"].retries >= 1
    rec = await net.ledger.inference(done.inference_id)
    assert rec.attempt == done.attempt and rec.executor == done.executor


async def test_executor_cut_mid_stream_ends_with_error_and_escrow_expires(tmp_path) -> None:
    from gonka_ray.exceptions import EngineError

    net = Net(tmp_path)
    bad = BadExecutor("cut")
    net.tas["p0"].executors = lambda a: bad
    env = net.request()
    before = await net.ledger.balance(net.client.address)
    with pytest.raises(EngineError, match="mid-stream"):
        await net.ask("p0", env)
    await net.settle()
    iid = wire.open_envelope(env, chain=CHAIN).id
    rec = await net.ledger.inference(iid)
    assert rec.status is InferenceStatus.STARTED
    assert await net.ledger.balance(net.client.address) == before - rec.escrow
    for _ in range(50):  # expiry_blocks of the test ledger
        net.ledger.cut_block()
    rec = await net.ledger.inference(iid)
    assert rec.status is InferenceStatus.EXPIRED
    assert await net.ledger.balance(net.client.address) == before  # refunded in full


async def test_an_executor_killed_after_answering_is_paid_when_it_restarts(tmp_path) -> None:
    """The CI failure this guards against: an executor killed between its last token and the
    commit of its Finish left an answered inference to expire, unpaid (and refunded)."""
    from gonka_ray.actors.executor import Executor
    from gonka_ray.actors.payload_store import PayloadStore

    net = Net(tmp_path)

    async def died(self, iid: bytes, tx: bytes) -> None:  # the process is gone: nothing runs
        return None

    for ex in net.executors.values():
        ex._commit_finish = died.__get__(ex)
    journalled_at_last_token = []

    class Watched:  # what the TA sees: the journal must hold the Finish when the last token leaves
        def __init__(self, ex) -> None:
            self.ex = ex

        async def execute(self, envelope: bytes):
            async for item in self.ex.execute(envelope):
                if wire.decode(item).finish_reason:
                    journalled_at_last_token.append(len(self.ex.store.pending_finishes()))
                yield item

    by_addr = {k.address: Watched(net.executors[n]) for n, k in net.keys.items()}
    net.tas["p0"].executors = by_addr.__getitem__
    *chunks, done = await net.ask("p0", net.request())
    assert journalled_at_last_token == [1]
    assert isinstance(done, wire.InferenceDone) and chunks  # the client holds an answer
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.STARTED  # precondition: the Finish never left
    name = next(n for n, k in net.keys.items() if k.address == done.executor)
    dead = net.executors[name]
    # Ray restarts the actor: a new executor over the same store resubmits the journal
    restarted = Executor(dead.ctx, store=PayloadStore(tmp_path / f"{name}.sqlite"))
    assert await restarted.resume() == 1
    await restarted.drain()
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.FINISHED and rec.completion_tokens == len(chunks)
    assert rec.payload_hash and restarted.store.get(rec.payload_hash) is not None
    assert restarted.store.pending_finishes() == [] and restarted.finished == 1
    for _ in range(60):  # past expiry_blocks of the test ledger: nothing expires it now
        net.ledger.cut_block()
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.FINISHED
    # a second restart finds nothing to resubmit
    assert await Executor(dead.ctx, store=restarted.store).resume() == 0


class _HeldStarts:
    """A TA's view of the ledger in which a Start (of attempt ``from_attempt`` on) is taken in
    (``accepted``) but commits only once released: a Start in a mempool through a view change."""

    def __init__(self, inner, from_attempt: int = 0) -> None:
        self.inner, self.release, self.from_attempt = inner, asyncio.Event(), from_attempt

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def submit(self, tx: bytes, *, accepted: asyncio.Event | None = None):
        msg = wire.open_envelope(tx, chain=CHAIN).message
        if isinstance(msg, wire.StartInference) and msg.attempt >= self.from_attempt:
            if accepted is not None:
                accepted.set()
            await self.release.wait()
        return await self.inner.submit(tx, accepted=accepted)


class _ExecutorPort:
    """An executor's view of the ledger that counts the Finishes it is sent, answers a
    transaction sent again with its first receipt, as a replica does (the in-process ledger
    would apply it anew) and, while ``away``, commits nothing (every replica restarting)."""

    def __init__(self, inner, away: bool) -> None:
        self.inner, self.away, self.finishes, self.receipts = inner, away, 0, {}

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def submit(self, tx: bytes, *, accepted: asyncio.Event | None = None):
        self.finishes += isinstance(
            wire.open_envelope(tx, chain=CHAIN).message, wire.FinishInference
        )
        if self.away:
            raise CommitTimeout("every replica is restarting")
        if tx not in self.receipts:
            self.receipts[tx] = await self.inner.submit(tx, accepted=accepted)
        return self.receipts[tx]


class _SupersededLedger:
    """Refuses every Finish as ``not_executor`` and reads back a record of the inference."""

    def __init__(self, record: SimpleNamespace | None) -> None:
        self.record, self.finishes, self.reads = record, 0, 0

    async def submit(self, tx: bytes, *, accepted: asyncio.Event | None = None) -> TxOutcome:
        self.finishes += 1
        return TxOutcome(ok=False, reason="not_executor", height=1, tx_id=b"f" * 32)

    async def inference(self, iid: bytes):
        self.reads += 1
        return self.record


@pytest.mark.parametrize(
    ("attempt", "status", "dropped"),
    [
        (2, InferenceStatus.STARTED, True),  # a later attempt's Start: never ours again
        (0, InferenceStatus.FINISHED, True),  # the inference ended without this executor
        (0, InferenceStatus.STARTED, False),  # an earlier attempt's: ours may still commit
    ],
)
async def test_a_finish_whose_inference_went_to_another_attempt_is_dropped_at_once(
    tmp_path, attempt: int, status: InferenceStatus, dropped: bool
) -> None:
    """An executor the TA gave up on (it looked dead before its first token) still journals its
    Finish; the retry's Start names another executor. That Finish can never be taken: kept, it
    was resubmitted every sweep for 15 minutes, a refused (committed) transaction each time."""
    net = Net(tmp_path)
    ex = next(iter(net.executors.values()))
    iid = b"i" * 32
    ex._attempt_of[iid] = 1  # drawn for attempt 1 here
    other = SimpleNamespace(executor="gonka" + "0" * 40, attempt=attempt, status=status)
    ex.ledger = _SupersededLedger(other)
    ex.finish_try_s = 1.0
    settled = await ex._submit_finish(iid, b"a journalled Finish")
    assert settled is dropped
    assert ex.ledger.finishes == 1  # one submission, then reads only
    assert ex.stats()["superseded"] == int(dropped)
    assert list(ex.finish_failures) == (["superseded"] if dropped else [])
    if not dropped:
        assert ex.ledger.reads >= 2  # read on until the round ended


@pytest.mark.parametrize("fault", ["ledger_away", "start_late", "retry_start_late", "start_never"])
async def test_a_finish_the_ledger_could_not_take_for_a_round_waits_for_the_next_sweep(
    tmp_path, fault: str
) -> None:
    """The CI failure this guards against: a slow ledger restart kept an executor's Finish out
    (no replica committing, or the TA's Start committing late) for longer than the executor's
    one round of submissions; it dropped the Finish and the answered inference expired, unpaid
    and refunded. Now the Finish stays journalled and a sweep resubmits it, until its Start has
    been unknown for ``finish_wait_start_s``."""
    net = Net(tmp_path)
    for ex in net.executors.values():
        # one round: a submission then, while the Start is unknown, reads of the ledger
        ex.finish_try_s = 0.05 if fault == "ledger_away" else 1.0
        ex.ledger = _ExecutorPort(ex.ledger, away=fault == "ledger_away")
    ta = net.tas["p0"]
    if fault != "ledger_away":
        # retry_start_late: the first draw fails before its first token; the retry's Start
        # lags while the first attempt's is in (the crash-fault runs' lost records: attempt 1)
        ta.ledger = _HeldStarts(ta.ledger, from_attempt=int(fault == "retry_start_late"))
    if fault == "retry_start_late":
        draws, executor_of = [], ta.executors

        def first_fails(address: str):
            draws.append(address)
            return BadExecutor("nothing") if len(draws) == 1 else executor_of(address)

        ta.executors = first_fails
    *chunks, done = [wire.decode(b) async for b in ta.submit(net.request())]
    assert isinstance(done, wire.InferenceDone) and chunks  # the client holds an answer
    assert done.attempt == int(fault == "retry_start_late")
    ex = next(e for e in net.executors.values() if e.address == done.executor)
    await ex.drain()  # the round ended undecided
    rec = await net.ledger.inference(done.inference_id)
    if fault == "ledger_away":
        assert rec.status is InferenceStatus.STARTED
    elif fault == "retry_start_late":  # the first draw's Start: the Finish is not_executor
        assert rec.status is InferenceStatus.STARTED and rec.executor != ex.address
    else:
        assert rec is None
    assert len(ex.store.pending_finishes()) == 1 and ex.finished == 0  # kept, not dropped
    assert ex.stats()["waited_for_start"] == int(fault != "ledger_away")
    # while the Start is unknown the executor reads (~4 times in the round), never resubmits:
    # each refused Finish would be a committed transaction
    assert ex.ledger.finishes == (1 if fault != "ledger_away" else 2)
    if fault == "start_never":  # the TA never got its Start in: the Finish is dropped in time
        net.now += ex.finish_wait_start_s
        assert await ex.sweep() == 1
        await ex.drain()
        assert ex.store.pending_finishes() == [] and list(ex.finish_failures) == [
            "unknown_inference"
        ]
        return
    if fault == "ledger_away":
        ex.ledger.away = False
    else:
        ta.ledger.release.set()
        await ta.drain()
    assert (await net.ledger.inference(done.inference_id)).status is InferenceStatus.STARTED
    assert await ex.sweep() == 1
    await ex.drain()
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.FINISHED and rec.completion_tokens == len(chunks)
    if fault != "ledger_away":  # refused, its stored refusal again, then resealed and applied
        assert ex.ledger.finishes == 3
    assert ex.store.pending_finishes() == [] and ex.finished == 1
    assert await ex.sweep() == 0  # nothing left to resubmit


class _TakenThenAway:
    """A TA's view of the ledger in which a replica takes a Start in and then no replica
    commits anything for its first ``fails`` submissions (a leader restart on a loaded machine)."""

    def __init__(self, inner, fails: int) -> None:
        self.inner, self.fails = inner, fails

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def submit(self, tx: bytes, *, accepted: asyncio.Event | None = None):
        if isinstance(wire.open_envelope(tx, chain=CHAIN).message, wire.StartInference):
            if accepted is not None:
                accepted.set()
            if self.fails > 0:
                self.fails -= 1
                raise CommitTimeout("every replica is restarting")
        return await self.inner.submit(tx, accepted=accepted)


async def test_a_start_taken_in_before_the_answer_is_resent_past_the_clients_deadline(
    tmp_path, monkeypatch
) -> None:
    """Once a replica took a Start in, its client may hold the answer: the TA keeps resending it
    after the deadline a waiting client gets (TA_SUBMIT_DEADLINE_S, shortened here), so a slow
    ledger restart does not leave an answer unrecorded and its executor unpaid."""
    from gonka_ray.actors import transport

    monkeypatch.setattr(transport, "TA_SUBMIT_DEADLINE_S", 0.1)
    net = Net(tmp_path)
    ta = net.tas["p0"]
    ta.ledger = _TakenThenAway(ta.ledger, fails=3)  # ~1.5 s of resends at 0.5 s
    *chunks, done = await net.ask("p0", net.request())
    assert isinstance(done, wire.InferenceDone) and chunks
    assert ta.ledger.fails == 0  # precondition: the Start outlived the shortened deadline
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.FINISHED and rec.delivered_hash == rec.response_hash
    assert ta.stats()["unpaid_answers"] == 0


async def test_a_stream_closed_at_its_last_token_is_still_finished(tmp_path) -> None:
    """The executor's consumer went away just as the last token left: the journalled Finish is
    committed all the same (the executor did the whole work)."""
    net = Net(tmp_path)

    class ClosedAtLastToken:
        def __init__(self, ex) -> None:
            self.ex = ex

        async def execute(self, envelope: bytes):
            gen = self.ex.execute(envelope)
            async for item in gen:
                if wire.decode(item).finish_reason:
                    await gen.aclose()  # GeneratorExit at the executor's last yield
                yield item

    by_addr = {k.address: ClosedAtLastToken(net.executors[n]) for n, k in net.keys.items()}
    net.tas["p0"].executors = by_addr.__getitem__
    *chunks, done = await net.ask("p0", net.request())
    assert isinstance(done, wire.InferenceDone) and chunks
    rec = await net.ledger.inference(done.inference_id)
    assert rec.status is InferenceStatus.FINISHED and rec.completion_tokens == len(chunks)
    assert all(not ex.store.pending_finishes() for ex in net.executors.values())
