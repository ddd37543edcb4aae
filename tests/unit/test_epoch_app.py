"""Epochs on the real ledger state machine: seeds, PoC claims and verdicts, duty, settlement."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from gonka_ray import crypto, wire
from gonka_ray.config import EpochConfig
from gonka_ray.ledger import epoch_app, inference_app
from gonka_ray.ledger.state import PARTICIPANTS, StateMachine, TxContext
from gonka_ray.protocol import epochs, settlement, validation_sampling, versions
from gonka_ray.protocol.lifecycle import InferenceStatus
from tests.ledger_harness import receipt_fields

KEYS = {f"p{i}": crypto.KeyPair.from_seed(f"epoch-participant-{i}") for i in range(4)}
ADDR = {n: k.address for n, k in KEYS.items()}
NAME = {a: n for n, a in ADDR.items()}
CLIENT = crypto.KeyPair.from_seed("epoch-client")
EPOCH = EpochConfig(
    epoch_blocks=120,
    poc_sprint_blocks=5,
    poc_validation_blocks=5,
    reward_per_epoch=1_000_000,
    weight_cap_share=0.5,
)
APP = inference_app.InferenceAppConfig(price_per_token=2, expiry_blocks=30, vote_blocks=3)
CHAIN = "test"
CFG = epoch_app.EpochAppConfig(epoch=EPOCH, chain_id=CHAIN)


def seed_of(name: str, epoch: int) -> bytes:
    return hashlib.sha256(f"{name}/secret/{epoch}".encode()).digest()


class Chain:
    """Two replicas' state machines with both apps, fed the same blocks."""

    def __init__(self, evidence: wire.EvidenceRuleSpec | None = None) -> None:
        genesis = wire.LedgerGenesis(
            chain_id=CHAIN,
            accounts=(wire.GenesisAccount(CLIENT.address, 1_000_000),),
            participants=tuple(
                wire.GenesisParticipant(k.public_key, n, 100) for n, k in KEYS.items()
            ),
            epoch_evidence=evidence,
        )
        self.sms = [StateMachine(genesis) for _ in range(2)]
        for sm in self.sms:
            epoch_app.install_protocol(sm, APP, CFG)
        self.salts = itertools.count(1 << 40)
        self.requests = itertools.count()

    @property
    def sm(self) -> StateMachine:
        return self.sms[0]

    @property
    def height(self) -> int:
        return self.sm.height

    def tx(self, name: str, msg_cls, **fields) -> bytes:
        return wire.seal(msg_cls(**fields, nonce=next(self.salts)), KEYS[name], CHAIN)

    def block(self, *txs: bytes) -> list[tuple[bool, str]]:
        h = self.sm.height + 1
        block_hash = h.to_bytes(32, "big")
        results = [sm.apply_block(h, block_hash, tuple(txs)) for sm in self.sms]
        assert results[0].state_hash == results[1].state_hash
        return [(r.ok, r.reason) for r in results[0].receipts]

    def until(self, height: int) -> None:
        while self.sm.height < height:
            self.block()

    def view(self) -> epoch_app.EpochView:
        return epoch_app.epoch_view(self.sm, CFG)

    def money(self) -> int:
        sm = self.sm
        balances = sum(v[0] for v in sm.tables.get("account", {}).values())
        recs = [inference_app.inference_record(sm, i) for i in sm.tables.get("inference", {})]
        escrow = sum(r.escrow for r in recs if r.status is InferenceStatus.STARTED)
        fees = sum(p.pending_fees for p in inference_app.participant_records(sm).values())
        return balances + escrow + fees

    def weights(self) -> dict[str, int]:
        return {NAME[a]: int(self.sm.get(PARTICIPANTS, a)[2]) for a in ADDR.values()}

    # --- lifecycle shortcuts -----------------------------------------------------------------

    def client_request(self) -> bytes:
        """A fresh signed chat request from the funded client."""
        req = wire.InferenceRequest(
            model="tiny",
            messages=(wire.ChatMessage("user", "hi"),),
            prompt=None,
            sampling=wire.SamplingSpec(0.7, 1.0, 0, 20, 42, 5, ()),
            timestamp_ms=1,
            nonce=next(self.requests),
            max_escrow=10_000,
        )
        return wire.seal(req, CLIENT, CHAIN)

    def run_inference(
        self, ta: str = "p0", evidence_weight: int = 0, *, ta_prompt_tokens: int = 10
    ) -> tuple[bytes, str]:
        """Start and finish one inference (the executor counts 10 prompt tokens; the TA's Start
        claims ``ta_prompt_tokens``); returns its id and executor name."""
        request = self.client_request()
        iid = inference_app.inference_id_of(request)
        ctx = TxContext(self.sm, height=self.sm.height, block_hash=b"")
        ex = inference_app.book_for(ctx, APP).expected_executor(iid, 0, ADDR[ta])
        start = self.tx(
            ta,
            wire.StartInference,
            request=request,
            executor=ex,
            attempt=0,
            prompt_tokens=ta_prompt_tokens,
            prompt_hash=b"\x01" * 32,
        )
        assert self.block(start) == [(True, "")]
        finish = self.tx(
            NAME[ex],
            wire.FinishInference,
            inference_id=iid,
            prompt_tokens=10,
            completion_tokens=5,
            finish_reason="stop",
            response_hash=b"\x02" * 32,
            artifact_hash=b"\x03" * 32,
            payload_hash=b"\x04" * 32,
            evidence_weight_micro=evidence_weight,
        )
        assert self.block(finish) == [(True, "")]
        return iid, NAME[ex]

    def validate(self, name: str, iid: bytes, passed: bool = True) -> list:
        rec = inference_app.inference_record(self.sm, iid)
        return self.block(
            self.tx(
                name,
                wire.Validation,
                inference_id=iid,
                passed=passed,
                replay_mismatches=0,
                similarity=1.0,
                logprob_deviation=0.0,
                **(
                    receipt_fields(
                        iid, KEYS[name], KEYS[NAME[rec.executor]].public_key, rec.completion_tokens
                    )
                    if rec is not None and passed
                    else {}
                ),
            )
        )

    def required(self, name: str, iid: bytes, epoch: int) -> bool:
        """Whether ``name`` must validate ``iid`` under its secret seed (the ledger's rule)."""
        snap = epoch_app.snapshot_of(self.sm.get, epoch)
        rec = inference_app.inference_record(self.sm, iid)
        return snap.weights.get(ADDR[name], 0) > 0 and validation_sampling.must_check(
            seed=seed_of(name, epoch),
            validator=ADDR[name],
            inference_id=iid,
            executor=rec.executor,
            finish_block_hash=rec.finish_block_hash,
            executor_reputation=snap.reputations.get(rec.executor, 0),
            requests_per_epoch=snap.requests_per_epoch,
            weights=snap.weights,
        )


