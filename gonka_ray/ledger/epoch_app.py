"""Epochs on the ledger: seeds, Proof-of-Compute weight, validation duty and settlement.

:func:`install` registers ``SeedCommit``, ``SeedReveal``, ``PocClaim`` and ``PocVerdict`` on a
:class:`~gonka_ray.ledger.state.StateMachine` and an end-of-block hook that runs the epoch clock
(:mod:`gonka_ray.protocol.epochs`) from committed height alone, so every replica does the same
thing at the same height. Install it *after* :func:`gonka_ray.ledger.inference_app.install`
(its hook must see the block's expiries first). The rules are the pure ones of
:mod:`gonka_ray.protocol.settlement`; this module decides *when* they run and what they read.

Timeline of epoch ``e`` (``B`` blocks; heights ``e·B … (e+1)·B − 1``):

- **PoC sprint.** Everyone knows the public seed of ``e`` (written at the last block of
  ``e − 1``, :func:`gonka_ray.protocol.epochs.epoch_seed` of that block's hash; for ``e = 0``
  the first block's hash). Participants run the PoC transformer and submit one ``PocClaim``.
- **PoC validation.** Participants with weight in ``e`` recompute a sample of every other claim
  and submit ``PocVerdict``. At the phase's last height the ledger fixes each claim by
  :func:`gonka_ray.protocol.votes.poc_claim_outcome` (more than a third of the judging weight
  accepted it and more accepted than rejected; a tie rejects). A slow machine that misses the
  phase does not sink honest claims as a strict majority would.
  Accepted nonce counts are kept for ``e + 1``.
- **Inference** goes on in every phase; executor draws, validation sampling, duty and the mint
  of epoch ``e`` all use *one* weight set, the one in force from ``e``'s first height.
- **Settlement of the previous epoch** (the last ``T`` blocks of ``e``): validators reveal their
  seed of ``e − 1`` (``SeedReveal``, accepted any time during ``e``). At ``e``'s last height the
  ledger settles ``e − 1``: duty of every weighted participant over the inferences that finished
  in ``e − 1`` (:func:`~gonka_ray.protocol.settlement.assess_duty`), fees, mint and refunds
  (:func:`~gonka_ray.protocol.settlement.settle_epoch`), reputation. NOTE: settling one epoch
  late gives every inference at least a whole epoch to be checked and voted on before anyone is
  paid for it; a settled inference takes no more validations (its money is gone). A participant
  that became INVALID during ``e − 1`` *or* ``e`` is paid nothing for ``e − 1`` and its fees are
  refunded. Inferences still in a vote are held to the next settlement.
- **Next weights.** Also at ``e``'s last height the weights of ``e + 1`` take effect:
  ``epoch_weights(accepted counts of e, excluded = INVALID now, cap)``. If no claim was accepted
  at all (no PoC ran), the current weights carry over minus the excluded, so the network never
  ends up with zero weight. The snapshot of ``e + 1`` (weights, reputations, ``e``'s finished
  count) is frozen at the same height, and the same weights are written to the ``validator``
  table, which the state machine freezes into the consensus group of ``e + 1`` after this
  block's hooks (:mod:`gonka_ray.ledger.consensus`: a participant with weight 0 follows the
  chain without voting).

A ``SeedCommit`` for epoch ``E`` is accepted only while the chain is in an earlier epoch, so a
validator cannot grind its seed against inferences of ``E`` already finished (a commit accepted
during ``E`` could be chosen to skip a friend's work or to land on a rival's). The genesis epoch
has no earlier one: its founders may commit during its PoC sprint.

Tables: ``epoch_seed`` (epoch → public seed), ``epoch_snapshot`` (epoch → weights, reputations,
traffic, height), ``seed_commit`` / ``seed_reveal`` (``[epoch, address]``), ``poc_claim``
(``[epoch, address]`` → nonces), ``poc_verdict`` (``[epoch, claimant, validator]``),
``poc_accepted`` (epoch → accepted counts), ``unsettled`` (inference id → finish height, written
by the inference app), ``invalid_epoch`` (address → the epoch it last became INVALID in),
``settlement`` (epoch → summary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gonka_ray import wire
from gonka_ray.config import EpochConfig
from gonka_ray.constants import DEFAULT_VALIDATOR_FEE_SHARE_BPS, LEDGER_EVIDENCE_KEPT_EPOCHS
from gonka_ray.ledger import inference_app, receipt_app
from gonka_ray.ledger.inference_app import (
    _PSTATE_FIELDS,
    INFERENCES,
    PSTATE,
    SEED_COMMITS,
    UNSETTLED,
    _Accounts,
    _decode_record,
    _encode_record,
    _Participants,
)
from gonka_ray.ledger.state import PARTICIPANTS, VALIDATORS, StateMachine, TxContext
from gonka_ray.protocol import (
    epochs,
    evidence,
    reputation,
    settlement,
    validation_sampling,
    votes,
)
from gonka_ray.protocol.epochs import Phase
from gonka_ray.protocol.lifecycle import InferenceRecord
from gonka_ray.protocol.reputation import Status
from gonka_ray.protocol.verification_policy import EpochRule

EPOCH_SEEDS = "epoch_seed"
SNAPSHOTS = "epoch_snapshot"
SEED_REVEALS = "seed_reveal"
POC_CLAIMS = "poc_claim"
POC_VERDICTS = "poc_verdict"
POC_ACCEPTED = "poc_accepted"
SETTLEMENTS = "settlement"
INVALID_EPOCH = "invalid_epoch"
SIT_OUT = "sit_out"  # address → the last epoch it sits out for having been caught (v3)
# [epoch, executor] → [statistic, weight, inferences, threshold, convicted]
EPOCH_EVIDENCE = "epoch_evidence"
_STATUS = _PSTATE_FIELDS.index("status")


@dataclass(frozen=True)
class EpochAppConfig:
    """Epoch parameters the state machine needs (from ``NetworkConfig.epoch``)."""

    epoch: EpochConfig = field(default_factory=EpochConfig)
    chain_id: str = "gonka"
    validator_fee_share_bps: int = DEFAULT_VALIDATOR_FEE_SHARE_BPS

    @property
    def params(self) -> settlement.SettlementParams:
        return settlement.SettlementParams(
            reward_per_epoch=self.epoch.reward_per_epoch,
            validator_fee_share_bps=self.validator_fee_share_bps,
        )


@dataclass(frozen=True)
class EpochView:
    """What a participant's actors need to know about the current epoch (committed state)."""

    height: int  # committed height
    epoch: int  # epoch and phase of height + 1 (see :func:`epoch_view`)
    phase: str
    phase_end: int  # first height of the next phase
    epoch_end: int  # first height of the next epoch
    seed: bytes | None  # public epoch seed (PoC); None until written
    weights: dict[str, int]  # this epoch's weights (snapshot)
    reputations: dict[str, int]
    requests_per_epoch: int
    claims: dict[str, int]  # claimant -> number of nonces claimed this epoch
    committed: frozenset[str]  # addresses with a SeedCommit for the *next* epoch
    committed_now: frozenset[str]  # ... for this epoch
    committed_prev: frozenset[str]  # ... for the previous epoch (revealed during this one)
    revealed: frozenset[str]  # addresses that revealed their seed of the previous epoch
    verdicts: frozenset[tuple[str, str]]  # (claimant, validator)


