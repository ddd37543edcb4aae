"""Crash faults under load and back-pressure (issue 11, items 1 and 4).

A four-participant network on the fake engine (protocol only) serves a bounded closed loop of
signed SDK requests over actor handles; the loop stops by itself after ``--requests``. While it
runs, one actor after another is killed with ``ray.kill(handle, no_restart=False)`` so Ray
restarts it (its constructor recovers from disk). Each kill waits for work in flight at its
target and records it (``in_flight_at_kill``); a fault that hit nothing fails the run:

- ``executor``  — p1's executor, while one of its streams has sent tokens (and after it served
  one request, whose payload must be served again after the restart); Finishes it journalled but
  had not committed are resubmitted by the new process (``finishes_resumed_after_restart``);
- ``ta``        — p2's transport agent, while it serves requests;
- ``verifier``  — p3's verifier, while a check of it runs (grading or submitting its Validation);
- ``ledger``    — the replica that leads the current consensus view (f = 1 of n = 4), while
  requests are in flight (their records are on their way to it);
- ``mlnode``    — p0's MLNode, while its executor generates on it.

The client retries a failed request as a *new* signed request (a resend of the same envelope is a
replay) at most ``CLIENT_RETRIES`` times, each time at a TA that has not failed that request yet
(as any client with several front doors would); every send is recorded. Then the audit:

- **answered** — requests whose client got a complete answer (``InferenceDone``); the share is the
  figure of merit (goal ≥ 99.9%). ``first_try`` counts those answered by their first send.
- **lost records** — inference ids a client got back with no finished record on *every* replica.
- **mid-stream** — sends cut after their first token, whatever became of their record: an
  expired Start refunds its whole escrow, a finished one charges the tokens the executor signed
  for and returns the rest, no record moves nothing (``billed_by_rules``).
- **balances** — with no epoch settled, client balance + escrow still locked + executors'
  pending fees equals the genesis balance, on every replica.
- **recovery** — each killed actor answers again and does its job (payloads served again, checks
  resumed, ledger caught up, requests answered).

Back-pressure: a burst of concurrent requests at one TA whose in-flight limit is lowered; the
overflow must be refused with ``Overloaded`` (429 + Retry-After) at once, in-flight work must
never exceed the limit, and the RSS of the TA and executor processes is sampled during the burst.

Oversized bodies: ``--oversized BODIES MIB`` concurrent POSTs of MIB MiB at the HTTP front door,
a third without an API key (401), the rest over the cap with a wrong or a valid key (413), all
answered from the headers before the body is sent; the growth of the Serve proxy's and
replicas' RSS is ``oversized_body_peak_mib``.

Run: ``nice -n 5 .venv/bin/python benchmarks/faults.py`` (writes ``results/faults.json``).
``tests/cluster/test_faults.py`` runs a short version of the same scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gonka_ray import wire
from gonka_ray.config import EpochConfig, NetworkConfig, parse_config
from gonka_ray.exceptions import Overloaded
from gonka_ray.network import Network, launch, participant_key, wait_ready
from gonka_ray.protocol import payments
from gonka_ray.protocol.lifecycle import InferenceStatus
from gonka_ray.protocol.selection import eligible_weights, select_executor
from gonka_ray.sdk import sign_chat, stream_items
from gonka_ray.serve.errors import unwrap_error

PARTICIPANTS = ("p0", "p1", "p2", "p3")
FAULTS = ("executor", "ta", "verifier", "ledger", "mlnode")
TARGETS = {"executor": "p1", "ta": "p2", "verifier": "p3", "mlnode": "p0"}  # ledger: the leader
CLIENT_RETRIES = 3  # new signed requests a client sends after a failed one
DONE_STATUSES = {
    InferenceStatus.FINISHED,
    InferenceStatus.VALIDATED,
    InferenceStatus.VOTING,
    InferenceStatus.INVALIDATED,
}


def fault_config(
    name: str = "faults", *, token_delay_ms: float = 20.0, expiry_blocks: int = 240
) -> NetworkConfig:
    """Four equal honest participants on the fake engine; one long epoch (no settlement moves
    money while the balances are audited); idle blocks every 50 ms so expiry runs on time."""
    epoch: dict[str, Any] = {
        "epoch_blocks": 1_000_000,
        "poc_sprint_blocks": 4,
        "poc_validation_blocks": 4,
        "poc_budget_s": 0.2,
    }
    if "poc_calibration_nonces" in EpochConfig.model_fields:
        epoch["poc_calibration_nonces"] = 64
    return parse_config(
        {
            "name": name,
            "participants": [{"name": p, "weight": 100} for p in PARTICIPANTS],
            "model": {"name": "fake"},
            "engine": {"kind": "fake", "fake_token_delay_ms": token_delay_ms},
            "ledger": {
                "expiry_blocks": expiry_blocks,
                "block_interval_ms": 20,
                "empty_block_interval_ms": 50,
            },
            "epoch": epoch,
        },
        source="faults",
    )


async def wait_until(cond: Callable[[], Awaitable[bool]], timeout_s: float, every_s=0.2) -> bool:
    """Poll ``cond`` until it holds or ``timeout_s`` passes; a raising ``cond`` counts as no."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if await cond():
                return True
        except Exception:
            pass
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every_s)


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Send:
    """One signed request sent to one TA."""

    iid: bytes
    ta: str
    executor0: str  # the attempt-0 draw (the client can compute it: the draw is public)
    t0: float
    t1: float = 0.0
    tokens: int = 0
    done: wire.InferenceDone | None = None
    error: str = ""  # the typed error (unwrapped from Ray's wrapper); "" when answered
    raw_error: str = ""


