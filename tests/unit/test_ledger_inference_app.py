"""Lifecycle transactions applied by the real ledger state machine."""

from __future__ import annotations

import itertools

from gonka_ray import crypto, wire
from gonka_ray.ledger import inference_app as app
from gonka_ray.ledger.state import StateMachine
from gonka_ray.protocol.lifecycle import InferenceStatus

CHAIN = "test"
KEYS = {f"p{i}": crypto.KeyPair.from_seed(f"participant-{i}") for i in range(4)}
ADDR = {n: k.address for n, k in KEYS.items()}
BY_ADDR = {k.address: k for k in KEYS.values()}
CLIENT = crypto.KeyPair.from_seed("client")
CONFIG = app.InferenceAppConfig(price_per_token=2, expiry_blocks=5, vote_blocks=3)


def genesis() -> wire.LedgerGenesis:
    return wire.LedgerGenesis(
        chain_id=CHAIN,
        accounts=(wire.GenesisAccount(CLIENT.address, 100_000),),
        participants=tuple(wire.GenesisParticipant(k.public_key, n, 100) for n, k in KEYS.items()),
    )


class Chain:
    """Two replicas' state machines fed the same blocks."""

    def __init__(self) -> None:
        self.sms = [StateMachine(genesis()) for _ in range(2)]
        for sm in self.sms:
            app.install(sm, CONFIG)
        self.pending: dict[str, int] = {}
        self.salts = itertools.count(1 << 40)
        self.requests = itertools.count()

    @property
    def sm(self) -> StateMachine:
        return self.sms[0]

    def tx(self, key: crypto.KeyPair, msg_cls, **fields) -> bytes:
        """Sign a transaction: lifecycle ones with a fresh salt, others with the next nonce."""
        if msg_cls in self.sm.unsequenced:
            return wire.seal(msg_cls(**fields, nonce=next(self.salts)), key, CHAIN)
        n = self.pending.get(key.address, 0)
        self.pending[key.address] = n + 1
        return wire.seal(msg_cls(**fields, nonce=self.sm.nonce(key.address) + n), key, CHAIN)

    def block(self, *txs: bytes) -> list:
        self.pending.clear()
        results = [sm.apply_block(sm.height + 1, b"\x00" * 32, tuple(txs)) for sm in self.sms]
        assert results[0].state_hash == results[1].state_hash
        return [(r.ok, r.reason) for r in results[0].receipts]

    def client_request(self, max_tokens: int = 20, max_escrow: int = 10_000) -> bytes:
        req = wire.InferenceRequest(
            model="tiny",
            messages=(wire.ChatMessage("user", "hi"),),
            prompt=None,
            sampling=wire.SamplingSpec(0.7, 1.0, 0, max_tokens, 42, 5, ()),
            timestamp_ms=1,
            nonce=next(self.requests),
            max_escrow=max_escrow,
        )
        return wire.seal(req, CLIENT, CHAIN)

    def start(self, ta: str = "p0", attempt: int = 0, executor: str | None = None, **kw):
        request = kw.pop("request", None) or self.client_request(**kw)
        iid = app.inference_id_of(request)
        book = app.book_for(_ctx(self.sm), CONFIG)
        chosen = executor or book.expected_executor(iid, attempt, ADDR[ta])
        if kw.pop("build_only", False):
            return iid, chosen, None
        tx = self.tx(
            KEYS[ta],
            wire.StartInference,
            request=request,
            executor=chosen,
            attempt=attempt,
            prompt_tokens=10,
            prompt_hash=b"\x01" * 32,
        )
        return iid, chosen, tx

    def money(self) -> int:
        sm = self.sm
        balances = sum(v[0] for v in sm.tables.get("account", {}).values())
        recs = [app.inference_record(sm, i) for i in sm.tables.get(app.OPEN, {})]
        escrow = sum(r.escrow for r in recs if r.status is InferenceStatus.STARTED)
        fees = sum(p.pending_fees for p in app.participant_records(sm).values())
        return balances + escrow + fees


def _ctx(sm):
    from gonka_ray.ledger.state import TxContext

    return TxContext(sm, height=sm.height, block_hash=b"")


