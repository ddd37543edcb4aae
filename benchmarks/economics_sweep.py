"""Economic sweep (issue 16 item 7): does any dishonest strategy pay, at any traffic and size?

Requests per epoch {1k, 10k, 100k} × participants {10, 100, 1000} × ten strategies, several
seeds per cell. ``benchmarks/economics.py`` runs the real ``InferenceBook`` per inference, which
is too slow for 100k requests × 1,000 participants; this model works per epoch and per
(validator, executor) pair with numpy, and takes every rule from the protocol code:

- weights: :func:`settlement.epoch_weights` (cap, exclusion); reputations
  :func:`reputation.reputation` / :func:`reputation.next_epochs_active`;
- checks: ``p = validation_probability(check_target(reputation, traffic, w_e, W), w_v, W, w_e)``
  (reputation rate and the deterrence floor), plus a newcomer's primary validator; the
  vectorised ``p`` is asserted equal to the protocol's on a sample every epoch;
- votes: every eligible participant votes, decided as :func:`votes.tally` (checked on a
  sample); duty: :func:`settlement.duty_forfeits`, a pass on an inference the vote invalidated
  counting as a miss (:func:`settlement.check_counts_for_duty`); settlement as
  :func:`settlement.settle_epoch`: one confirmed invalidation forfeits the executor's epoch
  (fees refunded, mint burned), the mint is pro-rated by the duty done
  (:func:`settlement.duty_fraction`, on in the ledger), the validator fee share goes to
  required passes, an executor failing 5 checks in a row turns INVALID (drawn no more, sits
  out the next epoch), an ``abort``
  without the TA's ``client_left`` is not billed, a TA's prompt count above the executor's is
  not charged and opens a vote that convicts the TA (protocol v3), a pass without a model run
  carries a receipt its executor challenges and the judges break (v3: the validator forfeits);
  whoever forfeits sits out the next :func:`settlement.sit_out_epochs` epochs (v4: until it has
  forgone 32 inferences' worth of income at the epoch's traffic).

``frame``: a group under a third of the weight (``frame_weight``) does honest work but accuses
every inference of the honest executors (the ledger takes a validation from anyone: the sampling
seed is secret until the reveal) and votes "invalid" on them without checking. Under the
ledger's rules an accusation costs its accuser nothing and every dispute costs every re-checking
participant a verification. Proposals beside the ledger's rules (``Economy``): ``committee``
(a dispute judged by ``committee`` voters drawn ∝ weight), ``appeal`` (an executor the
committee convicted appeals to everyone when its inference was honest; the framers on a
committee that is overturned forfeit; a cheater is not modelled appealing: everyone convicts it
at the TPR and its bond would be lost) and ``accusation_bond`` (the accuser of a refuted
accusation pays the re-checks of its votes, an appeal's included, reimbursed to the voters).

**Detection rates come from** ``benchmarks/results/detection.json`` (held-out): a check of a
cheated inference fails with the TPR at 64 tokens of the *worst* float32 cheat that saves
compute (cheaper model or laundering), over all its outputs (an output identical to the honest
one counts as not caught: the cheat still saved its compute), and an honest one with the
95% upper bound on the false-positive rate (3 / held-out honest outputs when none failed).

Modelled (stated): inferences go to executors ∝ weight (multinomial); each check is an
independent draw (secret seeds); a cheat saves ``1 − cheat_cost_ratio`` of the compute of the
inferences it cheats; a check costs as much compute as the inference (a prefill is cheaper:
conservative for validators). Profit = fees + fee shares + mint − compute − PoC cost, per unit of
capacity, relative to the honest identities of the same run.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import RESULTS_DIR
from gonka_ray.constants import DEFAULT_ALLOWED_MISS_SHARE
from gonka_ray.protocol import reputation, settlement, validation_sampling, versions, votes

STRATEGIES = (
    "cheat_always",
    "cheat_1",
    "cheat_10",
    "lazy",
    "rubber_stamp",
    "collude",
    "sybil",
    "ta_inflate",
    "abort_fake",
    "frame",
)
CHEAT_RATE = {"cheat_always": 1.0, "cheat_1": 0.01, "cheat_10": 0.1, "collude": 0.2}
HONEST_BEHAVIOUR = ("sybil",)  # honest work split over identities: reported apart (goal ≤ 1)
# the cheats that save compute (what the model's cheat_cost_ratio prices); sampling cheats
# (wrong temperature, greedy, ignored seed, one replaced token) cost as much as honest work
COMPUTE_SAVING_CHEATS = ("int8", "int4", "truncate_layers_2", "truncate_layers_6", "launder")
REQUESTS = (1_000, 10_000, 100_000)
PARTICIPANTS = (10, 100, 1_000)


@dataclass(frozen=True)
class Economy:
    price_per_token: int = 10
    cost_per_token: float = 5.0  # honest compute per token (50% gross margin)
    cheat_cost_ratio: float = 0.25
    prompt_tokens: int = 100
    completion_tokens: int = 125
    mint_per_request: float = 2_500.0  # the epoch's mint ≈ its fees (as economics.py)
    poc_cost_per_weight_per_request: float = 12.5 / 2_000  # ≈ 10% of inference compute
    fee_share_bps: int = 1_000
    epochs_to_max: int = 30
    group_share: float = 0.05  # identities following the strategy (at least one)
    collude_weight: float = 0.15  # colluders' weight share (< 1/3)
    frame_weight: float = 0.30  # framers' weight share (< 1/3: the most a framing group may hold)
    sybil_split: int = 4
    committee: int = 0  # 0: every eligible participant votes on a dispute (the ledger today)
    # proposal: an executor a committee convicted appeals to everyone when its inference was
    # honest (a cheater, convicted again by everyone at the TPR, would lose its bond)
    appeal: bool = False
    # proposal: the accuser of a refuted accusation pays the re-checks of every vote on it
    # (appeal included), reimbursed to the voters who re-checked; today it pays nothing
    accusation_bond: bool = False
    vote_quorum_at_deadline: bool = True  # v5: a lone accusation lapses at the deadline
    # a prompt-count vote is judged on the payload (fetch, hashes, tokenizer), no model run:
    # priced at 1% of a verification
    payload_check_share: float = 0.01

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Rates:
    tpr: float  # a check of a cheated inference fails
    fpr: float  # a check of an honest inference fails
    source: str
    detail: dict


def detection_rates(path: Path = RESULTS_DIR / "detection.json") -> Rates:
    """The held-out rates of ``detection.json`` (see the module docstring)."""
    d = json.loads(path.read_text())
    s = d["summary"]
    cheats = [
        c
        for c in d.get("cheats", [])
        if c["tokens"] == 64 and c["samples"] > 0 and c["cheat"] in COMPUTE_SAVING_CHEATS
    ]
    if not cheats:
        raise ValueError(f"{path} has no float32 cheat rows: run benchmarks/detection.py cheats")
    worst = min(cheats, key=lambda c: c["tpr_all"])
    n, fps = s["heldout_honest_samples"], s["heldout_false_positives"]
    fpr = max(fps, 3) / n  # rule of three: 95% upper bound when none failed
    return Rates(
        tpr=float(worst["tpr_all"]),
        fpr=float(fpr),
        source="detection.json",
        detail={
            "worst_cheat": worst["cheat"],
            "worst_cheat_samples": worst["samples"],
            "heldout_honest_samples": n,
            "heldout_false_positives": fps,
            "commit": d.get("git_commit"),
        },
    )


def _population(strategy: str, n: int, econ: Economy, rng: np.random.Generator):
    """Capacities and the strategy group (indices); sybil: one capacity split over identities."""
    cap = rng.integers(80, 121, size=n).astype(np.int64)
    order = rng.permutation(n)
    if strategy in ("collude", "frame"):
        target = econ.collude_weight if strategy == "collude" else econ.frame_weight
        share = np.cumsum(cap[order]) / cap.sum()
        g = max(2, int(np.searchsorted(share, target)))
        while cap[order[:g]].sum() / cap.sum() >= 1 / 3:  # tiny networks: stay under a third
            g -= 1
        return cap, order[:g]
    if strategy == "sybil":
        owner = int(order[0])
        parts = settlement.split_largest_remainder(
            int(cap[owner]), {str(i): 1 for i in range(econ.sybil_split)}
        )
        cap = np.concatenate([np.delete(cap, owner), [parts[str(i)] for i in range(len(parts))]])
        return cap, np.arange(n - 1, n - 1 + len(parts))
    if strategy == "none":  # the peaceful network every cell's ratios are measured against
        return cap, order[:0]
    g = max(1, round(econ.group_share * n))
    return cap, order[:g]


def _vote(rng, w, eligible, fail_p, stance, quorum: bool) -> bool:
    """One dispute decided as :func:`votes.tally` at the deadline: ``stance`` per voter is
    1 (re-checks: votes invalid with ``fail_p``), 0 (abstains), -1 (votes valid unchecked),
    2 (votes invalid unchecked: a framer). True: invalidated. The accuser is modelled as one of
    the re-checking voters."""
    checks = (stance == 1) & eligible
    invalid_ballot = (checks & (rng.random(len(w)) < fail_p)) | ((stance == 2) & eligible)
    valid_ballot = (checks & ~invalid_ballot) | ((stance == -1) & eligible)
    return _invalidated(w, eligible, invalid_ballot, valid_ballot, quorum)


def _invalidated(w, eligible, invalid_ballot, valid_ballot, quorum: bool) -> bool:
    """:func:`votes.tally`'s decision at the deadline over boolean ballot masks (``quorum``:
    v5's more than a third of the weight to convict at the deadline)."""
    total = int(w[eligible].sum())
    inv, val = int(w[invalid_ballot].sum()), int(w[valid_ballot].sum())
    if 2 * inv > total:
        return True
    if 2 * val > total:
        return False
    return inv > val and (not quorum or 3 * inv > total)