@dataclass
class Request:
    sends: list[Send] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return any(s.done is not None for s in self.sends)


class Load:
    """A closed loop of at least ``requests`` requests with ``concurrency`` workers. It goes on
    past ``requests`` while ``more()`` says so (the faults are not all injected and recovered
    yet), but never past ``max_requests``: it always stops by itself."""

    def __init__(
        self,
        net: Network,
        *,
        requests: int,
        concurrency: int,
        max_tokens: int = 8,
        timeout_s: float = 60.0,
        seed: int = 0,
        max_requests: int | None = None,
    ) -> None:
        self.net = net
        self.total = requests
        self.max_requests = max_requests or 10 * requests
        self.more: Callable[[], bool] = lambda: False
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.rng = random.Random(seed)
        self.key = net.client_key()
        self.model = net.config.model.name
        self.chain = net.chain_id
        self.names = list(net.specs)
        self.address = {n: net.address_of(n) for n in self.names}
        self.requests: list[Request] = []
        self.live: dict[bytes, Send] = {}
        self.finished = 0
        self.weights: dict[str, int] = {}
        self.on_progress: Callable[[], None] | None = None
        self.t0 = time.monotonic()

    def sends(self) -> list[Send]:
        return [s for r in self.requests for s in r.sends]

    async def run(self) -> None:
        self.t0 = time.monotonic()
        self.weights = eligible_weights(await self.net.participants())
        issued = 0

        async def worker() -> None:
            nonlocal issued
            while issued < self.max_requests and (issued < self.total or self.more()):
                issued += 1
                req = Request()
                self.requests.append(req)
                await self._one(req, issued)
                self.finished += 1
                if self.on_progress:
                    self.on_progress()

        await asyncio.gather(*[worker() for _ in range(self.concurrency)])

    async def _one(self, req: Request, i: int) -> None:
        failed: set[str] = set()  # TAs that failed this request: a client tries another first
        for retry in range(CLIENT_RETRIES + 1):
            ta = self.rng.choice([n for n in self.names if n not in failed] or self.names)
            env = sign_chat(
                self.key,
                model=self.model,
                messages=[{"role": "user", "content": f"fault load {i}.{retry}"}],
                max_tokens=self.max_tokens,
                seed=self.rng.getrandbits(32),
                chain=self.chain,
            )
            iid = wire.envelope_id(env)
            ex0 = select_executor(iid, 0, self.weights, exclude={self.address[ta]})
            send = Send(iid, ta, ex0, time.monotonic())
            req.sends.append(send)
            self.live[iid] = send
            backoff_s = 0.2
            try:
                await asyncio.wait_for(self._stream(send, env), self.timeout_s)
            except Exception as exc:
                err = unwrap_error(exc)
                send.error, send.raw_error = type(err).__name__, type(exc).__name__
                if isinstance(err, Overloaded):
                    backoff_s = err.retry_after_s
            finally:
                send.t1 = time.monotonic()
                self.live.pop(iid, None)
            if send.done is not None:
                return
            failed.add(ta)
            await asyncio.sleep(backoff_s)

    async def _stream(self, send: Send, env: bytes) -> None:
        async for item in stream_items(self.net.ta(send.ta), env):
            if isinstance(item, wire.StreamChunk):
                send.tokens += 1
            elif isinstance(item, wire.InferenceDone):
                send.done = item


# --- faults --------------------------------------------------------------------------------------


def _pid(actor: Any) -> int:  # runs inside the actor
    return os.getpid()


async def _kill_and_wait(handle: Any, timeout_s: float) -> float | None:
    """Kill the actor (Ray restarts it; its constructor recovers) and return the seconds until
    a *new* process answers, or None."""
    import ray

    old = await handle.__ray_call__.remote(_pid)
    t0 = time.monotonic()
    ray.kill(handle, no_restart=False)

    async def back() -> bool:
        return await asyncio.wait_for(handle.__ray_call__.remote(_pid), 10.0) != old

    return round(time.monotonic() - t0, 2) if await wait_until(back, timeout_s, 0.3) else None


