"""Validation duty, epoch settlement and the next epoch's weights (DESIGN §4–§5). Pure, integer.

The ledger's state machine calls these with committed data only, in this order:

1. At the epoch's weights height (end of PoC validation): :func:`epoch_weights` turns accepted
   PoC counts into capped weights, leaving out the participants the previous settlement excluded.
   It then freezes an :class:`EpochSnapshot` (weights, reputations, traffic estimate) that
   validators and the duty check both use.
2. On each ``SeedReveal`` (settlement phase): :func:`assess_duty` checks the seed against the
   ``sha256`` committed at epoch start, recomputes with
   :func:`~gonka_ray.protocol.validation_sampling.must_validate` which inferences that validator
   had to check, and decides by a one-sided binomial test whether it missed more than the
   allowed share. A participant that never reveals has not claimed: it forfeits.
3. At the epoch's last height: :func:`settle_epoch` computes every payout, then
   :func:`apply_settlement` moves the money and updates the participant records.

Money rules (decided here; DESIGN leaves some open):

- **Fees.** The cost of a FINISHED or VALIDATED inference sits in its executor's pending fees
  (the :class:`~gonka_ray.protocol.lifecycle.InferenceBook` put it there). At settlement the
  executor gets it, less ``validator_fee_share_bps`` of VALIDATED inferences, which is split
  equally (largest remainder) among the validators whose check *passed* it **and was required**
  of them (their revealed seed's sample or the primary draw): a validator cannot earn shares
  by stamping "passed" on inferences it picked. A pass on an inference the vote invalidated
  does not count towards its duty.
- **INVALID executor.** Every unsettled fee of a participant that is INVALID at settlement is
  **refunded to its requesters**, not burned: all of its work in that epoch is suspect, the client
  paid for service it may not have received, and a refund gives nobody but the victim a gain
  (a colluding client only gets its own money back). Validators' shares of those fees lapse.
- **One confirmed invalidation forfeits the epoch** (DESIGN §4). An executor with an inference
  of this epoch that a vote invalidated is settled like an INVALID one — every fee refunded, its
  mint and validator shares burned, reputation reset. Otherwise a participant cheating on a
  small share of its work, checked rarely at high reputation, would lose only the caught
  inference's fee. From protocol v3 whoever forfeits so also sits out the next
  ``Rules.caught_sit_out_epochs`` epochs (the ledger's ``sit_out`` table); from v4 until it has
  forgone 32 inferences' worth of income at its traffic (:func:`sit_out_epochs`): in a quiet
  network (about one inference per participant per epoch) a catch must cost a dozen epochs of
  income before cheating on 1% of one's work stops paying (``economics.json``).
- **A convicted TA forfeits the epoch too** (protocol v3). A TA whose Start claimed another
  prompt count than the executor signed is the accuser of a vote (:mod:`lifecycle`); when
  judges' checks uphold the executor, the TA's claim contradicted the prompt whose hash it
  committed, and it is settled like a caught executor (:func:`caught_in`). Charging only the
  smaller count took the gain away; without a loss, inflating was free to try.
- **Aborted outputs.** An inference the executor finished with ``abort`` (its stream was
  cancelled) is billed only if the TA signed that its client left (``OutputDelivered.client_left``);
  otherwise its fee is refunded at settlement. An executor cannot stop after one token and be
  paid; an honest one whose TA died mid-stream loses that one fee, as after an engine failure.
- **Mint.** ``reward_per_epoch`` is split ∝ epoch weight over *all* weighted participants (largest
  remainder, exact). The share of one that is INVALID, or missed its duty, or did not reveal, is
  **burned**, not redistributed. NOTE: redistribution would pay honest participants for getting
  others excluded, which makes false accusations and vote collusion profitable; burning keeps
  each participant's reward independent of others' failures.
- **Forfeit by missed duty** takes the mint share and the validator fee shares (both burn); the
  executor fees stay (clients got validated service; the duty concerns its validator role).
  A validator that passes the test but did less than 90% of its required checks keeps only
  ``done / ceil(0.9 · required)`` of its mint (:func:`duty_fraction`; the rest burns), because
  the test has no power at the ~1 required check per epoch of a high-traffic steady state.
- **VOTING at settlement.** An inference still in a vote is *held*: its cost stays in pending
  fees and is settled by a later epoch's settlement once the vote closes.

Invariant (tested): Σ balances + Σ pending fees + Σ escrow after :func:`apply_settlement` equals
the sum before, plus ``minted``, minus ``burned``.

Reputation: ``epochs_active`` advances by :func:`~gonka_ray.protocol.reputation.next_epochs_active`
with ``invalidated`` = any inference invalidated this epoch (or INVALID), ``missed_duty`` = duty
forfeited. Status for the next epoch is RAMPING (reputation 0) or ACTIVE; a participant INVALID
in this epoch is in :attr:`Settlement.excluded_next` and gets weight 0 in the next epoch group.
"""