def finish_tx(chain: Chain, iid: bytes, executor: str, tokens: int = 5) -> bytes:
    return chain.tx(
        BY_ADDR[executor],
        wire.FinishInference,
        inference_id=iid,
        prompt_tokens=10,
        completion_tokens=tokens,
        finish_reason="stop",
        response_hash=b"\x02" * 32,
        artifact_hash=b"\x03" * 32,
        payload_hash=b"\x04" * 32,
    )


def test_full_lifecycle_with_invalidation_and_refund() -> None:
    chain = Chain()
    total = chain.money()
    iid, ex, start = chain.start()
    assert chain.block(start) == [(True, "")]
    assert chain.sm.balance(CLIENT.address) == 100_000 - 30 * 2
    assert chain.block(finish_tx(chain, iid, ex)) == [(True, "")]
    assert chain.sm.balance(CLIENT.address) == 100_000 - 15 * 2
    judges = [a for a in BY_ADDR if a not in (ex,)]
    accuser, voter = judges[0], judges[1]
    rejected = chain.block(
        chain.tx(
            BY_ADDR[ex],
            wire.Validation,
            inference_id=iid,
            passed=True,
            replay_mismatches=0,
            similarity=1.0,
            logprob_deviation=0.0,
        )
    )
    assert rejected == [(False, "self_validation")]
    assert chain.block(
        chain.tx(
            BY_ADDR[accuser],
            wire.Validation,
            inference_id=iid,
            passed=False,
            replay_mismatches=9,
            similarity=0.99,
            logprob_deviation=1.2,
        ),
        chain.tx(BY_ADDR[voter], wire.Vote, inference_id=iid, valid=False),
    ) == [(True, ""), (True, "")]
    rec = app.inference_record(chain.sm, iid)
    assert rec.status is InferenceStatus.INVALIDATED and rec.refunded == 30
    assert chain.sm.balance(CLIENT.address) == 100_000
    assert app.participant_record(chain.sm, ex).consecutive_invalid == 1
    assert chain.money() == total


def test_ledger_rejects_steering_replay_and_overspend() -> None:
    chain = Chain()
    request = chain.client_request()
    _, ex, _ = chain.start(request=request, build_only=True)
    wrong = next(a for a in BY_ADDR if a not in (ex, ADDR["p0"]))
    _, _, steered = chain.start(request=request, executor=wrong)
    assert chain.block(steered) == [(False, "wrong_executor")]
    _, _, first = chain.start(request=request)
    assert chain.block(first) == [(True, "")]
    assert chain.block(first) == [(False, "duplicate")]  # the same signed transaction again
    _, _, replay = chain.start(request=request)  # same client request, new tx, same attempt
    assert chain.block(replay) == [(False, "stale_attempt")]
    _, _, greedy = chain.start(max_escrow=5)
    assert chain.block(greedy) == [(False, "escrow_above_limit")]
    assert (
        chain.block(chain.tx(KEYS["p0"], wire.Transfer, to=CLIENT.address, amount=2**63))[0][0]
        is False
    )
    _, _, broke = chain.start(max_tokens=100_000, max_escrow=10**9)
    assert chain.block(broke) == [(False, "insufficient_balance")]
    bad = chain.tx(
        KEYS["p0"],
        wire.StartInference,
        request=b"garbage",
        executor=ex,
        attempt=0,
        prompt_tokens=1,
        prompt_hash=b"\x00" * 32,
    )
    assert chain.block(bad)[0][1].startswith("bad_client_request")


def test_only_selected_executor_finishes_and_expiry_refunds() -> None:
    chain = Chain()
    total = chain.money()
    iid, ex, start = chain.start()
    chain.block(start)
    intruder = next(a for a in BY_ADDR if a != ex)
    assert chain.block(finish_tx(chain, iid, intruder)) == [(False, "not_executor")]
    for _ in range(5):
        chain.block()
    rec = app.inference_record(chain.sm, iid)
    assert rec.status is InferenceStatus.EXPIRED and rec.refunded == rec.escrow
    assert chain.sm.balance(CLIENT.address) == 100_000
    assert chain.block(finish_tx(chain, iid, ex)) == [(False, "not_started")]
    assert chain.money() == total