async def fault_executor(net: Network, load: Load, timeout_s: float) -> dict[str, Any]:
    name = TARGETS["executor"]
    addr = net.address_of(name)

    def served() -> list[Send]:
        return [s for s in load.sends() if s.done is not None and s.done.executor == addr]

    async def streaming() -> bool:  # a stream mid-way, and a stored payload to ask for later
        live = any(s.executor0 == addr and s.tokens >= 1 for s in load.live.values())
        return live and bool(served())

    await wait_until(streaming, timeout_s, 0.02)
    mid = [s.iid.hex() for s in load.live.values() if s.executor0 == addr and s.tokens >= 1]
    pre = [s.iid.hex() for s in load.live.values() if s.executor0 == addr and s.tokens == 0]
    before = served()
    t_kill = time.monotonic()
    restart_s = await _kill_and_wait(net.handle(name, "executor"), timeout_s)
    payload_ok = None
    if before and restart_s is not None:  # a payload stored before the kill is served again
        payload_ok = await _payload_served(net, name, before[-1].done.inference_id)
    resumed = None  # Finishes journalled before the kill, resubmitted by the new process
    if restart_s is not None:
        resumed = (await net.handle(name, "executor").stats.remote())["resumed"]
    return {
        "fault": "executor",
        "target": f"{name}.executor",
        "in_flight_at_kill": len(mid) + len(pre),
        "mid_stream_at_kill": mid,
        "before_first_token_at_kill": pre,
        "t_kill": t_kill,
        "restart_s": restart_s,
        "payload_served_after_restart": payload_ok,
        "finishes_resumed_after_restart": resumed,
    }


async def _payload_served(net: Network, executor: str, iid: bytes, timeout_s: float = 60.0) -> bool:
    """Whether ``executor`` serves the stored payload of ``iid`` (its hash as on the ledger).
    The client has its answer before the TA's Finish, which names the payload hash, commits
    (it is recorded in parallel): wait up to ``timeout_s`` for that record first."""
    ledger = net.handle(executor, "ledger")

    async def named() -> bool:
        return bool((rec := await ledger.inference.remote(iid)) and rec.payload_hash)

    if not await wait_until(named, timeout_s):
        return False
    rec = await ledger.inference.remote(iid)
    asker = next(p for p in net.specs if p != executor)
    req = wire.PayloadRequest(
        inference_id=iid, payload_hash=rec.payload_hash, timestamp_ms=int(time.time() * 1000)
    )
    env = wire.seal(req, participant_key(net.config, asker), net.chain_id)
    body = await net.handle(executor, "executor").payload.remote(env)
    return hashlib.sha256(body).digest() == rec.payload_hash


async def _kill_when_busy(
    net: Network,
    fault: str,
    name: str,
    role: str,
    busy: Callable[[], Awaitable[list[str]]],
    timeout_s: float,
) -> dict[str, Any]:
    """Wait until ``busy()`` names work in flight at participant ``name``'s ``role`` actor (at
    most ``timeout_s``), kill it at once, and report that work and the restart. A fault that
    found nothing in flight reports ``in_flight_at_kill`` 0: the run's summary fails it."""
    found: list[str] = []

    async def ready() -> bool:
        found[:] = await busy()
        return bool(found)

    await wait_until(ready, timeout_s, 0.01)
    t_kill = time.monotonic()
    restart_s = await _kill_and_wait(net.handle(name, role), timeout_s)
    return {
        "fault": fault,
        "target": f"{name}.{role}",
        "in_flight_at_kill": len(found),
        "work_at_kill": found,
        "t_kill": t_kill,
        "restart_s": restart_s,
    }


async def fault_ta(net: Network, load: Load, timeout_s: float) -> dict[str, Any]:
    async def busy() -> list[str]:  # requests this TA is serving
        return [s.iid.hex() for s in load.live.values() if s.ta == TARGETS["ta"]]

    return await _kill_when_busy(net, "ta", TARGETS["ta"], "ta", busy, timeout_s)


async def fault_verifier(net: Network, load: Load, timeout_s: float) -> dict[str, Any]:
    name = TARGETS["verifier"]
    handle = net.handle(name, "verifier")
    before = await handle.stats.remote()

    async def busy() -> list[str]:  # checks running (grading or submitting their Validation)
        return ["check"] * (await handle.stats.remote())["in_check"]

    out = await _kill_when_busy(net, "verifier", name, "verifier", busy, timeout_s)

    async def checking() -> bool:  # counters restart at 0: any check is a check after restart
        return (await handle.stats.remote())["checked"] > 0

    resumed = await wait_until(checking, timeout_s, 0.5)
    return {
        **out,
        "checked_before_kill": before["checked"],
        "checks_resumed_after_restart": resumed,
    }


