"""Four participants wired in one process (FakeEngine: protocol only): a LocalLedger (the real
state machine without replication) and, per participant, an MLNode, an executor, a transport agent
and a verifier, as plain classes called directly. Shared by the in-process flow, TA and exploit
tests."""

from __future__ import annotations

import random

from gonka_ray import crypto, wire
from gonka_ray.actors.executor import Executor
from gonka_ray.actors.ledger_port import LocalLedger
from gonka_ray.actors.mlnode import MLNode
from gonka_ray.actors.payload_store import PayloadStore
from gonka_ray.actors.role import RoleContext
from gonka_ray.actors.transport import TransportAgent
from gonka_ray.actors.verifier import Verifier
from gonka_ray.adversary.actors import (
    CheatingExecutor,
    GarbageBoxVerifier,
    InflatingTransportAgent,
    LyingAuditor,
    RubberStampVerifier,
)
from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.constants import PAYLOAD_FETCH_WINDOW_S
from gonka_ray.engine.fake import FakeEngine
from gonka_ray.ledger.inference_app import InferenceAppConfig

CHAIN = "inproc"
VERIFIER_KINDS = {
    "rubber_stamp": RubberStampVerifier,
    "garbage_box": GarbageBoxVerifier,
    "lying_auditor": LyingAuditor,
}
NOW = 1_800_000_000.0
MODEL = "fake"


class Net:
    def __init__(
        self,
        tmp_path,
        *,
        cheater: str | None = None,
        withhold: str | None = None,
        inflating_ta: str | None = None,
        verifiers: dict[str, str] | None = None,
        client_balance: int = 1_000_000,
        fetch_window_s: float = PAYLOAD_FETCH_WINDOW_S,
    ) -> None:
        """``fetch_window_s``: the verifiers' (one fixed clock here: a window > 0 never ends)."""
        self.now = NOW  # every role's clock (a test may move it)
        self.keys = {f"p{i}": crypto.KeyPair.from_seed(f"inproc-{i}") for i in range(4)}
        self.client = crypto.KeyPair.from_seed("inproc-client")
        genesis = wire.LedgerGenesis(
            chain_id=CHAIN,
            accounts=(wire.GenesisAccount(self.client.address, client_balance),),
            participants=tuple(
                wire.GenesisParticipant(k.public_key, n, 100) for n, k in self.keys.items()
            ),
        )
        self.ledger = LocalLedger(
            genesis, InferenceAppConfig(price_per_token=1, expiry_blocks=50, vote_blocks=50)
        )
        self.executors, self.tas, self.verifiers = {}, {}, {}
        by_addr = {}
        for i, (name, key) in enumerate(self.keys.items()):
            node = MLNode(engine=FakeEngine(ModelConfig(name=MODEL), EngineConfig(kind="fake")))
            ctx = RoleContext(
                participant=name,
                key=key,
                ledger=self.ledger,
                engine=node,
                model=MODEL,
                clock=lambda: self.now,
            )
            store = PayloadStore(tmp_path / f"{name}.sqlite")
            kind = {cheater: "wrong_temperature", withhold: "withhold_payload"}.get(name)
            if kind is not None:
                ex = CheatingExecutor(ctx, kind=kind, store=store, rng=random.Random(i))
            else:
                ex = Executor(ctx, store=store, rng=random.Random(i))
            by_addr[key.address] = ex
            self.executors[name] = ex
            ta_cls = InflatingTransportAgent if name == inflating_ta else TransportAgent
            self.tas[name] = ta_cls(
                ctx, executors=by_addr.__getitem__, price_per_token=1, rng=random.Random(10 + i)
            )
            verifier_cls = VERIFIER_KINDS.get((verifiers or {}).get(name, ""), Verifier)
            self.verifiers[name] = verifier_cls(
                ctx,
                executors=by_addr.__getitem__,
                epoch_seed=bytes([i]) * 32,
                rng=random.Random(20 + i),
                own_executor=ex,
                fetch_window_s=fetch_window_s,
            )
        self.nonce = 0

    def request(self, *, ts: float = NOW, model: str = MODEL, max_tokens: int = 12, **kw) -> bytes:
        self.nonce += 1
        req = wire.InferenceRequest(
            model=model,
            messages=(wire.ChatMessage("user", f"hello {self.nonce}"),),
            prompt=None,
            sampling=wire.SamplingSpec(0.8, 1.0, 0, max_tokens, 1000 + self.nonce, 5, ()),
            timestamp_ms=int(ts * 1000),
            nonce=self.nonce,
            max_escrow=kw.pop("max_escrow", 10_000),
        )
        return wire.seal(req, kw.pop("key", self.client), CHAIN)

    async def ask(self, ta: str, envelope: bytes):
        items = [wire.decode(b) async for b in self.tas[ta].submit(envelope)]
        await self.settle()
        return items

    async def settle(self) -> None:
        for x in [*self.tas.values(), *self.executors.values()]:
            await x.drain()

    async def verify_all(self, rounds: int = 3) -> None:
        for _ in range(rounds):
            for v in self.verifiers.values():
                await v.run_once()


class BadExecutor:
    """Stands in for a broken or malicious executor (protocol test)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls = 0

    async def execute(self, envelope: bytes):
        self.calls += 1
        if self.mode == "garbage":
            yield b"\xc1not msgpack"
        elif self.mode == "cut":
            yield wire.encode(
                wire.StreamChunk(
                    index=0,
                    token_id=65,
                    text="A",
                    logprob=-0.1,
                    top_ids=(65,),
                    top_logprobs=(-0.1,),
                    finish_reason="",
                )
            )
        # "nothing": yields nothing at all

    async def payload(self, envelope: bytes) -> bytes:
        raise RuntimeError("no payloads here")