def commit_all(chain: Chain, epoch: int, names=tuple(KEYS)) -> None:
    txs = [
        chain.tx(
            n,
            wire.SeedCommit,
            epoch=epoch,
            commitment=validation_sampling.seed_commitment(seed_of(n, epoch)),
        )
        for n in names
    ]
    assert chain.block(*txs) == [(True, "")] * len(txs)


def reveal_all(chain: Chain, epoch: int, names=tuple(KEYS)) -> None:
    txs = [chain.tx(n, wire.SeedReveal, epoch=epoch, seed=seed_of(n, epoch)) for n in names]
    assert chain.block(*txs) == [(True, "")] * len(txs)


def prove_compute(chain: Chain, claims: dict[str, list[int]], sampled: int) -> None:
    """Epoch 0's PoC: ``claims`` (name → nonces) in one block, then every other participant
    accepts each claim after the sprint."""
    txs = [chain.tx(n, wire.PocClaim, epoch=0, nonces=k) for n, k in claims.items()]
    assert chain.block(*txs) == [(True, "")] * len(txs)
    chain.until(EPOCH.poc_sprint_blocks)
    verdicts = [
        chain.tx(
            v,
            wire.PocVerdict,
            epoch=0,
            participant=ADDR[c],
            accepted=True,
            sampled=sampled,
            failed=0,
        )
        for c in claims
        for v in KEYS
        if v != c
    ]
    assert all(ok for ok, _ in chain.block(*verdicts))


