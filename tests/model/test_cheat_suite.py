"""Every cheat fails verification, each caught by the check that should catch it, and honest
work under batch variation passes — on the tiny model, through the real executor/verifier path.

The cheater gets almost all the weight so the executor draw lands on it; verifiers run the honest
model in float32 with the shipped thresholds.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from gonka_ray import crypto, wire
from gonka_ray.actors.executor import Executor
from gonka_ray.actors.ledger_port import LocalLedger
from gonka_ray.actors.mlnode import MLNode
from gonka_ray.actors.payload_store import PayloadStore
from gonka_ray.actors.role import RoleContext
from gonka_ray.actors.transport import TransportAgent
from gonka_ray.actors.verifier import Verifier
from gonka_ray.adversary.actors import CheatingExecutor
from gonka_ray.adversary.cheats import cheat_model
from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.models import truncate_layers
from gonka_ray.engine.transformers_engine import TransformersEngine
from gonka_ray.ledger.inference_app import InferenceAppConfig

CHAIN = "cheats"
NOW = 1_800_000_000.0
MODEL = "tiny-llama"
CFG = EngineConfig(kind="transformers", max_batch_size=8)


@pytest.fixture(scope="module")
def honest_engine() -> TransformersEngine:
    return TransformersEngine(ModelConfig(name=MODEL), CFG)


def cheap_engine(kind: str) -> TransformersEngine:
    engine = TransformersEngine(ModelConfig(name=MODEL), CFG)
    # NOTE: the tiny model has 2 layers, so "truncated" drops one of them.
    engine.model = (
        truncate_layers(engine.model, 1) if kind == "truncate" else cheat_model(engine.model, kind)
    )
    return engine


async def run_cheat(tmp_path, honest_engine, *, executor_kw=None, cheater_engine=None, requests=4):
    keys = {f"p{i}": crypto.KeyPair.from_seed(f"cheat-suite-{i}") for i in range(4)}
    client = crypto.KeyPair.from_seed("cheat-suite-client")
    weights = {"p0": 10, "p1": 10, "p2": 10, "p3": 100_000}
    genesis = wire.LedgerGenesis(
        chain_id=CHAIN,
        accounts=(wire.GenesisAccount(client.address, 10**9),),
        participants=tuple(
            wire.GenesisParticipant(k.public_key, n, weights[n]) for n, k in keys.items()
        ),
    )
    ledger = LocalLedger(
        genesis, InferenceAppConfig(price_per_token=1, expiry_blocks=10_000, vote_blocks=10_000)
    )
    honest = MLNode(engine=honest_engine)
    by_addr, verifiers = {}, []
    for i, (name, key) in enumerate(keys.items()):
        store, rng = PayloadStore(tmp_path / f"{name}.db"), random.Random(i)
        ctx = RoleContext(
            participant=name, key=key, ledger=ledger, engine=honest, model=MODEL, clock=lambda: NOW
        )
        if name == "p3":
            kw = dict(executor_kw or {})
            if cheater_engine is not None:
                ctx = replace(ctx, engine=MLNode(engine=cheater_engine))
            cls = CheatingExecutor if "kind" in kw else Executor
            by_addr[key.address] = cls(ctx, store=store, rng=rng, **kw)
        else:
            by_addr[key.address] = Executor(ctx, store=store, rng=rng)
        verifiers.append(
            Verifier(
                replace(ctx, engine=honest),
                executors=by_addr.__getitem__,
                epoch_seed=bytes([i + 1]) * 32,
                rng=random.Random(50 + i),
                # the clock stands still here: a withheld payload is a verdict at once (the
                # fetch window's end is tested in test_exploits)
                fetch_window_s=0,
            )
        )
    ta = TransportAgent(
        RoleContext(
            participant="p0",
            key=keys["p0"],
            ledger=ledger,
            engine=honest,
            model=MODEL,
            clock=lambda: NOW,
        ),
        executors=by_addr.__getitem__,
        price_per_token=1,
        rng=random.Random(99),
    )

    async def one(i: int):
        req = wire.InferenceRequest(
            model=MODEL,
            messages=(wire.ChatMessage("user", f"Tell me about topic {i}."),),
            prompt=None,
            sampling=wire.SamplingSpec(0.8, 1.0, 0, 16, 7000 + i, 5, ()),
            timestamp_ms=int(NOW * 1000),
            nonce=i,
            max_escrow=10**6,
        )
        return [wire.decode(b) async for b in ta.submit(wire.seal(req, client, CHAIN))][-1]

    # concurrent requests: the honest engine batches them (honest variation: batch composition)
    done = await asyncio.gather(*[one(i) for i in range(requests)])
    await ta.drain()
    for ex in by_addr.values():
        await ex.drain()
    for _ in range(3):
        for v in verifiers:
            await v.run_once()
    verdicts = {}
    for v in verifiers:
        for iid, (verdict, _result) in v.results.items():
            verdicts.setdefault(iid, []).append(verdict)
    cheater = keys["p3"].address
    return [(d, verdicts.get(d.inference_id, [])) for d in done if d.executor == cheater]


def assert_caught(outcomes, check: str) -> None:
    checked = [(d, vs) for d, vs in outcomes if vs]
    assert checked, "no cheater inference was checked"
    for _d, vs in checked:
        assert all(not v.passed for v in vs), [v.reason for v in vs]
        assert all(v.reason.startswith(check) for v in vs), [v.reason for v in vs]


async def test_honest_executor_passes_under_batching(tmp_path, honest_engine) -> None:
    outcomes = await run_cheat(tmp_path, honest_engine, requests=6)
    checked = [vs for _, vs in outcomes if vs]
    assert checked and all(v.passed for vs in checked for v in vs)


@pytest.mark.parametrize(
    ("kind", "check"), [("int8", "logprobs"), ("int4", "replay"), ("truncate", "replay")]
)
async def test_model_cheats(tmp_path, honest_engine, kind, check) -> None:
    outcomes = await run_cheat(tmp_path, honest_engine, cheater_engine=cheap_engine(kind))
    checked = [(d, vs) for d, vs in outcomes if vs]
    assert checked and all(not v.passed for _, vs in checked for v in vs)
    if kind == "int8":  # int8 keeps most tokens but not the logprobs: the excess alone fails it
        for _d, vs in checked:
            assert all(v.reason.startswith(("logprobs", "replay")) for v in vs)


@pytest.mark.parametrize("kind", ["wrong_temperature", "greedy", "ignore_seed"])
async def test_sampling_cheats_fail_replay(tmp_path, honest_engine, kind) -> None:
    outcomes = await run_cheat(tmp_path, honest_engine, executor_kw={"kind": kind})
    assert_caught(outcomes, "replay")


async def test_laundering_fails_replay(tmp_path, honest_engine) -> None:
    outcomes = await run_cheat(
        tmp_path,
        honest_engine,
        executor_kw={"kind": "launder", "cheap_engine": MLNode(engine=cheap_engine("truncate"))},
    )
    assert_caught(outcomes, "replay")


async def test_replaced_token_fails(tmp_path, honest_engine) -> None:
    outcomes = await run_cheat(tmp_path, honest_engine, executor_kw={"kind": "replace_1_in_64"})
    checked = [(d, vs) for d, vs in outcomes if vs]
    assert checked and all(not v.passed for _, vs in checked for v in vs)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"kind": "drop_system", "system_tokens": 5}, "structural: prompt"),
        ({"kind": "truncate_output"}, "structural: finish reason"),
        ({"kind": "withhold_payload"}, "structural: payload unavailable"),
        ({"kind": "inflate_evidence_weight"}, "structural: evidence weight"),
    ],
)
async def test_structural_cheats(tmp_path, honest_engine, kw, needle) -> None:
    outcomes = await run_cheat(tmp_path, honest_engine, executor_kw=kw)
    assert_caught(outcomes, needle)