def snapshot_of(get, epoch: int) -> settlement.EpochSnapshot | None:
    """The frozen :class:`EpochSnapshot` of ``epoch`` (``get`` is a table getter)."""
    row = get(SNAPSHOTS, epoch)
    if row is None:
        return None
    weights, reps, traffic, _height = row
    return settlement.EpochSnapshot(
        epoch, inference_app.unpairs(weights), inference_app.unpairs(reps), int(traffic)
    )


def _participant_weights(ctx: TxContext) -> dict[str, int]:
    return {a: int(ctx.get(PARTICIPANTS, a)[2]) for a in ctx.keys(PARTICIPANTS)}


def _reputations(ctx: TxContext, cfg: EpochAppConfig) -> dict[str, int]:
    view = _Participants(ctx)
    return {
        a: reputation.reputation(view[a].epochs_active, cfg.epoch.epochs_to_max_reputation)
        for a in view
    }


def _set_weights(ctx: TxContext, weights: dict[str, int]) -> None:
    for a in ctx.keys(PARTICIPANTS):
        pk, name, old = ctx.get(PARTICIPANTS, a)
        new = int(weights.get(a, 0))
        if new != old:
            ctx.put(PARTICIPANTS, a, [pk, name, new])


def _write_validators(ctx: TxContext, weights: dict[str, int]) -> None:
    positive = {a: w for a, w in weights.items() if w > 0}
    if not positive:
        return  # never empty the validator set
    for a in ctx.keys(VALIDATORS):
        if a not in positive:
            ctx.delete(VALIDATORS, a)
    for a, w in sorted(positive.items()):
        if ctx.get(VALIDATORS, a) != w:
            ctx.put(VALIDATORS, a, w)


