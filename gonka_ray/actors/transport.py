"""Transport agent: the client-facing role of a participant (DESIGN §2).

``submit(envelope)`` takes a client's signed ``InferenceRequest`` and streams the response as
encoded bytes: ``StreamChunk``s, then one ``InferenceDone``. Before anything is escrowed it
checks the signature, the timestamp window, replay, the model and the client's balance; each
failure is a typed :class:`~gonka_ray.exceptions.GonkaError` (4xx at the HTTP layer).

The admission look-ups that need another actor (the prompt's tokens from the MLNode, the
client's balance and the participants from the ledger replica) run concurrently. The balance
check counts the escrow this TA reserved for the client's requests whose Starts the ledger has
not decided yet, so a client cannot spend the same balance twice through one TA.

Then, per attempt: the executor is the deterministic draw over the committed participants
(excluding this TA's own participant and INVALID ones); the TA sends the signed
``ExecuteRequest`` to it **and at the same time** submits ``StartInference`` — the ledger write
runs as a separate task, so the first token never waits for a commit. If the executor fails
before its first token (error, dead actor), the TA retries with ``attempt + 1`` (a fresh draw,
verifiable by the ledger). A failure after the first token ends the stream with
:class:`~gonka_ray.exceptions.StreamInterrupted`; the unfinished Start expires and is refunded in
full. After the stream, ``OutputDelivered`` records the hash of exactly the tokens the client
received.

The last item (``InferenceDone``) waits until a ledger replica has *accepted* the Start (taken it
into its mempool and handed it to the group; a millisecond hop that generation has long
overtaken), not until it commits: so the ledger adds no latency to the answer, and a client never
holds an answer whose Start exists only in this TA's memory, even if the TA dies right after. If
the commit's outcome is already known by then and it was refused, the client gets that error
instead. A Start refused after the answer went out (only a race: a balance spent twice through
several TAs at once, an eligible set that changed beyond the ledger's grace window) charges
nothing; the TA counts it in ``stats()["unpaid_answers"]``.

Back-pressure: a TA serves at most ``max_inflight`` requests at once; one more is refused with
:class:`~gonka_ray.exceptions.Overloaded` (429 + ``Retry-After``) before anything is checked or
escrowed, so it may be resent as is. An executor at its own limit refuses with code
``overloaded`` before its first token; the TA then tries the next draw, and if every attempt was
refused so, answers ``Overloaded`` too (the Start of that inference expires and is refunded).
Per-request timings are kept for the last ``TA_TIMINGS_KEPT`` requests only, so memory stays
bounded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from gonka_ray import wire
from gonka_ray.actors.clients import PeerExecutor
from gonka_ray.actors.ledger_port import ParticipantInfo
from gonka_ray.actors.role import BackgroundTasks, RoleBase, RoleContext, submit_until
from gonka_ray.constants import (
    INFERENCE_MAX_ATTEMPTS,
    REQUEST_MAX_AGE_S,
    TA_MAX_INFLIGHT,
    TA_RETRY_AFTER_S,
    TA_SUBMIT_DEADLINE_S,
    TA_SUBMIT_TAKEN_DEADLINE_S,
    TA_TIMINGS_KEPT,
)
from gonka_ray.exceptions import (
    CommitTimeout,
    EngineError,
    InsufficientBalance,
    InvalidRequest,
    ModelNotFound,
    NoExecutorAvailable,
    Overloaded,
    StreamInterrupted,
    TxRejected,
)
from gonka_ray.ledger.inference_app import prompt_hash
from gonka_ray.protocol import payments
from gonka_ray.protocol.admission import ReplayGuard, check_timestamp
from gonka_ray.protocol.selection import eligible_weights, select_executor

log = logging.getLogger(__name__)


class TransportAgent(RoleBase):
    """One participant's transport agent.

    Args:
        ctx: the participant's name, key, ledger, MLNode (chat templating), model and clock.
        executors: address → the executor of that participant (handle or object).
        price_per_token: units per token (escrow and cost).
        rng: transaction nonces.
        max_attempts: executor draws per request.
        max_inflight: requests served at once before ``Overloaded``.
    """

    def __init__(
        self,
        ctx: RoleContext,
        *,
        executors: Callable[[str], Any],
        price_per_token: int,
        rng: random.Random | None = None,
        max_attempts: int = INFERENCE_MAX_ATTEMPTS,
        max_inflight: int = TA_MAX_INFLIGHT,
    ) -> None:
        super().__init__(ctx, rng=rng)
        self.executors = executors
        self.price_per_token = price_per_token
        self.max_attempts = max_attempts
        self.replay = ReplayGuard(max_age_s=REQUEST_MAX_AGE_S)
        self._tasks = BackgroundTasks()
        self.max_inflight = max_inflight
        self.inflight = 0
        # first token vs Start, per request
        self.timings: deque[dict[str, float]] = deque(maxlen=TA_TIMINGS_KEPT)
        self.retries = 0
        self.refused = 0  # requests answered Overloaded
        self.unpaid_answers = 0  # answers whose Start the ledger refused after they went out
        self.pending_escrow: dict[str, int] = {}  # requester -> escrow of uncommitted Starts

    # --- the request flow ------------------------------------------------------------------

    async def submit(self, envelope: bytes) -> AsyncIterator[bytes]:
        """Serve one signed client request; yields encoded StreamChunk…, then InferenceDone.

        Raises (before the first item, nothing escrowed):
            Overloaded (429: ``max_inflight`` requests in flight; the same envelope may be
            resent), WireError (400/401), ExpiredRequest, ReplayedRequest, ModelNotFound,
            InvalidRequest, InsufficientBalance, NoExecutorAvailable (503 after ``max_attempts``
            pre-token failures), Overloaded (every drawn executor was at its limit). After the
            first chunk: StreamInterrupted (the executor died mid-stream; refunded at expiry).
        """
        if self.inflight >= self.max_inflight:
            self.refused += 1
            raise Overloaded(
                f"transport agent {self.participant} has {self.inflight} requests in flight",
                retry_after_s=TA_RETRY_AFTER_S,
            )
        self.inflight += 1
        try:
            async for item in self._submit(envelope):
                yield item
        finally:
            self.inflight -= 1

    async def _submit(self, envelope: bytes) -> AsyncIterator[bytes]:
        signed = wire.open_envelope(envelope, expect=wire.InferenceRequest, chain=self.chain.id)
        req: wire.InferenceRequest = signed.message
        now_ms = int(self.clock() * 1000)
        check_timestamp(req.timestamp_ms, now_ms)
        if req.model != self.model:
            raise ModelNotFound(f"this network serves {self.model!r}", field="model")
        requester = signed.signer_address
        # NOTE: three independent actor calls, concurrently: one hop of latency, not three.
        balance_task = asyncio.ensure_future(self.ledger.balance(requester))
        participants_task = asyncio.ensure_future(self.ledger.participants())
        try:
            prompt_ids = await self.engine.request_prompt_ids(req)
            try:
                escrow = payments.escrow_amount(
                    len(prompt_ids), req.sampling.max_tokens, self.price_per_token
                )
            except ValueError as exc:
                raise InvalidRequest(str(exc), field="max_tokens") from None
            if escrow > req.max_escrow:
                raise InsufficientBalance(
                    f"escrow {escrow} exceeds the request's max_escrow {req.max_escrow}",
                    field="max_escrow",
                )
            balance = await balance_task
            # NOTE: no await between reading the pending escrow and reserving this one, so two
            # concurrent requests of one client cannot both pass on the same balance.
            pending = self.pending_escrow.get(requester, 0)
            if balance - pending < escrow:
                raise InsufficientBalance(
                    f"balance below the escrow of {escrow}"
                    + (f" (with {pending} escrowed by requests still starting)" if pending else "")
                )
            self.pending_escrow[requester] = pending + escrow
            try:
                participants = await participants_task
                self.replay.admit(signed.id, req.timestamp_ms, now_ms)
            except BaseException:
                self._release(requester, escrow)
                raise
        finally:
            for task in (balance_task, participants_task):
                task.cancel()  # no-op once done; a failed admission leaves nothing running
        iid = signed.id
        t0 = time.perf_counter()
        timing: dict[str, float] = {}
        starts: list[asyncio.Task] = []  # this request's Start submissions, one per attempt
        try:
            async for item in self._attempts(
                iid, envelope, prompt_ids, participants, escrow, t0, timing, starts
            ):
                yield item
        finally:
            # the hold ends when the ledger has decided every Start (a committed one is in
            # the balance by then), or now if none was sent
            self._tasks.spawn(self._release_escrow(requester, escrow, starts))

    async def _attempts(
        self,
        iid: bytes,
        envelope: bytes,
        prompt_ids: list[int],
        participants: dict[str, ParticipantInfo],
        escrow: int,
        t0: float,
        timing: dict[str, float],
        starts: list[asyncio.Task],
    ) -> AsyncIterator[bytes]:
        """The executor draws of one admitted request, until one streams its answer."""
        overloaded = 0  # attempts an executor refused for being at its limit
        for attempt in range(self.max_attempts):
            if attempt:  # a retry draws from the ledger's current set
                participants = await self.ledger.participants()
            executor = select_executor(
                iid,
                attempt,
                eligible_weights(participants),
                exclude={self.address},
                without_replacement=await self.draws_without_replacement(attempt),
            )
            start_tx = wire.seal(
                wire.StartInference(
                    request=envelope,
                    executor=executor,
                    attempt=attempt,
                    prompt_tokens=self._claimed_prompt_tokens(prompt_ids),
                    prompt_hash=prompt_hash(prompt_ids),
                    nonce=self.rng.getrandbits(64),
                ),
                self.key,
                self.chain.id,
            )
            accepted = asyncio.Event()
            start_task = self._tasks.spawn(self._submit_start(start_tx, t0, timing, accepted))
            starts.append(start_task)
            execute = wire.seal(
                wire.ExecuteRequest(
                    request=envelope, attempt=attempt, prompt_ids=tuple(prompt_ids)
                ),
                self.key,
                self.chain.id,
            )
            output: list[int] = []
            finish_reason = ""
            try:
                async for item in PeerExecutor(self.executors(executor)).execute(execute):
                    msg = wire.decode(item, expect=(wire.StreamChunk, wire.ExecutionError))
                    if isinstance(msg, wire.ExecutionError):
                        raise _ExecutorFailed(
                            msg.message, started=msg.started or bool(output), code=msg.code
                        )
                    if not output:
                        timing["first_token_s"] = time.perf_counter() - t0
                    output.append(msg.token_id)
                    finish_reason = msg.finish_reason
                    yield item
                if not finish_reason:  # the stream just stopped: nothing, or cut short
                    raise _ExecutorFailed(
                        "stream ended without a finish reason", started=bool(output)
                    )
            except _ExecutorFailed as exc:
                if exc.started:
                    raise self._interrupted(iid, output, exc) from None
                overloaded += exc.code == "overloaded"
                log.info(
                    "attempt %d of %s failed before its first token: %s",
                    attempt,
                    iid.hex()[:12],
                    exc,
                )
                self.retries += 1
                continue
            except (asyncio.CancelledError, GeneratorExit):
                if output:  # the client went away: record what it was sent, and that it left
                    self._tasks.spawn(
                        self._submit_delivered(start_task, iid, list(output), client_left=True)
                    )
                raise
            except Exception as exc:  # a dead actor, a broken stream
                if output:
                    raise self._interrupted(iid, output, exc) from None
                log.info("attempt %d of %s: executor unreachable: %s", attempt, iid.hex()[:12], exc)
                self.retries += 1
                continue
            # NOTE: the last item waits until a replica accepted the Start (see the module
            # docstring), not for its commit: a client never holds an answer that only this
            # TA knows of (fault tests lost 3 of 944 when it waited for neither).
            await self._recorded(iid, start_task, accepted)
            self._tasks.spawn(self._submit_delivered(start_task, iid, output))
            self.timings.append(timing)
            cost = payments.cost_amount(len(prompt_ids), len(output), self.price_per_token, escrow)
            yield wire.encode(
                wire.InferenceDone(
                    inference_id=iid,
                    executor=executor,
                    attempt=attempt,
                    prompt_tokens=len(prompt_ids),
                    completion_tokens=len(output),
                    cost=cost,
                    finish_reason=finish_reason or "length",
                )
            )
            return
        if overloaded == self.max_attempts:
            self.refused += 1
            raise Overloaded(
                f"all {overloaded} drawn executors are at their limit",
                retry_after_s=TA_RETRY_AFTER_S,
            )
        raise NoExecutorAvailable(f"no executor answered after {self.max_attempts} attempts")

    def _claimed_prompt_tokens(self, prompt_ids: list[int]) -> int:
        """The prompt count a Start claims (the executor signs its own; a mismatch is a vote)."""
        return len(prompt_ids)

    @staticmethod
    def _interrupted(iid: bytes, output: list[int], exc: Exception) -> EngineError:
        return StreamInterrupted(
            f"executor failed mid-stream after {len(output)} tokens: {exc}; the escrow is "
            "refunded when the inference expires",
            inference_id=iid.hex(),
            tokens_sent=len(output),
        )

    async def _recorded(self, iid: bytes, start_task: asyncio.Task, accepted: asyncio.Event):
        """Wait until the Start is accepted by a replica or its outcome is known.

        Raises:
            CommitTimeout: the Start could be neither submitted nor committed.
            TxRejected: the ledger refused the Start (nothing was charged).
        """
        if not accepted.is_set() and not start_task.done():
            waiter = asyncio.ensure_future(accepted.wait())
            try:
                await asyncio.wait({waiter, start_task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        if not start_task.done():
            start_task.add_done_callback(self._count_unpaid)
            return
        try:
            started = start_task.result()
        except Exception as exc:
            raise CommitTimeout(
                f"the StartInference of {iid.hex()} did not commit: {exc}; nothing was charged"
            ) from None
        if not started.ok:
            raise TxRejected(
                f"the ledger refused the StartInference: {started.reason}; nothing was charged",
                reason=started.reason,
            )

    @staticmethod
    def _started(start_task: asyncio.Task) -> bool:
        """Whether a finished Start submission committed and applied."""
        if start_task.cancelled() or start_task.exception() is not None:
            return False
        return start_task.result().ok

    def _count_unpaid(self, start_task: asyncio.Task) -> None:
        if not self._started(start_task):
            self.unpaid_answers += 1

    async def _release_escrow(
        self, requester: str, escrow: int, starts: list[asyncio.Task]
    ) -> None:
        if starts:
            await asyncio.wait(starts)
            for task in starts:  # their outcome was logged or counted; retrieve it
                self._started(task)
        self._release(requester, escrow)

    def _release(self, requester: str, escrow: int) -> None:
        left = self.pending_escrow.get(requester, 0) - escrow
        if left > 0:
            self.pending_escrow[requester] = left
        else:
            self.pending_escrow.pop(requester, None)

    async def _submit_start(
        self, tx: bytes, t0: float, timing: dict[str, float], accepted: asyncio.Event
    ):
        try:
            outcome = await submit_until(self.ledger, tx, TA_SUBMIT_DEADLINE_S, accepted=accepted)
        except Exception:
            if not accepted.is_set():  # its client is told CommitTimeout: nothing was charged
                raise
            # a replica took it in, so its client may hold the answer: resend it longer
            outcome = await submit_until(self.ledger, tx, TA_SUBMIT_TAKEN_DEADLINE_S)
        timing.setdefault("start_commit_s", time.perf_counter() - t0)
        if not outcome.ok:
            log.warning("StartInference rejected: %s", outcome.reason)
        return outcome

    async def _submit_delivered(
        self, start_task: asyncio.Task, iid: bytes, output: list[int], client_left: bool = False
    ):
        # Delivered after the Start, or the ledger would not know the inference; a Start that
        # was refused or never committed (counted in unpaid_answers) has nothing to record.
        await asyncio.wait({start_task})
        if not self._started(start_task):
            return None
        tx = wire.seal(
            wire.OutputDelivered(
                inference_id=iid,
                output_hash=prompt_hash(output),
                nonce=self.rng.getrandbits(64),
                client_left=client_left,
            ),
            self.key,
            self.chain.id,
        )
        return await submit_until(self.ledger, tx, TA_SUBMIT_TAKEN_DEADLINE_S)

    # --- housekeeping ----------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait for background ledger submissions (tests, shutdown)."""
        await self._tasks.drain()

    def stats(self) -> dict:
        return {
            "timings": list(self.timings),
            "retries": self.retries,
            "refused": self.refused,
            "unpaid_answers": self.unpaid_answers,
            "pending_escrow": sum(self.pending_escrow.values()),
            "inflight": self.inflight,
            "replay_window": len(self.replay),
        }


class _ExecutorFailed(Exception):
    def __init__(self, message: str, *, started: bool, code: str = "") -> None:
        super().__init__(message)
        self.started = started
        self.code = code