def test_seed_commit_window_and_once_per_epoch() -> None:
    chain = Chain()
    commit = chain.tx("p1", wire.SeedCommit, epoch=1, commitment=b"\x07" * 32)
    again = chain.tx("p1", wire.SeedCommit, epoch=1, commitment=b"\x08" * 32)
    stranger = crypto.KeyPair.from_seed("stranger")
    outsider = wire.seal(
        wire.SeedCommit(epoch=1, commitment=b"\x07" * 32, nonce=0), stranger, CHAIN
    )
    assert chain.block(commit, again, outsider) == [
        (True, ""),
        (False, "duplicate"),
        (False, "not_participant"),
    ]
    # epoch 0's window (the genesis epoch's only) closes when its sprint ends
    chain.until(EPOCH.poc_sprint_blocks)
    late = chain.tx("p2", wire.SeedCommit, epoch=0, commitment=b"\x07" * 32)
    assert chain.block(late) == [(False, "commit_window_closed")]
    # any later epoch's closes when it starts, even in its sprint: no grinding a seed against
    # inferences of that epoch already started or finished
    chain.until(EPOCH.epoch_blocks)
    assert chain.block(chain.tx("p2", wire.SeedCommit, epoch=1, commitment=b"\x07" * 32)) == [
        (False, "commit_window_closed")
    ]
    assert chain.block(chain.tx("p2", wire.SeedCommit, epoch=2, commitment=b"\x07" * 32)) == [
        (True, "")
    ]


def test_reveal_must_match_and_come_in_the_next_epoch() -> None:
    chain = Chain()
    commit_all(chain, 0, ["p1"])
    early = chain.tx("p1", wire.SeedReveal, epoch=0, seed=seed_of("p1", 0))
    assert chain.block(early) == [(False, "not_reveal_epoch")]
    chain.until(epochs.epoch_start(1, EPOCH) - 1)
    wrong = chain.tx("p1", wire.SeedReveal, epoch=0, seed=seed_of("p2", 0))
    right = chain.tx("p1", wire.SeedReveal, epoch=0, seed=seed_of("p1", 0))
    nothing = chain.tx("p2", wire.SeedReveal, epoch=0, seed=seed_of("p2", 0))
    assert chain.block(wrong, right, nothing) == [
        (False, "reveal_mismatch"),
        (True, ""),
        (False, "reveal_mismatch"),
    ]


