"""Participants' epoch duties against the real state machine (in process, FakeEngine MLNode):
PoC sprints become claims, claims get verdicts, an inflated claim earns nothing, seeds are
committed and revealed (one epoch later), and the next epoch's weights follow the compute each
participant did."""

from __future__ import annotations

import asyncio
import hashlib
import random

from gonka_ray import crypto, wire
from gonka_ray.actors.epoch_worker import EpochWorker, PocSettings
from gonka_ray.actors.ledger_port import LocalLedger
from gonka_ray.actors.mlnode import MLNode
from gonka_ray.actors.role import RoleContext
from gonka_ray.config import EngineConfig, EpochConfig, ModelConfig
from gonka_ray.engine.fake import FakeEngine
from gonka_ray.ledger import epoch_app
from gonka_ray.ledger.inference_app import InferenceAppConfig
from gonka_ray.ledger.state import PARTICIPANTS
from gonka_ray.protocol import epochs

EPOCH = EpochConfig(
    epoch_blocks=60,
    poc_sprint_blocks=12,
    poc_validation_blocks=12,
    weight_cap_share=0.6,
    poc_difficulty=0.05,
    poc_calibration_nonces=1024,
    reward_per_epoch=1_000,
)
NONCES = {"p0": 1024, "p1": 512, "p2": 256, "p3": 256}


class InflatingEpochWorker(EpochWorker):
    """ADVERSARIAL: claims 400 made-up nonces on top of the ones it really found."""

    async def _sprint(self, view):
        real = await self.engine.poc_sprint(
            view.seed, self.address, **self._poc_kw(), budget_s=60, max_nonces=256
        )
        fake = [10**9 + i for i in range(400)]
        self._tried.add(("claim", view.epoch, None))
        ok = await self._submit(
            wire.PocClaim(epoch=view.epoch, nonces=list(real.nonces) + fake, nonce=0)
        )
        return [f"claim:{view.epoch}"] if ok else []


def test_epoch_duties_turn_compute_into_next_epoch_weight() -> None:
    keys = {n: crypto.KeyPair.from_seed(f"epoch-worker-{n}") for n in NONCES}
    genesis = wire.LedgerGenesis(
        chain_id="epochs",
        accounts=(),
        participants=tuple(wire.GenesisParticipant(k.public_key, n, 100) for n, k in keys.items()),
    )
    ledger = LocalLedger(
        genesis,
        InferenceAppConfig(expiry_blocks=50),
        epoch=epoch_app.EpochAppConfig(epoch=EPOCH, chain_id="epochs"),
    )
    # one MLNode shared by all (the PoC model is built once per seed); the clock says 10 s per
    # block, so each sprint is bounded by its nonce cap, not by this machine's speed. Every
    # submission wave cuts a block (LocalLedger), so phases are long enough for a few waves.
    node = MLNode(engine=FakeEngine(ModelConfig(name="fake"), EngineConfig(kind="fake")))
    workers = {}
    for name, key in keys.items():
        cls = InflatingEpochWorker if name == "p3" else EpochWorker
        workers[name] = cls(
            RoleContext(
                participant=name,
                key=key,
                ledger=ledger,
                engine=node,
                model="fake",
            ),
            seed_for=lambda e, n=name: hashlib.sha256(f"{n}/{e}".encode()).digest(),
            epochs=EPOCH,
            poc=PocSettings(max_budget_s=60, max_nonces=NONCES[name]),
            rng=random.Random(name),
            monotonic=lambda: ledger.sm.height * 10.0,
        )

    async def drive() -> list[str]:
        log = []
        while ledger.sm.height < epochs.epoch_start(2, EPOCH) + 1:
            # concurrent, like separate actors: their submissions share blocks
            for done in await asyncio.gather(*(w.run_once() for w in workers.values())):
                log += done
            ledger.cut_block()
        return log

    log = asyncio.run(drive())
    assert {x.split(":")[0] for x in log} >= {"commit", "claim", "verdict", "reveal"}
    # epoch 1's weights came from epoch 0's PoC; epoch 2's from epoch 1's (same caps)
    weights = {n: int(ledger.sm.get(PARTICIPANTS, k.address)[2]) for n, k in keys.items()}
    assert weights["p3"] == 0  # the inflated claim failed its sampled recomputation
    # honest weights follow the nonces tried: 5% of them pass, ± noise
    for n in ("p0", "p1", "p2"):
        assert (
            abs(weights[n] - NONCES[n] * EPOCH.poc_difficulty)
            < 4 * (NONCES[n] * EPOCH.poc_difficulty) ** 0.5 + 2
        ), weights
    assert weights["p0"] > weights["p1"] > weights["p2"] > 0
    s = epoch_app.settlement_summary(ledger.sm, 0)  # settled at the end of epoch 1
    assert s is not None and all(r.duty_met for r in s.rows)  # everyone revealed in time
    assert sum(r.mint for r in s.rows) == EPOCH.reward_per_epoch