from __future__ import annotations

import hmac
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from gonka_ray.constants import (
    DEFAULT_ALLOWED_MISS_SHARE,
    DEFAULT_DUTY_ALPHA,
    DEFAULT_VALIDATOR_FEE_SHARE_BPS,
)
from gonka_ray.protocol import reputation, validation_sampling
from gonka_ray.protocol.lifecycle import (
    Accounts,
    InferenceRecord,
    InferenceStatus,
    ParticipantRecord,
)
from gonka_ray.protocol.reputation import Status
from gonka_ray.protocol.versions import Rules

BPS = 10_000

_CHECKABLE = (
    InferenceStatus.FINISHED,
    InferenceStatus.VALIDATED,
    InferenceStatus.VOTING,
)


# --- exact arithmetic helpers ----------------------------------------------------------------


def split_largest_remainder(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split integer ``total`` ∝ ``weights`` exactly: floors, then +1 to the largest remainders.

    Ties go to the smaller key (sorted order), so every replica agrees. Keys with weight ≤ 0 get
    0. Σ result == total whenever some weight is positive; all zeros otherwise.
    """
    if total < 0:
        raise ValueError("total must be >= 0")
    items = sorted((k, w) for k, w in weights.items() if w > 0)
    out = {k: 0 for k in weights}
    wsum = sum(w for _, w in items)
    if wsum == 0 or total == 0:
        return out
    rems = []
    given = 0
    for k, w in items:
        q, r = divmod(total * w, wsum)
        out[k] = q
        given += q
        rems.append((-r, k))
    rems.sort()
    for _, k in rems[: total - given]:
        out[k] += 1
    return out


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), summed in log space (stable for n up to ~10^6)."""
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError("need n >= 0 and 0 <= p <= 1")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    lg_n1 = math.lgamma(n + 1)
    terms = [
        lg_n1 - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def capped_weights(counts: Mapping[str, int], cap_share: float) -> dict[str, int]:
    """Cap every weight at ``cap_share`` of the *final* total (water-filling, exact, integers).

    Capping the largest lowers the total, which can push the next one over; so we find the
    smallest ``k`` such that capping the ``k`` largest at ``c = cap·R / (1 − k·cap)`` (``R`` =
    the others' sum) leaves every other weight ≤ ``c``. Capped weights are floored, which keeps
    ``w ≤ cap · Σw`` exact. With fewer than ``1/cap`` positive participants no cap is feasible;
    the cap then becomes ``1/n`` (everyone equal to the smallest weight).
    """
    if not 0.0 < cap_share <= 1.0:
        raise ValueError("cap_share must be in (0, 1]")
    positive = sorted(((w, k) for k, w in counts.items() if w > 0), reverse=True)
    out = {k: max(0, w) for k, w in counts.items()}
    n = len(positive)
    if n == 0:
        return out
    cap = max(Fraction(cap_share).limit_denominator(1_000_000), Fraction(1, n))
    if cap >= 1:
        return out
    values = [w for w, _ in positive]
    suffix = [0] * (n + 1)
    for i in range(n - 1, -1, -1):
        suffix[i] = suffix[i + 1] + values[i]
    for k in range(n):
        rest = suffix[k]
        if k == 0:
            if values[0] <= cap * rest:
                return out  # nobody over the cap
            continue
        if k * cap >= 1:
            break
        c = cap * rest / (1 - k * cap)
        if values[k] <= c:
            level = math.floor(c)
            for _, key in positive[:k]:
                out[key] = min(out[key], level)
            return out
    # k = n - 1 always succeeds for a feasible cap; only reached when cap == 1/n exactly
    smallest = values[-1]
    for _, key in positive:
        out[key] = smallest
    return out


def epoch_weights(
    accepted_counts: Mapping[str, int], excluded: Iterable[str], cap_share: float
) -> dict[str, int]:
    """The epoch group's weights (= voting power) from accepted PoC nonce counts.

    Args:
        accepted_counts: address → accepted nonces (0 for a rejected claim).
        excluded: addresses that were INVALID in the previous epoch (weight 0 this epoch).
        cap_share: the weight cap (config ``weight_cap_share``, 0.25).
    """
    banned = set(excluded)
    counts = {a: (0 if a in banned else max(0, c)) for a, c in accepted_counts.items()}
    return capped_weights(counts, cap_share)


# --- validation duty -------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochSnapshot:
    """What validators and the duty check agree on for an epoch, frozen at its weights height.

    ``requests_per_epoch`` is the traffic estimate fed to ``min_avg``: the previous epoch's count
    of finished inferences (the current one is unknown while validators decide).
    """

    epoch: int
    weights: Mapping[str, int]
    reputations: Mapping[str, int]
    requests_per_epoch: int

    @property
    def total_weight(self) -> int:
        return sum(w for w in self.weights.values() if w > 0)


def check_reveal(seed: bytes | None, commitment: bytes | None) -> bool:
    """True iff ``sha256(seed) == commitment`` (constant-time compare)."""
    if seed is None or commitment is None:
        return False
    return hmac.compare_digest(validation_sampling.seed_commitment(bytes(seed)), bytes(commitment))


def _duty_relevant(rec: InferenceRecord, validator: str, finished_by: int | None) -> bool:
    if rec.executor == validator:
        return False
    if rec.status in _CHECKABLE:
        pass
    elif rec.status is InferenceStatus.INVALIDATED:
        # NOTE: the book refuses validations once invalidated; only count it if V got in first.
        if validator not in rec.validations:
            return False
    else:
        return False  # STARTED or EXPIRED: never finished, nothing to check
    return finished_by is None or rec.finish_height <= finished_by


def required_validations(
    validator: str,
    seed: bytes,
    records: Iterable[InferenceRecord],
    snapshot: EpochSnapshot,
    *,
    finished_by: int | None = None,
) -> frozenset[bytes]:
    """Inference ids of ``records`` that ``validator`` had to check under ``seed``.

    Args:
        finished_by: ignore inferences finished after this height (too late to check).
    """
    if snapshot.weights.get(validator, 0) <= 0:
        return frozenset()
    out = []
    for rec in records:
        if not _duty_relevant(rec, validator, finished_by):
            continue
        if validation_sampling.must_check(
            seed=seed,
            validator=validator,
            inference_id=rec.inference_id,
            executor=rec.executor,
            finish_block_hash=rec.finish_block_hash,
            executor_reputation=snapshot.reputations.get(rec.executor, 0),
            requests_per_epoch=snapshot.requests_per_epoch,
            weights=snapshot.weights,
        ):
            out.append(rec.inference_id)
    return frozenset(out)


@dataclass(frozen=True)
class DutyResult:
    """Outcome of one validator's duty check for an epoch."""

    validator: str
    revealed: bool  # a seed was revealed and matched the commitment
    required: int
    done: int
    p_value: float  # P(≥ missed misses | allowed miss share); 1.0 when nothing missed
    forfeits: bool
    required_ids: frozenset[bytes] = frozenset()  # what its seed required (epoch evidence)

    @property
    def missed(self) -> int:
        return self.required - self.done


def duty_forfeits(
    missed: int,
    required: int,
    *,
    allowed_miss_share: float = DEFAULT_ALLOWED_MISS_SHARE,
    alpha: float = DEFAULT_DUTY_ALPHA,
) -> tuple[bool, float]:
    """One-sided binomial test: forfeit iff P(X ≥ missed | n=required, p=allowed) < alpha."""
    if not 0 <= missed <= required:
        raise ValueError("need 0 <= missed <= required")
    p_value = binomial_tail(missed, required, allowed_miss_share)
    return p_value < alpha, p_value


def check_counts_for_duty(rec: InferenceRecord, validator: str) -> bool:
    """Whether ``validator``'s validation of ``rec`` counts towards its duty: a pass on an
    inference the vote invalidated does not (a validator answering "passed" without running
    the check would otherwise meet its duty for free)."""
    verdict = rec.validations.get(validator)
    if verdict is None:
        return False
    return not (verdict and rec.status is InferenceStatus.INVALIDATED)


def assess_duty(
    validator: str,
    *,
    seed: bytes | None,
    commitment: bytes | None,
    records: Iterable[InferenceRecord],
    snapshot: EpochSnapshot,
    finished_by: int | None = None,
    allowed_miss_share: float = DEFAULT_ALLOWED_MISS_SHARE,
    alpha: float = DEFAULT_DUTY_ALPHA,
) -> DutyResult:
    """Check a ``SeedReveal``: commitment, required set, misses, binomial test.

    A missing or wrong seed forfeits (the required set cannot be recomputed, so the claim is void).
    """
    if not check_reveal(seed, commitment):
        return DutyResult(validator, False, 0, 0, 0.0, True)
    recs = list(records)
    assert seed is not None
    required = required_validations(validator, seed, recs, snapshot, finished_by=finished_by)
    by_id = {r.inference_id: r for r in recs}
    done = sum(1 for i in required if check_counts_for_duty(by_id[i], validator))
    forfeits, p_value = duty_forfeits(
        len(required) - done, len(required), allowed_miss_share=allowed_miss_share, alpha=alpha
    )
    return DutyResult(validator, True, len(required), done, p_value, forfeits, required)


# --- settlement ------------------------------------------------------------------------------


def duty_fraction(duty: DutyResult, allowed_miss_share: float) -> tuple[int, int]:
    """Share of its mint a validator that passed the duty test keeps: ``(num, den)``.

    ``min(1, done / ceil((1 − allowed) · required))``: full pay at ≥ 90% done, less below it.
    NOTE: the binomial test alone has no power when few checks are required — at steady state
    (10k requests, reputation 100) a validator owes ~1 check per epoch and skipping it (p = 0.1)
    is never significant, so a lazy validator would keep its whole reward. Pro-rating closes that
    without touching honest validators (the economics benchmark shows the effect).
    """
    if duty.required <= 0 or duty.forfeits:
        return (0, 1) if duty.forfeits else (1, 1)
    need = math.ceil((1.0 - allowed_miss_share) * duty.required - 1e-9)
    if need <= 0 or duty.done >= need:
        return (1, 1)
    return (duty.done, need)


@dataclass(frozen=True)
class SettlementParams:
    reward_per_epoch: int
    validator_fee_share_bps: int = DEFAULT_VALIDATOR_FEE_SHARE_BPS
    prorate_duty: bool = True  # scale mint by duty_fraction (stricter than DESIGN's test alone)
    allowed_miss_share: float = DEFAULT_ALLOWED_MISS_SHARE

    def __post_init__(self) -> None:
        if self.reward_per_epoch < 0:
            raise ValueError("reward_per_epoch must be >= 0")
        if not 0 <= self.validator_fee_share_bps <= BPS:
            raise ValueError("validator_fee_share_bps must be in [0, 10000]")


@dataclass
class ParticipantSettlement:
    address: str
    weight: int
    invalid: bool
    duty_met: bool
    executor_fees: int = 0  # paid: cost of its settled inferences less validators' shares
    validator_fees: int = 0  # paid: its shares of inferences it validated
    mint: int = 0  # paid: its share of the epoch reward
    burned: int = 0  # forfeited mint and validator shares
    refunded_fees: int = 0  # its pending fees refunded to requesters (INVALID executor)
    fees_settled: int = 0  # how much of its pending fees this settlement consumes
    next_epochs_active: int = 0
    forfeited: bool = False  # INVALID, or a vote-confirmed invalidation of this epoch's work

    def __post_init__(self) -> None:
        self.forfeited = self.forfeited or self.invalid

    @property
    def paid(self) -> int:
        return self.executor_fees + self.validator_fees + self.mint


@dataclass
class Settlement:
    epoch: int
    participants: dict[str, ParticipantSettlement]
    refunds: dict[str, int]  # requester → refunded amount (INVALID executors' fees)
    minted: int
    burned: int
    settled_ids: frozenset[bytes]
    held_ids: frozenset[bytes]  # still VOTING: settled by a later epoch
    excluded_next: frozenset[str]  # INVALID now: weight 0 in the next epoch
    notes: list[str] = field(default_factory=list)

    @property
    def paid(self) -> int:
        return sum(p.paid for p in self.participants.values())


def caught_in(records: Iterable[InferenceRecord]) -> frozenset[str]:
    """Who forfeits the epoch of ``records``: every executor with an inference a vote
    invalidated, and every TA a prompt-count vote convicted."""
    out = set()
    for r in records:
        if r.status is InferenceStatus.INVALIDATED:
            out.add(r.executor)
        if r.ta_convicted:  # (an executor invalidated later for its logprobs does not clear it)
            out.add(r.transport_agent)
    return frozenset(out)


def sit_out_epochs(rules: Rules, inferences: int, weight: int, total_weight: int) -> int:
    """Epochs a participant caught in an epoch sits out after it (weight 0).

    ``inferences`` is the number of inferences finished in the caught epoch, ``weight`` and
    ``total_weight`` the participant's and everyone's weight in it. From protocol v4 the sit-out
    lasts until the participant has forgone ``rules.caught_sit_out_inferences`` inferences'
    worth of income at that traffic, counting the forfeited epoch itself:
    ``ceil(K / expected) − 1`` epochs with ``expected = inferences · weight / total``, at least
    ``caught_sit_out_epochs`` and at most ``caught_sit_out_max_epochs``. Exact integers.

    Why ``K = 32``: a participant cheating on a share ``c`` of its inferences loses
    ``c · q · t · K`` inferences' income per inference it serves, where ``q`` is the chance a
    cheated inference is checked at all and ``t`` that the check catches it, and gains ``c · s``
    of one inference's compute (``s ≤ 0.75`` of a cost that is at most a third of the income).
    Earning at most 90% of an honest participant at ``c = 1%`` needs
    ``K ≥ (0.1 / c + 0.25) / (q · t)``: 19.7 at the deterrence floor's one expected check per
    inference in a quiet network (``q = 1 − 1/e``) and the measured ``t = 0.826``
    (``detection.json``). Catches are rare events (a 1% cheater serving one inference per epoch
    cheats about once in 100 epochs), so 32 leaves room: at 24 the sweep's quiet cell read 0.89.
    """
    base = rules.caught_sit_out_epochs
    k = rules.caught_sit_out_inferences
    if not k or inferences <= 0 or weight <= 0 or total_weight <= 0:
        return base
    scaled = -(-k * total_weight // (inferences * weight)) - 1  # ceil(k / expected) - 1
    return max(base, min(scaled, rules.caught_sit_out_max_epochs))


def settle_epoch(
    *,
    epoch: int,
    participants: Mapping[str, ParticipantRecord],
    records: Iterable[InferenceRecord],
    duties: Mapping[str, DutyResult],
    params: SettlementParams,
    invalidated: Iterable[str] = (),
) -> Settlement:
    """Compute every transfer of an epoch's settlement (nothing is mutated).

    Args:
        epoch: the epoch being settled.
        participants: the ledger's records; ``weight`` is this epoch's weight, ``status``,
            ``failed`` and ``epochs_active`` are as the epoch leaves them.
        records: the inferences not yet settled (this epoch's, plus earlier ones that were held).
        duties: validator → :class:`DutyResult` from its ``SeedReveal``; a weighted participant
            absent here did not claim and forfeits.
        params: mint and fee split.
        invalidated: executors with a vote-confirmed invalidation among the epoch's inferences
            and convicted TAs (:func:`caught_in`): they forfeit the epoch like INVALID ones
            (DESIGN §4: one confirmed invalidation is enough) but are not excluded from the next
            epoch.

    Returns:
        A :class:`Settlement`; pass it to :func:`apply_settlement`.
    """
    caught = frozenset(invalidated)
    out: dict[str, ParticipantSettlement] = {}
    for a, p in participants.items():
        invalid = p.status is Status.INVALID
        duty = duties.get(a)
        duty_met = p.weight > 0 and duty is not None and not duty.forfeits
        out[a] = ParticipantSettlement(a, p.weight, invalid, duty_met, forfeited=a in caught)
    refunds: dict[str, int] = defaultdict(int)
    settled, held = [], []
    burned = 0

    for rec in sorted(records, key=lambda r: r.inference_id):
        if rec.status is InferenceStatus.VOTING:
            held.append(rec.inference_id)
            continue
        if rec.status not in (InferenceStatus.FINISHED, InferenceStatus.VALIDATED):
            settled.append(rec.inference_id)  # expired/invalidated: the book already refunded
            continue
        settled.append(rec.inference_id)
        ex = out[rec.executor]
        ex.fees_settled += rec.cost
        # an output cut short ("abort") is billed only when its TA signed that the client left
        # (an executor stopping after one token would otherwise be paid for every answer)
        if ex.forfeited or (rec.finish_reason == "abort" and not rec.client_left):
            refunds[rec.requester] += rec.cost
            ex.refunded_fees += rec.cost
            continue
        # the fee share goes to passes the validator's seed (or the primary draw) required
        passers = sorted(
            v
            for v, ok in rec.validations.items()
            if ok and v in out and v in duties and rec.inference_id in duties[v].required_ids
        )
        share = 0
        if rec.status is InferenceStatus.VALIDATED and passers:
            share = rec.cost * params.validator_fee_share_bps // BPS
        ex.executor_fees += rec.cost - share
        for v, amount in split_largest_remainder(share, dict.fromkeys(passers, 1)).items():
            pv = out[v]
            if pv.forfeited or not pv.duty_met:
                pv.burned += amount
                burned += amount
            else:
                pv.validator_fees += amount

    mint = split_largest_remainder(
        params.reward_per_epoch, {a: p.weight for a, p in participants.items()}
    )
    minted = sum(mint.values())
    for a, amount in mint.items():
        ps = out[a]
        if ps.forfeited or not ps.duty_met:
            ps.burned += amount
            burned += amount
            continue
        num, den = (1, 1)
        if params.prorate_duty and a in duties:
            num, den = duty_fraction(duties[a], params.allowed_miss_share)
        ps.mint = amount * num // den
        ps.burned += amount - ps.mint
        burned += amount - ps.mint

    for a, p in participants.items():
        ps = out[a]
        if p.weight <= 0 and not ps.invalid:
            ps.next_epochs_active = p.epochs_active  # sat this epoch out
        else:
            ps.next_epochs_active = reputation.next_epochs_active(
                p.epochs_active,
                missed_duty=not ps.duty_met,
                invalidated=ps.forfeited or p.failed > 0,
            )
    return Settlement(
        epoch=epoch,
        participants=out,
        refunds=dict(refunds),
        minted=minted,
        burned=burned,
        settled_ids=frozenset(settled),
        held_ids=frozenset(held),
        excluded_next=frozenset(a for a, ps in out.items() if ps.invalid),
    )


def apply_settlement(
    settlement: Settlement, accounts: Accounts, participants: Mapping[str, ParticipantRecord]
) -> None:
    """Move the money of ``settlement`` and roll the participant records into the next epoch.

    Credits payouts and refunds through ``accounts.add``, consumes the settled pending fees, sets
    ``epochs_active``, resets the per-epoch counters (``checked``, ``failed``) and sets status
    RAMPING/ACTIVE (exclusion of INVALID ones is by weight: :func:`epoch_weights`).

    Raises:
        ValueError: a participant's pending fees are smaller than what the settlement consumes
            (the records passed to :func:`settle_epoch` did not match the book).
    """
    for a, ps in settlement.participants.items():
        if participants[a].pending_fees < ps.fees_settled:
            raise ValueError(f"{a}: settlement consumes more than its pending fees")
    for a, ps in sorted(settlement.participants.items()):
        p = participants[a]
        p.pending_fees -= ps.fees_settled
        if ps.paid:
            accounts.add(a, ps.paid)
        p.epochs_active = ps.next_epochs_active
        p.checked = 0
        p.failed = 0
        p.status = Status.RAMPING if p.epochs_active == 0 else Status.ACTIVE
    for requester, amount in sorted(settlement.refunds.items()):
        accounts.add(requester, amount)
