"""A ledger state machine with the inference app installed, driven by real signed transactions.

Shared by the exploit tests and the ledger fuzz target: four genesis participants of weight 100
(``p0``..``p3``), a funded client, and helpers that sign lifecycle transactions the way the
actors do (fresh salts for unsequenced types, the next account nonce for the others).
"""

from __future__ import annotations

import itertools
from typing import Any

from gonka_ray import crypto, wire
from gonka_ray.ledger import inference_app as app
from gonka_ray.ledger.state import BlockResult, StateMachine, TxContext
from gonka_ray.protocol import receipts
from gonka_ray.protocol.lifecycle import InferenceRecord, InferenceStatus

CHAIN = "harness"  # the harness genesis' chain id: every envelope here is signed for it
KEYS = {f"p{i}": crypto.KeyPair.from_seed(f"harness-participant-{i}") for i in range(4)}
ADDR = {n: k.address for n, k in KEYS.items()}
BY_ADDR = {k.address: k for k in KEYS.values()}
CLIENT = crypto.KeyPair.from_seed("harness-client")
OUTSIDER = crypto.KeyPair.from_seed("harness-outsider")  # funded, never a participant
CLIENT_BALANCE = 1_000_000
CONFIG = app.InferenceAppConfig(price_per_token=2, expiry_blocks=5, vote_blocks=3)
PROMPT_TOKENS = 10


def receipt_fields(
    iid: bytes, validator: crypto.KeyPair, executor_public_key: bytes, n_out: int
) -> dict[str, bytes]:
    """A pass's sealed-receipt fields: entries at the validator's positions, sealed to the
    executor (what the ledger keeps); their tokens are no model's."""
    entries = [receipts.Entry(p, 0, -1) for p in receipts.positions(iid, validator.address, n_out)]
    sealed = receipts.seal(validator, executor_public_key, iid, entries)
    return {
        "receipt_commitment": sealed.commitment,
        "receipt_key": sealed.ephemeral_public,
        "receipt_box": sealed.ciphertext,
    }


def genesis(client_balance: int = CLIENT_BALANCE) -> wire.LedgerGenesis:
    return wire.LedgerGenesis(
        chain_id=CHAIN,
        accounts=(
            wire.GenesisAccount(CLIENT.address, client_balance),
            wire.GenesisAccount(OUTSIDER.address, 1_000),
        ),
        participants=tuple(wire.GenesisParticipant(k.public_key, n, 100) for n, k in KEYS.items()),
    )


