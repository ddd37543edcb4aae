"""The inference lifecycle as a deterministic state machine fragment (DESIGN §2–§4).

:class:`InferenceBook` holds every inference record and applies the lifecycle transactions —
Start, Finish, OutputDelivered, Validation, Vote — plus expiry, moving money through an
:class:`Accounts` object it is given. It is pure (no Ray, clock or randomness): the ledger's state
machine calls it with already-authenticated signers and the committed block height, so every
replica reaches the same records and balances.

Money invariants (a test sums them after every step):
- Start moves ``escrow`` from the requester's balance to the inference's escrow.
- Finish takes ``cost ≤ escrow`` into the executor's *pending fees* and refunds the rest.
- Invalidation moves the pending cost back to the requester (full refund of what was paid);
  nothing is ever paid twice: the record's ``refunded`` flag and status gate every transfer.
- Expiry (a Start with no Finish in ``expiry_blocks``) refunds the escrow in full.
Every transition either applies completely or raises :class:`TxRejected` having changed nothing.

Guards that close known exploits: only the drawn executor may Finish; the draw itself is
recomputed and the attempt bounded (a TA cannot steer work); a participant never validates or
votes on an inference it executed; one validation and one vote per participant per inference; no
validation credit on an invalidated, expired or already settled inference; an executor is never
penalised twice for one inference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from gonka_ray.constants import INFERENCE_MAX_ATTEMPTS
from gonka_ray.exceptions import NoExecutorAvailable, TxRejected
from gonka_ray.protocol import payments, reputation, selection, versions, votes
from gonka_ray.protocol.reputation import Status

CURRENT_DRAW_SET = -1  # key of the live eligible set in ``InferenceBook.draw_sets``


class InferenceStatus(StrEnum):
    STARTED = "started"
    FINISHED = "finished"
    VALIDATED = "validated"
    VOTING = "voting"
    INVALIDATED = "invalidated"
    EXPIRED = "expired"


class Accounts(Protocol):
    """The ledger's balances, as the lifecycle sees them."""

    def balance(self, address: str) -> int: ...

    def add(self, address: str, amount: int) -> None:
        """Add (or, with a negative amount, subtract) ``amount``; never below zero."""


@dataclass
class ParticipantRecord:
    """What the lifecycle needs to know and update about a participant."""

    address: str
    weight: int
    status: Status = Status.RAMPING
    epochs_active: int = 0
    consecutive_invalid: int = 0
    checked: int = 0  # this epoch
    failed: int = 0  # this epoch
    invalidated_total: int = 0
    served: int = 0
    validations_done: int = 0
    false_accusations: int = 0
    pending_fees: int = 0  # earned this epoch, paid at settlement unless forfeited
    prompt_token_disputes: int = 0  # as TA: Starts whose prompt count its executor contradicted


@dataclass
class InferenceRecord:
    inference_id: bytes
    requester: str
    transport_agent: str
    executor: str
    attempt: int
    prompt_hash: bytes
    prompt_tokens: int
    max_tokens: int
    price_per_token: int
    escrow: int
    seed: int
    start_height: int
    status: InferenceStatus = InferenceStatus.STARTED
    completion_tokens: int = 0
    finish_reason: str = ""
    response_hash: bytes = b""
    artifact_hash: bytes = b""
    payload_hash: bytes = b""
    cost: int = 0
    refunded: int = 0
    delivered_hash: bytes = b""
    finish_height: int = 0
    validations: dict[str, bool] = field(default_factory=dict)
    votes: dict[str, bool] = field(default_factory=dict)
    accuser: str = ""
    vote_deadline: int = 0
    settled: bool = False  # an epoch settlement paid it out: no more validations
    evidence_weight: int = 0  # executor-committed Σ max(1 − p, 0.01), millionths (evidence)
    finish_block_hash: bytes = b""  # the block that committed the Finish (primary validator)
    executor_prompt_tokens: int = 0  # the executor's signed prompt count (verifiers check it)
    # the TA's Start claim when the executor's count contradicted it (0 when they agreed);
    # ``prompt_tokens`` (what is charged) is then the smaller of the two
    claimed_prompt_tokens: int = 0
    client_left: bool = False  # the TA signed that its client went away mid-stream
    # protocol v3: the open vote is a prompt-count dispute (the executor's signed count
    # contradicted the TA's Start, so the Finish opened it with the TA as the accuser); cleared
    # with its ballots when it closes, ``ta_convicted`` when it upheld the executor
    prompt_vote: bool = False
    ta_convicted: bool = False


