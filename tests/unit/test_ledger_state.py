from __future__ import annotations

import pytest

from gonka_ray import crypto, wire
from gonka_ray.constants import MAX_AMOUNT
from gonka_ray.ledger.state import PARTICIPANTS, StateMachine, TxContext, peer_directory
from gonka_ray.wire import (
    GenesisAccount,
    GenesisParticipant,
    LedgerGenesis,
    PeerEndpoint,
    Ping,
    RegisterParticipant,
    Transfer,
)

CHAIN = "test"
ALICE = crypto.KeyPair.from_seed("alice")
BOB = crypto.KeyPair.from_seed("bob")
VAL = crypto.KeyPair.from_seed("validator")
H = b"\x11" * 32


def genesis(alice: int = 100) -> LedgerGenesis:
    return LedgerGenesis(
        chain_id=CHAIN,
        accounts=(GenesisAccount(address=ALICE.address, balance=alice),),
        participants=(GenesisParticipant(public_key=VAL.public_key, name="v", weight=10),),
    )


def transfer(amount: int, nonce: int, key=ALICE, to=BOB.address) -> bytes:
    return wire.seal(Transfer(to=to, amount=amount, nonce=nonce), key, CHAIN)


def apply(sm: StateMachine, *txs: bytes):
    return sm.apply_block(sm.height + 1, H, tuple(txs))


def test_genesis_balances_and_participants() -> None:
    sm = StateMachine(genesis())
    assert sm.balance(ALICE.address) == 100
    assert sm.balance(BOB.address) == 0
    assert sm.get(PARTICIPANTS, VAL.address)[1:] == ["v", 10]


def test_transfer_moves_funds_and_bumps_nonce() -> None:
    sm = StateMachine(genesis())
    res = apply(sm, transfer(30, 0))
    assert [r.ok for r in res.receipts] == [True]
    assert sm.balance(ALICE.address) == 70 and sm.balance(BOB.address) == 30
    assert sm.nonce(ALICE.address) == 1


@pytest.mark.parametrize(
    "tx, reason",
    [
        (transfer(101, 0), "insufficient_balance"),
        (transfer(5, 1), "bad_nonce:expected=0,got=1"),
        (transfer(0, 0), "bad_amount"),
        (transfer(MAX_AMOUNT + 1, 0), "bad_amount"),
        (transfer(5, 0, to="not-an-address"), "bad_address"),
        (wire.seal(Ping(nonce=0, sent_ms=0), ALICE, CHAIN), "unknown_type:Ping"),
        (b"\x93garbage", "bad_envelope:MalformedMessage"),
    ],
)
def test_rejections_are_deterministic_receipts(tx: bytes, reason: str) -> None:
    sm = StateMachine(genesis())
    before = sm.state_hash
    res = apply(sm, tx)
    assert res.receipts[0].ok is False
    assert res.receipts[0].reason == reason
    assert sm.balance(ALICE.address) == 100
    assert sm.state_hash == before


def test_bad_signature_is_rejected() -> None:
    raw = bytearray(transfer(5, 0))
    raw[-1] ^= 1
    res = apply(StateMachine(genesis()), bytes(raw))
    assert res.receipts[0].reason == "bad_signature"


def test_same_tx_twice_applies_once() -> None:
    sm = StateMachine(genesis())
    tx = transfer(10, 0)
    res = apply(sm, tx, tx)
    assert [(r.ok, r.reason) for r in res.receipts] == [(True, ""), (False, "duplicate")]
    res2 = apply(sm, tx)
    assert res2.receipts[0].reason == "duplicate"
    assert sm.balance(BOB.address) == 10
    assert res.receipts[0].tx_id == crypto.sha256(wire.open_envelope(tx, chain=CHAIN).signature)


def test_recipient_overflow_is_rejected() -> None:
    g = LedgerGenesis(
        chain_id=CHAIN,
        accounts=(
            GenesisAccount(address=ALICE.address, balance=10),
            GenesisAccount(address=BOB.address, balance=MAX_AMOUNT),
        ),
        participants=(),
    )
    sm = StateMachine(g)
    res = apply(sm, transfer(1, 0))
    assert res.receipts[0].reason == "overflow"
    assert sm.balance(ALICE.address) == 10


def test_register_participant_once() -> None:
    sm = StateMachine(genesis())
    t1 = wire.seal(RegisterParticipant(name="bob", weight=0, nonce=0), BOB, CHAIN)
    t2 = wire.seal(RegisterParticipant(name="bob2", weight=0, nonce=1), BOB, CHAIN)
    res = apply(sm, t1, t2)
    assert [(r.ok, r.reason) for r in res.receipts] == [(True, ""), (False, "already_registered")]
    assert sm.get(PARTICIPANTS, BOB.address) == [BOB.public_key, "bob", 0]


def test_same_blocks_same_hash_and_order_matters() -> None:
    txs = [transfer(10, 0), transfer(20, 1), transfer(200, 2), transfer(5, 2)]
    a, b, c = StateMachine(genesis()), StateMachine(genesis()), StateMachine(genesis())
    ha = [apply(a, t).state_hash for t in txs]
    hb = [apply(b, t).state_hash for t in txs]
    assert ha == hb
    apply(c, txs[1])  # bad nonce: no change
    apply(c, txs[0])
    assert c.state_hash != ha[1]