def test_poc_claims_and_verdicts_set_the_next_weights() -> None:
    chain = Chain()
    claims = {"p0": range(0, 300), "p1": range(1000, 1200), "p2": range(5000, 5100)}
    txs = [chain.tx(n, wire.PocClaim, epoch=0, nonces=list(r)) for n, r in claims.items()]
    txs.append(chain.tx("p3", wire.PocClaim, epoch=0, nonces=[7, 7]))
    assert chain.block(*txs) == [(True, "")] * 3 + [(False, "duplicate_nonce")]
    assert chain.block(
        chain.tx("p3", wire.PocClaim, epoch=0, nonces=list(range(10**6, 10**6 + 900)))
    )[0] == (True, "")
    assert chain.view().claims == {
        ADDR["p0"]: 300,
        ADDR["p1"]: 200,
        ADDR["p2"]: 100,
        ADDR["p3"]: 900,
    }
    early = chain.tx(
        "p1", wire.PocVerdict, epoch=0, participant=ADDR["p0"], accepted=True, sampled=100, failed=0
    )
    assert chain.block(early) == [(False, "not_poc_validation")]
    chain.until(EPOCH.poc_sprint_blocks)
    late_claim = chain.tx("p0", wire.PocClaim, epoch=0, nonces=[1])
    assert chain.block(late_claim) == [(False, "not_poc_sprint")]

    def verdict(judge: str, claimant: str, ok: bool) -> bytes:
        return chain.tx(
            judge,
            wire.PocVerdict,
            epoch=0,
            participant=ADDR[claimant],
            accepted=ok,
            sampled=100,
            failed=0 if ok else 60,
        )

    txs = []
    for claimant in KEYS:
        for judge in KEYS:
            if judge != claimant:
                txs.append(verdict(judge, claimant, claimant != "p3" or judge == "p0"))
    txs.append(verdict("p1", "p1", True))  # own claim
    txs.append(verdict("p1", "p0", True))  # twice
    got = chain.block(*txs)
    assert got[:-2] == [(True, "")] * 12
    assert got[-2:] == [(False, "own_claim"), (False, "duplicate")]
    # p3's inflated claim: one of three judges accepted it -> rejected
    chain.until(epochs.epoch_start(1, EPOCH))
    assert chain.weights() == {"p0": 300, "p1": 200, "p2": 100, "p3": 0}
    assert {NAME[a]: w for a, w in chain.sm.tables["validator"].items()} == {
        "p0": 300,
        "p1": 200,
        "p2": 100,
    }
    assert chain.view().epoch == 1 and chain.view().weights[ADDR["p0"]] == 300
    # claims and verdicts are pruned once decided
    assert not chain.sm.tables.get(epoch_app.POC_CLAIMS)
    assert not chain.sm.tables.get(epoch_app.POC_VERDICTS)


def test_no_poc_carries_weights_over() -> None:
    chain = Chain()
    chain.until(epochs.epoch_start(2, EPOCH))
    assert chain.weights() == {n: 100 for n in KEYS}
    assert epoch_app.settlement_summary(chain.sm, 1) is None  # settled at the end of epoch 2
    s = epoch_app.settlement_summary(chain.sm, 0)
    assert s is not None and s.minted == EPOCH.reward_per_epoch
    assert s.burned == EPOCH.reward_per_epoch  # nobody committed a seed: every claim void


def test_settlement_pays_fees_and_mint_burns_forfeits_and_conserves_supply() -> None:
    chain = Chain()
    commit_all(chain, 0, ["p0", "p1", "p2"])  # p3 never commits: it forfeits its mint
    before = chain.money()
    done = []
    for i in range(12):
        iid, ex = chain.run_inference(ta=f"p{i % 4}")
        done.append((iid, ex))
    checks = 0
    for iid, ex in done:
        for judge in ("p0", "p1", "p2"):
            if judge != ex and chain.required(judge, iid, 0):
                assert chain.validate(judge, iid) == [(True, "")]
                checks += 1
    assert checks > 0
    chain.until(epochs.epoch_start(1, EPOCH))
    assert epoch_app.settlement_summary(chain.sm, 0) is None  # one epoch to check before pay
    reveal_all(chain, 0, ["p0", "p1", "p2"])
    chain.until(epochs.epoch_start(2, EPOCH))
    s = epoch_app.settlement_summary(chain.sm, 0)
    rows = {NAME[r.address]: r for r in s.rows}
    assert s.minted == EPOCH.reward_per_epoch
    for n in ("p0", "p1", "p2"):
        assert rows[n].duty_met and rows[n].required_checks == rows[n].done_checks
        assert rows[n].mint == EPOCH.reward_per_epoch // 4
    assert not rows["p3"].duty_met and rows["p3"].mint == 0
    fees = sum(r.executor_fees + r.validator_fees for r in s.rows)
    assert fees == sum(inference_app.inference_record(chain.sm, i).cost for i, _ in done)
    assert s.settled == 12 and s.held == 0
    # supply: everything that was there, plus the mint, minus the burn
    assert chain.money() == before + s.minted - s.burned
    assert not chain.sm.tables.get(inference_app.UNSETTLED)
    # a settled inference takes no more validations: its money is gone
    iid, ex = done[0]
    judge = next(n for n in ("p0", "p1", "p2") if n != ex)
    rec = inference_app.inference_record(chain.sm, iid)
    assert rec.settled
    if judge not in rec.validations:
        assert chain.validate(judge, iid, passed=False) == [(False, "settled")]


