"""Verifier: re-checks other participants' inferences in the background (DESIGN §3–§4).

It follows committed ledger events. For each ``FinishInference`` by another participant it
decides whether it must validate: as the inference's primary validator (a newcomer's every
inference has one, drawn from the committing block's hash) or by its secret seed for the epoch
the inference finished in (the reputation- and traffic-dependent rate of
:mod:`gonka_ray.protocol.validation_sampling`, fed with that epoch's frozen snapshot — the same
numbers the ledger uses when it checks the validator's duty at settlement); if so it fetches the
payload
with a signed request, checks it against the ledger's hashes, scores ``prompt + output`` in one
prefill pass on its own engine, grades it (:mod:`gonka_ray.verification.checks`), decides with the
calibrated policy and submits a ``Validation``. For each failed ``Validation`` by someone else
on an inference it did not execute, it re-verifies and submits a ``Vote``. A payload it cannot
get is asked for again every ``PAYLOAD_FETCH_RETRY_S`` (an honest executor may be restarting, a
peer link down) and counts as a failed check only once its fetch window ends: after
``fetch_window_s``, or a few blocks before the answer would be too late (the epoch's settlement
for a check, the vote's deadline for a vote), so withholding a payload never pays.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gonka_ray import wire
from gonka_ray.actors.clients import PeerExecutor
from gonka_ray.actors.role import RoleBase, RoleContext
from gonka_ray.config import EpochConfig
from gonka_ray.constants import (
    PAYLOAD_FETCH_RETRY_S,
    PAYLOAD_FETCH_TIMEOUT_S,
    PAYLOAD_FETCH_WINDOW_S,
    RECEIPT_RANKS,
    VERIFIER_EVENTS_WAIT_S,
    VERIFIER_FETCH_MARGIN_BLOCKS,
    VERIFIER_OWN_FAILURE_RETRIES,
    VERIFIER_OWN_FINISHES_KEPT,
    VERIFIER_RANKS_KEPT,
    VERIFIER_RETRY_MAX_S,
    VERIFIER_VOTE_RETRY_S,
)
from gonka_ray.engine.base import SamplingParams
from gonka_ray.exceptions import GonkaError, InvalidRequest, PayloadUnavailable
from gonka_ray.ledger.inference_app import prompt_hash
from gonka_ray.protocol import epochs, receipts, validation_sampling
from gonka_ray.protocol.lifecycle import InferenceRecord, InferenceStatus
from gonka_ray.protocol.verification_policy import (
    Thresholds,
    Verdict,
    decide,
    failed_structurally,
    thresholds_for,
)
from gonka_ray.verification.artifact import Artifact
from gonka_ray.verification.checks import (
    VerificationResult,
    VerifierScores,
    evidence_weight_micro,
    verify,
)

log = logging.getLogger(__name__)

CHECK, VOTE, PROMPT_VOTE = "check", "vote", "prompt_vote"  # work that waits on a payload
UNAVAILABLE = "payload unavailable"  # a fetch window ended without the payload


@dataclass
class _Waiting:
    """A check or vote put off: its payload could not be fetched yet, or it failed here."""

    accuser: str  # a vote's accuser ("" for a check)
    due: float  # clock time of the next try
    # from this height a failed fetch is a verdict (the answer is due); a vote's is set at its
    # first retry, a third of the way from then to ``vote_deadline``
    last_height: int | None
    vote_deadline: int = 0
    fetch_failures: int = 0  # failed fetches so far (a check's retry backs off)
    own_failures: int = 0  # failures on this side so far (backs off, then gives up)
    watching: bool = False  # a vote not open yet (see Verifier._on_accusation)
    window_tried: bool = False  # the try at the window's end (in blocks) was made


def _backoff(tries: int) -> float:
    """Seconds before the next try after ``tries`` failed ones (doubling, capped)."""
    return min(VERIFIER_RETRY_MAX_S, PAYLOAD_FETCH_RETRY_S * 2 ** (tries - 1))


class Verifier(RoleBase):
    """One participant's verifier.

    Args:
        ctx: the participant's name, key, ledger, MLNode, model (selects the calibrated
            thresholds) and clock.
        executors: address → that participant's executor (for payload fetches).
        epoch_seed: the secret seed per epoch (``epoch -> seed``; its sha256 is committed on
            the ledger), or one seed for every epoch (tests).
        thresholds: override the calibrated thresholds (tests).
        epochs: the network's epoch parameters (which epoch a finish height falls in).
        own_executor: this participant's executor (object or Ray handle): audits receipts on
            its inferences (:mod:`gonka_ray.protocol.receipts`); None: no audits.
        fetch_window_s: how long a payload that cannot be fetched is asked for again before
            it counts as a failed check (0: at once).
    """

    def __init__(
        self,
        ctx: RoleContext,
        *,
        executors: Callable[[str], Any],
        epoch_seed: bytes | Callable[[int], bytes],
        thresholds: Thresholds | None = None,
        epochs: EpochConfig | None = None,
        rng: random.Random | None = None,
        own_executor: Any = None,
        fetch_window_s: float = PAYLOAD_FETCH_WINDOW_S,
    ) -> None:
        super().__init__(ctx, rng=rng)
        self.fetch_window_s = fetch_window_s
        self.executors = executors
        self.own_executor = own_executor
        self.seed_for = epoch_seed if callable(epoch_seed) else (lambda _e, s=epoch_seed: s)
        self.thresholds = thresholds or thresholds_for(ctx.model)
        self.epochs = epochs or EpochConfig()
        self.cursor = 0  # last ledger event seen
        self.finished_seen = 0
        self.checked = 0
        self.in_check = 0  # checks (and votes) running now, their ledger submission included
        self.failed = 0
        self.votes = 0
        self.skipped = 0
        self.results: dict[bytes, tuple[Verdict, VerificationResult]] = {}
        self._waiting: dict[tuple[bytes, str], _Waiting] = {}  # (inference id, kind) → retry
        self._unreachable: dict[bytes, float] = {}  # inference id → first failed fetch (clock)
        self._window_over: set[bytes] = set()  # during one retry: a failed fetch is a verdict
        self.fetches_deferred = 0
        self.payloads_unavailable = 0  # fetch windows that ended without the payload
        self.retried_after_own_failure = 0  # checks and votes this side failed, put off
        # inference id → (artifact top-k ids, own ranked ids, logprobs) of recent checks
        self._ranks: OrderedDict[bytes, tuple[list, Any, Any]] = OrderedDict()
        self._mine: OrderedDict[bytes, None] = OrderedDict()  # own executor's recent Finishes
        self._keys: dict[str, bytes] = {}  # participants' public keys (receipts are sealed to them)
        self.challenges = 0
        self.receipt_votes = 0
        self._eos: tuple[int, ...] | None = None
        self._stop = asyncio.Event()

    def seed_commitment(self, epoch: int) -> bytes:
        return validation_sampling.seed_commitment(self.seed_for(epoch))

    # --- the loop --------------------------------------------------------------------------

    async def run(
        self, poll_interval_s: float = 0.2, wait_s: float = VERIFIER_EVENTS_WAIT_S
    ) -> None:
        """Follow the ledger until :meth:`stop` (the actor's background task): a long poll for
        the next block that brings events (at most ``wait_s``). After an answer with events, or
        a quick one without (a failure, a port that does not wait), it pauses
        ``poll_interval_s``; only a poll that waited and timed out is asked again at once.
        Busy, a verifier asks as often as a plain poll would, the events of several blocks
        together (each ask is a Ray call for the verifier and its replica: asking per block
        cost more CPU per request than it saved idle); idle, once per ``wait_s``, and it hears
        of the first new block at once."""
        while not self._stop.is_set():
            started, before = self.clock(), self.cursor
            try:
                await self.run_once(self._until_next_retry(wait_s))
            except Exception:  # keep verifying whatever one check did
                log.exception("verifier %s: poll failed", self.participant)
            if self.cursor == before and self.clock() - started >= poll_interval_s:
                continue  # the long poll timed out: nothing to gather, ask again
            try:
                await asyncio.wait_for(self._stop.wait(), poll_interval_s)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()

    async def run_once(self, wait_s: float = 0.0) -> int:
        """Process the events committed since the last call (waiting up to ``wait_s`` for some
        when there are none yet); returns how many checks ran.

        Accusations go first: a vote has a deadline of a few blocks (and from v5 one nobody
        else voted on lapses, paying a caught cheater), a sampled check has until the epoch
        settles. Behind a backlog of checks, votes came too late."""
        events = await self.ledger.events_since(self.cursor, wait_s)
        accusations = [e for e in events if e.kind == wire.Validation.TYPE and e.passed is False]
        done = 0
        for event in accusations:  # the cursor moves below, in order, once all are handled
            done += await self._on_accusation(event.inference_id, event.sender)
        done += await self._retry_due()  # put-off votes first, then checks
        for event in events:
            self.cursor = max(self.cursor, event.seq)
            if event.kind == wire.FinishInference.TYPE:
                self.finished_seen += 1
                if event.sender == self.address:
                    self._remember_mine(event.inference_id)
                done += await self._on_finished(event.inference_id)
            elif event.kind == wire.Validation.TYPE and event.passed is False:
                pass  # voted on above
            elif event.kind == wire.Validation.TYPE and event.inference_id in self._mine:
                await self._audit(event.inference_id, event.sender)
            elif event.kind == wire.ReceiptChallenge.TYPE and event.validator == self.address:
                await self._reveal(event.inference_id)
            elif event.kind == wire.ReceiptChallenge.TYPE:
                done += await self._judge_receipt(event.inference_id, event.validator, event.sender)
            elif event.kind == wire.ReceiptReveal.TYPE:
                done += await self._judge_receipt(event.inference_id, event.sender, "")
        return done

    async def _public_key(self, address: str) -> bytes:
        key = self._keys.get(address)
        if key is None:
            self._keys = {a: p.public_key for a, p in (await self.ledger.participants()).items()}
            key = self._keys[address]
        return key

    def _remember_mine(self, iid: bytes) -> None:
        self._mine[iid] = None
        while len(self._mine) > VERIFIER_OWN_FINISHES_KEPT:
            self._mine.popitem(last=False)

    # --- checks and votes put off (payload out of reach, or this side failed) --------------

    def _until_next_retry(self, wait_s: float) -> float:
        """The long poll's wait, cut short when a put-off check or vote is due sooner."""
        if not self._waiting:
            return wait_s
        soonest = min(w.due for w in self._waiting.values())
        return max(0.0, min(wait_s, soonest - self.clock()))

    def _put_off(
        self,
        kind: str,
        record: InferenceRecord,
        accuser: str = "",
        *,
        failed_here: Exception | None = None,
        watch: bool = False,
    ) -> int:
        """Put off a check or vote whose payload could not be fetched yet, or that failed on
        this side (``failed_here``: its own MLNode restarting, its ledger link down: not the
        executor's doing, and a check lost to it would be a duty missed); 0 work done. It
        reads nothing from the ledger (the ledger may be what failed).

        A vote is asked again every ``VERIFIER_VOTE_RETRY_S`` and its fetch window ends a third
        of the way from its first retry to its deadline (its accuser already waited a whole
        window), so the last try still votes in time; a check backs off from
        ``PAYLOAD_FETCH_RETRY_S`` (a hanging executor must not hold the verifier for a whole
        window) and its window ends where the settlement phase before its epoch's settlement
        begins. Failures on this side back off too and are given up after
        ``VERIFIER_OWN_FAILURE_RETRIES`` (no verdict: the record is left to the other
        validators). ``watch``: a vote that is not open yet, looked at again every
        ``VERIFIER_VOTE_RETRY_S`` (no window runs meanwhile)."""
        key = (record.inference_id, kind)
        waiting = self._waiting.get(key)
        if watch:
            if waiting is None:
                waiting = self._waiting[key] = _Waiting(accuser, 0.0, 2**62, watching=True)
            waiting.due = self.clock() + VERIFIER_VOTE_RETRY_S
            return 0
        if waiting is None or waiting.watching:  # new, or the watched vote opened
            if kind == CHECK:  # the epoch's settlement takes no validation after it
                epoch = epochs.epoch_of(record.finish_height, self.epochs)
                settles_at = epochs.epoch_start(epoch + 2, self.epochs) - 1
                margin = max(VERIFIER_FETCH_MARGIN_BLOCKS, epochs.settlement_blocks(self.epochs))
                fresh = _Waiting(accuser, 0.0, settles_at - margin)
            else:
                fresh = _Waiting(accuser, 0.0, None, vote_deadline=record.vote_deadline)
            waiting = self._waiting[key] = fresh
        if failed_here is not None:
            self._fail_here(key, waiting, failed_here)
            return 0
        waiting.fetch_failures += 1
        self.fetches_deferred += 1
        if kind == CHECK:
            waiting.due = self.clock() + _backoff(waiting.fetch_failures)
        else:
            waiting.due = self.clock() + VERIFIER_VOTE_RETRY_S  # a vote's window is short
        return 0

    def _fail_here(self, key: tuple[bytes, str], waiting: _Waiting, exc: Exception) -> None:
        """A try of queued work failed on this side: log the first failure, back off, and give
        it up (no verdict) after ``VERIFIER_OWN_FAILURE_RETRIES``."""
        iid, kind = key
        waiting.own_failures += 1
        self.retried_after_own_failure += 1
        log.log(
            logging.WARNING if waiting.own_failures == 1 else logging.DEBUG,
            "%s: %s of %s failed on this side (%s: %s); asking again",
            self.participant,
            kind,
            iid.hex()[:12],
            type(exc).__name__,
            exc,
        )
        if waiting.own_failures <= VERIFIER_OWN_FAILURE_RETRIES:
            waiting.due = self.clock() + _backoff(waiting.own_failures)
            return
        if self._waiting.get(key) is waiting:
            del self._waiting[key]
        self._forget_fetch(iid)
        log.warning(
            "%s: gave up the %s of %s after %d failures on this side",
            self.participant,
            kind,
            iid.hex()[:12],
            waiting.own_failures - 1,
        )

    def _queued(self, iid: bytes, kind: str) -> bool:
        """Whether this work already waits in the retry queue (and is not the retry now in
        hand): an event for it must not try again out of turn and push its retry back."""
        waiting = self._waiting.get((iid, kind))
        return waiting is not None and waiting.due != math.inf

    async def _retry_due(self) -> int:
        """Try the put-off work that is due (in time, or once when its window has ended in
        blocks), votes first; a fetch that fails again after its window ended is a verdict."""
        if not self._waiting:
            return 0
        now = self.clock()
        height = await self.ledger.height()
        for w in self._waiting.values():
            if w.last_height is None:  # a vote's window: a third of what is left of the vote
                w.last_height = height + max(1, (w.vote_deadline - height) // 3)
        due = sorted(
            ((kind == CHECK, w.due), iid, kind)
            for (iid, kind), w in self._waiting.items()
            if w.due <= now or (height >= w.last_height and not w.window_tried)
        )
        done = 0
        for _, iid, kind in due:
            key = (iid, kind)
            waiting = self._waiting.get(key)
            if waiting is None or waiting.due == math.inf:  # done meanwhile, or in hand
                continue
            waiting.due = math.inf  # in hand: a re-entrant call leaves it alone
            first = self._unreachable.get(iid, now)
            if height >= waiting.last_height:
                waiting.window_tried = True
            if now - first >= self.fetch_window_s or height >= waiting.last_height:
                self._window_over.add(iid)
            try:
                record = await self.ledger.inference(iid)
                if record is None or record.settled:
                    pass  # settled (or pruned) meanwhile: nothing to answer
                elif kind == CHECK:
                    done += await self._checking(record)
                elif kind == VOTE:
                    done += await self._on_accusation(iid, waiting.accuser)
                elif record.prompt_vote:
                    done += await self._on_prompt_dispute(record)
            except Exception as exc:  # the ledger lookup failed: keep it, ask again later
                self._fail_here(key, waiting, exc)
            finally:
                self._window_over.discard(iid)
                if self._waiting.get(key) is waiting and waiting.due == math.inf:
                    del self._waiting[key]  # answered, nothing left to answer, or given up
                self._forget_fetch(iid)
        return done

    def _forget_fetch(self, iid: bytes) -> None:
        """Drop an inference's fetch history once nothing waits on its payload."""
        if not any(k[0] == iid for k in self._waiting):
            self._unreachable.pop(iid, None)

    # --- receipts (protocol v3) ------------------------------------------------------------

    async def _audit(self, iid: bytes, validator: str) -> None:
        """A pass on an inference this participant executed: open its sealed receipt and
        challenge it if it does not hold against the ranks the executor kept (a validator that
        ran nothing), publishing it; or, if it does not open, without it (the validator must
        then reveal its key)."""
        if self.own_executor is None or validator == self.address:
            return
        sealed = await self.ledger.sealed_receipt(iid, validator)
        if sealed is None:  # a pass written under rules without receipts
            return
        entries = receipts.open_as_executor(self.key, sealed, iid, validator)
        if entries is not None:
            audit = self.own_executor.audit_receipt
            call = audit.remote if hasattr(audit, "remote") else audit
            if await call(iid, validator, entries):
                return
        log.info(
            "%s: receipt of %s on %s %s",
            self.participant,
            validator[:14],
            iid.hex()[:12],
            "does not open" if entries is None else "does not hold",
        )
        self.challenges += 1
        published = tuple(
            wire.ReceiptEntry(e.position, e.token, e.logprob_micro) for e in entries or ()
        )
        await self._submit(
            wire.ReceiptChallenge(
                inference_id=iid,
                validator=validator,
                nonce=self.rng.getrandbits(64),
                entries=published,
            )
        )

    async def _reveal(self, iid: bytes) -> None:
        """This validator's receipt was challenged: when the challenge did not publish it,
        reveal the one-time key (re-derived: nothing to keep) so anyone can open it."""
        if await self.ledger.published_receipt(iid, self.address) is not None:
            return
        key = receipts.ephemeral_secret(self.key.seed, iid)
        await self._submit(
            wire.ReceiptReveal(inference_id=iid, secret=key, nonce=self.rng.getrandbits(64))
        )

    async def _ranks_of(self, record: InferenceRecord) -> tuple[list, Any, Any] | None:
        """The ranks of this verifier's check of ``record``, scored again when they are no
        longer kept; None when the payload or the model does not allow it (a payload out of
        reach is not waited for)."""
        iid = record.inference_id
        if iid not in self._ranks:
            try:
                await self._grade(record)  # fills the ranks when the payload and model allow
            except PayloadUnavailable:
                self._forget_fetch(iid)
        return self._ranks.get(iid)

    async def _judge_receipt(self, iid: bytes, validator: str, challenger: str) -> int:
        """A challenged receipt: compare it with this participant's own prefill and vote."""
        if self.address in (validator, challenger):
            return 0
        record = await self.ledger.inference(iid)
        receipt = await self.ledger.published_receipt(iid, validator)
        if record is None or not receipt or self.address == record.executor:
            return 0  # not published (yet, or broken at once), or this is the challenger
        ranks = await self._ranks_of(record)
        if ranks is None:  # no payload (yet) or no score: nothing to judge by (abstain)
            return 0
        shown, ids, lps = ranks
        holds = receipts.holds(receipt, iid, validator, shown, ids, lps)
        await self._submit(
            wire.ReceiptVote(
                inference_id=iid, validator=validator, holds=holds, nonce=self.rng.getrandbits(64)
            )
        )
        self.receipt_votes += 1
        return 1

    async def _on_finished(self, iid: bytes) -> int:
        record = await self.ledger.inference(iid)
        if record is None or record.executor == self.address:
            return 0
        voted = await self._on_prompt_dispute(record) if record.prompt_vote else 0
        return voted + await self._sampled_check(record)

    async def _on_prompt_dispute(self, record: InferenceRecord) -> int:
        """The executor's prompt count contradicts the TA's Start: the Finish opened a vote
        (protocol v3) on one question, whether the executor's count and payload agree with
        everything committed, the TA's prompt hash included. Answering it needs the payload,
        not the model: a vote costs a fetch, not a verification."""
        if self.address in (record.accuser, record.executor) or self.address in record.votes:
            return 0
        if self._queued(record.inference_id, PROMPT_VOTE):
            return 0
        try:
            *_, problem = await self._opened(record)
            await self._submit(
                wire.Vote(
                    inference_id=record.inference_id,
                    valid=not problem,
                    nonce=self.rng.getrandbits(64),
                )
            )
        except PayloadUnavailable:
            return self._put_off(PROMPT_VOTE, record, record.accuser)
        except Exception as exc:  # this side failed (engine, ledger): ask again, blame nobody
            return self._put_off(PROMPT_VOTE, record, record.accuser, failed_here=exc)
        self.votes += 1
        return 1

    async def _sampled_check(self, record: InferenceRecord) -> int:
        iid = record.inference_id
        epoch = epochs.epoch_of(record.finish_height, self.epochs)
        snap = await self.ledger.epoch_snapshot(epoch)
        if snap is None:  # settled and pruned long ago
            return 0
        if snap.weights.get(self.address, 0) <= 0 or not validation_sampling.must_check(
            seed=self.seed_for(epoch),
            validator=self.address,
            inference_id=iid,
            executor=record.executor,
            finish_block_hash=record.finish_block_hash,
            executor_reputation=snap.reputations.get(record.executor, 0),
            requests_per_epoch=snap.requests_per_epoch,
            weights=snap.weights,
        ):
            self.skipped += 1
            return 0
        if self._queued(iid, CHECK):
            return 0
        return await self._checking(record)

    async def _checking(self, record: InferenceRecord) -> int:
        self.in_check += 1
        try:
            return await self._validate(record)
        except PayloadUnavailable:
            return self._put_off(CHECK, record)
        except Exception as exc:  # this side failed (engine, ledger): ask again, blame nobody
            return self._put_off(CHECK, record, failed_here=exc)
        finally:
            self.in_check -= 1

    async def _validate(self, record: InferenceRecord) -> int:
        iid = record.inference_id
        verdict, result = await self.check(record)
        sealed = receipts.Sealed(b"", b"", b"")
        if verdict.passed:  # a pass names what only the model run it rests on yields
            ranks = await self._ranks_of(record)  # scored again if evicted since the check
            if ranks is None:  # the payload went away meanwhile: no pass without a receipt
                return 0
            entries = receipts.make(iid, self.address, *ranks)
            executor_key = await self._public_key(record.executor)
            sealed = receipts.seal(self.key, executor_key, iid, entries)
        await self._submit(
            wire.Validation(
                inference_id=iid,
                passed=verdict.passed,
                replay_mismatches=min(result.replay_mismatches, 2**32 - 1),
                similarity=_finite(result.similarity),
                logprob_deviation=_finite(result.logprob_deviation),
                nonce=self.rng.getrandbits(64),
                evidence_excess_micro=_micro(result.evidence_excess),
                receipt_commitment=sealed.commitment,
                receipt_key=sealed.ephemeral_public,
                receipt_box=sealed.ciphertext,
            )
        )
        self.checked += 1
        self.failed += not verdict.passed
        return 1

    async def _on_accusation(self, iid: bytes, accuser: str) -> int:
        if accuser == self.address or self._queued(iid, VOTE):
            return 0
        record = await self.ledger.inference(iid)
        if (
            record is not None
            and record.status is InferenceStatus.VOTING
            and record.prompt_vote
            and record.executor != self.address
        ):
            # the open vote is the prompt dispute (judged on the payload, from the Finish); this
            # accusation's own vote opens when it closes and no event says so: watch for it
            return self._put_off(VOTE, record, accuser, watch=True)
        if (
            record is None
            or record.status is not InferenceStatus.VOTING
            or self.address in (record.executor, record.accuser)
            or self.address in record.votes
        ):
            return 0
        try:
            verdict, _ = await self.check(record)
            await self._submit(
                wire.Vote(inference_id=iid, valid=verdict.passed, nonce=self.rng.getrandbits(64))
            )
        except PayloadUnavailable:
            return self._put_off(VOTE, record, accuser)
        except Exception as exc:  # this side failed (engine, ledger): ask again, blame nobody
            return self._put_off(VOTE, record, accuser, failed_here=exc)
        self.votes += 1
        return 1

    async def _submit(self, msg: wire.Message) -> None:
        outcome = await self.ledger.submit(wire.seal(msg, self.key, self.chain.id))
        if not outcome.ok:
            log.info("%s %s rejected: %s", self.participant, type(msg).TYPE, outcome.reason)

    # --- one check -------------------------------------------------------------------------

    async def check(self, record: InferenceRecord) -> tuple[Verdict, VerificationResult]:
        """Verify one finished inference (cached per inference id).

        Raises:
            PayloadUnavailable: the payload could not be fetched and its fetch window is still
                open (nothing cached: ask again later).
        """
        cached = self.results.get(record.inference_id)
        if cached is not None:
            return cached
        result = await self._grade(record)
        verdict = decide(result, self.thresholds)
        # a payload missing when one window ended may be back for the next (a vote's window
        # is shorter than a check's); with no window every failed fetch is final
        if self.fetch_window_s <= 0 or UNAVAILABLE not in (result.structural_error or ""):
            self.results[record.inference_id] = (verdict, result)
        if not verdict.passed:
            log.info(
                "%s: inference %s by %s failed: %s",
                self.participant,
                record.inference_id.hex()[:12],
                record.executor[:14],
                verdict.reason,
            )
        return verdict, result

    async def _opened(
        self, record: InferenceRecord
    ) -> tuple[Artifact | None, wire.Signed | None, str]:
        """The inference's payload, fetched and checked against every committed field (no
        model run): its artifact (None if it never arrived whole), the client's opened request,
        and what is wrong with them ("" when nothing is).

        Raises:
            PayloadUnavailable: the fetch failed and the payload's fetch window is still open.
        """
        iid = record.inference_id
        try:
            body = await asyncio.wait_for(self._fetch(record), PAYLOAD_FETCH_TIMEOUT_S)
        except (GonkaError, TimeoutError, Exception) as exc:  # any failure to produce it
            self._unreachable.setdefault(iid, self.clock())
            if self.fetch_window_s > 0 and iid not in self._window_over:
                raise PayloadUnavailable(
                    f"payload of {iid.hex()[:12]} not fetched yet ({type(exc).__name__}): "
                    "asking again"
                ) from exc
            self.payloads_unavailable += 1
            return None, None, f"{UNAVAILABLE}: {type(exc).__name__}"
        self._unreachable.pop(iid, None)  # reachable again: a later failure starts a window
        if hashlib.sha256(body).digest() != record.payload_hash:
            return None, None, "payload does not match the committed hash"
        try:
            payload = wire.decode(body, expect=wire.Payload)
            artifact = Artifact.from_compact(payload.artifact)
            client = wire.open_envelope(
                payload.request, expect=wire.InferenceRequest, chain=self.chain.id
            )
        except GonkaError as exc:
            return None, None, f"malformed payload: {type(exc).__name__}"
        return artifact, client, await self._structural_problem(record, artifact, client)

    async def _grade(self, record: InferenceRecord) -> VerificationResult:
        artifact, client, problem = await self._opened(record)
        if problem or artifact is None:
            tokens = 0 if artifact is None else artifact.num_output_tokens
            return failed_structurally(problem, tokens)
        spec = client.message.sampling
        sampling = SamplingParams(
            temperature=spec.temperature,
            top_p=spec.top_p,
            top_k=spec.top_k,
            max_tokens=max(1, spec.max_tokens),
            seed=spec.seed,
            # the artifact's k, and ranks beyond it for receipts (make them, judge them)
            logprobs=max(1, artifact.k) + RECEIPT_RANKS,
            replay_tolerance=self.thresholds.replay_gate,
        )
        if artifact.num_output_tokens == 0:
            return failed_structurally("empty output")
        try:
            score = await self.engine.score(
                [int(t) for t in artifact.prompt_ids],
                [int(t) for t in artifact.output_ids],
                sampling,
            )
        except InvalidRequest as exc:
            # NOTE: the prompt is the client's (checked above) and sampling is the client's, so
            # an unscorable output (token ids outside the vocabulary, longer than the context) is
            # the executor's doing: a failed check. Raising here instead let such an inference
            # skip validation for good (the event was consumed, no Validation submitted).
            return failed_structurally(f"output cannot be scored: {exc.message}")
        k = max(1, artifact.k)
        top_ids = np.asarray(score.top_ids, dtype=np.int64)
        top_logprobs = np.asarray(score.top_logprobs, dtype=np.float64)
        self._ranks[record.inference_id] = (  # compact: outputs may be long
            np.asarray(artifact.top_ids, dtype=np.int32),
            top_ids.astype(np.int32),
            top_logprobs.astype(np.float32),
        )
        while len(self._ranks) > VERIFIER_RANKS_KEPT:
            self._ranks.popitem(last=False)
        scores = VerifierScores(
            top_ids=top_ids[:, :k],
            top_logprobs=top_logprobs[:, :k],
            token_logprobs=np.asarray(score.token_logprobs, dtype=np.float64),
            choice=np.asarray(score.sampled_ids, dtype=np.int64),
            margin=np.asarray(score.margins, dtype=np.float64),
        )
        return verify(artifact, scores, replay_gate=self.thresholds.replay_gate)

    async def _fetch(self, record: InferenceRecord) -> bytes:
        request = wire.seal(
            wire.PayloadRequest(
                inference_id=record.inference_id,
                payload_hash=record.payload_hash,
                timestamp_ms=int(self.clock() * 1000),
            ),
            self.key,
            self.chain.id,
        )
        return await PeerExecutor(self.executors(record.executor)).payload(request)

    async def _structural_problem(
        self, record: InferenceRecord, artifact: Artifact, client: wire.Signed
    ) -> str:
        if client.id != record.inference_id:
            return "payload carries another client request"
        if artifact.hash() != record.artifact_hash:
            return "artifact does not match the committed hash"
        if prompt_hash([int(t) for t in artifact.prompt_ids]) != record.prompt_hash:
            return "prompt differs from the one the transport agent committed"
        if prompt_hash([int(t) for t in artifact.output_ids]) != record.response_hash:
            return "output differs from the committed response hash"
        if artifact.num_output_tokens != record.completion_tokens:
            return "token count differs from the committed one"
        if len(artifact.prompt_ids) != record.executor_prompt_tokens:
            return "prompt token count differs from the executor's committed one"
        if evidence_weight_micro(artifact.token_logprobs) != record.evidence_weight:
            return "evidence weight differs from the artifact's"
        spec = client.message.sampling
        if (artifact.seed, artifact.temperature, artifact.top_p, artifact.top_k) != (
            spec.seed,
            spec.temperature,
            spec.top_p,
            spec.top_k,
        ):
            return "artifact sampling parameters differ from the client's request"
        try:
            expected_prompt = await self.engine.request_prompt_ids(client.message)
        except InvalidRequest:
            return "the client's request has no valid prompt"
        if expected_prompt != [int(t) for t in artifact.prompt_ids]:
            return "prompt is not the client's messages under the chat template"
        if artifact.finish_reason == "length" and artifact.num_output_tokens < spec.max_tokens:
            return "finish reason 'length' before max_tokens"
        if artifact.finish_reason == "stop" and not await self._really_stopped(artifact, spec):
            return "finish reason 'stop' without EOS or a stop string"
        return ""

    async def _really_stopped(self, artifact: Artifact, spec: wire.SamplingSpec) -> bool:
        if not len(artifact.output_ids):
            return False  # nothing was generated: nothing stopped it
        if self._eos is None:
            self._eos = tuple((await self.engine.model_info()).eos_token_ids)
        if int(artifact.output_ids[-1]) in self._eos:
            return True
        if not spec.stop:
            return False
        text = await self.engine.detokenize([int(t) for t in artifact.output_ids])
        return any(s in text for s in spec.stop)

    def stats(self) -> dict:
        return {
            "finished_seen": self.finished_seen,
            "checked": self.checked,
            "failed": self.failed,
            "votes": self.votes,
            "skipped": self.skipped,
            "in_check": self.in_check,
            "receipt_challenges": self.challenges,
            "receipt_votes": self.receipt_votes,
            "fetches_deferred": self.fetches_deferred,
            "payloads_unavailable": self.payloads_unavailable,
            "retried_after_own_failure": self.retried_after_own_failure,
            "waiting_to_retry": len(self._waiting),
        }


def _finite(x: float) -> float:
    return float(x) if np.isfinite(x) else 1e9


def _micro(x: float) -> int:
    """A non-negative evidence sum in millionths for the wire (U64); non-finite → the cap."""
    if not np.isfinite(x):
        return 2**63
    return min(2**63, max(0, round(float(x) * 1_000_000)))