def _freeze_snapshot(ctx: TxContext, cfg: EpochAppConfig, epoch: int, traffic: int) -> None:
    ctx.put(
        SNAPSHOTS,
        epoch,
        [
            inference_app.pairs(_participant_weights(ctx)),
            inference_app.pairs(_reputations(ctx, cfg)),
            int(traffic),
            ctx.height,
        ],
    )


def _phase(ctx: TxContext, cfg: EpochAppConfig) -> epochs.EpochPosition:
    return epochs.position(ctx.height, cfg.epoch)


def _require_participant(ctx: TxContext) -> None:
    if ctx.get(PARTICIPANTS, ctx.sender) is None:
        ctx.reject("not_participant")


def install(sm: StateMachine, cfg: EpochAppConfig) -> None:
    """Register the epoch transactions and the epoch clock's end-of-block hook on ``sm``."""

    def seed_commit(ctx: TxContext, msg: wire.SeedCommit) -> None:
        _require_participant(ctx)
        pos = _phase(ctx, cfg)
        genesis_sprint = msg.epoch == pos.epoch == 0 and pos.phase is Phase.POC_SPRINT
        if not (pos.epoch < msg.epoch or genesis_sprint):
            ctx.reject("commit_window_closed")
        key = (msg.epoch, ctx.sender)
        if ctx.get(SEED_COMMITS, key) is not None:
            ctx.reject("duplicate")
        ctx.put(SEED_COMMITS, key, msg.commitment)

    def seed_reveal(ctx: TxContext, msg: wire.SeedReveal) -> None:
        _require_participant(ctx)
        if _phase(ctx, cfg).epoch != msg.epoch + 1:
            ctx.reject("not_reveal_epoch")  # the seed of epoch X is revealed during X + 1
        key = (msg.epoch, ctx.sender)
        if ctx.get(SEED_REVEALS, key) is not None:
            ctx.reject("duplicate")
        if not settlement.check_reveal(msg.seed, ctx.get(SEED_COMMITS, key)):
            ctx.reject("reveal_mismatch")
        ctx.put(SEED_REVEALS, key, msg.seed)

    def poc_claim(ctx: TxContext, msg: wire.PocClaim) -> None:
        _require_participant(ctx)
        pos = _phase(ctx, cfg)
        if pos.epoch != msg.epoch or pos.phase is not Phase.POC_SPRINT:
            ctx.reject("not_poc_sprint")
        key = (msg.epoch, ctx.sender)
        if ctx.get(POC_CLAIMS, key) is not None:
            ctx.reject("duplicate")
        nonces = list(msg.nonces)
        if len(set(nonces)) != len(nonces):
            ctx.reject("duplicate_nonce")
        ctx.put(POC_CLAIMS, key, sorted(nonces))

    def poc_verdict(ctx: TxContext, msg: wire.PocVerdict) -> None:
        _require_participant(ctx)
        pos = _phase(ctx, cfg)
        if pos.epoch != msg.epoch or pos.phase is not Phase.POC_VALIDATION:
            ctx.reject("not_poc_validation")
        if msg.participant == ctx.sender:
            ctx.reject("own_claim")
        snap = snapshot_of(ctx.get, msg.epoch)
        if snap is None or snap.weights.get(ctx.sender, 0) <= 0:
            ctx.reject("no_weight")
        if ctx.get(POC_CLAIMS, (msg.epoch, msg.participant)) is None:
            ctx.reject("no_claim")
        key = (msg.epoch, msg.participant, ctx.sender)
        if ctx.get(POC_VERDICTS, key) is not None:
            ctx.reject("duplicate")
        if msg.failed > msg.sampled:
            ctx.reject("bad_verdict")
        ctx.put(POC_VERDICTS, key, [bool(msg.accepted), msg.sampled, msg.failed])

    def end_block(ctx: TxContext) -> None:
        pos = _phase(ctx, cfg)
        if ctx.get(SNAPSHOTS, 0) is None:  # the first block: genesis weights rule epoch 0
            _freeze_snapshot(ctx, cfg, 0, 0)
        if ctx.get(EPOCH_SEEDS, pos.epoch) is None:
            ctx.put(
                EPOCH_SEEDS, pos.epoch, epochs.epoch_seed(pos.epoch, ctx.block_hash, cfg.chain_id)
            )
        for a in ctx.keys(PSTATE):  # remember in which epoch anyone became INVALID
            invalid = Status(ctx.get(PSTATE, a)[_STATUS]) is Status.INVALID
            if invalid and ctx.get(INVALID_EPOCH, a) != pos.epoch:
                ctx.put(INVALID_EPOCH, a, pos.epoch)
        if epochs.is_weights_height(ctx.height, cfg.epoch):
            _fix_claims(ctx, cfg, pos.epoch)
        if epochs.is_settlement_height(ctx.height, cfg.epoch):
            excluded = {
                a for a in ctx.keys(INVALID_EPOCH) if ctx.get(INVALID_EPOCH, a) == pos.epoch
            }
            if pos.epoch >= 1:
                excluded |= _settle(ctx, cfg, pos.epoch - 1)
            excluded |= _sitting_out(ctx, pos.epoch + 1)
            _open_next(ctx, cfg, pos.epoch, excluded)

    sm.register(wire.SeedCommit, seed_commit, sequenced=False)
    sm.register(wire.SeedReveal, seed_reveal, sequenced=False)
    sm.register(wire.PocClaim, poc_claim, sequenced=False)
    sm.register(wire.PocVerdict, poc_verdict, sequenced=False)
    sm.on_end_block(end_block)