def test_a_validator_that_skips_its_checks_forfeits() -> None:
    chain = Chain()
    commit_all(chain, 0)
    done = [chain.run_inference(ta=f"p{i % 4}") for i in range(16)]
    for iid, ex in done:
        for judge in ("p0", "p1", "p2"):  # p3 is lazy
            if judge != ex and chain.required(judge, iid, 0):
                chain.validate(judge, iid)
    chain.until(epochs.epoch_start(1, EPOCH))
    reveal_all(chain, 0)
    chain.until(epochs.epoch_start(2, EPOCH))
    rows = {NAME[r.address]: r for r in epoch_app.settlement_summary(chain.sm, 0).rows}
    assert rows["p3"].required_checks > 3 and rows["p3"].done_checks == 0
    assert not rows["p3"].duty_met and rows["p3"].mint == 0
    assert rows["p0"].duty_met and rows["p0"].mint > 0


def test_invalid_executor_is_paid_nothing_and_leaves_the_next_group() -> None:
    chain = Chain()
    commit_all(chain, 0)
    before = chain.money()
    cheats = []
    while len(cheats) < 5:  # five invalidations in a row make p3 INVALID (fpr 0.05)
        iid, ex = chain.run_inference(ta=f"p{len(cheats) % 3}")
        if ex != "p3":
            continue
        assert chain.validate("p0", iid, passed=False) == [(True, "")]
        for voter in ("p1", "p2"):
            chain.block(chain.tx(voter, wire.Vote, inference_id=iid, valid=False))
        assert inference_app.inference_record(chain.sm, iid).status is InferenceStatus.INVALIDATED
        cheats.append(iid)
    assert inference_app.participant_record(chain.sm, ADDR["p3"]).status == "INVALID"
    chain.until(epochs.epoch_start(1, EPOCH))
    assert chain.weights()["p3"] == 0  # out of epoch 1's group
    for i in range(6):  # nobody draws p3 in epoch 1
        _, ex = chain.run_inference(ta=f"p{i % 3}")
        assert ex != "p3"
    reveal_all(chain, 0)
    chain.until(epochs.epoch_start(2, EPOCH))
    s = epoch_app.settlement_summary(chain.sm, 0)
    rows = {NAME[r.address]: r for r in s.rows}
    assert rows["p3"].invalid and rows["p3"].paid == 0
    assert chain.money() == before + s.minted - s.burned


def test_one_invalidated_inference_forfeits_the_epoch_on_the_ledger() -> None:
    chain = Chain()
    commit_all(chain, 0)
    before = chain.money()
    weights0 = chain.weights()
    served = []
    while sum(ex == "p3" for _, ex in served) < 3:
        served.append(chain.run_inference(ta=f"p{len(served) % 3}"))
    caught = next(i for i, ex in served if ex == "p3")
    assert chain.validate("p0", caught, passed=False) == [(True, "")]
    for voter in ("p1", "p2"):
        chain.block(chain.tx(voter, wire.Vote, inference_id=caught, valid=False))
    assert inference_app.inference_record(chain.sm, caught).status is InferenceStatus.INVALIDATED
    assert inference_app.participant_record(chain.sm, ADDR["p3"]).status != "INVALID"
    chain.until(epochs.epoch_start(1, EPOCH))
    reveal_all(chain, 0)
    chain.until(epochs.epoch_start(2, EPOCH))
    rows = {NAME[r.address]: r for r in epoch_app.settlement_summary(chain.sm, 0).rows}
    assert rows["p3"].forfeited and not rows["p3"].invalid and rows["p3"].paid == 0
    s = epoch_app.settlement_summary(chain.sm, 0)
    assert chain.money() == before + s.minted - s.burned
    # v3: it also sits out the next epochs, then is back; v4: enough of them to forgo 16
    # inferences' worth of income at epoch 0's traffic (p3's share of it)
    finished = sum(
        1
        for iid, _ in served
        if epochs.epoch_of(inference_app.inference_record(chain.sm, iid).finish_height, EPOCH) == 0
    )
    sit_out = settlement.sit_out_epochs(
        versions.CURRENT, finished, weights0["p3"], sum(weights0.values())
    )
    assert sit_out > versions.CURRENT.caught_sit_out_epochs  # ~2.5 inferences each: 12 epochs
    for e in range(2, 2 + sit_out):
        chain.until(epochs.epoch_start(e, EPOCH))
        assert chain.weights()["p3"] == 0 and chain.weights()["p1"] > 0, e
    assert chain.sm.get(epoch_app.SIT_OUT, ADDR["p3"]) == 1 + sit_out
    chain.until(epochs.epoch_start(2 + sit_out, EPOCH))
    # its time is up: from here its PoC claims count again (weights carry over without PoC)
    assert chain.sm.get(epoch_app.SIT_OUT, ADDR["p3"]) is None