def _committee(rng, w, eligible, size: int) -> np.ndarray:
    """Who votes on one dispute: every eligible participant (``size`` 0, the ledger's rule
    today) or ``size`` of them drawn ∝ weight without replacement (the proposal measured
    beside it)."""
    if not size or eligible.sum() <= size:
        return eligible
    idx = np.flatnonzero(eligible)
    pick = rng.choice(idx, size=size, replace=False, p=w[idx] / w[idx].sum())
    chosen = np.zeros_like(eligible)
    chosen[pick] = True
    return chosen


def _check_vote_rule(rng) -> None:
    """:func:`_invalidated` decides as :func:`votes.tally` (deadline passed)."""
    for _ in range(20):
        w = rng.integers(1, 50, size=7)
        inv = rng.random(7) < 0.5
        cast = rng.random(7) < 0.8
        ballots = {str(i): not bool(inv[i]) for i in range(7) if cast[i]}
        weights = {str(i): int(w[i]) for i in range(7)}
        for quorum in (False, True):
            ref = votes.tally(ballots, weights, deadline_passed=True, quorum_at_deadline=quorum)
            mine = _invalidated(w, np.ones(7, bool), cast & inv, cast & ~inv, quorum)
            assert mine == (ref is votes.VoteOutcome.INVALIDATED)