def _rows_with_prefix(ctx: TxContext, table: str, *prefix: Any) -> list[tuple]:
    n = len(prefix)
    return [k for k in ctx.keys(table) if tuple(k[:n]) == prefix]


def _fix_claims(ctx: TxContext, cfg: EpochAppConfig, epoch: int) -> None:
    """End of PoC validation: decide every claim of ``epoch`` and keep the accepted counts."""
    snap = snapshot_of(ctx.get, epoch)
    weights = dict(snap.weights) if snap else _participant_weights(ctx)
    accepted: dict[str, int] = {}
    unjudged: dict[str, int] = {}
    for _e, claimant in _rows_with_prefix(ctx, POC_CLAIMS, epoch):
        nonces = ctx.get(POC_CLAIMS, (epoch, claimant))
        verdicts = {
            v: bool(ctx.get(POC_VERDICTS, (epoch, claimant, v))[0])
            for _e2, _c, v in _rows_with_prefix(ctx, POC_VERDICTS, epoch, claimant)
        }
        ok = votes.poc_claim_outcome(verdicts, weights, claimant)
        if ok is None:  # nobody judged it: keep its current weight, never more
            unjudged[claimant] = min(len(nonces), max(0, weights.get(claimant, 0)))
            continue
        accepted[claimant] = len(nonces) if ok else 0
    ctx.put(POC_ACCEPTED, epoch, inference_app.pairs({**accepted, **unjudged}))
    # claims and verdicts are decided: drop them (the counts stay in poc_accepted)
    for key in _rows_with_prefix(ctx, POC_CLAIMS, epoch):
        ctx.delete(POC_CLAIMS, key)
    for key in _rows_with_prefix(ctx, POC_VERDICTS, epoch):
        ctx.delete(POC_VERDICTS, key)