def test_vote_in_progress_is_held_to_the_next_settlement() -> None:
    chain = Chain()
    iid, ex = chain.run_inference()
    judge = next(n for n in KEYS if n != ex)
    chain.until(epochs.epoch_start(2, EPOCH) - 2)
    chain.validate(judge, iid, passed=False)  # opens a vote (3 blocks) over epoch 0's settlement
    chain.until(epochs.epoch_start(2, EPOCH))
    s0 = epoch_app.settlement_summary(chain.sm, 0)
    assert s0.held == 1 and iid in chain.sm.tables[inference_app.UNSETTLED]
    chain.until(epochs.epoch_start(3, EPOCH))
    assert iid not in chain.sm.tables.get(inference_app.UNSETTLED, {})
    assert epoch_app.settlement_summary(chain.sm, 1).settled == 1


@pytest.mark.parametrize("height", [0, 119, 120, 239])
def test_epoch_seed_is_public_and_fixed_by_the_previous_epochs_last_block(height: int) -> None:
    chain = Chain()
    chain.until(max(1, height))
    e = chain.view().epoch  # of the next height
    seed = chain.view().seed
    assert seed is not None and len(seed) == 32
    if e > 0:
        source = epochs.epoch_start(e, EPOCH) - 1
        assert seed == epochs.epoch_seed(e, source.to_bytes(32, "big"), "test")


def test_a_validator_whose_weight_drops_still_owes_and_may_do_last_epochs_checks() -> None:
    chain = Chain()
    iid, ex = chain.run_inference()
    judge = next(n for n in KEYS if n != ex)
    others = [n for n in KEYS if n != judge]
    # only the others prove compute in epoch 0: the judge has no weight in epoch 1
    prove_compute(chain, {n: [1, 2, 3] for n in others}, sampled=3)
    chain.until(epochs.epoch_start(1, EPOCH))
    assert chain.weights()[judge] == 0
    assert chain.validate(judge, iid) == [(True, "")]  # epoch 0's check, credited in epoch 1
    later, ex2 = chain.run_inference(ta=others[0])
    if ex2 != judge:
        assert chain.validate(judge, later) == [(False, "not_participant")]


def test_a_claim_nobody_judged_keeps_at_most_the_current_weight() -> None:
    chain = Chain()
    txs = [
        chain.tx("p0", wire.PocClaim, epoch=0, nonces=list(range(500))),
        chain.tx("p1", wire.PocClaim, epoch=0, nonces=list(range(50))),
        chain.tx("p2", wire.PocClaim, epoch=0, nonces=list(range(80))),
    ]
    assert chain.block(*txs) == [(True, "")] * 3
    chain.until(EPOCH.poc_sprint_blocks)
    # only p2's claim is judged (and accepted); p0's and p1's get no verdict at all
    judged = [
        chain.tx(
            v, wire.PocVerdict, epoch=0, participant=ADDR["p2"], accepted=True, sampled=80, failed=0
        )
        for v in ("p0", "p1", "p3")
    ]
    assert chain.block(*judged) == [(True, "")] * 3
    chain.until(epochs.epoch_start(1, EPOCH))
    w = chain.weights()
    assert w["p2"] == 80  # judged: its count
    assert w["p0"] == 100 and w["p1"] == 50  # unjudged: min(claimed, current weight 100)
    assert w["p3"] == 0  # no claim at all