class Chain:
    """One state machine fed blocks of signed transactions."""

    def __init__(
        self,
        config: app.InferenceAppConfig = CONFIG,
        client_balance: int = CLIENT_BALANCE,
        *,
        epochs: Any = None,
    ) -> None:
        """``epochs``: an ``EpochAppConfig`` to install the epoch app too (the full protocol)."""
        self.config = config
        self.sm = StateMachine(genesis(client_balance))
        if epochs is None:
            app.install(self.sm, config)
        else:
            from gonka_ray.ledger import epoch_app

            epoch_app.install_protocol(self.sm, config, epochs)
        self.pending: dict[str, int] = {}
        self.salts = itertools.count(1 << 40)
        self.requests = itertools.count()
        # An empty first block, as on a live replica: its end-block bookkeeping (the draw's
        # eligible set) is done before any test takes a "state must not change" baseline.
        self.block()

    # --- signing ---------------------------------------------------------------------------

    def tx(self, key: crypto.KeyPair, msg_cls: type, **fields: Any) -> bytes:
        """Sign a transaction: lifecycle types with a fresh salt, others with the next nonce."""
        if "nonce" in fields:
            return wire.seal(msg_cls(**fields), key, CHAIN)
        if msg_cls in self.sm.unsequenced:
            return wire.seal(msg_cls(**fields, nonce=next(self.salts)), key, CHAIN)
        n = self.pending.get(key.address, 0)
        self.pending[key.address] = n + 1
        return wire.seal(msg_cls(**fields, nonce=self.sm.nonce(key.address) + n), key, CHAIN)

    def client_request(
        self, *, max_tokens: int = 20, max_escrow: int = 10_000, key: crypto.KeyPair = CLIENT
    ) -> bytes:
        req = wire.InferenceRequest(
            model="tiny",
            messages=(wire.ChatMessage("user", "hi"),),
            prompt=None,
            sampling=wire.SamplingSpec(0.7, 1.0, 0, max_tokens, 42, 5, ()),
            timestamp_ms=1,
            nonce=next(self.requests),
            max_escrow=max_escrow,
        )
        return wire.seal(req, key, CHAIN)

    def drawn(self, request: bytes, attempt: int = 0, ta: str = "p0") -> str:
        """The executor the ledger will accept for ``request`` at ``attempt`` from ``ta``."""
        ctx = TxContext(self.sm, height=self.sm.height, block_hash=b"")
        iid = app.inference_id_of(request)
        return app.book_for(ctx, self.config).expected_executor(iid, attempt, ADDR[ta])

    def start_tx(
        self,
        request: bytes,
        *,
        ta: str = "p0",
        attempt: int = 0,
        executor: str | None = None,
        key: crypto.KeyPair | None = None,
        prompt_tokens: int = PROMPT_TOKENS,
    ) -> bytes:
        return self.tx(
            key or KEYS[ta],
            wire.StartInference,
            request=request,
            executor=executor or self.drawn(request, attempt, ta),
            attempt=attempt,
            prompt_tokens=prompt_tokens,
            prompt_hash=b"\x01" * 32,
        )

    def finish_tx(
        self, iid: bytes, key: crypto.KeyPair, tokens: int = 5, prompt_tokens: int = PROMPT_TOKENS
    ) -> bytes:
        return self.tx(
            key,
            wire.FinishInference,
            inference_id=iid,
            prompt_tokens=prompt_tokens,
            completion_tokens=tokens,
            finish_reason="stop",
            response_hash=b"\x02" * 32,
            artifact_hash=b"\x03" * 32,
            payload_hash=b"\x04" * 32,
        )

    def validation_tx(self, iid: bytes, key: crypto.KeyPair, passed: bool) -> bytes:
        rec = app.inference_record(self.sm, iid)
        return self.tx(
            key,
            wire.Validation,
            inference_id=iid,
            passed=passed,
            replay_mismatches=0 if passed else 9,
            similarity=1.0 if passed else 0.2,
            logprob_deviation=0.0,
            **(
                receipt_fields(iid, key, BY_ADDR[rec.executor].public_key, rec.completion_tokens)
                if rec is not None and passed
                else {}
            ),
        )

    def vote_tx(self, iid: bytes, key: crypto.KeyPair, valid: bool) -> bytes:
        return self.tx(key, wire.Vote, inference_id=iid, valid=valid)

    # --- applying --------------------------------------------------------------------------

    def apply(self, *txs: bytes) -> BlockResult:
        self.pending.clear()
        return self.sm.apply_block(self.sm.height + 1, b"\x00" * 32, tuple(txs))

    def block(self, *txs: bytes) -> list[tuple[bool, str]]:
        """Apply one block; its receipts as ``(ok, reason)``."""
        return [(r.ok, r.reason) for r in self.apply(*txs).receipts]

    def finished(self, *, max_tokens: int = 20, tokens: int = 5) -> tuple[bytes, str]:
        """A committed, finished inference of ``tokens`` output tokens: ``(inference_id,
        executor address)``."""
        request = self.client_request(max_tokens=max_tokens)
        executor = self.drawn(request)
        assert self.block(self.start_tx(request)) == [(True, "")]
        iid = app.inference_id_of(request)
        finish = self.finish_tx(iid, BY_ADDR[executor], tokens=tokens)
        assert self.block(finish) == [(True, "")]
        return iid, executor

    # --- queries ---------------------------------------------------------------------------

    def record(self, iid: bytes) -> InferenceRecord:
        rec = app.inference_record(self.sm, iid)
        assert rec is not None
        return rec

    def judges(self, executor: str) -> list[crypto.KeyPair]:
        """The participants other than ``executor``, in address order."""
        return [BY_ADDR[a] for a in sorted(BY_ADDR) if a != executor]

    def money(self) -> int:
        """Balances + open escrow + pending fees: constant under every lifecycle transaction."""
        sm = self.sm
        balances = sum(v[0] for v in sm.tables.get("account", {}).values())
        recs = [app.inference_record(sm, i) for i in sm.tables.get(app.OPEN, {})]
        escrow = sum(r.escrow for r in recs if r and r.status is InferenceStatus.STARTED)
        fees = sum(p.pending_fees for p in app.participant_records(sm).values())
        return balances + escrow + fees