def _settle(ctx: TxContext, cfg: EpochAppConfig, epoch: int) -> set[str]:
    """Settle ``epoch`` (at the last height of ``epoch + 1``); returns the executors its epoch
    evidence convicted (they sit out the next epoch like INVALID ones)."""
    snap = snapshot_of(ctx.get, epoch) or settlement.EpochSnapshot(
        epoch, _participant_weights(ctx), {}, 0
    )
    view = _Participants(ctx)
    people = {a: view[a] for a in view}
    caught = {a for a in ctx.keys(INVALID_EPOCH) if ctx.get(INVALID_EPOCH, a) in (epoch, epoch + 1)}
    for a, p in people.items():  # settle with the epoch's own weights and who cheated in it
        p.weight = snap.weights.get(a, 0)
        if a in caught:
            p.status = Status.INVALID

    due: list[InferenceRecord] = []
    for iid in ctx.keys(UNSETTLED):
        row = ctx.get(INFERENCES, iid)
        if row is None:
            continue
        rec = _decode_record(row)
        if epochs.epoch_of(rec.finish_height, cfg.epoch) <= epoch:
            due.append(rec)
    this_epoch = [r for r in due if epochs.epoch_of(r.finish_height, cfg.epoch) == epoch]
    duties = {}
    for a in sorted(people):
        if snap.weights.get(a, 0) <= 0:
            continue
        duties[a] = settlement.assess_duty(
            a,
            seed=ctx.get(SEED_REVEALS, (epoch, a)),
            commitment=ctx.get(SEED_COMMITS, (epoch, a)),
            records=this_epoch,
            snapshot=snap,
        )
    convicted = _judge_evidence(ctx, cfg, epoch, this_epoch, duties)
    for a in convicted:
        if a in people:
            people[a].status = Status.INVALID
    result = settlement.settle_epoch(
        epoch=epoch,
        participants=people,
        records=due,
        duties=duties,
        params=cfg.params,
        # caught executors and TAs of this epoch's inferences, and whoever a receipt dispute
        # convicted since the last settlement
        invalidated=settlement.caught_in(this_epoch) | receipt_app.take_convicted(ctx),
    )
    settlement.apply_settlement(result, _Accounts(ctx), people)
    # v3: the caught also sit out the next epochs (from epoch + 2, the next one opened now);
    # v4: long enough to forgo a fixed number of inferences at the caught epoch's traffic
    rules = ctx.chain.rules_at(ctx.height)
    for a, ps in result.participants.items():
        if not ps.forfeited:
            continue
        w = snap.weights.get(a, 0)
        sit_out = settlement.sit_out_epochs(rules, len(this_epoch), w, snap.total_weight)
        if sit_out:
            last = epoch + 1 + sit_out
            ctx.put(SIT_OUT, a, max(last, int(ctx.get(SIT_OUT, a, 0))))
    for a, p in people.items():
        view[a] = p
    by_id = {r.inference_id: r for r in due}
    settled_evidence = [k for k in ctx.keys(inference_app.EVIDENCE) if k[0] in result.settled_ids]
    for key in settled_evidence:
        ctx.delete(inference_app.EVIDENCE, key)
    for iid in result.settled_ids:
        ctx.delete(UNSETTLED, iid)
        rec = by_id[iid]
        rec.settled = True
        ctx.put(INFERENCES, iid, _encode_record(rec))
    ctx.put(
        SETTLEMENTS,
        epoch,
        [
            result.minted,
            result.burned,
            sum(result.refunds.values()),
            len(result.settled_ids),
            len(result.held_ids),
            [
                [
                    a,
                    ps.weight,
                    ps.paid,
                    ps.mint,
                    ps.executor_fees,
                    ps.validator_fees,
                    ps.burned,
                    ps.invalid,
                    ps.duty_met,
                    duties[a].required if a in duties else 0,
                    duties[a].done if a in duties else 0,
                    ps.forfeited,
                ]
                for a, ps in sorted(result.participants.items())
            ],
        ],
    )
    # prune what only this epoch needed
    for table in (SEED_COMMITS, SEED_REVEALS):
        for key in _rows_with_prefix(ctx, table, epoch):
            ctx.delete(table, key)
    for table in (EPOCH_SEEDS, SNAPSHOTS):
        if ctx.get(table, epoch) is not None:
            ctx.delete(table, epoch)
    return convicted