def test_a_start_just_after_the_boundary_may_name_the_previous_epochs_draw() -> None:
    from gonka_ray.protocol.selection import eligible_weights, select_executor

    chain = Chain()
    claims = {"p0": 300, "p1": 200, "p2": 100}  # p3 makes no claim: weight 0 in epoch 1
    prove_compute(chain, {n: list(range(k)) for n, k in claims.items()}, sampled=9)
    old = epoch_app.snapshot_of(chain.sm.get, 0).weights
    chain.until(epochs.epoch_start(1, EPOCH))
    new = {ADDR[n]: w for n, w in chain.weights().items()}
    assert old != new

    def request_whose_draws_differ():
        while True:
            env = chain.client_request()
            iid = inference_app.inference_id_of(env)
            before = select_executor(
                iid, 0, {a: w for a, w in old.items() if w}, exclude={ADDR["p0"]}
            )
            now = select_executor(iid, 0, {a: w for a, w in new.items() if w}, exclude={ADDR["p0"]})
            if before != now:
                return env, before

    def start(env, executor):
        return chain.tx(
            "p0",
            wire.StartInference,
            request=env,
            executor=executor,
            attempt=0,
            prompt_tokens=10,
            prompt_hash=b"\x01" * 32,
        )

    env, stale = request_whose_draws_differ()
    assert chain.block(start(env, stale)) == [(True, "")]  # within the grace window
    chain.until(epochs.epoch_start(1, EPOCH) + inference_app.InferenceAppConfig().draw_grace_blocks)
    env, stale = request_whose_draws_differ()
    assert chain.block(start(env, stale)) == [(False, "wrong_executor")]
    assert eligible_weights  # imported for the draw's definition of who may be drawn


def test_gonka_errors_survive_pickling_with_their_fields() -> None:
    import pickle

    from gonka_ray.exceptions import Overloaded, TxRejected

    e = pickle.loads(pickle.dumps(TxRejected("refused", reason="wrong_executor")))
    assert isinstance(e, TxRejected) and e.reason == "wrong_executor" and e.message == "refused"
    o = pickle.loads(pickle.dumps(Overloaded("busy", retry_after_s=2.5)))
    assert o.retry_after_s == 2.5 and o.to_dict()["code"] == Overloaded.code


RULE = wire.EvidenceRuleSpec(mu=0.03, kappa=0.002, z=3.09, safety=1.2, min_inferences=3, trim=0.3)
WEIGHT = 2_500_000  # Σ w over the 5 output tokens, in millionths


def _executor_key(chain: Chain, iid: bytes) -> bytes:
    return KEYS[NAME[inference_app.inference_record(chain.sm, iid).executor]].public_key


def _evidence_validation(chain: Chain, judge: str, iid: bytes, ratio: float) -> list:
    return chain.block(
        chain.tx(
            judge,
            wire.Validation,
            inference_id=iid,
            passed=True,
            replay_mismatches=0,
            similarity=1.0,
            logprob_deviation=0.0,
            evidence_excess_micro=int(ratio * WEIGHT),
            **receipt_fields(iid, KEYS[judge], _executor_key(chain, iid), 5),
        )
    )