def _probabilities(rep, w, traffic) -> tuple[np.ndarray, np.ndarray]:
    """``P[v, e]`` (secret-seed sampling) and ``pi[v, e]`` (primary-validator draw) per pair."""
    total = int(w.sum())
    target = np.array(
        [
            validation_sampling.check_target(int(r), traffic, int(we), total)
            for r, we in zip(rep, w, strict=True)
        ]
    )
    others = np.maximum(total - w, 1)
    p = np.minimum(1.0, target[None, :] * w[:, None] / others[None, :])
    pi = w[:, None] / others[None, :]
    np.fill_diagonal(p, 0.0)
    np.fill_diagonal(pi, 0.0)
    p[:, w <= 0] = 0.0
    p[w <= 0, :] = 0.0
    live = np.flatnonzero(w > 0)
    for v, e in ((live[0], live[1]), (live[-1], live[0])):  # the protocol's own p on a sample
        ref = validation_sampling.validation_probability(
            float(target[e]), int(w[v]), total, int(w[e])
        )
        assert math.isclose(p[v, e], ref, rel_tol=1e-12, abs_tol=1e-15), (p[v, e], ref)
    return p, pi


def _ta_inflation_votes(rng, requests, w, bad, checks, caught, econ, rates, out, strategy) -> int:
    """Protocol v3: every Start of an inflating TA (TAs take requests ∝ weight) opens a vote
    in which every eligible participant but the TA and the executor judges the (honest)
    executor's inference; upheld convicts the TA (it forfeits: ``caught``), invalidated would
    wrong the executor. Returns how many such votes were held (each costs every judging voter
    a payload check, ``Economy.payload_check_share`` of a verification)."""
    if strategy != "ta_inflate":
        return 0
    total = int(w.sum())
    starts = rng.multinomial(requests, w / total)
    held = 0
    for a in np.flatnonzero(bad & (starts > 0) & (w > 0)):
        held += int(starts[a])
        for _ in range(min(int(starts[a]), 3)):  # the first disputes decide the epoch
            p_ex = np.where(np.arange(len(w)) == a, 0, w).astype(float)
            e = int(rng.choice(len(w), p=p_ex / p_ex.sum()))
            elig = w > 0
            elig[[a, e]] = False
            voters = _committee(rng, w, elig, econ.committee)
            stance = checks[:, e].astype(np.int64)
            if _vote(rng, w, voters, rates.fpr, stance, econ.vote_quorum_at_deadline):
                caught[e] = True
                out["honest_invalidated"] += 1
            else:
                caught[a] = True
    return held


