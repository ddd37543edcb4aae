"""Executor: runs inferences on its participant's engine and records them (DESIGN §2.5).

``execute(envelope)`` takes a transport agent's signed ``ExecuteRequest`` and streams encoded
``StreamChunk`` bytes (or one ``ExecutionError``). Before running anything it checks that the
sender is a registered participant, that the client's request is signed, and that this executor
is the deterministic draw for ``(inference_id, attempt)`` excluding the TA — a TA cannot make a
participant work outside the protocol. Before the last chunk leaves, it journals the payload (client
request + compact artifact), its private ranks and the signed ``FinishInference`` in its store (one
local SQLite transaction), starts submitting the Finish in the background and yields the chunk:
the stream's end never waits for the ledger. A journalled Finish stays journalled until the
ledger decides it: one the ledger could not take for a while (replicas restarting, a view change)
is resubmitted by a periodic sweep (:meth:`Executor.keep_finishing`), and an executor killed
after answering resubmits it when it restarts (:meth:`Executor.resume`), so an answered inference
is not left to expire unpaid. A Finish that reaches the ledger before the TA's Start naming this
executor (no Start yet, or only the Start of an earlier attempt whose executor failed before its
first token) waits for that Start, for up to ``finish_wait_start_s``; one whose inference a
later attempt's Start gave to another executor (or that ended without this one) is dropped at
once, since no Start will name this executor again. A stream cancelled mid-way
(its TA's client went away) is recorded the same way with the tokens generated so far and finish
reason ``abort``; an engine failure mid-way is not (the client gets an error and is refunded).

``payload(envelope)`` serves a stored payload to a verifier's signed ``PayloadRequest``.

The draw is checked against the participant set read from the ledger at most
``participants_ttl_s`` ago (one actor hop less before the first token); a request that is not
drawn under that copy is checked again under a fresh read before it is refused, so a copy that
is a little old never refuses valid work (it can accept work drawn under a set that changed in
the last ``participants_ttl_s``; the ledger then judges the Start by its own grace window).

Back-pressure: at most ``max_inflight`` executions run at once; one more is refused at once with
an ``ExecutionError`` of code ``overloaded`` (``started=False``), before any check or engine work,
so the TA can try the next draw instead of queueing here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import msgpack

from gonka_ray import wire
from gonka_ray.actors.payload_store import PayloadStore
from gonka_ray.actors.role import BackgroundTasks, RoleBase, RoleContext, submit_until
from gonka_ray.constants import (
    DEFAULT_TOP_K_LOGPROBS,
    EXECUTOR_ATTEMPTS_KEPT,
    EXECUTOR_FINISH_FAILURES_KEPT,
    EXECUTOR_FINISH_POLL_MAX_S,
    EXECUTOR_FINISH_RETRY_S,
    EXECUTOR_FINISH_SWEEP_S,
    EXECUTOR_FINISH_TRY_S,
    EXECUTOR_FINISH_WAIT_START_S,
    EXECUTOR_MAX_INFLIGHT,
    EXECUTOR_PARTICIPANTS_TTL_S,
    INFERENCE_MAX_ATTEMPTS,
)
from gonka_ray.engine.base import EngineRequest, SamplingParams, TokenChunk
from gonka_ray.exceptions import (
    GonkaError,
    InvalidRequest,
    NoExecutorAvailable,
    PayloadUnavailable,
)
from gonka_ray.ledger.inference_app import prompt_hash
from gonka_ray.protocol import receipts
from gonka_ray.protocol.lifecycle import InferenceStatus
from gonka_ray.protocol.selection import eligible_weights, select_executor
from gonka_ray.verification.artifact import Artifact
from gonka_ray.verification.checks import evidence_weight_micro

log = logging.getLogger(__name__)
_SUPERSEDED = object()  # a Start that will never name this executor


def error_bytes(code: str, message: str, *, started: bool) -> bytes:
    return wire.encode(wire.ExecutionError(code=code, message=message[:1000], started=started))


class Executor(RoleBase):
    """One participant's executor.

    Args:
        ctx: the participant's name, key, ledger, MLNode, model and clock.
        store: the payload store.
        rng: source of transaction nonces.
        max_inflight: executions at once before refusing with code ``overloaded``.
        participants_ttl_s: age of the cached participant set (0 = read it for every request).
        monotonic: the clock of that cache and of ``finish_try_s`` (seconds, monotonic).
        finish_try_s: how long one round of Finish submissions lasts; an undecided Finish then
            waits, journalled, for the next sweep.
        finish_wait_start_s: how long (on ``ctx.clock``) a Finish waits for its Start to commit.
    """

    def __init__(
        self,
        ctx: RoleContext,
        *,
        store: PayloadStore,
        rng: random.Random | None = None,
        max_inflight: int = EXECUTOR_MAX_INFLIGHT,
        participants_ttl_s: float = EXECUTOR_PARTICIPANTS_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
        finish_try_s: float = EXECUTOR_FINISH_TRY_S,
        finish_wait_start_s: float = EXECUTOR_FINISH_WAIT_START_S,
    ) -> None:
        super().__init__(ctx, rng=rng)
        self.store = store
        self._tasks = BackgroundTasks()
        self.finished = 0
        self.resumed = 0  # journalled Finishes resubmitted after a restart
        self.resent = 0  # journalled Finishes a later sweep resubmitted (the ledger was away)
        self.waited_for_start = 0  # Finishes that reached the ledger before their Start
        self.superseded = 0  # Finishes dropped: a later attempt's Start names another executor
        # the attempt each inference was drawn for here (in memory: after a restart a Finish
        # waits for its Start as long as ever)
        self._attempt_of: OrderedDict[bytes, int] = OrderedDict()
        self.finish_try_s = finish_try_s
        self.finish_wait_start_s = finish_wait_start_s
        self._finishing: set[bytes] = set()  # inference ids whose Finish a task is submitting
        self._start_unknown_since: dict[bytes, float] = {}  # first "not our Start yet" answer
        self._draining = False
        self.finish_failures: deque[str] = deque(maxlen=EXECUTOR_FINISH_FAILURES_KEPT)
        self.max_inflight = max_inflight
        self.inflight = 0
        self.refused = 0
        self.participants_ttl_s = participants_ttl_s
        self.monotonic = monotonic
        self._participants: tuple[float, dict] | None = None  # (read at, participant set)

    # --- execute ---------------------------------------------------------------------------

    async def execute(self, envelope: bytes) -> AsyncIterator[bytes]:
        """Run a TA's ``ExecuteRequest``; yields encoded ``StreamChunk``/``ExecutionError``."""
        if self.inflight >= self.max_inflight:
            self.refused += 1
            yield error_bytes("overloaded", f"{self.inflight} executions running", started=False)
            return
        self.inflight += 1
        try:
            async for item in self._execute(envelope):
                yield item
        finally:
            self.inflight -= 1

    async def _execute(self, envelope: bytes) -> AsyncIterator[bytes]:
        try:
            plan = await self._admit(envelope)
        except GonkaError as exc:
            yield error_bytes(exc.code, exc.message, started=False)
            return
        iid, request_bytes, prompt_ids, sampling, spec = plan
        prompt_ids, sampling = self._prompt(prompt_ids), self._sampling(sampling)
        # the engine ranks beyond the artifact's top-k too: kept privately to audit receipts
        k = sampling.logprobs
        run = replace(sampling, logprobs=k + receipts.PRIVATE_RANKS)
        chunks: list[TokenChunk] = []
        ranks: list[tuple[tuple[int, ...], tuple[float, ...]]] = []
        journalled: bytes | None = None  # the sealed Finish, once on disk

        def done(out: list[TokenChunk]) -> _Executed:
            return _Executed(iid, request_bytes, prompt_ids, spec, out, k, ranks)

        try:
            async for full in self._generate(iid, prompt_ids, run):
                ranks.append((tuple(full.top_ids), tuple(full.top_logprobs)))
                chunk = replace(full, top_ids=full.top_ids[:k], top_logprobs=full.top_logprobs[:k])
                chunks.append(chunk)
                if chunk.finish_reason:  # the last token: on disk before the client can hold it
                    journalled = await self._journal(done(chunks))
                    self._finish_later(iid, journalled)
                yield wire.encode(
                    wire.StreamChunk(
                        index=chunk.index,
                        token_id=chunk.token_id,
                        text=chunk.text,
                        logprob=float(chunk.logprob),
                        top_ids=tuple(chunk.top_ids),
                        top_logprobs=tuple(float(x) for x in chunk.top_logprobs),
                        finish_reason=chunk.finish_reason or "",
                    )
                )
        except (asyncio.CancelledError, GeneratorExit):
            if chunks and not chunks[-1].finish_reason:
                # Cancelled mid-stream (the TA's client went away): the tokens generated so far
                # are recorded with finish reason "abort", so the client pays for them and this
                # executor is paid, as any API bills a disconnected stream. (An engine failure,
                # below, is not billed: the client gets an error and the Start expires.)
                aborted = [*chunks[:-1], replace(chunks[-1], finish_reason="abort")]
                self._tasks.spawn(self._record(done(aborted)))
            elif chunks and journalled is None:  # cancelled while journalling the last token
                self._tasks.spawn(self._record(done(chunks)))
            raise
        except Exception as exc:  # the engine failed: tell the TA whether anything was sent
            log.warning("execution of %s failed: %s", iid.hex()[:12], exc)
            yield error_bytes("engine_error", str(exc), started=bool(chunks))
            return
        if journalled is None:  # an engine that ended without a finish reason ("length")
            self._finish_later(iid, await self._journal(done(chunks)))

    async def audit_receipt(
        self, inference_id: bytes, validator: str, receipt: tuple[receipts.Entry, ...]
    ) -> bool:
        """Whether ``validator``'s receipt on one of this executor's inferences holds against
        the ranks it kept from generating it (with the executor's slack, see
        :func:`receipts.holds`). True when it kept none: no challenge without evidence."""
        body = self.store.get_ranks(inference_id)
        if body is None:
            return True
        k, rows = msgpack.unpackb(body)
        ids = [r[0] for r in rows]
        lps = [r[1] for r in rows]
        shown = [r[:k] for r in ids]
        return receipts.holds(receipt, inference_id, validator, shown, ids, lps, slack=2)

    # Overridden only by the ADVERSARIAL executors in gonka_ray.adversary.
    def _sampling(self, sampling: SamplingParams) -> SamplingParams:
        """The sampling parameters actually run (an honest executor runs the client's)."""
        return sampling

    def _prompt(self, prompt_ids: list[int]) -> list[int]:
        """The prompt actually run (an honest executor runs the TA's)."""
        return prompt_ids

    def _generate(
        self, iid: bytes, prompt_ids: list[int], sampling: SamplingParams
    ) -> AsyncIterator[TokenChunk]:
        """The output positions (an honest executor streams its engine's as they come)."""
        return self.engine.generate(
            EngineRequest(request_id=iid.hex(), prompt_ids=tuple(prompt_ids), sampling=sampling)
        )

    async def _admit(self, envelope: bytes):
        outer = wire.open_envelope(envelope, expect=wire.ExecuteRequest, chain=self.chain.id)
        if not 0 <= outer.message.attempt < INFERENCE_MAX_ATTEMPTS:
            # NOTE: before any draw: drawing attempt a costs a+1 weighted picks, and the ledger
            # refuses a Start beyond its cap anyway.
            raise NoExecutorAvailable(f"attempt must be in [0, {INFERENCE_MAX_ATTEMPTS})")
        client = wire.open_envelope(
            outer.message.request, expect=wire.InferenceRequest, chain=self.chain.id
        )
        iid, attempt, ta = client.id, outer.message.attempt, outer.signer_address
        # the prompt must be the client's request under the chat template: a TA that pads it
        # would bill the client for tokens it never sent (and the verifier fails such a prompt,
        # so an honest executor must refuse it here). Tokenised while the participants are read.
        expected = asyncio.ensure_future(self.engine.request_prompt_ids(client.message))
        try:
            participants, fresh = await self._cached_participants()
            expected_ids = await expected
        finally:
            expected.cancel()
        if list(outer.message.prompt_ids) != list(expected_ids):
            raise InvalidRequest(
                "prompt_ids are not the client's request under the chat template",
                field="prompt_ids",
            )
        unreplaced = await self.draws_without_replacement(attempt)
        if not fresh and not (
            ta in participants and self._drawn(iid, attempt, ta, participants, unreplaced)
        ):
            participants = await self._read_participants()  # the copy may be old: re-read
        if ta not in participants:
            raise NoExecutorAvailable("ExecuteRequest not signed by a registered participant")
        if client.message.model != self.model:
            raise NoExecutorAvailable(f"this executor serves {self.model}")
        if not self._drawn(iid, attempt, ta, participants, unreplaced):
            raise NoExecutorAvailable("this executor is not the draw for this inference")
        self._attempt_of[iid] = attempt
        if len(self._attempt_of) > EXECUTOR_ATTEMPTS_KEPT:
            self._attempt_of.popitem(last=False)
        spec = client.message.sampling
        sampling = SamplingParams.from_spec(spec)
        sampling = replace(sampling, logprobs=max(DEFAULT_TOP_K_LOGPROBS, sampling.logprobs))
        return iid, outer.message.request, list(outer.message.prompt_ids), sampling, spec

    def _drawn(
        self, iid: bytes, attempt: int, ta: str, participants: dict, without_replacement: bool
    ) -> bool:
        drawn = select_executor(
            iid,
            attempt,
            eligible_weights(participants),
            exclude={ta},
            without_replacement=without_replacement,
        )
        return drawn == self.address

    async def _cached_participants(self) -> tuple[dict, bool]:
        """The participant set and whether it was read just now."""
        cached = self._participants
        if cached is not None and self.monotonic() - cached[0] < self.participants_ttl_s:
            return cached[1], False
        return await self._read_participants(), True

    async def _read_participants(self) -> dict:
        t = self.monotonic()
        participants = await self.ledger.participants()
        self._participants = (t, participants)
        return participants

    def _evidence_weight(self, artifact: Artifact) -> int:
        """What this executor commits as its output's epoch-evidence weight."""
        return evidence_weight_micro(artifact.token_logprobs)

    async def _record(self, done: _Executed) -> None:
        """Journal an inference (:meth:`_journal`) and commit its Finish."""
        self._finish_later(done.iid, await self._journal(done))

    async def _journal(self, done: _Executed) -> bytes:
        """Store the payload, the private ranks (what generation ranked beyond the artifact's
        top-k, never served) and the signed Finish, pending, in one local transaction (in a
        thread, so the event loop keeps streaming); returns the sealed Finish."""
        return await asyncio.to_thread(self._journal_sync, done)

    def _journal_sync(self, done: _Executed) -> bytes:
        iid, prompt_ids, chunks, spec_sampling = done.iid, done.prompt_ids, done.chunks, done.spec
        artifact = Artifact.build(
            prompt_ids=prompt_ids,
            output_ids=[c.token_id for c in chunks],
            token_logprobs=[c.logprob for c in chunks],
            top_ids=[c.top_ids for c in chunks],
            top_logprobs=[c.top_logprobs for c in chunks],
            # NOTE: the artifact records what the client asked for; a sampling cheat shows
            # up as a replay mismatch, not as different recorded parameters.
            seed=spec_sampling.seed,
            temperature=spec_sampling.temperature,
            top_p=spec_sampling.top_p,
            top_k=spec_sampling.top_k,
            finish_reason=chunks[-1].finish_reason or "length",
        )
        payload = wire.encode(
            wire.Payload(request=done.request_bytes, artifact=artifact.to_compact())
        )
        finish = wire.FinishInference(
            inference_id=iid,
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(chunks),
            finish_reason=artifact.finish_reason,
            response_hash=prompt_hash([c.token_id for c in chunks]),
            artifact_hash=artifact.hash(),
            payload_hash=hashlib.sha256(payload).digest(),
            nonce=self.rng.getrandbits(64),
            evidence_weight_micro=self._evidence_weight(artifact),
        )
        tx = wire.seal(finish, self.key, self.chain.id)
        rows = [[list(ids), [round(float(x), 5) for x in lps]] for ids, lps in done.ranks]
        self.store.record(
            iid, payload, msgpack.packb([done.k, rows]), tx, now_ms=int(self.clock() * 1000)
        )
        return tx

    async def resume(self) -> int:
        """Resubmit every journalled Finish the ledger has not decided (after a restart);
        returns how many. Safe to repeat: a Finish the ledger already has is refused and dropped."""
        n = await self.sweep()
        self.resumed += n
        if n:
            log.info("resubmitting %d journalled Finish(es)", n)
        return n

    async def sweep(self) -> int:
        """Resubmit the journalled Finishes no task is submitting now; returns how many.
        Nothing while :meth:`drain` waits (it would never end)."""
        if self._draining:
            return 0
        pending = await asyncio.to_thread(self.store.pending_finishes)
        # None: the task reads the row again (this list may be stale by then)
        return sum(self._finish_later(iid, None) for iid, _ in pending)

    async def keep_finishing(self, every_s: float = EXECUTOR_FINISH_SWEEP_S) -> None:
        """:meth:`resume`, then :meth:`sweep` every ``every_s`` for as long as the actor lives:
        a Finish the ledger could not take for one round (``finish_try_s``) is not forgotten
        until the next restart."""
        resumed = False
        while True:
            try:
                if resumed:
                    self.resent += await self.sweep()
                else:
                    await self.resume()
                    resumed = True
            except Exception as exc:  # the store unreadable for a moment: the next sweep
                log.warning("sweep of journalled Finishes failed: %r", exc)
            await asyncio.sleep(every_s)

    def _finish_later(self, iid: bytes, tx: bytes | None) -> bool:
        """Submit a journalled Finish (None: the one the journal holds now) in the background,
        unless a task already does."""
        if iid in self._finishing:
            return False
        self._finishing.add(iid)
        self._tasks.spawn(self._commit_finish(iid, tx))
        return True

    async def _commit_finish(self, iid: bytes, tx: bytes | None) -> None:
        try:
            if tx is None:
                tx = await asyncio.to_thread(self.store.pending_finish, iid)
                if tx is None:  # decided since the sweep listed it
                    return
            if await self._submit_finish(iid, tx):
                await asyncio.to_thread(self.store.finish_settled, iid)
        finally:
            self._finishing.discard(iid)

    async def _submit_finish(self, iid: bytes, tx: bytes) -> bool:
        """Submit a journalled Finish for one round (``finish_try_s``); True once the ledger
        decided it (applied, or refused for good). False leaves it journalled for the next
        sweep: no replica took it in time, or its Start has not committed yet."""
        give_up = self.monotonic() + self.finish_try_s
        while True:
            try:  # CommitTimeout, replicas restarting: resent (the tx is idempotent) until give_up
                outcome = await submit_until(
                    self.ledger, tx, give_up - self.monotonic(), EXECUTOR_FINISH_RETRY_S
                )
            except Exception as exc:
                log.warning("FinishInference %s not committed yet: %r", iid.hex()[:12], exc)
                return False
            if outcome.ok:
                self.finished += 1
                break
            # the Start drawing this executor has not committed (yet): none at all, or only an
            # earlier attempt's, whose executor failed before its first token (the TA retried)
            if outcome.reason in ("unknown_inference", "not_executor"):
                if iid not in self._start_unknown_since:
                    self.waited_for_start += 1
                first = self._start_unknown_since.setdefault(iid, self.clock())
                if self.clock() - first < self.finish_wait_start_s:
                    start = await self._our_start_committed(iid, give_up)
                    if start is None:
                        return False
                    if start is _SUPERSEDED:
                        self.superseded += 1
                        self.finish_failures.append("superseded")
                        log.info("FinishInference %s dropped: superseded", iid.hex()[:12])
                        break
                    # a fresh nonce (the ledger keeps the refused one's receipt under its id),
                    # journalled so that a later round or a restart sends this one
                    tx = self._resealed(tx)
                    await asyncio.to_thread(self.store.replace_pending_finish, iid, tx)
                    continue
            self.finish_failures.append(outcome.reason)
            log.warning("FinishInference %s rejected: %s", iid.hex()[:12], outcome.reason)
            break
        self._start_unknown_since.pop(iid, None)
        return True

    async def _our_start_committed(self, iid: bytes, give_up: float) -> object | None:
        """Wait, reading (never writing: a refused Finish is a committed transaction) until the
        ledger has a Start of the inference that names this executor (True), or one that never
        will: a later attempt's naming another executor, or the inference decided without this
        one (``_SUPERSEDED``); None when ``give_up`` came first."""
        wait = EXECUTOR_FINISH_RETRY_S
        mine = self._attempt_of.get(iid)
        while self.monotonic() < give_up:
            await asyncio.sleep(min(wait, max(0.0, give_up - self.monotonic())))
            with contextlib.suppress(Exception):  # the ledger away: this round reads again
                rec = await self.ledger.inference(iid)
                if rec is not None and rec.executor == self.address:
                    return True
                # NOTE: an earlier attempt's Start (lower attempt) is not final: the retry that
                # drew this executor may still commit; a later one's, or an ended inference, is
                if rec is not None and (
                    rec.status is not InferenceStatus.STARTED
                    or (mine is not None and rec.attempt > mine)
                ):
                    return _SUPERSEDED
            wait = min(2 * wait, EXECUTOR_FINISH_POLL_MAX_S)
        return None

    def _resealed(self, tx: bytes) -> bytes:
        finish = wire.open_envelope(tx, wire.FinishInference, chain=self.chain.id).message
        return wire.seal(
            wire.FinishInference(**{**_fields(finish), "nonce": self.rng.getrandbits(64)}),
            self.key,
            self.chain.id,
        )

    # --- payloads --------------------------------------------------------------------------

    async def payload(self, envelope: bytes) -> bytes:
        """The stored payload named by a verifier's signed ``PayloadRequest``.

        Raises:
            WireError: bad or unsigned request.
            PayloadUnavailable: not a participant, unknown hash, or withheld.
        """
        req = wire.open_envelope(envelope, expect=wire.PayloadRequest, chain=self.chain.id)
        participants = await self.ledger.participants()
        if req.signer_address not in participants:
            raise PayloadUnavailable("payloads are served to participants only")
        body = self.store.get(req.message.payload_hash)
        if body is None:
            raise PayloadUnavailable("no such payload")
        return body

    # --- housekeeping ----------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait for background ledger submissions (tests, shutdown); no sweep starts more."""
        self._draining = True
        try:
            await self._tasks.drain()
        finally:
            self._draining = False

    def stats(self) -> dict:
        return {
            "finished": self.finished,
            "resumed": self.resumed,
            "resent": self.resent,
            "waited_for_start": self.waited_for_start,
            "superseded": self.superseded,
            "finishes_in_flight": len(self._finishing),
            "finish_failures": list(self.finish_failures),
            "inflight": self.inflight,
            "refused": self.refused,
        }


@dataclass(frozen=True)
class _Executed:
    """What an execution leaves to record: the request, its output and the private ranks."""

    iid: bytes
    request_bytes: bytes
    prompt_ids: list[int]
    spec: wire.SamplingSpec  # what the client asked for (the artifact records it)
    chunks: list[TokenChunk]
    k: int  # the artifact's top-k
    ranks: list[tuple[tuple[int, ...], tuple[float, ...]]]  # top-(k + private) per position


def _fields(msg) -> dict:
    return {name: getattr(msg, name) for name, _ in type(msg).__wire_fields__}
