"""Economic simulation: does any dishonest strategy out-earn honest work? (issue 8, DESIGN §4–§5)

Run: ``.venv/bin/python benchmarks/economics.py`` (writes ``results/economics.json`` and
``results/economics.png``; ``--quick`` for a smoke run).

What is real and what is modelled:

- **Real protocol code**: every inference goes through the real
  :class:`~gonka_ray.protocol.lifecycle.InferenceBook` (Start with the recomputed executor draw,
  Finish, Validation, Vote, invalidation, status rules, refunds); the sampling decision is
  :func:`~gonka_ray.protocol.validation_sampling.should_validate` with ``p`` from the real
  ``check_target``/``validation_probability`` on an epoch snapshot; validation duty uses
  :func:`~gonka_ray.protocol.settlement.duty_forfeits` on each validator's required set (the same
  set ``assess_duty`` recomputes from the revealed seed, computed once here for speed); weights
  come from :func:`~gonka_ray.protocol.settlement.epoch_weights` (cap, exclusion of last epoch's
  INVALID); money moves by :func:`settle_epoch` / :func:`apply_settlement`, and the script asserts
  after every epoch that supply changed by exactly ``minted − burned``.
- **Detection rates from** ``results/detection.json`` (held-out; ``--tpr``/``--fpr`` override
  as a named what-if): a check of a *cheated* inference by a validator that really checks fails
  with the TPR at 64 tokens of the worst float32 cheat that saves compute (identical outputs
  count as not caught); a
  check of an honest inference fails with the 95% upper bound on the held-out false-positive
  rate. Votes are re-checks with the same rates.
- **The sweep** (:mod:`benchmarks.economics_sweep`): {1k, 10k, 100k} requests × {10, 100, 1000}
  participants × ten strategies, an epoch-level numpy model with the same rules, under the
  ledger's voting (every participant votes, an accusation costs its accuser nothing) and two
  proposals: a vote committee, and a committee whose conviction of an honest inference is
  appealed to everyone, with a bond on accusations (the accuser of a refuted one pays the
  re-checks of its votes). ``frame`` (framers under a third of the weight accuse every honest
  inference and vote "invalid" without checking) is what the bond is for.
- **Modelled** (assumptions, all flags): PoC is not re-simulated: each identity's
  accepted nonce count is its fixed capacity (PoC soundness is tested in ``tests/unit/test_poc.py``).
  Compute cost is counted in tokens: an honest inference costs ``cost_per_token`` per prompt
  and completion token, a cheated one ``cheat_cost_ratio`` of that, every check or vote
  re-verification the same per token as honest inference (conservative: a prefill is cheaper than
  decoding), the PoC sprint ``poc_cost_per_weight`` per unit of capacity per epoch.
- The network starts **established** (everyone at full reputation), so the run shows the steady
  state and what a cheater loses when caught.

Strategies (identities out of 100): honest; ``cheat_always``; ``cheat_1/5/20`` (cheat on x% of
executed inferences); ``lazy`` (never checks nor votes, reveals its seed and claims anyway);
``collude`` (15 identities, 15% of weight < 1/3, cheat on 20% and pass/vote valid on each other
without checking); ``sybil`` (one participant's capacity split over 4 honest identities).

Profit = everything settlement paid (fees, validator fee shares, mint) − compute cost; compared
per unit of capacity with the honest group. ``verification_share`` is measured in a separate
all-honest run at 10,000 requests/epoch (the traffic where DESIGN's ``min_avg`` reaches 0.01);
the main adversarial runs use ``--requests`` per epoch (default 2,000, 4 seeds × 30 epochs =
12,000 participant-epochs) to stay fast, where the protocol checks far more
(``min_avg(2000) ≈ 0.63``); a shorter single-seed run at 10,000 requests/epoch shows the
low-check steady state.

Two policies are compared, both expressible with today's ``InferenceBook`` arguments:

- ``baseline``: DESIGN as written (status rules with fpr 0.05; every eligible participant
  re-verifies and votes on each dispute; duty by the binomial test alone).
- ``proposed``: a vote-confirmed invalidation is conclusive (the book's ``fpr`` set to 1e-7, so
  the consecutive rule fires on the first one), and a dispute is judged by a 12-member committee
  drawn ∝ weight from ``sha256(inference_id ‖ "vote" ‖ j)`` (the book's deadline rule then
  decides by cast weight), and a validator's mint is pro-rated by the checks it did
  (``SettlementParams(prorate_duty=True)``). Rationale in the closing note of issue 8: under ``baseline`` each
  dispute costs *every* participant a re-verification, so cheaters tax everyone, a lazy
  validator saves more than its forfeited mint, and small identities pay as much as large ones;
  at high traffic a validator owes ~1 check per epoch, too few for the binomial test to see.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm

from benchmarks import economics_sweep as sweep_mod
from benchmarks._common import RESULTS_DIR, print_table, write_results
from gonka_ray.exceptions import TxRejected
from gonka_ray.protocol import reputation, selection, settlement, validation_sampling, versions
from gonka_ray.protocol.lifecycle import InferenceBook, InferenceStatus, ParticipantRecord
from gonka_ray.protocol.reputation import Status

CLIENT = "client"
_SCALE = 1 << 64
sha256 = hashlib.sha256
STRATEGIES = [
    "honest",
    "cheat_always",
    "cheat_1",
    "cheat_5",
    "cheat_20",
    "lazy",
    "collude",
    "sybil",
]
CHEAT_RATE = {
    "cheat_always": 1.0,
    "cheat_1": 0.01,
    "cheat_5": 0.05,
    "cheat_20": 0.2,
    "collude": 0.2,
}


@dataclass(frozen=True)
class SimConfig:
    participants: int = 100
    epochs: int = 30
    requests: int = 2_000  # inferences per epoch
    chunks: int = 10  # heights per epoch's inference phase (kick-out applies between chunks)
    epochs_to_max: int = 30
    price_per_token: int = 10
    cost_per_token: float = 5.0  # honest compute per token (50% gross margin)
    cheat_cost_ratio: float = 0.25
    poc_cost_per_weight: float = 12.5  # ≈ 10% of inference compute at 2,000 requests
    reward_per_epoch: int = 5_000_000  # ≈ the epoch's fees at 2,000 requests
    validator_fee_share_bps: int = 1_000
    tpr: float = 0.999
    fpr: float = 1e-4
    status_fpr: float = 0.05  # the book's assumed honest failure rate for the status rules
    vote_committee: int = 0  # 0: every eligible participant votes (DESIGN); k: k drawn by weight
    prorate_duty: bool = False  # mint × done / ceil(0.9 · required) below 90% (settlement option)
    counts: tuple[tuple[str, int], ...] = (
        ("cheat_always", 3),
        ("cheat_1", 3),
        ("cheat_5", 3),
        ("cheat_20", 3),
        ("lazy", 3),
        ("collude", 15),
        ("sybil", 4),
    )
    established: bool = True


class DictAccounts:
    def __init__(self) -> None:
        self.balances: dict[str, int] = defaultdict(int)

    def balance(self, address: str) -> int:
        return self.balances[address]

    def add(self, address: str, amount: int) -> None:
        self.balances[address] += amount
        if self.balances[address] < 0:
            raise AssertionError(f"{address} went negative")


@dataclass
class Tally:
    income: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    cost: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    invalid_epochs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    inference_tokens: int = 0
    verification_tokens: int = 0
    invalidated_spend: int = 0  # cost of invalidated inferences + INVALID executors' fees
    refunded: int = 0
    cheated_spend: int = 0
    cheated_refunded: int = 0
    minted: int = 0
    burned: int = 0
    forfeits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    per_epoch_profit: list[dict[str, float]] = field(default_factory=list)
    participant_epochs: int = 0


def assign(cfg: SimConfig, rng: random.Random) -> tuple[dict[str, str], dict[str, int]]:
    """Identity → strategy and identity → capacity (accepted PoC nonces)."""
    strategy: dict[str, str] = {}
    capacity: dict[str, int] = {}
    names = [f"p{i:03d}" for i in range(cfg.participants)]
    order = names[:]
    rng.shuffle(order)
    it = iter(order)
    for strat, n in cfg.counts:
        for _ in range(n):
            strategy[next(it)] = strat
    for a in it:
        strategy[a] = "honest"
    sybil_total = 0
    for a in names:
        if strategy[a] == "sybil":
            continue
        capacity[a] = rng.randint(80, 120)
    sybils = [a for a in names if strategy[a] == "sybil"]
    if sybils:
        sybil_total = rng.randint(80, 120)
        parts = settlement.split_largest_remainder(sybil_total, dict.fromkeys(sybils, 1))
        capacity.update(parts)
    return strategy, capacity


def simulate(cfg: SimConfig, seed: int, *, progress: bool = True) -> Tally:
    rng = random.Random(seed)
    strategy, capacity = assign(cfg, rng)
    names = sorted(strategy)
    accounts = DictAccounts()
    accounts.balances[CLIENT] = 10**15
    parts = {
        a: ParticipantRecord(
            a,
            capacity[a],
            status=Status.ACTIVE if cfg.established else Status.RAMPING,
            epochs_active=cfg.epochs_to_max if cfg.established else 0,
        )
        for a in names
    }
    book = InferenceBook(
        accounts,
        parts,
        expiry_blocks=10**9,
        vote_blocks=1,
        fpr=cfg.status_fpr,
        # the committee proposal decides at the deadline by cast weight (v4's rule): v5's quorum
        # counts the weight of every eligible participant, not the committee's
        rules_at=(lambda _h: versions.RULES[4]) if cfg.vote_committee else None,
    )
    tally = Tally()
    colluders = {a for a in names if strategy[a] == "collude"}
    excluded: frozenset[str] = frozenset()
    held: dict[bytes, Any] = {}
    traffic = cfg.requests
    height = 0
    cheated: dict[bytes, bool] = {}
    epochs = range(cfg.epochs)
    bar = tqdm(epochs, desc=f"seed {seed}", leave=False) if progress else epochs
    for epoch in bar:
        weights = settlement.epoch_weights(capacity, excluded, 0.25)
        for a, w in weights.items():
            parts[a].weight = w
        reps = {a: reputation.reputation(parts[a].epochs_active, cfg.epochs_to_max) for a in names}
        snap = settlement.EpochSnapshot(epoch, weights, reps, traffic)
        total_w = snap.total_weight
        seeds = {a: hashlib.sha256(b"%d/%d/%s" % (seed, epoch, a.encode())).digest() for a in names}
        probs = {
            v: {
                e: validation_sampling.validation_probability(
                    validation_sampling.check_target(reps[e], traffic, weights[e], total_w),
                    weights[v],
                    total_w,
                    weights[e],
                )
                for e in names
            }
            for v in names
            if weights[v] > 0
        }
        # p as an integer cut: should_validate(seed, id, p) == sample_point(seed, id) < cut
        cut = {
            v: {e: (_SCALE if p >= 1.0 else int(p * _SCALE)) for e, p in row.items()}
            for v, row in probs.items()
        }
        validator_seeds = [(v, seeds[v]) for v in probs]
        _check_inlined_sampling(seeds, probs, cut, seed, epoch)
        required: dict[str, set[bytes]] = defaultdict(set)
        epoch_records = []
        before = sum(accounts.balances.values()) + book.total_pending_fees() + book.total_escrow()
        for a in names:
            tally.cost[a] += cfg.poc_cost_per_weight * capacity[a]
        tas = [a for a in names if weights[a] > 0]
        per_chunk = cfg.requests // cfg.chunks
        for chunk in range(cfg.chunks):
            height += 1
            chunk_records = []
            for i in range(per_chunk):
                iid = hashlib.sha256(b"%d/%d/%d/%d" % (seed, epoch, chunk, i)).digest()
                ta = tas[rng.randrange(len(tas))]
                try:
                    ex = book.expected_executor(iid, 0, ta)
                except TxRejected:  # pragma: no cover - only with nobody eligible
                    continue
                prompt = rng.randint(50, 150)
                completion = rng.randint(50, 200)
                book.start(
                    inference_id=iid,
                    requester=CLIENT,
                    transport_agent=ta,
                    executor=ex,
                    attempt=0,
                    prompt_hash=b"p",
                    prompt_tokens=prompt,
                    max_tokens=200,
                    max_escrow=10**12,
                    price_per_token=cfg.price_per_token,
                    seed=i,
                    height=height,
                )
                rec = book.finish(
                    inference_id=iid,
                    executor=ex,
                    completion_tokens=completion,
                    finish_reason="stop",
                    response_hash=b"r",
                    artifact_hash=b"a",
                    height=height,
                )
                cheat = rng.random() < CHEAT_RATE.get(strategy[ex], 0.0)
                cheated[iid] = cheat
                tokens = prompt + completion
                tally.inference_tokens += tokens
                tally.cost[ex] += (
                    tokens * cfg.cost_per_token * (cfg.cheat_cost_ratio if cheat else 1)
                )
                if cheat:
                    tally.cheated_spend += rec.cost
                chunk_records.append(rec)
            epoch_records.extend(chunk_records)
            # validators decide with their secret seeds, then check (or not)
            for rec in chunk_records:
                tokens = rec.prompt_tokens + rec.completion_tokens
                iid = rec.inference_id
                ex = rec.executor
                for v, seed_v in validator_seeds:
                    # NOTE: inlined validation_sampling.should_validate (checked equal above)
                    if (
                        v == ex
                        or int.from_bytes(sha256(seed_v + iid).digest()[:8], "big") >= (cut[v][ex])
                    ):
                        continue
                    required[v].add(rec.inference_id)
                    if parts[v].status is Status.INVALID or strategy[v] == "lazy":
                        continue
                    if rec.status is InferenceStatus.INVALIDATED:
                        continue  # the book gives no credit once invalidated
                    if v in colluders and rec.executor in colluders:
                        passed = True  # covers a friend without checking
                    else:
                        tally.verification_tokens += tokens
                        tally.cost[v] += tokens * cfg.cost_per_token
                        fail_p = cfg.tpr if cheated[rec.inference_id] else cfg.fpr
                        passed = rng.random() >= fail_p
                    was_voting = rec.status is InferenceStatus.VOTING
                    book.validation(
                        inference_id=rec.inference_id, validator=v, passed=passed, height=height
                    )
                    if rec.status is InferenceStatus.VOTING and not was_voting:
                        run_vote(book, rec, cfg, rng, strategy, colluders, cheated, tally, height)
            book.advance(height + 1)
            height += 1
        # --- settlement -------------------------------------------------------------------
        duties = {}
        for v in names:
            if weights[v] <= 0:
                continue
            req = {
                i
                for i in required.get(v, ())
                if book.records[i].status is not InferenceStatus.INVALIDATED
                or v in book.records[i].validations
            }  # as settlement.required_validations: no duty on what was invalidated first
            done = sum(1 for i in req if settlement.check_counts_for_duty(book.records[i], v))
            forfeits, p_value = settlement.duty_forfeits(len(req) - done, len(req))
            duties[v] = settlement.DutyResult(
                v, True, len(req), done, p_value, forfeits, frozenset(req)
            )
            if forfeits:
                tally.forfeits[v] += 1
        records = [*held.values(), *epoch_records]
        for rec in epoch_records:
            if rec.status is InferenceStatus.INVALIDATED:
                tally.invalidated_spend += rec.cost
                tally.refunded += rec.refunded
                if cheated[rec.inference_id]:
                    tally.cheated_refunded += rec.refunded
        s = settlement.settle_epoch(
            epoch=epoch,
            participants=parts,
            records=records,
            duties=duties,
            params=settlement.SettlementParams(
                cfg.reward_per_epoch, cfg.validator_fee_share_bps, prorate_duty=cfg.prorate_duty
            ),
            # DESIGN §4: one vote-confirmed invalidation forfeits the executor's epoch
            invalidated=settlement.caught_in(epoch_records),
        )
        for a, ps in s.participants.items():
            if ps.invalid:
                tally.invalid_epochs[a] += 1
            if ps.invalid or ps.forfeited:  # both refund the epoch's fees to the clients
                tally.invalidated_spend += ps.refunded_fees
        tally.refunded += sum(s.refunds.values())
        for rec in records:
            if (
                rec.inference_id in s.settled_ids
                and cheated.get(rec.inference_id)
                and (s.participants[rec.executor].invalid or s.participants[rec.executor].forfeited)
                and rec.status in (InferenceStatus.FINISHED, InferenceStatus.VALIDATED)
            ):
                tally.cheated_refunded += rec.cost
        settlement.apply_settlement(s, accounts, parts)
        after = sum(accounts.balances.values()) + book.total_pending_fees() + book.total_escrow()
        assert after == before + s.minted - s.burned, "supply not conserved"
        tally.minted += s.minted
        tally.burned += s.burned
        row = {}
        for a, ps in s.participants.items():
            tally.income[a] += ps.paid
            row[a] = ps.paid
        tally.per_epoch_profit.append(row)
        held = {i: book.records[i] for i in s.held_ids}
        excluded = s.excluded_next
        traffic = len(epoch_records)
        tally.participant_epochs += len(names)
        # drop settled records the book no longer needs (keeps memory flat)
        for rec in epoch_records:
            if rec.inference_id not in s.held_ids:
                del book.records[rec.inference_id]
                cheated.pop(rec.inference_id, None)
    tally.strategy = strategy  # type: ignore[attr-defined]
    tally.capacity = capacity  # type: ignore[attr-defined]
    return tally


def _check_inlined_sampling(seeds, probs, cut, seed: int, epoch: int) -> None:
    """The inlined sampling test must agree with the real ``should_validate``."""
    rng = random.Random(seed * 1_000 + epoch)
    for v in list(probs)[:10]:
        for e in list(probs[v])[:10]:
            for _ in range(20):
                iid = rng.randbytes(32)
                fast = int.from_bytes(sha256(seeds[v] + iid).digest()[:8], "big") < cut[v][e]
                assert fast == validation_sampling.should_validate(seeds[v], iid, probs[v][e])


def committee(inference_id: bytes, eligible: dict[str, int], size: int) -> dict[str, int]:
    """``size`` distinct voters drawn ∝ weight with ``sha256(id ‖ "vote" ‖ j)`` (proposed rule)."""
    chosen: dict[str, int] = {}
    pool = dict(eligible)
    j = 0
    while pool and len(chosen) < size:
        r = int.from_bytes(
            sha256(inference_id + b"vote" + j.to_bytes(4, "big")).digest()[:8], "big"
        )
        pick = selection.weighted_pick(pool, r)
        chosen[pick] = pool.pop(pick)
        j += 1
    return chosen


def run_vote(book, rec, cfg, rng, strategy, colluders, cheated, tally, height) -> None:
    """Every eligible participant re-verifies (and pays for it); ballots go in until resolved."""
    tokens = rec.prompt_tokens + rec.completion_tokens
    ballots = []
    eligible = {
        a: p.weight
        for a, p in book.participants.items()
        if a not in (rec.executor, rec.accuser) and p.weight > 0 and p.status is not Status.INVALID
    }
    if cfg.vote_committee:
        eligible = committee(rec.inference_id, eligible, cfg.vote_committee)
    for voter in sorted(eligible):
        if strategy[voter] == "lazy":
            continue
        if voter in colluders and rec.executor in colluders:
            ballots.append((voter, True))
            continue
        tally.verification_tokens += tokens
        tally.cost[voter] += tokens * cfg.cost_per_token
        fail_p = cfg.tpr if cheated[rec.inference_id] else cfg.fpr
        ballots.append((voter, rng.random() >= fail_p))
    for voter, valid in ballots:
        if rec.status is not InferenceStatus.VOTING:
            return
        book.vote(inference_id=rec.inference_id, voter=voter, valid=valid, height=height)


def summarise(tallies: list[Tally]) -> dict[str, Any]:
    profit: dict[str, float] = defaultdict(float)
    cap: dict[str, float] = defaultdict(float)
    invalid_pe: dict[str, int] = defaultdict(int)
    forfeits: dict[str, int] = defaultdict(int)
    members: dict[str, int] = defaultdict(int)
    for t in tallies:
        strat = t.strategy  # type: ignore[attr-defined]
        for a, s in strat.items():
            profit[s] += t.income[a] - t.cost[a]
            cap[s] += t.capacity[a]  # type: ignore[attr-defined]
            invalid_pe[s] += t.invalid_epochs[a]
            forfeits[s] += t.forfeits[a]
            members[s] += 1
    per_cap = {s: profit[s] / cap[s] for s in cap}
    honest = per_cap["honest"]
    rows = []
    for s in STRATEGIES:
        if s not in per_cap:
            continue
        rows.append(
            {
                "strategy": s,
                "identities": members[s] // len(tallies),
                "profit_per_weight": per_cap[s] / len(tallies),
                "ratio_to_honest": per_cap[s] / honest,
                "invalid_epochs": invalid_pe[s],
                "forfeited_epochs": forfeits[s],
            }
        )
    inv_spend = sum(t.invalidated_spend for t in tallies)
    refunded = sum(t.refunded for t in tallies)
    cheated = sum(t.cheated_spend for t in tallies)
    cheated_ref = sum(t.cheated_refunded for t in tallies)
    inf_tok = sum(t.inference_tokens for t in tallies)
    ver_tok = sum(t.verification_tokens for t in tallies)
    dishonest = [r for r in rows if r["strategy"] not in ("honest", "sybil")]
    return {
        "rows": rows,
        "participant_epochs": sum(t.participant_epochs for t in tallies),
        "max_dishonest_profit_ratio": max((r["ratio_to_honest"] for r in dishonest), default=None),
        "max_dishonest_strategy": max(
            dishonest, key=lambda r: r["ratio_to_honest"], default={"strategy": None}
        )["strategy"],
        "sybil_profit_ratio": next(
            (r["ratio_to_honest"] for r in rows if r["strategy"] == "sybil"), None
        ),
        "honest_invalid_count": invalid_pe["honest"] + invalid_pe.get("sybil", 0),
        "refund_share": refunded / inv_spend if inv_spend else 1.0,
        "cheated_spend_refunded_share": cheated_ref / cheated if cheated else 1.0,
        "verification_share": ver_tok / (inf_tok + ver_tok),
        "minted": sum(t.minted for t in tallies),
        "burned": sum(t.burned for t in tallies),
    }


PROPOSED = {"status_fpr": 1e-7, "vote_committee": 12, "prorate_duty": True}
POLICY_TITLES = {
    "baseline": "DESIGN rules (status fpr 0.05, everyone votes)",
    "proposed": "proposed (1 confirmed invalidation => INVALID, 12-member vote, pro-rata duty)",
}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    panels = [
        (axes[0][0], "baseline", f"{POLICY_TITLES['baseline']}\n2,000 req/epoch"),
        (axes[0][1], "proposed", f"{POLICY_TITLES['proposed']}\n2,000 req/epoch"),
        (axes[1][0], "baseline_10k", f"{POLICY_TITLES['baseline']}\n10,000 req/epoch"),
        (axes[1][1], "proposed_10k", f"{POLICY_TITLES['proposed']}\n10,000 req/epoch"),
    ]
    for ax, key, title in panels:
        if key not in result:
            ax.set_visible(False)
            continue
        rows = result[key]["rows"]
        names = [r["strategy"] for r in rows]
        vals = [r["ratio_to_honest"] for r in rows]
        colors = ["tab:green" if n in ("honest", "sybil") else "tab:red" for n in names]
        ax.bar(names, vals, color=colors)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_ylabel("profit per unit weight / honest")
        ax.set_title(
            f"{title}, {result[key]['participant_epochs']:,} participant-epochs", fontsize=9
        )
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.2f}", ha="center", va="bottom" if v >= 0 else "top", fontsize=8)
    fig.suptitle(
        "Profit of each strategy relative to honest (green: honest behaviour); verification "
        f"share, honest network at 10k req/epoch: {result['steady_state']['verification_share']:.2%}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--requests", type=int, default=2_000)
    ap.add_argument("--epochs-10k", type=int, default=10, help="epochs of the 10k-traffic runs")
    ap.add_argument("--tpr", type=float, help="default: detection.json's (held-out)")
    ap.add_argument("--fpr", type=float, help="default: detection.json's (held-out)")
    ap.add_argument("--sweep-seeds", type=int, default=6)
    ap.add_argument("--sweep-epochs", type=int, default=10)
    ap.add_argument("--committee", type=int, default=12, help="the sweep's proposed vote size")
    ap.add_argument("--quick", action="store_true", help="1 seed, 5 epochs; no files written")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.epochs_10k = 1, 5, 2
        args.sweep_seeds, args.sweep_epochs = 1, 2
    t0 = time.time()
    rates = sweep_mod.detection_rates()
    if args.tpr is not None or args.fpr is not None:  # an explicit what-if, named as such
        rates = sweep_mod.Rates(
            args.tpr if args.tpr is not None else rates.tpr,
            args.fpr if args.fpr is not None else rates.fpr,
            "assumed (--tpr/--fpr)",
            rates.detail,
        )
    print(f"detection rates from {rates.source}: TPR {rates.tpr:.4f}, FPR {rates.fpr:.2e}")
    base = SimConfig(epochs=args.epochs, requests=args.requests, tpr=rates.tpr, fpr=rates.fpr)
    # at 5x the traffic, scale the mint and the PoC cost so their ratio to fees is unchanged
    high = SimConfig(
        **{
            **base.__dict__,
            "epochs": args.epochs_10k,
            "requests": 10_000,
            "reward_per_epoch": base.reward_per_epoch * 5,
            "poc_cost_per_weight": base.poc_cost_per_weight * 5,
        }
    )
    runs = {
        "baseline": (base, args.seeds),
        "proposed": (SimConfig(**{**base.__dict__, **PROPOSED}), args.seeds),
        "baseline_10k": (high, 1),
        "proposed_10k": (SimConfig(**{**high.__dict__, **PROPOSED}), 1),
    }
    result: dict[str, Any] = {}
    for key, (cfg, seeds) in runs.items():
        tallies = [simulate(cfg, seed) for seed in tqdm(range(seeds), desc=key)]
        result[key] = summarise(tallies)
        result[key]["config"] = cfg.__dict__
        print(
            f"\n== {key}: status fpr {cfg.status_fpr}, vote committee "
            f"{cfg.vote_committee or 'all'}, {cfg.requests} requests/epoch, {seeds} seed(s) =="
        )
        print_table(result[key]["rows"])
    # steady-state verification share: honest, established, high traffic
    steady_cfg = SimConfig(epochs=2, requests=10_000, counts=())
    steady = summarise([simulate(steady_cfg, 10_000)])
    result["steady_state"] = {
        "requests_per_epoch": steady_cfg.requests,
        "verification_share": steady["verification_share"],
    }
    b, pr = result["baseline"], result["proposed"]
    summary = {
        "participant_epochs": b["participant_epochs"],
        "max_dishonest_profit_ratio": b["max_dishonest_profit_ratio"],
        "max_dishonest_strategy": b["max_dishonest_strategy"],
        "honest_invalid_count": b["honest_invalid_count"],
        "refund_share": b["refund_share"],
        "verification_share": result["steady_state"]["verification_share"],
        "verification_share_adversarial_2k": b["verification_share"],
        "sybil_profit_ratio": b["sybil_profit_ratio"],
        "max_dishonest_profit_ratio_10k": result["baseline_10k"]["max_dishonest_profit_ratio"],
        "max_dishonest_strategy_10k": result["baseline_10k"]["max_dishonest_strategy"],
        "max_dishonest_profit_ratio_proposed": pr["max_dishonest_profit_ratio"],
        "max_dishonest_strategy_proposed": pr["max_dishonest_strategy"],
        "honest_invalid_count_proposed": pr["honest_invalid_count"],
        "sybil_profit_ratio_proposed": pr["sybil_profit_ratio"],
        "verification_share_adversarial_2k_proposed": pr["verification_share"],
        "max_dishonest_profit_ratio_proposed_10k": result["proposed_10k"][
            "max_dishonest_profit_ratio"
        ],
        "max_dishonest_strategy_proposed_10k": result["proposed_10k"]["max_dishonest_strategy"],
        "runtime_s": round(time.time() - t0, 1),
    }
    # the sweep: {1k, 10k, 100k} requests × {10, 100, 1000} participants × every strategy,
    # under the ledger's rules (everyone votes) and with a vote committee (proposal)
    sweeps = {}
    appeal_name = f"committee_{args.committee}_appeal_bond"
    for name, econ in (
        ("ledger_rules", sweep_mod.Economy()),
        (f"committee_{args.committee}", sweep_mod.Economy(committee=args.committee)),
        (
            appeal_name,
            sweep_mod.Economy(committee=args.committee, appeal=True, accusation_bond=True),
        ),
    ):
        sweeps[name] = sweep_mod.sweep(
            rates, seeds=args.sweep_seeds, epochs=args.sweep_epochs, econ=econ
        )
        print(f"\n== sweep, {name}: worst ratio per strategy (mean over seeds, worst cell) ==")
        print_table(
            [{"strategy": k, "ratio": v} for k, v in sweeps[name]["max_ratio_per_strategy"].items()]
        )
    newcomers = sweep_mod.newcomer_checked_share(samples=60 if args.quick else 400)
    led, com = sweeps["ledger_rules"], sweeps[f"committee_{args.committee}"]
    app = sweeps[appeal_name]
    summary.update(
        {
            "max_dishonest_profit_ratio_all_cells": led["max_dishonest_profit_ratio_all_cells"],
            "worst_cell": led["worst_cell"],
            "max_ratio_per_strategy": led["max_ratio_per_strategy"],
            "honest_profit_vs_peaceful_min": led["honest_profit_vs_peaceful_min"],
            "sybil_profit_ratio_max": led["sybil_profit_ratio_max"],
            # the ledger's rules (the book runs and their sweep); each proposal's apart
            "honest_invalid_count": summary["honest_invalid_count"] + led["honest_invalid_count"],
            f"max_dishonest_profit_ratio_all_cells_committee_{args.committee}": com[
                "max_dishonest_profit_ratio_all_cells"
            ],
            f"max_ratio_per_strategy_committee_{args.committee}": com["max_ratio_per_strategy"],
            f"honest_profit_vs_peaceful_min_committee_{args.committee}": com[
                "honest_profit_vs_peaceful_min"
            ],
            f"honest_invalid_count_committee_{args.committee}": com["honest_invalid_count"],
            # proposal: committee, an appeal to everyone, and a bond on accusations
            f"max_dishonest_profit_ratio_all_cells_{appeal_name}": app[
                "max_dishonest_profit_ratio_all_cells"
            ],
            f"max_ratio_per_strategy_{appeal_name}": app["max_ratio_per_strategy"],
            f"honest_profit_vs_peaceful_min_{appeal_name}": app["honest_profit_vs_peaceful_min"],
            f"honest_invalid_count_{appeal_name}": app["honest_invalid_count"],
            "newcomer_checked_share": newcomers["share"],
            "detection_rates_source": rates.source,
            "detection_tpr": rates.tpr,
            "detection_fpr": rates.fpr,
            "runtime_s": round(time.time() - t0, 1),
        }
    )
    print()
    print_table([{"metric": k, "value": v} for k, v in summary.items()])
    if args.quick:
        return
    path = write_results(
        "economics",
        summary,
        seeds=args.seeds,
        results=result,
        sweep=sweeps,
        newcomers=newcomers,
        detection_rates=rates.__dict__,
    )
    plot(result, RESULTS_DIR / "economics.png")
    sweep_mod.plot(led, RESULTS_DIR / "economics_sweep.png", [com, app])
    print(f"wrote {path}, {RESULTS_DIR / 'economics.png'} and economics_sweep.png")


if __name__ == "__main__":
    main()