def _receipt_challenges(rng, w, required, checks, bad, caught, econ) -> int:
    """Protocol v3: a pass without a model run carries a receipt that does not hold; the
    (honest) executor of such an inference challenges it and every eligible participant but
    the two judges it by its own prefill (validators passing unchecked back the stamp, lazy
    ones abstain). Broken convicts the validator (``caught``: it forfeits). The ledger takes
    one challenge per validator until the settlement, so this is one vote per stamping
    validator per epoch. Returns the number of votes (each costs every judge a verification)."""
    stamped = ((checks == -1) & (required > 0) & ~bad[None, :]).any(axis=1)
    stance = np.where((checks == 1).any(axis=1), 1, np.where((checks == -1).all(axis=1), -1, 0))
    held = 0
    for v in np.flatnonzero(stamped & (w > 0)):
        e = int(np.flatnonzero((checks[v] == -1) & (required[v] > 0) & ~bad)[0])
        judges = w > 0
        judges[[v, e]] = False
        voters = _committee(rng, w, judges, econ.committee)
        held += 1
        # an honest prefill never matches a guess
        if _vote(rng, w, voters, 1.0, stance, econ.vote_quorum_at_deadline):
            caught[v] = True
    return held


def run(
    strategy: str, requests: int, n: int, seed: int, epochs: int, econ: Economy, rates: Rates
) -> dict[str, Any]:
    """One seed of one cell: per-identity income and cost over ``epochs`` epochs."""
    rng = np.random.default_rng([seed, requests, n, (*STRATEGIES, "none").index(strategy)])
    cap, group = _population(strategy, n, econ, rng)
    m = len(cap)
    bad = np.zeros(m, bool)
    bad[group] = True
    rate = np.where(bad, CHEAT_RATE.get(strategy, 0.0), 0.0)
    colluder = bad if strategy == "collude" else np.zeros(m, bool)
    framer = bad if strategy == "frame" else np.zeros(m, bool)
    # stance as a validator of each executor: 1 checks, 0 never (lazy), -1 passes unchecked
    checks = np.ones((m, m), np.int8)
    if strategy == "lazy":
        checks[group, :] = 0
    if strategy == "rubber_stamp":
        checks[group, :] = -1
    if strategy == "collude":
        checks[np.ix_(colluder, colluder)] = -1
    if strategy == "frame":  # honest work, but "invalid" on every honest executor, unchecked
        checks[np.ix_(framer, ~framer)] = 2
    names = [f"p{i:04d}" for i in range(m)]
    epochs_active = np.full(m, econ.epochs_to_max)
    excluded: frozenset[str] = frozenset()
    # v3: the caught sit out the next epochs too (weight 0), INVALID ones at least the next;
    # v4: as many as it takes to forgo a fixed number of inferences at the epoch's traffic
    rules = versions.CURRENT
    sitting: list[set[int]] = [set() for _ in range(m)]  # epochs (index) each one sits out
    kick = next(k for k in range(1, 100) if reputation.trips_consecutive_rule(k))
    income = np.zeros(m)
    cost = np.zeros(m)
    t = econ.tokens
    fee = t * econ.price_per_token
    out = {
        "forfeited_epochs_bad": 0,
        "kicked_out": 0,
        "honest_invalidated": 0,
        "appeals": 0,
        "cheated_spend": 0.0,
        "cheated_refunded": 0.0,
    }
    traffic = requests  # the protocol's estimate: last epoch's finished count
    for epoch in range(epochs):
        weights = settlement.epoch_weights(
            dict(zip(names, cap.tolist(), strict=True)), excluded, 0.25
        )
        w = np.array([weights[a] for a in names], np.int64)
        total = int(w.sum())
        rep = np.array([reputation.reputation(int(x), econ.epochs_to_max) for x in epochs_active])
        p, pi = _probabilities(rep, w, traffic)
        newcomer = rep == 0
        p_eff = np.where(newcomer[None, :], 1 - (1 - p) * (1 - pi), p)
        n_inf = rng.multinomial(requests, w / total)
        # a cheated inference escapes every really-checking validator with prob. u
        u = np.prod(1 - p_eff * (checks == 1) * rates.tpr, axis=0)
        # kick-out: an executor failing every check turns INVALID at the K-th confirmed
        # invalidation in a row and is drawn no more this epoch (its share goes to the others)
        always = rate >= 1.0
        need = np.where(
            always & (u < 1), kick + rng.negative_binomial(kick, np.clip(1 - u, 1e-9, 1)), 0
        )
        kicked = always & (u < 1) & (need <= n_inf)
        served = np.where(kicked, need, n_inf)
        spill = int((n_inf - served).sum())
        if spill:
            open_w = np.where(kicked, 0, w).astype(float)
            served = served + rng.multinomial(spill, open_w / open_w.sum())
        n_inf = served
        cheated = rng.binomial(n_inf, rate)
        required = rng.binomial(n_inf[None, :], p_eff)  # [validator, executor]
        real = np.where(checks == 1, required, 0)
        detected = np.where(kicked, kick, rng.binomial(cheated, 1 - u))
        checks_of_cheats = rng.binomial(real.sum(0), cheated / np.maximum(n_inf, 1))
        false_acc = rng.binomial(real.sum(0) - checks_of_cheats, rates.fpr)
        eligible = w > 0
        invalidated = np.where(kicked, kick, 0)
        caught = kicked.copy()
        # framers accuse every inference of an honest executor (the ledger takes a validation
        # from anyone: the sampling seed is secret until the reveal)
        framed = np.where(framer.any() & ~framer & eligible, n_inf, 0)
        votes_held = detected + false_acc + framed
        rechecks = eligible & (checks.max(1) == 1)
        unit = t * econ.cost_per_token  # one verification
        appeals = 0
        for e in np.flatnonzero(votes_held & ~kicked):
            elig = eligible.copy()
            elig[e] = False
            stance = checks[:, e].astype(np.int64)
            for j in range(min(int(votes_held[e]), 3)):  # the first disputes decide the epoch
                cheat_vote = j < detected[e]
                fail_p = rates.tpr if cheat_vote else rates.fpr
                voters = _committee(rng, w, elig, econ.committee)
                convicted = _vote(rng, w, voters, fail_p, stance, econ.vote_quorum_at_deadline)
                if convicted and econ.appeal and econ.committee and not cheat_vote:
                    appeals += 1
                    convicted = _vote(rng, w, elig, fail_p, stance, econ.vote_quorum_at_deadline)
                    if not convicted:  # overturned: who voted it invalid unchecked forfeits
                        caught |= voters & (stance == 2)
                if convicted:
                    caught[e] = True
                    invalidated[e] += 1
                    if not bad[e] or not rate[e]:
                        out["honest_invalidated"] += 1
        ta_disputes = _ta_inflation_votes(
            rng, requests, w, bad, checks, caught, econ, rates, out, strategy
        )
        receipt_disputes = _receipt_challenges(rng, w, required, checks, bad, caught, econ)
        out["kicked_out"] += int(kicked.sum())
        out["appeals"] += appeals
        # compute: inference, checks, every eligible re-checking voter per dispute
        infer = (n_inf - cheated) * t * econ.cost_per_token
        infer += cheated * t * econ.cost_per_token * econ.cheat_cost_ratio
        if strategy == "abort_fake":
            infer = np.where(bad, n_inf * (econ.prompt_tokens + 1) * econ.cost_per_token, infer)
        verify = real.sum(1) * unit
        # every dispute: each (committee) voter that re-checks pays one verification; an
        # appeal: every re-checking participant
        disputes = int(votes_held.sum()) + ta_disputes * econ.payload_check_share + receipt_disputes
        seat = 1.0 if not econ.committee else np.minimum(1.0, econ.committee * w / total)
        verify += np.where(rechecks, (disputes * seat + appeals) * unit, 0.0)
        if econ.accusation_bond:
            # refuted: the honest validators' false positives and every framing accusation
            # (framers are never right); each costs its accuser the re-checks of its vote, an
            # appeal the re-checks of everyone (appeals here are of honest inferences: refuted)
            per_vote = float((rechecks * seat).sum()) * unit
            honest_checkers = (real.sum(1) * ~bad).astype(float)
            fp_accusers = honest_checkers / max(honest_checkers.sum(), 1.0)
            # framers pay whether or not they hold weight this epoch (one sitting out still
            # accuses: the ledger takes a validation from anyone)
            framers = np.where(framer, cap, 0) / max(int(cap[framer].sum()), 1)
            vote_bonds = false_acc.sum() * per_vote * fp_accusers
            vote_bonds += framed.sum() * per_vote * framers
            appeal_bonds = appeals * float(rechecks.sum()) * unit
            appeal_bonds *= framers if framer.any() else fp_accusers
            cost += vote_bonds + appeal_bonds
            # reimbursed to those who re-checked: a committee vote's by seat, an appeal's equally
            share = rechecks * seat
            income += vote_bonds.sum() * share / max(float(share.sum()), 1e-12)
            income += appeal_bonds.sum() * rechecks / max(int(rechecks.sum()), 1)
        poc = np.where(w > 0, cap * econ.poc_cost_per_weight_per_request * requests, 0.0)
        cost += infer + verify + poc
        # duty: a pass on an invalidated inference is a miss; the lazy submit nothing
        inv_seen = rng.binomial(invalidated[None, :], np.minimum(p_eff, 1.0))
        passed_bad = np.where(checks == -1, inv_seen, rng.binomial(inv_seen, 1 - rates.tpr))
        missed = np.where(checks == 0, required, passed_bad).sum(1)
        req_v = required.sum(1)
        duty_met = np.zeros(m, bool)
        mint_kept = np.zeros(m)  # settlement's pro-rated share of the mint (duty_fraction)
        for v in np.flatnonzero(w > 0):
            miss = int(min(missed[v], req_v[v]))
            forfeits, p_value = settlement.duty_forfeits(miss, int(req_v[v]))
            duty = settlement.DutyResult(
                names[v], True, int(req_v[v]), int(req_v[v]) - miss, p_value, forfeits
            )
            num, den = settlement.duty_fraction(duty, DEFAULT_ALLOWED_MISS_SHARE)
            duty_met[v], mint_kept[v] = not forfeits, num / den
        # fees: an abort without the TA's client_left is not billed; a TA's inflated prompt
        # count is charged at the executor's (lower) count, so the executor earns as honest
        # (and the TA, convicted by the vote, forfeits: ``caught`` above)
        billed = np.where(bad & (strategy == "abort_fake"), 0, n_inf) * fee
        passers = (required * (checks != 0)).astype(float)  # required validations submitted
        validated_share = 1 - np.prod(1 - p_eff * (checks != 0), axis=0)
        pool = billed * validated_share * econ.fee_share_bps / 10_000
        share_to = passers / np.maximum(passers.sum(0), 1)[None, :] * pool[None, :]
        paid_out = np.where(caught, 0.0, billed - pool)
        shares = (share_to * (~caught)[None, :]).sum(1)
        mint = econ.mint_per_request * requests * w / total
        keep = duty_met & ~caught
        income += paid_out + np.where(keep, shares, 0.0) + np.where(keep, mint * mint_kept, 0.0)
        out["cheated_spend"] += float((cheated * fee).sum())
        out["cheated_refunded"] += float((cheated * fee)[caught].sum())
        out["forfeited_epochs_bad"] += int((caught & bad).sum())
        # INVALID sits out the next epoch; the caught (settled at the end of the next one)
        # the sit_out epochs after that, as the ledger does
        for i in np.flatnonzero(kicked):
            sitting[i].add(epoch + 1)
        for i in np.flatnonzero(caught):
            sit_out = settlement.sit_out_epochs(rules, requests, int(w[i]), total)
            sitting[i].update(range(epoch + 2, epoch + 2 + sit_out))
        excluded = frozenset(names[i] for i in range(m) if epoch + 1 in sitting[i])
        epochs_active = np.array(
            [
                reputation.next_epochs_active(
                    int(epochs_active[i]), missed_duty=not duty_met[i], invalidated=bool(caught[i])
                )
                for i in range(m)
            ]
        )
    profit = income - cost
    # a sit-out that runs past the simulated epochs is still owed: each such epoch costs what
    # an honest identity of the same capacity made in an average epoch of this run
    owed = np.array([sum(e >= epochs for e in sitting[i]) for i in range(m)])
    if owed.any() and (~bad).any():
        honest_epoch = profit[~bad].sum() / cap[~bad].sum() / epochs
        profit = profit - owed * cap * max(honest_epoch, 0.0)

    def per_capacity(mask: np.ndarray) -> float:
        return float(profit[mask].sum() / cap[mask].sum()) if mask.any() else float("nan")

    return {
        **out,
        "profit_bad": per_capacity(bad),
        "profit_honest": per_capacity(~bad),
        "group": int(bad.sum()),
        "group_weight_share": float(cap[bad].sum() / cap.sum()),
    }