async def fault_ledger(net: Network, load: Load, timeout_s: float) -> dict[str, Any]:
    replicas = [net.handle(n, "ledger") for n in PARTICIPANTS]
    st = await replicas[0].status.remote()
    leader = st["view"] % len(replicas)  # equal weights: validators in genesis order
    others = [r for i, r in enumerate(replicas) if i != leader]
    h0 = max([(await r.status.remote())["committed_height"] for r in others])

    async def busy() -> list[str]:  # every request in flight has records on their way to it
        return [s.iid.hex() for s in load.live.values()]

    out = await _kill_when_busy(net, "ledger", PARTICIPANTS[leader], "ledger", busy, timeout_s)
    h1 = max([(await r.status.remote())["committed_height"] for r in others])

    async def caught_up() -> bool:
        sts = [await r.status.remote() for r in replicas]
        return sts[leader]["state_height"] >= h1 and sts[leader]["recovered_height"] > 0

    caught = await wait_until(caught_up, timeout_s, 0.3)
    recovered = (await replicas[leader].status.remote())["recovered_height"] if caught else None
    return {
        **out,
        "target": f"{PARTICIPANTS[leader]}.ledger (leader of view {st['view']})",
        "blocks_committed_while_down": h1 - h0,
        "caught_up": caught,
        "recovered_height": recovered,
    }


async def fault_mlnode(net: Network, load: Load, timeout_s: float) -> dict[str, Any]:
    addr = net.address_of(TARGETS["mlnode"])

    async def busy() -> list[str]:  # requests its executor is generating on it
        return [s.iid.hex() for s in load.live.values() if s.executor0 == addr]

    return await _kill_when_busy(net, "mlnode", TARGETS["mlnode"], "mlnode", busy, timeout_s)


FAULT_FNS = {
    "executor": fault_executor,
    "ta": fault_ta,
    "verifier": fault_verifier,
    "ledger": fault_ledger,
    "mlnode": fault_mlnode,
}


async def run_faults(
    net: Network,
    load: Load,
    faults: tuple[str, ...] = FAULTS,
    *,
    first_at: float = 0.08,
    timeout_s: float = 60.0,
) -> list[dict[str, Any]]:
    """Inject ``faults`` in turn: the first once ``first_at`` of the requests finished, each next
    one once the previous actor answers again and ``gap`` (a share of the requests) more
    finished. The load goes on until ``gap`` more requests finished after the last recovery."""
    gap = max(1, int(load.total * first_at))
    mark = gap
    pending = True
    load.more = lambda: pending or load.finished < mark
    out = []
    try:
        for name in faults:

            async def reached(mark: int = mark) -> bool:
                return load.finished >= mark

            if not await wait_until(reached, 600.0, 0.1):
                out.append({"fault": name, "skipped": "the load stalled"})
                continue
            at = load.finished
            out.append({"at_request": at, **await FAULT_FNS[name](net, load, timeout_s)})
            mark = load.finished + gap
    finally:
        pending = False
    return out


# --- audit ---------------------------------------------------------------------------------------


def billed_by_rules(rec: Any) -> bool:
    """Whether a cut stream's record moved money as the lifecycle rules say, whatever its status:
    no record (its Start never committed) moved nothing; an expired Start refunded its whole
    escrow and charged nothing; a finished one charged the cost of the tokens the executor
    signed for (never above the escrow; the rest went back at Finish) and refunded nothing
    unless a vote invalidated it, which refunds exactly that cost. Still STARTED: not settled."""
    if rec is None:
        return True
    if rec.status is InferenceStatus.EXPIRED:
        return rec.refunded == rec.escrow and rec.cost == 0
    if rec.status in DONE_STATUSES:
        cost = payments.cost_amount(
            rec.prompt_tokens, rec.completion_tokens, rec.price_per_token, rec.escrow
        )
        refund = rec.cost if rec.status is InferenceStatus.INVALIDATED else 0
        return rec.cost == cost and rec.refunded == refund
    return False


async def _records(net: Network) -> list[dict[bytes, Any]]:
    return [
        {r.inference_id: r for r in await net.handle(n, "ledger").inferences.remote(10**9)}
        for n in PARTICIPANTS
    ]