def test_epoch_evidence_convicts_an_executor_whose_required_checks_show_inflated_noise() -> None:
    """Half precision: every output passes its own check, but the epoch's pooled evidence about
    p1 (ratio 0.05 against the genesis rule's μ 0.03) convicts it at settlement — its fees go
    back to the client, its mint burns and it sits out the next epoch — while a validator that
    was not required to check p2's work cannot frame it with absurd evidence."""
    chain = Chain(evidence=RULE)
    commit_all(chain, 0)
    done = [chain.run_inference(ta=f"p{i % 4}", evidence_weight=WEIGHT) for i in range(40)]
    counted: dict[str, int] = {}
    framed = 0
    for iid, ex in done:
        for judge in KEYS:
            if judge == ex:
                continue
            if chain.required(judge, iid, 0):
                ratio = 0.05 if ex == "p1" else 0.03
                assert _evidence_validation(chain, judge, iid, ratio) == [(True, "")]
                counted[ex] = counted.get(ex, 0) + 1
            elif ex == "p2" and judge == "p3" and framed < 5:
                assert _evidence_validation(chain, judge, iid, 50.0) == [(True, "")]
                framed += 1
    assert counted.get("p1", 0) >= RULE.min_inferences and framed > 0  # preconditions
    paid_before = chain.sm.balance(CLIENT.address)
    chain.until(epochs.epoch_start(1, EPOCH))
    reveal_all(chain, 0)
    chain.until(epochs.epoch_start(2, EPOCH))
    verdicts = {NAME[k[1]]: v for k, v in chain.sm.tables[epoch_app.EPOCH_EVIDENCE].items()}
    assert verdicts["p1"][4] is True and verdicts["p1"][0] > 0.04
    assert verdicts["p2"][4] is False  # p3's unrequired 50.0 did not count
    s = epoch_app.settlement_summary(chain.sm, 0)
    rows = {NAME[r.address]: r for r in s.rows}
    assert rows["p1"].invalid and rows["p1"].mint == 0 and rows["p1"].executor_fees == 0
    assert not rows["p2"].invalid and rows["p2"].mint > 0
    p1_cost = sum(inference_app.inference_record(chain.sm, i).cost for i, e in done if e == "p1")
    assert chain.sm.balance(CLIENT.address) - paid_before == p1_cost  # refunded
    assert chain.weights()["p1"] == 0  # sits out epoch 2
    assert not chain.sm.tables.get(inference_app.EVIDENCE)  # pruned once settled


def test_without_a_genesis_rule_evidence_convicts_nobody() -> None:
    chain = Chain()
    commit_all(chain, 0)
    for _ in range(12):
        iid, ex = chain.run_inference(evidence_weight=WEIGHT)
        for judge in KEYS:
            if judge != ex and chain.required(judge, iid, 0):
                assert _evidence_validation(chain, judge, iid, 5.0) == [(True, "")]
    chain.until(epochs.epoch_start(1, EPOCH))
    reveal_all(chain, 0)
    chain.until(epochs.epoch_start(2, EPOCH))
    rows = epoch_app.settlement_summary(chain.sm, 0).rows
    assert not any(r.invalid for r in rows)
    assert not chain.sm.tables.get(epoch_app.EPOCH_EVIDENCE)


def test_an_evidence_weight_above_one_per_token_is_refused() -> None:
    chain = Chain()
    request = chain.client_request()
    iid = inference_app.inference_id_of(request)
    ctx = TxContext(chain.sm, height=chain.sm.height, block_hash=b"")
    ex = inference_app.book_for(ctx, APP).expected_executor(iid, 0, ADDR["p0"])
    start = chain.tx(
        "p0",
        wire.StartInference,
        request=request,
        executor=ex,
        attempt=0,
        prompt_tokens=10,
        prompt_hash=b"\x01" * 32,
    )
    assert chain.block(start) == [(True, "")]
    finish = chain.tx(
        NAME[ex],
        wire.FinishInference,
        inference_id=iid,
        prompt_tokens=10,
        completion_tokens=5,
        finish_reason="stop",
        response_hash=b"\x02" * 32,
        artifact_hash=b"\x03" * 32,
        payload_hash=b"\x04" * 32,
        evidence_weight_micro=5_000_001,  # 5 tokens weigh at most 5.0
    )
    assert chain.block(finish) == [(False, "bad_evidence")]