def test_snapshot_restore_roundtrip() -> None:
    sm = StateMachine(genesis())
    apply(sm, transfer(10, 0), transfer(3, 1))
    snap = sm.snapshot()
    other = StateMachine(genesis())
    other.restore(snap)
    assert other.state_hash == sm.state_hash
    assert other.height == sm.height == 1
    assert other.balance(BOB.address) == 13
    # and it keeps working identically
    assert apply(other, transfer(1, 2)).state_hash == apply(sm, transfer(1, 2)).state_hash


def test_registered_handler_is_atomic_on_reject() -> None:
    """A later issue's tx type: writes before a reject must not land."""
    sm = StateMachine(genesis())

    def ping_handler(ctx: TxContext, msg: Ping) -> None:
        ctx.debit(ctx.sender, 50)
        if msg.sent_ms == 1:
            ctx.reject("nope")
        ctx.put("pings", ctx.sender, msg.sent_ms)

    sm.register(Ping, ping_handler)
    before = sm.state_hash
    res = apply(sm, wire.seal(Ping(nonce=0, sent_ms=1), ALICE, CHAIN))
    assert res.receipts[0].reason == "nope"
    assert sm.balance(ALICE.address) == 100 and sm.state_hash == before
    res = apply(sm, wire.seal(Ping(nonce=0, sent_ms=2), ALICE, CHAIN))
    assert res.receipts[0].ok
    assert sm.get("pings", ALICE.address) == 2 and sm.balance(ALICE.address) == 50


def test_end_block_hook_runs_and_changes_hash() -> None:
    sm = StateMachine(genesis())
    sm.on_end_block(lambda ctx: ctx.put("heights", ctx.height, ctx.height * 2))
    h0 = sm.state_hash
    apply(sm)
    assert sm.get("heights", 1) == 2 and sm.state_hash != h0


def test_wrong_height_raises() -> None:
    sm = StateMachine(genesis())
    with pytest.raises(ValueError):
        sm.apply_block(2, H, ())


def test_lazy_state_hash_equals_a_full_recount() -> None:
    """Overwrites and deletes within one block settle to the hash of the resulting state."""
    sm = StateMachine(genesis(alice=1_000))

    def churn(ctx: TxContext) -> None:
        ctx.put("scratch", "k", [ctx.height, "x"])
        ctx.put("scratch2", ("t", 1), {"b": 2, "a": [1, {"z": 0, "y": 1}]})  # needs canonical form
        if ctx.height % 2 == 0:
            ctx.delete("scratch", "k")

    sm.on_end_block(churn)
    for h in range(4):
        apply(sm, *(transfer(1, n) for n in range(3 * h, 3 * h + 3)))
        fresh = StateMachine(genesis())
        fresh.restore(sm.snapshot())  # recounts every leaf from scratch
        assert fresh.state_hash == sm.state_hash


def test_precheck_opens_once_and_apply_gives_the_same_receipts() -> None:
    good, bad = transfer(5, 0), bytearray(transfer(6, 1))
    bad[-1] ^= 1
    checked, plain = StateMachine(genesis()), StateMachine(genesis())
    assert checked.precheck(good) and not checked.precheck(bytes(bad))
    a = apply(checked, good, bytes(bad))
    b = apply(plain, good, bytes(bad))
    assert a.receipts == b.receipts and a.state_hash == b.state_hash
    assert [r.reason for r in a.receipts] == ["", "bad_signature"]


def test_a_transaction_signed_for_another_network_is_refused() -> None:
    # the chain id is bound into every envelope signature (wire.seal): a transfer signed for a
    # network with the same accounts but another chain id is a bad signature here
    sm = StateMachine(genesis())
    foreign = wire.seal(Transfer(to=BOB.address, amount=10, nonce=0), ALICE, "another-net")
    res = apply(sm, foreign)
    assert res.receipts[0].reason == "bad_signature"
    assert sm.balance(BOB.address) == 0 and sm.nonce(ALICE.address) == 0
    res = apply(sm, transfer(10, 0))  # the same transfer signed for this network applies
    assert res.receipts[0].ok and sm.balance(BOB.address) == 10


def test_registration_appends_to_the_peer_directory_and_endpoints_are_signed_by_their_owner() -> (
    None
):
    g = genesis()
    sm = StateMachine(g)
    carol = crypto.KeyPair.from_seed("carol")
    res = apply(
        sm,
        wire.seal(PeerEndpoint(endpoint="10.0.0.9:7000", nonce=0), carol, CHAIN),  # not yet one
        wire.seal(RegisterParticipant(name="carol", weight=0, nonce=0), carol, CHAIN),
        wire.seal(RegisterParticipant(name="bob", weight=0, nonce=0), BOB, CHAIN),
        wire.seal(PeerEndpoint(endpoint="no port", nonce=1), BOB, CHAIN),
        wire.seal(PeerEndpoint(endpoint="10.0.0.7:7001", nonce=1), carol, CHAIN),
    )
    assert [r.reason for r in res.receipts] == [
        "not_participant",
        "",
        "",
        "bad_endpoint",
        "",
    ]
    directory = peer_directory(sm)
    n = len(g.participants)
    assert [e.public_key for e in directory[n:]] == [carol.public_key, BOB.public_key]
    assert directory[n].endpoint == "10.0.0.7:7001" and directory[n + 1].endpoint is None
    restored = StateMachine(g)
    restored.restore(sm.snapshot())
    assert peer_directory(restored) == directory