def evidence_rule(genesis: wire.LedgerGenesis) -> EpochRule | None:
    """The network's epoch-evidence rule, from its genesis (None: judged per inference only)."""
    spec = genesis.epoch_evidence
    if spec is None:
        return None
    return EpochRule(
        spec.mu,
        spec.kappa,
        spec.z,
        spec.safety,
        int(spec.min_inferences),
        float(spec.trim),
        float(spec.sigma),
    )


def _judge_evidence(
    ctx: TxContext,
    cfg: EpochAppConfig,
    epoch: int,
    records: list[InferenceRecord],
    duties: dict[str, settlement.DutyResult],
) -> set[str]:
    """Pool the epoch's required validations' evidence per executor
    (:func:`gonka_ray.protocol.evidence.tally`), record it, return who is convicted."""
    rule = evidence_rule(ctx.genesis)
    if rule is None:
        return set()
    judged = [
        (r.inference_id, r.executor, r.evidence_weight) for r in records if r.finish_height > 0
    ]
    ids = {iid for iid, _, _ in judged}
    rows = {
        (key[0], key[1]): int(ctx.get(inference_app.EVIDENCE, key))
        for key in ctx.keys(inference_app.EVIDENCE)
        if key[0] in ids
    }
    required = {v: d.required_ids for v, d in duties.items() if d.revealed}
    tallies = evidence.tally(judged, rows, required, rule)
    for a, t in tallies.items():
        ctx.put(
            EPOCH_EVIDENCE,
            (epoch, a),
            [t.statistic, t.weight, t.inferences, t.threshold, t.convicted],
        )
    for key in ctx.keys(EPOCH_EVIDENCE):  # keep the last LEDGER_EVIDENCE_KEPT_EPOCHS epochs
        if key[0] <= epoch - LEDGER_EVIDENCE_KEPT_EPOCHS:
            ctx.delete(EPOCH_EVIDENCE, key)
    return {a for a, t in tallies.items() if t.convicted}


def _sitting_out(ctx: TxContext, epoch: int) -> set[str]:
    """Who sits ``epoch`` out for having been caught (and forget those whose time is up)."""
    out = set()
    for a in ctx.keys(SIT_OUT):
        if int(ctx.get(SIT_OUT, a)) >= epoch:
            out.add(a)
        else:
            ctx.delete(SIT_OUT, a)
    return out


def _open_next(ctx: TxContext, cfg: EpochAppConfig, epoch: int, excluded: set[str]) -> None:
    """Last height of ``epoch``: the weights, seed and snapshot of ``epoch + 1``."""
    accepted = inference_app.unpairs(ctx.get(POC_ACCEPTED, epoch) or [])
    if ctx.get(POC_ACCEPTED, epoch) is not None:
        ctx.delete(POC_ACCEPTED, epoch)
    nxt = settlement.epoch_weights(accepted, excluded, cfg.epoch.weight_cap_share)
    if sum(nxt.values()) == 0:  # no PoC ran: carry the weights over
        nxt = {a: (0 if a in excluded else w) for a, w in _participant_weights(ctx).items()}
    _set_weights(ctx, nxt)
    # the consensus group of epoch + 1 (frozen by the state machine after this block's hooks)
    _write_validators(ctx, nxt)
    finished = sum(
        1
        for iid in ctx.keys(UNSETTLED)
        if epochs.epoch_of(ctx.get(UNSETTLED, iid), cfg.epoch) == epoch
    )
    ctx.put(EPOCH_SEEDS, epoch + 1, epochs.epoch_seed(epoch + 1, ctx.block_hash, cfg.chain_id))
    _freeze_snapshot(ctx, cfg, epoch + 1, finished)