async def audit(
    net: Network, load: Load, faults: list[dict[str, Any]], timeout_s: float = 120.0
) -> dict[str, Any]:
    """Wait until the ledger settles (every answered inference finished, every unfinished Start
    expired), then count answered / failed / lost and check refunds and balances."""
    sends = load.sends()
    answered = {s.iid: s for s in sends if s.done is not None}
    cut = {s.iid: s for s in sends if s.done is None and s.tokens > 0}
    state: dict[str, Any] = {}

    async def settled() -> bool:
        views = await _records(net)
        state["views"] = views
        for view in views:
            if any(view.get(i) is None or view[i].status not in DONE_STATUSES for i in answered):
                return False
            if any(r.status is InferenceStatus.STARTED for r in view.values()):
                return False
        return True

    t0 = time.monotonic()
    quiet = await wait_until(settled, timeout_s, 1.0)
    settle_s = round(time.monotonic() - t0, 1)
    views = state.get("views") or await _records(net)
    lost = sorted(
        i.hex()
        for i in answered
        if any(v.get(i) is None or v[i].status not in DONE_STATUSES for v in views)
    )
    refunds = []
    for i, s in cut.items():
        rec = views[0].get(i)
        refunds.append(
            {
                "inference_id": i.hex(),
                "error": s.error,
                "tokens_sent": s.tokens,
                "status": rec.status.value if rec else None,
                "escrow": rec.escrow if rec else 0,
                "refunded": rec.refunded if rec else 0,
                "cost": rec.cost if rec else 0,
                "billed_by_rules": billed_by_rules(rec),
            }
        )
    genesis = net.config.pricing.genesis_client_balance
    client = net.client_key().address
    books = []
    for n, view in zip(PARTICIPANTS, views, strict=True):
        replica = net.handle(n, "ledger")
        infos = await replica.participants.remote()
        fees = sum(p.record.pending_fees for p in infos.values())
        held = sum([await replica.balance.remote(a) for a in infos])
        escrow = sum(r.escrow for r in view.values() if r.status is InferenceStatus.STARTED)
        balance = await replica.balance.remote(client)
        books.append(
            {
                "replica": n,
                "client_balance": balance,
                "escrow": escrow,
                "pending_fees": fees,
                "participant_balances": held,
                "conserved": balance + escrow + fees + held == genesis,
            }
        )

    def money(view: dict[bytes, Any]) -> dict[bytes, tuple]:  # validations may still land
        return {i: (r.status in DONE_STATUSES, r.cost, r.refunded) for i, r in view.items()}

    replicas = [net.handle(n, "ledger") for n in PARTICIPANTS]
    common = min([(await r.status.remote())["committed_height"] for r in replicas])
    hashes = {await r.committed_hash.remote(common) for r in replicas}
    same = len(hashes) == 1 and all(money(v) == money(views[0]) for v in views[1:])
    requests = load.requests
    n_ok = sum(r.answered for r in requests)
    errors = Counter(s.error for s in sends if s.error)
    raw = Counter(f"{s.error}<-{s.raw_error}" for s in sends if s.error)
    ta_stats = [await net.handle(n, "ta").stats.remote() for n in PARTICIPANTS]
    verifier_stats = [await net.handle(n, "verifier").stats.remote() for n in PARTICIPANTS]
    executor_stats = [await net.handle(n, "executor").stats.remote() for n in PARTICIPANTS]
    names = {net.address_of(n): n for n in PARTICIPANTS}

    def who(address: str) -> str:
        return names.get(address, address[:12])

    # every participant is honest here: an invalidated inference is a false accusation upheld
    invalidated = [
        {
            "inference_id": i.hex(),
            "executor": who(r.executor),
            "accuser": who(r.accuser),
            "validations": {who(v): ok for v, ok in r.validations.items()},
            "votes": {who(v): ok for v, ok in r.votes.items()},
            "finish_reason": r.finish_reason,
        }
        for i, r in views[0].items()
        if r.status is InferenceStatus.INVALIDATED
    ]
    return {
        "invalidated": invalidated,
        # checks and votes whose payload could not be fetched at first (a peer restarting) and
        # were asked again; fetch windows that ended without one (failed checks)
        "payload_fetches_deferred": sum(s["fetches_deferred"] for s in verifier_stats),
        "payloads_unavailable": sum(s["payloads_unavailable"] for s in verifier_stats),
        # checks and votes a verifier's own side failed (its MLNode killed), asked again
        "checks_retried_after_own_failure": sum(
            s["retried_after_own_failure"] for s in verifier_stats
        ),
        "requests": len(requests),
        "answered": n_ok,
        "answered_share": round(n_ok / max(1, len(requests)), 5),
        "failed": len(requests) - n_ok,
        "first_try": sum(r.sends[0].done is not None for r in requests),
        "sends": len(sends),
        "lost_records": len(lost),
        "lost": [
            {
                "inference_id": i,
                "statuses": [
                    v[bytes.fromhex(i)].status.value if bytes.fromhex(i) in v else None
                    for v in views
                ],
                "executor": answered[bytes.fromhex(i)].done.executor,
                "attempt": answered[bytes.fromhex(i)].done.attempt,
                "answered_at_s": round(answered[bytes.fromhex(i)].t1 - load.t0, 2),
            }
            for i in lost
        ],
        "errors_by_type": dict(errors),
        "errors_by_cause": dict(raw),
        "mid_stream_cut": len(cut),
        "mid_stream_typed": sum(s.error == "StreamInterrupted" for s in cut.values()),
        "mid_stream_refunded": sum(
            r["status"] == "expired" and r["refunded"] == r["escrow"] > 0 for r in refunds
        ),
        "mid_stream_billed_by_rules": sum(r["billed_by_rules"] for r in refunds),
        "refunds": refunds,
        "ta_retries_after_pre_token_failure": sum(s["retries"] for s in ta_stats),
        # Finishes the ledger refused (their reasons), and those a sweep resent because the
        # ledger could not take them for a whole round (a slow leader restart)
        "finish_refusals": dict(Counter(r for s in executor_stats for r in s["finish_failures"])),
        "finishes_resent": sum(s["resent"] for s in executor_stats),
        # Finishes that reached the ledger before the Start naming their executor (a retry's
        # Start behind the first attempt's, a slow commit) and waited for it
        "finishes_waited_for_start": sum(s["waited_for_start"] for s in executor_stats),
        "unpaid_answers": sum(s["unpaid_answers"] for s in ta_stats),
        "answered_on_a_later_attempt": sum(s.done.attempt > 0 for s in answered.values()),
        "ledger_settled": quiet,
        "settle_s": settle_s,
        "replicas_agree": same,
        "balances_conserved": all(b["conserved"] for b in books),
        "books": books,
    }