def newcomer_checked_share(samples: int = 400, seed: int = 0) -> dict[str, Any]:
    """Share of a reputation-0 executor's inferences that at least one validator must check,
    by the protocol's own :func:`validation_sampling.must_check` (secret seeds + primary draw),
    in networks of 10, 100 and 1,000 participants at 1k–100k requests per epoch."""
    rng = np.random.default_rng(seed)
    checked = total = 0
    for n in PARTICIPANTS:
        for traffic in REQUESTS:
            names = [f"p{i:04d}" for i in range(n)]
            weights = dict(zip(names, rng.integers(80, 121, size=n).tolist(), strict=True))
            seeds = {a: rng.bytes(32) for a in names}
            executor = names[0]
            for _ in range(samples if n < 1_000 else samples // 8):
                iid, block = rng.bytes(32), rng.bytes(32)
                total += 1
                checked += any(
                    validation_sampling.must_check(
                        seed=seeds[v],
                        validator=v,
                        inference_id=iid,
                        executor=executor,
                        finish_block_hash=block,
                        executor_reputation=0,
                        requests_per_epoch=traffic,
                        weights=weights,
                    )
                    for v in names
                )
    return {"inferences": total, "checked": checked, "share": checked / total}


def sweep(
    rates: Rates, *, seeds: int = 3, epochs: int = 8, econ: Economy = Economy(), progress=True
) -> dict[str, Any]:
    """Every cell × strategy × seed; the worst ratio per strategy and cell."""
    from tqdm import tqdm

    _check_vote_rule(np.random.default_rng(0))
    cells: list[dict[str, Any]] = []
    grid = [(r, n) for r in REQUESTS for n in PARTICIPANTS]
    bar = tqdm(total=len(grid) * (len(STRATEGIES) + 1), desc="economic sweep", disable=not progress)
    for requests, n in grid:
        peace = [run("none", requests, n, seed, epochs, econ, rates) for seed in range(seeds)]
        bar.update()
        for strategy in STRATEGIES:
            runs = [run(strategy, requests, n, seed, epochs, econ, rates) for seed in range(seeds)]
            bar.update()
            # advantage over the honest identities of the same run, in units of an honest
            # identity's profit in the peaceful network: bad/honest when disputes cost the
            # honest nothing, and still meaningful when they push honest profit below zero
            ratios = [
                1 + (r["profit_bad"] - r["profit_honest"]) / q["profit_honest"]
                for r, q in zip(runs, peace, strict=True)
            ]
            honest_share = [
                r["profit_honest"] / q["profit_honest"] for r, q in zip(runs, peace, strict=True)
            ]
            cells.append(
                {
                    "requests": requests,
                    "participants": n,
                    "strategy": strategy,
                    "ratio_mean": float(np.mean(ratios)),
                    # seed noise: a cell of a few small identities (sybil at 1,000 participants
                    # and 1k requests: ~0.25 inferences per identity per epoch) swings by 0.25
                    "ratio_se": float(np.std(ratios, ddof=1) / math.sqrt(seeds))
                    if seeds > 1
                    else 0.0,
                    "ratio_max": float(np.max(ratios)),
                    "honest_profit_vs_peaceful_min": float(np.min(honest_share)),
                    "group": runs[0]["group"],
                    "group_weight_share": runs[0]["group_weight_share"],
                    "forfeited_epochs": sum(r["forfeited_epochs_bad"] for r in runs),
                    "kicked_out": sum(r["kicked_out"] for r in runs),
                    "honest_invalidated": sum(r["honest_invalidated"] for r in runs),
                    "cheated_spend_refunded_share": (
                        sum(r["cheated_refunded"] for r in runs)
                        / max(1.0, sum(r["cheated_spend"] for r in runs))
                    ),
                }
            )
    bar.close()
    dishonest = [c for c in cells if c["strategy"] not in HONEST_BEHAVIOUR]
    worst = max(dishonest, key=lambda c: c["ratio_mean"])
    sybil = max((c for c in cells if c["strategy"] == "sybil"), key=lambda c: c["ratio_mean"])
    return {
        "cells": cells,
        "max_dishonest_profit_ratio_all_cells": worst["ratio_mean"],
        "max_ratio_per_strategy": {
            st: max(c["ratio_mean"] for c in cells if c["strategy"] == st) for st in STRATEGIES
        },
        "sybil_profit_ratio_max": sybil["ratio_mean"],
        "sybil_profit_ratio_max_se": sybil["ratio_se"],
        "honest_profit_vs_peaceful_min": min(c["honest_profit_vs_peaceful_min"] for c in cells),
        "worst_cell": {k: worst[k] for k in ("requests", "participants", "strategy")},
        "honest_invalid_count": sum(c["honest_invalidated"] for c in cells),
        "seeds": seeds,
        "epochs": epochs,
        "economy": econ.__dict__,
        "rates": rates.__dict__,
        "digest": hashlib.sha256(json.dumps(cells, sort_keys=True).encode()).hexdigest()[:16],
    }


def plot(result: dict[str, Any], path: Path, proposals: Sequence[dict[str, Any]] = ()) -> None:
    """Worst ratio (mean over seeds) per strategy, one panel per traffic level; a row per
    proposal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("ledger rules (every participant votes, accusations free)", result)]
    for proposal in proposals:
        econ = proposal["economy"]
        label = f"proposal: {econ['committee']}-member vote committee drawn ∝ weight"
        if econ.get("appeal"):
            label += ", appeal to everyone, accusation bond"
        rows.append((label, proposal))
    fig, axes = plt.subplots(
        len(rows), len(REQUESTS), figsize=(17, 5 * len(rows)), sharey=True, squeeze=False
    )
    for (label, res), line in zip(rows, axes, strict=True):
        for ax, requests in zip(line, REQUESTS, strict=True):
            for n, marker in zip(PARTICIPANTS, "os^", strict=True):
                cells = [
                    c for c in res["cells"] if c["requests"] == requests and c["participants"] == n
                ]
                ax.plot(
                    [c["strategy"] for c in cells],
                    [min(c["ratio_mean"], 3.0) for c in cells],
                    marker=marker,
                    ls="",
                    label=f"{n} participants",
                )
            ax.axhline(0.9, color="r", lw=0.8, ls="--")
            ax.axhline(1.0, color="k", lw=0.6, ls=":")
            ax.set_ylim(-1.5, 3.1)
            ax.set_title(f"{label}\n{requests:,} requests / epoch", fontsize=9)
            ax.tick_params(axis="x", rotation=45, labelsize=8)
        line[0].set_ylabel("profit vs honest (1 = same; clipped at 3)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        "Economic sweep, detection rates from detection.json "
        f"(TPR {result['rates']['tpr']:.3f}, FPR ≤ {result['rates']['fpr']:.1e}); red: the 0.9 goal"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