def install_protocol(
    sm: StateMachine, inference: inference_app.InferenceAppConfig, epoch: EpochAppConfig
) -> None:
    """Install the inference lifecycle, then the epochs, on ``sm`` (the order matters).

    Validation credit goes by the validator's weight in the epoch the inference finished in: the
    same weight its duty for that epoch is computed with.
    """

    def validator_weight(ctx: TxContext, rec: InferenceRecord, address: str) -> int:
        snap = snapshot_of(ctx.get, epochs.epoch_of(rec.finish_height, epoch.epoch))
        if snap is None:
            row = ctx.get(PARTICIPANTS, address)
            return 0 if row is None else int(row[2])
        return snap.weights.get(address, 0)

    def resets_streak(ctx: TxContext, rec: InferenceRecord, address: str) -> bool:
        """Only the primary validator's pass (public, drawn after the Finish) ends a run of
        invalidations; secret-seed checks are known to be required only after the reveal."""
        snap = snapshot_of(ctx.get, epochs.epoch_of(rec.finish_height, epoch.epoch))
        if snap is None or snap.reputations.get(rec.executor, 0) != 0:
            return False
        primary = validation_sampling.primary_validator(
            rec.inference_id, rec.finish_block_hash, snap.weights, rec.executor
        )
        return primary == address

    inference_app.install(sm, inference, validator_weight, resets_streak)
    install(sm, epoch)


# --- queries on committed state --------------------------------------------------------------


@dataclass(frozen=True)
class SettlementRow:
    address: str
    weight: int
    paid: int
    mint: int
    executor_fees: int
    validator_fees: int
    burned: int
    invalid: bool
    duty_met: bool
    required_checks: int
    done_checks: int
    forfeited: bool = False  # INVALID or an invalidated inference: paid nothing for the epoch


@dataclass(frozen=True)
class SettlementSummary:
    epoch: int
    minted: int
    burned: int
    refunded: int
    settled: int
    held: int
    rows: tuple[SettlementRow, ...]


def settlement_summary(sm: StateMachine, epoch: int) -> SettlementSummary | None:
    row = sm.get(SETTLEMENTS, epoch)
    if row is None:
        return None
    minted, burned, refunded, settled, held, rows = row
    return SettlementSummary(
        epoch, minted, burned, refunded, settled, held, tuple(SettlementRow(*r) for r in rows)
    )


def epoch_view(sm: StateMachine, cfg: EpochAppConfig) -> EpochView:
    """The epoch as a transaction submitted now would see it.

    ``epoch``, ``phase`` and the rest describe the *next* height (``height + 1``): the earliest
    block a transaction can land in. A participant that acted on the committed height's phase
    would submit a reveal in a settlement window's last block too late, or a claim after the
    sprint closed.
    """
    height = sm.height
    pos = epochs.position(height + 1, cfg.epoch)
    e = pos.epoch
    snap = snapshot_of(sm.get, e)
    claims = {k[1]: len(sm.get(POC_CLAIMS, k)) for k in sm.tables.get(POC_CLAIMS, {}) if k[0] == e}

    def who(table: str, epoch: int) -> frozenset[str]:
        return frozenset(k[1] for k in sm.tables.get(table, {}) if k[0] == epoch)

    return EpochView(
        height=height,
        epoch=e,
        phase=pos.phase.value,
        phase_end=pos.phase_end,
        epoch_end=pos.epoch_end,
        seed=sm.get(EPOCH_SEEDS, e),
        weights=dict(snap.weights) if snap else {},
        reputations=dict(snap.reputations) if snap else {},
        requests_per_epoch=snap.requests_per_epoch if snap else 0,
        claims=claims,
        committed=who(SEED_COMMITS, e + 1),
        committed_now=who(SEED_COMMITS, e),
        committed_prev=who(SEED_COMMITS, e - 1),
        revealed=who(SEED_REVEALS, e - 1),
        verdicts=frozenset((k[1], k[2]) for k in sm.tables.get(POC_VERDICTS, {}) if k[0] == e),
    )


def poc_claim_nonces(sm: StateMachine, epoch: int, address: str) -> list[int] | None:
    row = sm.get(POC_CLAIMS, (epoch, address))
    return None if row is None else [int(n) for n in row]


__all__ = [
    "EpochAppConfig",
    "EpochView",
    "SettlementSummary",
    "epoch_view",
    "install",
    "install_protocol",
    "poc_claim_nonces",
    "settlement_summary",
    "snapshot_of",
]