def _reject(reason: str, message: str) -> TxRejected:
    return TxRejected(message, reason=reason)


class InferenceBook:
    """All inference records plus the participant counters they drive.

    Storage is injected: ``participants``, ``records`` and ``open_index`` are mutable mappings
    (plain dicts in tests and simulations, views over ledger tables on a replica). The book reads a
    value, changes it, and writes it back with ``mapping[key] = value`` before returning, so a
    write-through view persists every change. Every check runs before the first write, so a
    transition that rejects changes nothing.

    Args:
        accounts: where balances live.
        participants: address → :class:`ParticipantRecord`.
        records: inference id → :class:`InferenceRecord` (default: a new dict).
        open_index: inference id → height at which it next needs attention (expiry of a Start,
            deadline of a vote); :meth:`advance` scans only these.
        expiry_blocks: a Start with no Finish within this many blocks is refunded.
        vote_blocks: how long a vote stays open.
        fpr: assumed honest false-positive rate of one check (status rules).
        on_invalid: called with an address when it becomes INVALID.
        validator_weight: the weight that entitles a participant to validate an inference
            (default: its current weight). The ledger passes the weight of the epoch the
            inference finished in, so a validator whose weight dropped at an epoch boundary can
            still do the checks it owed for the epoch before.
        draw_sets: the draw's recent history: ``CURRENT_DRAW_SET`` → the eligible weights as
            of the last :meth:`advance`, and ``height`` → a set that was replaced at that
            height (kept ``draw_grace_blocks``). A TA draws from the participants it last saw;
            its Start may commit a few blocks after the set changed (an epoch boundary, or an
            executor turned INVALID meanwhile), and then names a draw under a recent set.
            None: only the current draw is accepted.
        draw_grace_blocks: how long a replaced set still counts.
        rules_at: the protocol rules of a block height (:mod:`gonka_ray.protocol.versions`;
            default: this software's current rules at every height).
        resets_streak: whether a pass by this validator ends the executor's run of
            invalidations (default: any pass). The ledger counts only the inference's primary
            validator, the one check the ledger itself required when it was made: a sybil
            passing its friend's work must not keep it from turning INVALID.
    """

    def __init__(
        self,
        accounts: Accounts,
        participants: MutableMapping[str, ParticipantRecord],
        *,
        records: MutableMapping[bytes, InferenceRecord] | None = None,
        open_index: MutableMapping[bytes, int] | None = None,
        expiry_blocks: int,
        vote_blocks: int = 20,
        fpr: float = 0.05,
        on_invalid: Callable[[str], None] | None = None,
        validator_weight: Callable[[InferenceRecord, str], int] | None = None,
        draw_sets: MutableMapping[int, Mapping[str, int]] | None = None,
        draw_grace_blocks: int = 0,
        resets_streak: Callable[[InferenceRecord, str], bool] | None = None,
        rules_at: Callable[[int], versions.Rules] | None = None,
    ) -> None:
        self.accounts = accounts
        self.participants = participants
        self.records = records if records is not None else {}
        self.open_index = open_index if open_index is not None else {}
        self.expiry_blocks = expiry_blocks
        self.vote_blocks = vote_blocks
        self.fpr = fpr
        self.on_invalid = on_invalid
        self.validator_weight = validator_weight
        self.draw_sets = draw_sets
        self.draw_grace_blocks = draw_grace_blocks
        self.resets_streak = resets_streak
        self.rules_at = rules_at or (lambda _height: versions.CURRENT)

    # --- queries ---------------------------------------------------------------------------

    def eligible_weights(self) -> dict[str, int]:
        """Executors that may be drawn now: weight > 0 and not INVALID."""
        return selection.eligible_weights(self.participants)

    def expected_executor(
        self, inference_id: bytes, attempt: int, transport_agent: str, height: int | None = None
    ) -> str:
        """The only executor a Start for this id and attempt may name (committed at ``height``;
        default: under the current rules)."""
        return selection.select_executor(
            inference_id,
            attempt,
            self.eligible_weights(),
            exclude={transport_agent},
            without_replacement=self._without_replacement(height),
        )

    def _without_replacement(self, height: int | None) -> bool:
        rules = versions.CURRENT if height is None else self.rules_at(height)
        return rules.retry_draws_without_replacement

    def total_escrow(self) -> int:
        """Units locked in escrow by unfinished inferences."""
        total = 0
        for inference_id in self.open_index:
            rec = self.records[inference_id]
            if rec.status is InferenceStatus.STARTED:
                total += rec.escrow
        return total

    def total_pending_fees(self) -> int:
        return sum(p.pending_fees for p in self.participants.values())

    # --- transitions -----------------------------------------------------------------------

    def start(
        self,
        *,
        inference_id: bytes,
        requester: str,
        transport_agent: str,
        executor: str,
        attempt: int,
        prompt_hash: bytes,
        prompt_tokens: int,
        max_tokens: int,
        max_escrow: int,
        price_per_token: int,
        seed: int,
        height: int,
    ) -> InferenceRecord:
        """Record a Start (or a retry with a higher ``attempt``) and lock the escrow."""
        if transport_agent not in self.participants:
            raise _reject("not_participant", "only a participant's transport agent may start")
        if not 0 <= attempt < INFERENCE_MAX_ATTEMPTS:
            raise _reject("bad_attempt", f"attempt must be in [0, {INFERENCE_MAX_ATTEMPTS})")
        try:
            drawn = self.expected_executor(inference_id, attempt, transport_agent, height)
        except NoExecutorAvailable:
            raise _reject("no_executor", "no eligible executor") from None
        if executor != drawn and not self._drawn_before(
            inference_id, attempt, transport_agent, executor, height
        ):
            raise _reject("wrong_executor", f"executor must be the draw's result {drawn}")
        existing = self.records.get(inference_id)
        if existing is not None:
            return self._retry(existing, transport_agent, executor, attempt)
        try:
            escrow = payments.escrow_amount(prompt_tokens, max_tokens, price_per_token)
        except ValueError as exc:
            raise _reject("bad_amount", str(exc)) from None
        if escrow > max_escrow:
            raise _reject(
                "escrow_above_limit", f"escrow {escrow} exceeds the client's {max_escrow}"
            )
        if self.accounts.balance(requester) < escrow:
            raise _reject("insufficient_balance", f"balance below escrow {escrow}")
        self.accounts.add(requester, -escrow)
        record = InferenceRecord(
            inference_id=inference_id,
            requester=requester,
            transport_agent=transport_agent,
            executor=executor,
            attempt=attempt,
            prompt_hash=prompt_hash,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            price_per_token=price_per_token,
            escrow=escrow,
            seed=seed,
            start_height=height,
        )
        self.records[inference_id] = record
        self.open_index[inference_id] = height + self.expiry_blocks
        return record

    def _retry(self, rec: InferenceRecord, ta: str, executor: str, attempt: int) -> InferenceRecord:
        if rec.status is not InferenceStatus.STARTED:
            raise _reject("not_started", f"inference is {rec.status}, cannot retry")
        if ta != rec.transport_agent or attempt <= rec.attempt:
            raise _reject(
                "stale_attempt", "a retry must come from the same TA with a higher attempt"
            )
        rec.attempt, rec.executor = attempt, executor
        self.records[rec.inference_id] = rec
        return rec

    def finish(
        self,
        *,
        inference_id: bytes,
        executor: str,
        completion_tokens: int,
        finish_reason: str,
        response_hash: bytes,
        prompt_tokens: int | None = None,
        artifact_hash: bytes,
        height: int,
        payload_hash: bytes = b"",
        evidence_weight: int = 0,
        block_hash: bytes = b"",
    ) -> InferenceRecord:
        """The selected executor reports the output; the cost moves to its pending fees.

        ``prompt_tokens`` is the executor's own count of the prompt it ran (None: the TA's).
        The client pays for at most that many; a TA whose Start claimed another count is
        flagged (``prompt_token_disputes``) and the record keeps the executor's count, which
        verifiers check against the artifact. Under protocol v3 the contradiction also opens a
        vote with the TA as the accuser (:meth:`_resolve_vote`): the TA committed the prompt's
        hash, so a check that passes proves the executor's count and the TA's claim false."""
        rec = self._get(inference_id)
        if executor != rec.executor:
            raise _reject("not_executor", "only the selected executor may finish")
        if rec.status is not InferenceStatus.STARTED:
            raise _reject("not_started", f"inference is {rec.status}")
        if not 0 <= completion_tokens <= rec.max_tokens:
            raise _reject("bad_tokens", "completion_tokens must be in [0, max_tokens]")
        if not 0 <= evidence_weight <= completion_tokens * 1_000_000:
            raise _reject("bad_evidence", "each token's evidence weight is at most 1")
        counted = rec.prompt_tokens if prompt_tokens is None else prompt_tokens
        if counted < 0:
            raise _reject("bad_tokens", "prompt_tokens must be >= 0")
        disputed = counted != rec.prompt_tokens  # the TA's Start claimed another prompt size
        if disputed:
            ta = self.participants.get(rec.transport_agent)
            if ta is not None:
                ta.prompt_token_disputes += 1
                self.participants[rec.transport_agent] = ta
            rec.claimed_prompt_tokens = rec.prompt_tokens
            rec.prompt_tokens = min(rec.prompt_tokens, counted)
        rec.executor_prompt_tokens = counted
        cost = payments.cost_amount(
            rec.prompt_tokens, completion_tokens, rec.price_per_token, rec.escrow
        )
        self.accounts.add(rec.requester, rec.escrow - cost)
        ex = self.participants[executor]
        ex.pending_fees += cost
        ex.served += 1
        self.participants[executor] = ex
        rec.cost, rec.completion_tokens, rec.finish_reason = cost, completion_tokens, finish_reason
        rec.response_hash, rec.artifact_hash = response_hash, artifact_hash
        rec.payload_hash, rec.evidence_weight = payload_hash, evidence_weight
        rec.finish_block_hash = block_hash
        rec.finish_height, rec.status = height, InferenceStatus.FINISHED
        del self.open_index[inference_id]
        if disputed and self.rules_at(height).prompt_count_mismatch_votes:
            rec.prompt_vote = True
            self._open_vote(rec, rec.transport_agent, height)
        self.records[inference_id] = rec
        return rec

    def delivered(
        self,
        *,
        inference_id: bytes,
        transport_agent: str,
        output_hash: bytes,
        client_left: bool = False,
    ) -> InferenceRecord:
        """The TA records the hash of what the client received (and whether the client left
        mid-stream: the only case an ``abort`` finish is billed, see settlement)."""
        rec = self._get(inference_id)
        if transport_agent != rec.transport_agent:
            raise _reject("not_transport_agent", "only the inference's TA records delivery")
        if rec.delivered_hash:
            raise _reject("duplicate", "delivery already recorded")
        rec.delivered_hash, rec.client_left = output_hash, bool(client_left)
        self.records[inference_id] = rec
        return rec

    def validation(
        self, *, inference_id: bytes, validator: str, passed: bool, height: int
    ) -> InferenceRecord:
        """A validator's verdict; a failure opens a vote."""
        rec = self._get(inference_id)
        weight = self.validator_weight(rec, validator) if self.validator_weight else None
        self._check_judge(rec, validator, weight)
        if rec.status not in (
            InferenceStatus.FINISHED,
            InferenceStatus.VALIDATED,
            InferenceStatus.VOTING,
        ):
            raise _reject("not_validatable", f"inference is {rec.status}: no validation credit")
        if rec.settled:
            # NOTE: its fees are paid; invalidating it now would refund money nobody holds.
            raise _reject("settled", "inference already settled: no validation credit")
        if validator in rec.validations:
            raise _reject("duplicate", "one validation per validator per inference")
        rec.validations[validator] = passed
        judge = self.participants[validator]
        judge.validations_done += 1
        self.participants[validator] = judge
        executor = self.participants[rec.executor]
        if len(rec.validations) == 1:
            executor.checked += 1
        if passed:
            resets = self.resets_streak is None or self.resets_streak(rec, validator)
            if rec.status is InferenceStatus.FINISHED:
                rec.status = InferenceStatus.VALIDATED
                if resets:
                    executor.consecutive_invalid = 0  # the streak counts invalidations in a row
            elif rec.status is InferenceStatus.VALIDATED and resets:
                executor.consecutive_invalid = 0
        elif rec.status is not InferenceStatus.VOTING:
            self._open_vote(rec, validator, height)
        self.participants[rec.executor] = executor
        self.records[inference_id] = rec
        return rec

    def vote(self, *, inference_id: bytes, voter: str, valid: bool, height: int) -> InferenceRecord:
        """A participant's vote on a disputed inference; may decide it."""
        rec = self._get(inference_id)
        self._check_judge(rec, voter)
        if rec.status is not InferenceStatus.VOTING:
            raise _reject("not_voting", f"inference is {rec.status}")
        if voter == rec.accuser or voter in rec.votes:
            raise _reject("duplicate", "one vote per participant; the accuser's check is its vote")
        rec.votes[voter] = valid
        self._resolve_vote(rec, deadline_passed=False, height=height)
        self.records[inference_id] = rec
        return rec

    def advance(self, height: int) -> list[InferenceRecord]:
        """Expire stale Starts and close votes past their deadline; returns changed records."""
        changed = []
        for inference_id in sorted(i for i, at in self.open_index.items() if at <= height):
            rec = self.records[inference_id]
            if rec.status is InferenceStatus.STARTED:
                self.accounts.add(rec.requester, rec.escrow)
                rec.refunded, rec.status = rec.escrow, InferenceStatus.EXPIRED
                del self.open_index[inference_id]
            elif rec.status is InferenceStatus.VOTING:
                self._resolve_vote(rec, deadline_passed=True, height=height)
            self.records[inference_id] = rec
            changed.append(rec)
        self._note_draw_set(height)
        return changed

    # --- internals -------------------------------------------------------------------------

    def _get(self, inference_id: bytes) -> InferenceRecord:
        rec = self.records.get(inference_id)
        if rec is None:
            raise _reject("unknown_inference", "no such inference")
        return rec

    def _drawn_before(
        self, inference_id: bytes, attempt: int, ta: str, executor: str, height: int
    ) -> bool:
        """Whether ``executor`` is the draw under a recent eligible set (grace window)."""
        if not self.draw_sets:
            return False
        oldest = height - self.draw_grace_blocks
        for key in self.draw_sets:
            if key != CURRENT_DRAW_SET and key < oldest:
                continue
            try:
                chosen = selection.select_executor(
                    inference_id,
                    attempt,
                    self.draw_sets[key],
                    exclude={ta},
                    without_replacement=self._without_replacement(height),
                )
            except NoExecutorAvailable:
                continue
            if chosen == executor:
                return True
        return False

    def _note_draw_set(self, height: int) -> None:
        """Keep the draw's history current: retire a changed set, forget expired ones."""
        if self.draw_sets is None:
            return
        now = self.eligible_weights()
        last = self.draw_sets.get(CURRENT_DRAW_SET)
        if last != now:
            if last is not None:
                self.draw_sets[height] = last
            self.draw_sets[CURRENT_DRAW_SET] = now
        for key in [k for k in self.draw_sets if k != CURRENT_DRAW_SET]:
            if key < height - self.draw_grace_blocks:
                del self.draw_sets[key]

    def _check_judge(self, rec: InferenceRecord, judge: str, weight: int | None = None) -> None:
        p = self.participants.get(judge)
        if p is None or (p.weight if weight is None else weight) <= 0:
            raise _reject("not_participant", "only weighted participants validate or vote")
        if judge == rec.executor:
            raise _reject("self_validation", "a participant never judges its own inference")

    def _open_vote(self, rec: InferenceRecord, accuser: str, height: int) -> None:
        if self.rules_at(height).vote_quorum_at_deadline:
            # v5: a new accusation on an inference a vote already cleared is a new vote (v4
            # kept the old ballots, whose voters could then not vote again)
            rec.votes = {}
        rec.status, rec.accuser = InferenceStatus.VOTING, accuser
        rec.vote_deadline = height + self.vote_blocks
        self.open_index[rec.inference_id] = rec.vote_deadline

    def _voters(self, rec: InferenceRecord) -> Mapping[str, int]:
        # a prompt dispute is the TA's word against the executor's: both are parties, not judges
        parties = {rec.executor, rec.accuser} if rec.prompt_vote else {rec.executor}
        return selection.eligible_weights(self.participants, exclude=parties)

    def _resolve_vote(self, rec: InferenceRecord, *, deadline_passed: bool, height: int) -> None:
        # a validator's accusation is its ballot (it ran the check); a TA's contradiction is not
        ballots = dict(rec.votes) if rec.prompt_vote else {**rec.votes, rec.accuser: False}
        outcome = votes.tally(
            ballots,
            self._voters(rec),
            deadline_passed=deadline_passed,
            quorum_at_deadline=self.rules_at(height).vote_quorum_at_deadline,
        )
        if outcome is votes.VoteOutcome.PENDING:
            return
        self.open_index.pop(rec.inference_id, None)
        if outcome is votes.VoteOutcome.INVALIDATED:
            self._invalidate(rec)
        elif outcome is votes.VoteOutcome.LAPSED:
            # nobody but the accuser found it invalid in time, nobody refuted it: the executor
            # keeps its fee, the accuser is not charged (v5)
            rec.status = InferenceStatus.VALIDATED
        else:
            rec.status = InferenceStatus.VALIDATED
            # a prompt dispute upheld by judges' checks (not by nobody voting): the TA's claim
            # contradicted the prompt it committed the hash of
            rec.ta_convicted = rec.prompt_vote and any(rec.votes.values())
            accuser = self.participants.get(rec.accuser)
            if accuser is not None and (rec.ta_convicted or not rec.prompt_vote):
                accuser.false_accusations += 1
                self.participants[rec.accuser] = accuser
        if rec.prompt_vote:
            # its ballots judged the payload's structure only: an accusation (the logprob check)
            # is a new question, and every judge answers it afresh; one a validator made while
            # this vote was open opens its vote now
            rec.prompt_vote, rec.votes = False, {}
            accusers = sorted(v for v, ok in rec.validations.items() if not ok)
            if rec.status is InferenceStatus.VALIDATED and accusers:
                self._open_vote(rec, accusers[0], height)

    def _invalidate(self, rec: InferenceRecord) -> None:
        executor = self.participants[rec.executor]
        # NOTE: the cost sits in the executor's pending fees until settlement; take it back.
        executor.pending_fees -= rec.cost
        self.accounts.add(rec.requester, rec.cost)
        rec.refunded, rec.status = rec.cost, InferenceStatus.INVALIDATED
        executor.failed += 1
        executor.invalidated_total += 1
        executor.consecutive_invalid += 1
        executor.epochs_active = 0  # reputation resets
        new = reputation.status_after(
            executor.status,
            consecutive_invalid=executor.consecutive_invalid,
            failed=executor.failed,
            checked=executor.checked,
            fpr=self.fpr,
        )
        became_invalid = new is Status.INVALID and executor.status is not Status.INVALID
        executor.status = new
        self.participants[rec.executor] = executor
        if became_invalid and self.on_invalid:
            self.on_invalid(executor.address)