# --- back-pressure -------------------------------------------------------------------------------


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def overload_burst(
    net: Network, *, burst: int, ta_limit: int, ta: str = "p0", max_tokens: int = 8
) -> dict[str, Any]:
    """``burst`` requests at once at ``ta`` with its in-flight limit set to ``ta_limit``: how many
    were answered, refused with Overloaded (and how fast), the TA's in-flight peak, and the RSS
    of the TA and executor processes before, at peak and after."""
    handle = net.ta(ta)

    def set_limit(actor: Any, n: int) -> int:  # runs inside the TA actor
        old, actor.ta.max_inflight = actor.ta.max_inflight, n
        return old

    old_limit = await handle.__ray_call__.remote(set_limit, ta_limit)
    procs = {f"{ta}.ta": handle} | {f"{n}.executor": net.handle(n, "executor") for n in net.specs}
    pids = {k: await h.__ray_call__.remote(lambda actor: os.getpid()) for k, h in procs.items()}
    before = {k: _rss_bytes(p) for k, p in pids.items()}
    peak = dict(before)
    inflight_peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal inflight_peak
        while not stop.is_set():
            for k, p in pids.items():
                peak[k] = max(peak[k], _rss_bytes(p))
            n = await handle.__ray_call__.remote(lambda actor: actor.ta.inflight)
            inflight_peak = max(inflight_peak, n)
            await asyncio.sleep(0.05)

    key = net.client_key()
    model = net.config.model.name

    async def one(i: int) -> tuple[str, float, float | None]:
        env = sign_chat(
            key,
            model=model,
            messages=[{"role": "user", "content": f"burst {i}"}],
            max_tokens=max_tokens,
            chain=net.chain_id,
        )
        t0 = time.monotonic()
        try:
            async for _ in stream_items(handle, env):
                pass
            return "answered", time.monotonic() - t0, None
        except Exception as exc:
            err = unwrap_error(exc)
            retry = err.retry_after_s if isinstance(err, Overloaded) else None
            return type(err).__name__, time.monotonic() - t0, retry

    sampler = asyncio.get_running_loop().create_task(sample())
    t0 = time.monotonic()
    try:
        results = await asyncio.gather(*[one(i) for i in range(burst)])
    finally:
        stop.set()
        await sampler
        await handle.__ray_call__.remote(set_limit, old_limit)
    wall = time.monotonic() - t0
    after = {k: _rss_bytes(p) for k, p in pids.items()}
    kinds = Counter(k for k, _, _ in results)
    refused = [t for k, t, _ in results if k == "Overloaded"]
    mib = 2**20
    return {
        "burst": burst,
        "ta_limit": ta_limit,
        "outcomes": dict(kinds),
        "refused_share": round(len(refused) / burst, 4),
        "retry_after_s": sorted({r for k, _, r in results if k == "Overloaded"}),
        "refusal_latency_p50_ms": round(1000 * sorted(refused)[len(refused) // 2], 1)
        if refused
        else None,
        "ta_inflight_peak": inflight_peak,
        "wall_s": round(wall, 2),
        "rss_mib": {
            k: {
                "before": round(before[k] / mib, 1),
                "peak": round(peak[k] / mib, 1),
                "after": round(after[k] / mib, 1),
            }
            for k in pids
        },
        "ta_rss_growth_mib": round((peak[f"{ta}.ta"] - before[f"{ta}.ta"]) / mib, 1),
    }


def _serve_pids() -> list[int]:
    """The processes of Serve's HTTP proxy and application replicas (by their Ray titles)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if title.startswith((b"ray::ProxyActor", b"ray::ServeReplica")):
            pids.append(int(entry.name))
    return pids


async def oversized_burst(net: Network, *, bodies: int, body_mib: int) -> dict[str, Any]:
    """``bodies`` concurrent POSTs of ``body_mib`` MiB each at the HTTP front door, over raw
    connections, a third each with no API key (401), a wrong one and a valid one (413 from
    Content-Length, whatever the key). Each client sends its headers, waits up to 2 s for an
    answer (``answered_before_body``), then sends the body anyway. The RSS of Serve's proxy and
    replica processes is sampled throughout; the peak growth over idle is what the burst cost."""
    from gonka_ray.serve.deployment import serve_network, shutdown
    from tests.served_network import free_port

    port = free_port()
    serve_network(net, api_keys={"sk-faults": 0}, port=port, name="faults-oversized")
    pids = _serve_pids()
    base = sum(_rss_bytes(p) for p in pids)
    peak = base
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, sum(_rss_bytes(p) for p in pids))
            await asyncio.sleep(0.02)

    chunk = b"x" * 2**20
    early = 0  # answered before a byte of the body was sent

    async def one(i: int) -> str:
        nonlocal early
        auth = ("", "Authorization: Bearer sk-wrong\r\n", "Authorization: Bearer sk-faults\r\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth[i % 3]}"
            f"Content-Type: application/json\r\nContent-Length: {body_mib * 2**20}\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        line = b""
        try:  # a server that refuses from the headers answers now
            line = await asyncio.wait_for(reader.readline(), 2.0)
            early += bool(line)
        except TimeoutError:
            pass
        try:  # send the body anyway: a server that buffers it shows in the RSS
            for _ in range(body_mib):
                writer.write(chunk)
                await writer.drain()
            if not line:
                line = await asyncio.wait_for(reader.readline(), 60.0)
        except (ConnectionError, OSError, TimeoutError):
            pass
        writer.close()
        parts = line.split()
        return parts[1].decode() if len(parts) > 1 else "no answer"

    sampler = asyncio.get_running_loop().create_task(sample())
    t0 = time.monotonic()
    try:
        outcomes = await asyncio.gather(*[one(i) for i in range(bodies)])
    finally:
        stop.set()
        await sampler
        shutdown()
    mib = 2**20
    return {
        "bodies": bodies,
        "body_mib": body_mib,
        "outcomes": dict(Counter(outcomes)),
        "answered_before_body": early,
        "wall_s": round(time.monotonic() - t0, 2),
        "serve_processes": len(pids),
        "serve_rss_idle_mib": round(base / mib, 1),
        "peak_mib": round((peak - base) / mib, 1),
    }


# --- the whole scenario --------------------------------------------------------------------------


async def scenario(
    net: Network,
    *,
    requests: int,
    concurrency: int,
    faults: tuple[str, ...] = FAULTS,
    bursts: tuple[int, ...] = (),
    ta_limit: int = 16,
    oversized: tuple[int, int] | None = None,
    fault_timeout_s: float = 180.0,
    settle_timeout_s: float = 180.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Launched network → load with faults → audit → back-pressure bursts. Returns the report."""
    await wait_ready(net)
    load = Load(net, requests=requests, concurrency=concurrency)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=requests, unit="req", desc="faults")
        load.on_progress = lambda: bar.update(1)
    t0 = time.monotonic()
    try:
        fault_task = asyncio.get_running_loop().create_task(
            run_faults(net, load, faults, timeout_s=fault_timeout_s)
        )
        await load.run()
        done = await fault_task
    finally:
        if bar is not None:
            bar.close()
    load_s = time.monotonic() - t0
    for f in done:  # times relative to the start of the load
        if "t_kill" in f:
            f["t_kill"] = round(f["t_kill"] - t0, 2)
    report = await audit(net, load, done, timeout_s=settle_timeout_s)
    report["load_s"] = round(load_s, 1)
    report["faults"] = done
    report["after_restart"] = _after_restart(load, done, t0)
    names = {net.address_of(n): n for n in net.specs}
    report["participants_at_end"] = {
        names.get(a, a): {"weight": p.weight, "status": str(p.status), "reputation": p.reputation}
        for a, p in (await net.participants()).items()
    }
    report["bursts"] = [
        await overload_burst(net, burst=b, ta_limit=ta_limit) for b in bursts if b > 0
    ]
    if oversized is not None:
        bodies, body_mib = oversized
        report["oversized"] = await oversized_burst(net, bodies=bodies, body_mib=body_mib)
    return report


def fault_summary(faults: list[dict[str, Any]]) -> dict[str, Any]:
    """What the faults hit: each killed role with the work in flight at its kill; the smallest
    of those (0 means a fault hit nothing, which fails the run)."""
    killed = {f["fault"]: f.get("in_flight_at_kill", 0) for f in faults if "t_kill" in f}
    return {
        "roles_killed": len(killed),
        "in_flight_at_kill": killed,
        "in_flight_at_kill_min": min(killed.values(), default=0),
    }


def _after_restart(load: Load, faults: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    """Requests answered after each fault's actor came back, through or by that actor; for an
    executor or MLNode also the requests that drew it first (``<fault>_drawn``) and how those
    ended (``<fault>_drawn_outcomes``: the answering executor's name, or the error)."""
    out: dict[str, Any] = {}
    sends = load.sends()
    names = {a: n for n, a in load.address.items()}
    for f in faults:
        if f.get("restart_s") is None:
            continue
        back = t0 + f["t_kill"] + f["restart_s"]
        who = f["target"].split(".")[0]
        after = [s for s in sends if s.t0 > back]
        later = [s for s in after if s.done is not None]
        if f["fault"] == "ta":
            later = [s for s in later if s.ta == who]
        elif f["fault"] in ("executor", "mlnode"):
            later = [s for s in later if s.done.executor == load.address[who]]
            drawn = [s for s in after if s.executor0 == load.address[who]]
            out[f"{f['fault']}_drawn"] = len(drawn)
            out[f"{f['fault']}_drawn_outcomes"] = dict(
                Counter(names.get(s.done.executor, "?") if s.done else s.error for s in drawn)
            )
        out[f["fault"]] = len(later)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=12)
    ap.add_argument("--token-delay-ms", type=float, default=20.0)
    ap.add_argument("--bursts", type=int, nargs="*", default=[100, 400])
    ap.add_argument("--ta-limit", type=int, default=32)
    ap.add_argument("--oversized", type=int, nargs=2, default=[20, 48], metavar=("BODIES", "MIB"))
    ap.add_argument("--num-cpus", type=int, default=4)
    ap.add_argument("--out", default="faults")
    args = ap.parse_args()

    from benchmarks._common import print_table, write_results
    from gonka_ray.network import init_local_ray

    for tries_left in range(2, -1, -1):  # NOTE: Ray gives a raylet 30 s to register; a busy
        try:  # shared machine can miss that, so start again rather than lose the run
            init_local_ray(num_cpus=args.num_cpus, namespace="gonka_faults")
            break
        except Exception:
            import ray

            ray.shutdown()
            if not tries_left:
                raise
    net = launch(fault_config("faultbench", token_delay_ms=args.token_delay_ms))
    try:
        report = asyncio.run(
            scenario(
                net,
                requests=args.requests,
                concurrency=args.concurrency,
                bursts=tuple(args.bursts),
                ta_limit=args.ta_limit,
                oversized=tuple(args.oversized),
                progress=True,
            )
        )
    finally:
        net.teardown()
    keys = ("requests", "answered", "answered_share", "failed", "first_try", "lost_records")
    print_table([{k: report[k] for k in keys}])
    print()
    print_table(
        [
            {
                "fault": f["fault"],
                "target": f.get("target", ""),
                "at": f.get("at_request", ""),
                "restart_s": f.get("restart_s"),
            }
            for f in report["faults"]
        ]
    )
    summary = {
        "requests": report["requests"],
        "answered_share": report["answered_share"],
        "lost_records": report["lost_records"],
        # the race that lost records before: answers whose Finish waited for its own Start
        "finishes_waited_for_start": report["finishes_waited_for_start"],
        "answered": report["answered"],
        "failed": report["failed"],
        "first_try_share": round(report["first_try"] / max(1, report["requests"]), 5),
        "mid_stream_cut": report["mid_stream_cut"],
        "mid_stream_refunded": report["mid_stream_refunded"],
        "mid_stream_billed_by_rules": report["mid_stream_billed_by_rules"],
        "balances_conserved": report["balances_conserved"],
        "honest_inferences_invalidated": len(report["invalidated"]),
        "payload_fetches_deferred": report["payload_fetches_deferred"],
        "checks_retried_after_own_failure": report["checks_retried_after_own_failure"],
        **fault_summary(report["faults"]),
    }
    if "oversized" in report:
        summary["oversized_body_peak_mib"] = report["oversized"]["peak_mib"]
    if report["bursts"]:
        summary["burst_refused_share"] = report["bursts"][-1]["refused_share"]
        summary["burst_ta_rss_growth_mib"] = report["bursts"][-1]["ta_rss_growth_mib"]
    path = write_results(args.out, summary, config=vars(args), **report)
    print(f"\nwrote {path}")
    if summary["in_flight_at_kill_min"] < 1 or summary["roles_killed"] < len(FAULTS):
        # a fault that hit nothing proves nothing: the run fails (its figures are still written)
        sys.exit(f"a fault hit no work in flight: {summary['in_flight_at_kill']}")


if __name__ == "__main__":
    main()
