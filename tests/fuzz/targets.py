"""Fuzz targets: hostile bytes and requests against every parser a peer or client can reach.

Shared by the short runs in ``tests/fuzz/test_fuzz_*.py`` (``make test``) and the long run in
``benchmarks/fuzz.py``. A target is a :class:`Target`: a hypothesis strategy of *cases* and
``run(case) -> str``. ``run`` turns every expected, typed refusal into an outcome label
(``"accepted"``, ``"rejected:<reason>"``, ``"4xx:<status>"``) and raises on anything else: an
untyped exception, a 5xx, or a broken invariant (a rejected transaction that changed state,
money created or destroyed, an accepted mutation of a signed envelope). A raise is a *crash*.

Targets:

- ``wire``: random bytes, byte-mutated envelopes, and envelopes whose body was structurally
  mutated and then correctly re-signed (so the typed decoder, not only the signature, is hit).
- ``ledger``: sequences of lifecycle and base transactions, valid, forged, mutated or replayed,
  applied to a :class:`~gonka_ray.ledger.state.StateMachine` with the inference app installed,
  beside a twin that applies only the accepted ones: a rejected transaction changes nothing.
- ``artifact``: mutated compact artifacts (bytes, header fields, body) into
  :meth:`~gonka_ray.verification.artifact.Artifact.from_compact`.
- ``payload``: payload *responses* a malicious executor can send a verifier (mutated, re-hashed,
  or a consistent forgery whose hashes the executor itself committed) into the verifier's
  grading, which must return a result, never raise; and mutated ``PayloadRequest`` envelopes
  into the executor's ``payload``.
- ``http``: request bodies and headers into the OpenAI-compatible ingress
  (:class:`~gonka_ray.serve.ingress.GonkaIngress`), in process, with fake actor handles; every
  answer must be 200 or 4xx.
- ``peer`` (in ``targets_peer.py``): byte streams into a TCP peer connection's server side
  (framing, handshake, frame authentication, dispatch).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import json
import random
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from hypothesis import strategies as st

from gonka_ray import crypto, wire
from gonka_ray.actors.role import RoleContext
from gonka_ray.exceptions import GonkaError, PayloadUnavailable, WireError
from gonka_ray.ledger import inference_app as app
from gonka_ray.verification.artifact import FINISH_REASONS, Artifact
from tests import ledger_harness as lh
from tests.strategies import any_message


@dataclass(frozen=True)
class Target:
    """``cases`` draws a batch; ``inputs(case)`` yields one zero-argument check per input in it
    (each returns its outcome label or raises on a crash)."""

    name: str
    cases: st.SearchStrategy[Any]
    inputs: Callable[[Any], Iterator[Callable[[], str]]]


def _each(run: Callable[[Any], str], expand: Callable[[Any], list]) -> Callable:
    """``inputs`` for a stateless target: ``run`` applied to every input ``expand`` lists."""

    def inputs(case: Any) -> Iterator[Callable[[], str]]:
        for one in expand(case):
            yield functools.partial(run, one)

    return inputs


# --- shared generators ---------------------------------------------------------------------

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=16)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)

# NOTE: hypothesis draws the structure (messages, bodies, specs) and a list of integer seeds;
# each seed derives one mutated input with a seeded PRNG. Drawing every mutation field by field
# made generation, not the code under test, dominate the run time; a seeded PRNG keeps every
# input reproducible from its case's repr.
seeds = st.integers(0, 2**32 - 1)
BATCH = 8  # inputs derived per drawn structure


def seed_batch(n: int = BATCH) -> st.SearchStrategy[list[int]]:
    return st.lists(seeds, min_size=n, max_size=n)


def random_byte_mutations(rng: random.Random) -> list[tuple]:
    out = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        kind = rng.choice(("flip", "flip", "truncate", "insert", "delete", "replace"))
        pos = rng.getrandbits(20)
        if kind == "flip":
            out.append((kind, pos, rng.randrange(8)))
        elif kind == "truncate":
            out.append((kind, pos))
        elif kind == "delete":
            out.append((kind, pos, rng.randint(1, 8)))
        else:
            out.append((kind, pos, rng.randbytes(rng.randint(1, 8))))
    return out


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A msgpack-able value of a random type, biased to edges (what a hostile peer packs)."""
    pick = rng.randrange(11 if depth < 2 else 9)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.choice((0, 1, -1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, -(2**63), 2**64 - 1))
    if pick == 3:
        return rng.randint(-(2**63), 2**64 - 1)
    if pick == 4:
        return rng.choice((0.0, -0.0, 1.5, float("nan"), float("inf"), -1e308))
    if pick == 5:
        return rng.choice(("", "x", "stop", "user", "\u00e9", "a" * 300))
    if pick == 6:
        return rng.randbytes(rng.choice((0, 1, 31, 32, 33, 64)))
    if pick == 7:
        return rng.randbytes(rng.randint(0, 8)).decode("latin-1")
    if pick == 8:
        return rng.getrandbits(8)
    if pick == 9:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {str(i): random_value(rng, depth + 1) for i in range(rng.randint(0, 3))}


def random_tree_mutation(rng: random.Random) -> tuple:
    path = [rng.getrandbits(16) for _ in range(rng.randint(1, 4))]
    return path, rng.choice(("replace", "replace", "append", "pop")), random_value(rng)


def mutate_bytes(data: bytes, mutations: list[tuple]) -> bytes:
    buf = bytearray(data)
    for m in mutations:
        pos = m[1] % (len(buf) + 1)
        if m[0] == "flip" and buf:
            buf[pos % len(buf)] ^= 1 << m[2]
        elif m[0] == "truncate":
            del buf[pos:]
        elif m[0] == "insert":
            buf[pos:pos] = m[2]
        elif m[0] == "delete":
            del buf[pos : pos + m[2]]
        elif m[0] == "replace":
            buf[pos : pos + len(m[2])] = m[2]
    return bytes(buf)


def mutate_tree(obj: Any, mutation: tuple) -> Any:
    """Replace, add or drop one element somewhere inside nested lists (copies the path)."""
    path, op, value = mutation
    if type(obj) is not list:
        return value
    obj = list(obj)
    node = obj
    for i, choice in enumerate(path):
        if not node:
            node.append(value)
            return obj
        idx = choice % len(node)
        last = i == len(path) - 1
        if last or type(node[idx]) is not list:
            if op == "replace":
                node[idx] = value
            elif op == "append":
                node.append(value)
            else:
                node.pop(idx)
            return obj
        node[idx] = list(node[idx])
        node = node[idx]
    return obj


def _pack(obj: Any) -> bytes | None:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return None


def sign_raw(key: crypto.KeyPair, type_name: Any, version: Any, body: bytes, chain: str) -> bytes:
    """An envelope around arbitrary body bytes, correctly signed for ``chain`` (what a hostile
    peer of that network can send)."""
    signing = msgpack.packb([chain, type_name, version, body, key.public_key], use_bin_type=True)
    sig = key.sign(wire.codec.ENVELOPE_PURPOSE, signing)
    return msgpack.packb([type_name, version, body, key.public_key, sig], use_bin_type=True)


# --- wire -----------------------------------------------------------------------------------

CHAIN = "fuzz"  # chain id of the wire and HTTP targets (the ledger targets use the harness')
PAYLOAD_CHAIN = "fuzz-payload"
_WIRE_KEYS = [crypto.KeyPair.from_seed(f"fuzz-wire-{i}") for i in range(2)]

wire_cases = st.one_of(
    st.tuples(st.just("random"), st.binary(max_size=256)),
    st.tuples(st.just("random_msgpack"), msgpack_values),
    st.tuples(st.just("message"), any_message, seed_batch()),
)


def _wire_inputs(case: tuple) -> list[tuple]:
    if case[0] != "message":
        return [case]
    _, msg, batch = case
    out = []
    for seed in batch:
        kind = ("mutated", "resigned", "unsigned", "mutated")[seed % 4]
        out.append((kind, msg, seed) if kind == "unsigned" else (kind, msg, (seed >> 2) & 1, seed))
    return out


def run_wire(case: tuple) -> str:
    kind = case[0]
    try:
        if kind == "random":
            data = case[1]
            opener = functools.partial(wire.open_envelope, chain=CHAIN)
            for fn in (opener, wire.decode, wire.peek_type):
                try:
                    fn(data)
                except WireError:
                    pass
            return "rejected"
        if kind == "random_msgpack":
            data = _pack(case[1])
            if data is None:
                return "unpackable"
            wire.open_envelope(data, chain=CHAIN)
            return "accepted"  # pragma: no cover - a random tree is never a signed envelope
        if kind == "mutated":
            _, msg, k, seed = case
            original = wire.seal(msg, _WIRE_KEYS[k], CHAIN)
            data = mutate_bytes(original, random_byte_mutations(random.Random(seed)))
            opened = wire.open_envelope(data, chain=CHAIN)
            if data != original:
                raise AssertionError("a mutated envelope opened")
            assert opened.message == msg
            return "accepted:unchanged"
        if kind == "resigned":
            _, msg, k, seed = case
            mutation = random_tree_mutation(random.Random(seed))
            body = _pack(mutate_tree(msgpack.unpackb(wire.encode_body(msg)), mutation))
            if body is None:
                return "unpackable"
            data = sign_raw(_WIRE_KEYS[k], msg.TYPE, msg.VERSION, body, CHAIN)
            opened = wire.open_envelope(data, chain=CHAIN)
            if wire.seal(opened.message, _WIRE_KEYS[k], CHAIN) != data:
                raise AssertionError("an accepted envelope is not the canonical one")
            return "accepted"
        _, msg, seed = case
        original = wire.encode(msg)
        data = mutate_bytes(original, random_byte_mutations(random.Random(seed)))
        decoded = wire.decode(data)
        if wire.encode(decoded) != data:
            raise AssertionError("decode accepted a non-canonical encoding")
        return "accepted"
    except WireError as exc:
        return f"rejected:{type(exc).__name__}"


WIRE = Target("wire", wire_cases, _each(run_wire, _wire_inputs))


# --- ledger ---------------------------------------------------------------------------------

LEDGER_OPS = (
    "start",
    "finish",
    "delivered",
    "validation",
    "vote",
    "transfer",
    "register",
    "seed_commit",
    "replay",
    "advance",
    "random_message",
)
AMOUNT_EDGES = (0, 1, 7, lh.CLIENT_BALANCE, lh.CLIENT_BALANCE + 1, 2**63 - 1, 2**63, 2**64 - 1)
TOKEN_EDGES = (0, 1, 5, 20, 21, 2**32 - 1)

# starts, finishes and judgements are listed twice: they drive the lifecycle deeper
ledger_op = st.tuples(
    st.sampled_from((*LEDGER_OPS, "start", "finish", "validation", "vote")),
    seeds,  # seeds the op's choices (actor, amounts, target inference, mutation)
    st.sampled_from(["none"] * 8 + ["bytes", "resign", "other_signer"]),
)
# A sequence of transactions on one fresh chain, plus one arbitrary declared message that the
# ``random_message`` ops sign with assorted keys.
ledger_cases = st.tuples(st.lists(ledger_op, min_size=1, max_size=16), st.none() | any_message)

_STRANGER = crypto.KeyPair.from_seed("fuzz-ledger-stranger")  # unfunded, never registered


def _signers(rng: random.Random, chain: lh.Chain) -> crypto.KeyPair:
    return rng.choice([*lh.KEYS.values(), lh.CLIENT, lh.OUTSIDER, _STRANGER])


def _some_inference(rng: random.Random, chain: lh.Chain) -> bytes:
    ids = sorted(chain.sm.tables.get(app.INFERENCES, {}))
    if ids and rng.random() < 0.85:
        return rng.choice(ids)
    return bytes(rng.getrandbits(8) for _ in range(32))


def _ledger_tx(
    op: tuple, msg: Any, chain: lh.Chain, applied: list[bytes]
) -> tuple[bytes | None, str]:
    kind, seed, how = op
    rng = random.Random(seed)
    key = _signers(rng, chain)
    tx: bytes | None = None
    if kind == "start":
        # NOTE: mostly well-formed, so later ops find inferences in every lifecycle state
        client = rng.choice([lh.CLIENT] * 6 + [lh.OUTSIDER, _STRANGER])
        request = chain.client_request(
            max_tokens=rng.choice((20, 20, 20, 1, 1_000_000)),
            max_escrow=rng.choice((*(10_000,) * 6, *AMOUNT_EDGES)),
            key=client,
        )
        ta = rng.choice(list(lh.KEYS))
        attempt = rng.choice((0, 0, 0, 0, 1, 2, 3, 2**32 - 1))
        executor = None if rng.random() < 0.7 else rng.choice([*lh.ADDR.values(), "nobody"])
        if attempt >= 3 and executor is None:
            executor = lh.ADDR["p1"]
        signer = lh.KEYS[ta] if rng.random() < 0.8 else key
        tx = chain.start_tx(request, ta=ta, attempt=attempt, executor=executor, key=signer)
    elif kind == "finish":
        iid = _some_inference(rng, chain)
        rec = app.inference_record(chain.sm, iid)
        signer = lh.BY_ADDR[rec.executor] if rec and rng.random() < 0.6 else key
        tx = chain.finish_tx(iid, signer, tokens=rng.choice(TOKEN_EDGES))
    elif kind == "delivered":
        iid = _some_inference(rng, chain)
        rec = app.inference_record(chain.sm, iid)
        signer = lh.BY_ADDR[rec.transport_agent] if rec and rng.random() < 0.6 else key
        tx = chain.tx(signer, wire.OutputDelivered, inference_id=iid, output_hash=b"\x05" * 32)
    elif kind == "validation":
        judge = rng.choice([*lh.KEYS.values(), key])
        tx = chain.validation_tx(_some_inference(rng, chain), judge, rng.random() < 0.5)
    elif kind == "vote":
        judge = rng.choice([*lh.KEYS.values(), key])
        tx = chain.vote_tx(_some_inference(rng, chain), judge, rng.random() < 0.5)
    elif kind == "transfer":
        to = rng.choice([lh.CLIENT.address, lh.OUTSIDER.address, lh.ADDR["p2"], "not-an-address"])
        amount = rng.choice(AMOUNT_EDGES)
        nonce = max(0, chain.sm.nonce(key.address) + rng.choice((0, 0, 0, 1, -1)))
        tx = chain.tx(key, wire.Transfer, to=to, amount=amount, nonce=nonce)
    elif kind == "register":
        signer = rng.choice([key, crypto.KeyPair.from_seed(f"fuzz-newcomer-{seed % 5}")])
        weight = rng.choice((0, 0, 1, 100, 2**63 - 1, 2**64 - 1))
        tx = chain.tx(signer, wire.RegisterParticipant, name=f"n{seed % 7}", weight=weight)
    elif kind == "seed_commit":
        epoch = rng.choice((0, 1, 2, 3))
        signer = rng.choice([*lh.KEYS.values(), key])
        commitment = crypto.sha256(_epoch_seed(epoch)) if rng.random() < 0.8 else b"\x06" * 32
        tx = chain.tx(signer, wire.SeedCommit, epoch=epoch, commitment=commitment)
    elif kind == "seed_reveal":
        epoch = rng.choice((0, 1, 2, 3))
        signer = rng.choice([*lh.KEYS.values(), key])
        revealed = _epoch_seed(epoch) if rng.random() < 0.8 else rng.randbytes(32)
        tx = chain.tx(signer, wire.SeedReveal, epoch=epoch, seed=revealed)
    elif kind == "poc_claim":
        nonces = [rng.getrandbits(rng.choice((8, 64))) for _ in range(rng.randint(0, 6))]
        signer = rng.choice([*lh.KEYS.values(), key])
        tx = chain.tx(signer, wire.PocClaim, epoch=rng.choice((0, 1, 2, 3)), nonces=nonces)
    elif kind == "poc_verdict":
        signer = rng.choice([*lh.KEYS.values(), key])
        tx = chain.tx(
            signer,
            wire.PocVerdict,
            epoch=rng.choice((0, 1, 2, 3)),
            participant=rng.choice([*lh.ADDR.values(), lh.OUTSIDER.address, "x"]),
            accepted=rng.random() < 0.7,
            sampled=rng.choice((0, 1, 8)),
            failed=rng.choice((0, 1, 8)),
        )
    elif kind == "replay":
        if not applied:
            return None, "nothing_to_replay"
        tx = rng.choice(applied)
    elif kind == "advance":
        return None, "advance"
    elif kind == "random_message":
        if msg is None:
            return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64))), "random"
        tx = wire.seal(msg, key, lh.CHAIN)
    if how == "bytes":
        tx = mutate_bytes(tx, random_byte_mutations(rng))
    elif how in ("resign", "other_signer"):
        type_name, version, body, _signer, _sig = msgpack.unpackb(tx)
        if how == "resign":
            body = _pack(mutate_tree(msgpack.unpackb(body), random_tree_mutation(rng))) or body
        tx = sign_raw(
            key if how == "other_signer" else _signer_key(_signer),
            type_name,
            version,
            body,
            lh.CHAIN,
        )
    return tx, kind


def _epoch_seed(epoch: int) -> bytes:
    return crypto.sha256(b"fuzz-epoch-seed-%d" % epoch)


def _signer_key(public_key: bytes) -> crypto.KeyPair:
    for k in [*lh.KEYS.values(), lh.CLIENT, lh.OUTSIDER, _STRANGER]:
        if k.public_key == public_key:
            return k
    return _STRANGER


def ledger_inputs(case: tuple, epochs: Any = None) -> Iterator[Callable[[], str]]:
    """One check per transaction, applied in order to a fresh chain and its twin."""
    ops, msg = case
    chain, twin = lh.Chain(epochs=epochs), lh.Chain(epochs=epochs)
    _seed_lifecycle(chain, twin)
    # NOTE: with epochs, settlement mints rewards at epoch ends, so money is checked only
    # against the twin (a rejected tx must not move it); without, it is constant.
    money = None if epochs is not None else chain.money()
    applied: list[bytes] = []
    for op in ops:
        if op[0] == "advance":
            chain.apply()
            twin.apply()
            continue
        yield functools.partial(_apply_one, op, msg, chain, twin, money, applied)


def _seed_lifecycle(chain: lh.Chain, twin: lh.Chain) -> None:
    """Give both chains the same inferences in every live state (finished, voting, started), so
    the fuzzed transactions meet more than empty tables."""

    def both(*txs: bytes) -> None:
        results = [c.apply(*txs) for c in (chain, twin)]
        assert all(r.ok for r in results[0].receipts), results[0].receipts

    requests = [chain.client_request() for _ in range(3)]
    both(*[chain.start_tx(r) for r in requests])
    ids = [app.inference_id_of(r) for r in requests]
    recs = [chain.record(i) for i in ids]
    both(*[chain.finish_tx(i, lh.BY_ADDR[r.executor]) for i, r in zip(ids[:2], recs, strict=False)])
    both(chain.validation_tx(ids[1], chain.judges(recs[1].executor)[0], False))


def _apply_one(
    op: tuple, msg: Any, chain: lh.Chain, twin: lh.Chain, money: int | None, applied: list[bytes]
) -> str:
    tx, kind = _ledger_tx(op, msg, chain, applied)
    if tx is None:
        return kind
    result = chain.apply(tx)
    (receipt,) = result.receipts
    if receipt.reason.startswith("handler_error"):
        raise AssertionError(f"{kind}: handler raised {receipt.reason}")
    twin_result = twin.apply(*([tx] if receipt.ok else []))
    if result.state_hash != twin_result.state_hash:
        raise AssertionError(f"{kind} rejected as {receipt.reason!r} but changed the state")
    if not receipt.ok and chain.sm.snapshot() != twin.sm.snapshot():
        raise AssertionError(f"{kind} rejected as {receipt.reason!r} but mutated a table")
    if money is not None and chain.money() != money:
        raise AssertionError(f"{kind} ({receipt.reason or 'ok'}) created or destroyed money")
    if receipt.ok:
        applied.append(tx)
    return "accepted" if receipt.ok else f"rejected:{receipt.reason.split(':')[0]}"


LEDGER = Target("ledger", ledger_cases, ledger_inputs)

# The whole protocol (inference app + epochs: seeds, PoC claims and verdicts, settlement) on
# short epochs, so a case of up to 16 ops plus its "advance" steps crosses epoch boundaries.
EPOCH_OPS = ("poc_claim", "poc_verdict", "seed_commit", "seed_reveal", "advance", "advance")
epoch_cases = st.tuples(
    st.lists(
        st.tuples(
            st.sampled_from((*LEDGER_OPS, *EPOCH_OPS, "start", "finish", "validation", "vote")),
            seeds,
            st.sampled_from(["none"] * 8 + ["bytes", "resign", "other_signer"]),
        ),
        min_size=1,
        max_size=16,
    ),
    st.none() | any_message,
)


def _epoch_config() -> Any:
    from gonka_ray.config import EpochConfig
    from gonka_ray.ledger.epoch_app import EpochAppConfig

    return EpochAppConfig(
        epoch=EpochConfig(epoch_blocks=8, poc_sprint_blocks=2, poc_validation_blocks=2),
        chain_id=lh.CHAIN,
    )


def epoch_inputs(case: tuple) -> Iterator[Callable[[], str]]:
    return ledger_inputs(case, epochs=_epoch_config())


EPOCHS = Target("epochs", epoch_cases, epoch_inputs)


# --- artifact -------------------------------------------------------------------------------

artifact_spec = st.tuples(
    st.integers(0, 6),  # prompt tokens
    st.integers(0, 8),  # output tokens
    st.integers(0, 6),  # k
    st.integers(0, 2**32 - 1),  # rng seed for the arrays
    st.sampled_from(FINISH_REASONS),
)
header_edges = st.sampled_from([-1, 0, 1, 21, 2**20, 2**20 + 1, 2**32, 2**64 - 1, 1.5, "x", None])
artifact_cases = st.one_of(
    st.tuples(st.just("random"), st.binary(max_size=200)),
    st.tuples(st.just("header"), artifact_spec, st.integers(0, 8), header_edges | msgpack_values),
    st.tuples(st.just("spec"), artifact_spec, seed_batch()),
)
HEADER_EDGES = (-1, 0, 1, 21, 2**20, 2**20 + 1, 2**32, 2**64 - 1, 1.5, "x", None)


def _artifact_inputs(case: tuple) -> list[tuple]:
    if case[0] != "spec":
        return [case]
    out = []
    for seed in case[2]:
        rng = random.Random(seed)
        kind = rng.choice(("bytes", "bytes", "header", "body"))
        if kind == "bytes":
            out.append(("bytes", case[1], seed))
        elif kind == "header":
            value = rng.choice([*HEADER_EDGES, random_value(rng)])
            out.append(("header", case[1], rng.randrange(9), value))
        else:
            body = rng.randbytes(rng.choice((0, 1, 10, 100, 300)))
            out.append(("body", case[1], body, rng.random() < 0.7))
    return out


def make_artifact(spec: tuple) -> Artifact:
    p, n, k, seed, finish = spec
    r = np.random.default_rng(seed)
    return Artifact.build(
        prompt_ids=r.integers(0, 2**32, p, dtype=np.uint64),
        output_ids=r.integers(0, 50_000, n),
        token_logprobs=-r.random(n) * 10,
        top_ids=r.integers(0, 50_000, (n, k)),
        top_logprobs=-r.random((n, k)) * 10,
        seed=int(r.integers(0, 2**63)),
        temperature=float(r.random()),
        top_p=1.0,
        top_k=int(r.integers(0, 50)),
        finish_reason=finish,
    )


def _artifact_bytes(case: tuple) -> bytes:
    kind = case[0]
    if kind == "random":
        return case[1]
    compact = make_artifact(case[1]).to_compact()
    if kind == "bytes":
        return mutate_bytes(compact, random_byte_mutations(random.Random(case[2])))
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(compact)
    header = unpacker.unpack()
    body = compact[unpacker.tell() :]
    if kind == "header":
        header[case[2] % len(header)] = case[3]
        packed = _pack(header)
        return (packed or b"") + body
    raw, compressed = case[2], case[3]
    return msgpack.packb(header) + (zlib.compress(raw) if compressed else raw)


def run_artifact(case: tuple) -> str:
    data = _artifact_bytes(case)
    try:
        art = Artifact.from_compact(data)
    except WireError as exc:
        return f"rejected:{type(exc).__name__}"
    if art.to_compact() != data:
        raise AssertionError("from_compact accepted a non-canonical artifact")
    return "accepted"


ARTIFACT = Target("artifact", artifact_cases, _each(run_artifact, _artifact_inputs))


# --- payload --------------------------------------------------------------------------------

OUT_OF_VOCAB = "out_of_vocab"  # forge output ids at and beyond the vocabulary: must fail
NAN_LOGPROB = "nan_logprob"  # report one chosen token's logprob as NaN: must fail


class _PayloadWorld:
    """Four in-process participants on the fake engine and one honest finished inference."""

    def __init__(self) -> None:
        from gonka_ray.actors.executor import Executor
        from gonka_ray.actors.ledger_port import LocalLedger
        from gonka_ray.actors.mlnode import MLNode
        from gonka_ray.actors.payload_store import PayloadStore
        from gonka_ray.actors.transport import TransportAgent
        from gonka_ray.actors.verifier import Verifier
        from gonka_ray.config import EngineConfig, ModelConfig
        from gonka_ray.engine.fake import FakeEngine

        self.loop = asyncio.new_event_loop()
        self._tmp = tempfile.TemporaryDirectory(prefix="fuzz-payload-")
        now = 1_800_000_000.0
        keys = {f"p{i}": crypto.KeyPair.from_seed(f"fuzz-payload-{i}") for i in range(4)}
        client = crypto.KeyPair.from_seed("fuzz-payload-client")
        genesis = wire.LedgerGenesis(
            chain_id=PAYLOAD_CHAIN,
            accounts=(wire.GenesisAccount(client.address, 10**9),),
            participants=tuple(
                wire.GenesisParticipant(k.public_key, n, 100) for n, k in keys.items()
            ),
        )
        self.ledger = LocalLedger(
            genesis, app.InferenceAppConfig(expiry_blocks=10**6, vote_blocks=10**6)
        )
        self.node = MLNode(engine=FakeEngine(ModelConfig(name="fake"), EngineConfig(kind="fake")))
        self.executors: dict[str, Any] = {}
        for i, (name, key) in enumerate(keys.items()):
            self.executors[key.address] = Executor(
                RoleContext(
                    participant=name,
                    key=key,
                    ledger=self.ledger,
                    engine=self.node,
                    model="fake",
                    clock=lambda: now,
                ),
                store=PayloadStore(Path(self._tmp.name) / f"{name}.sqlite"),
                rng=random.Random(i),
            )
        ta = TransportAgent(
            RoleContext(
                participant="p0",
                key=keys["p0"],
                ledger=self.ledger,
                engine=self.node,
                model="fake",
                clock=lambda: now,
            ),
            executors=self.executors.__getitem__,
            price_per_token=1,
            rng=random.Random(7),
        )
        request = wire.InferenceRequest(
            model="fake",
            messages=(wire.ChatMessage("user", "fuzz me"),),
            prompt=None,
            sampling=wire.SamplingSpec(0.8, 1.0, 0, 8, 1234, 5, ()),
            timestamp_ms=int(now * 1000),
            nonce=1,
            max_escrow=10_000,
        )
        self.request = wire.seal(request, client, PAYLOAD_CHAIN)

        async def serve() -> bytes:
            items = [wire.decode(b) async for b in ta.submit(self.request)]
            for ex in self.executors.values():
                await ex.drain()
            await ta.drain()
            return items[-1].inference_id

        self.iid = self.loop.run_until_complete(serve())
        self.record = self.loop.run_until_complete(self.ledger.inference(self.iid))
        self.executor = self.executors[self.record.executor]
        self.body = self.executor.store.get(self.record.payload_hash)
        assert self.body is not None
        payload = wire.decode(self.body, expect=wire.Payload)
        self.artifact = Artifact.from_compact(payload.artifact)
        self.judge_key = next(k for k in keys.values() if k.address != self.record.executor)
        self.participant_keys = list(keys.values())
        self.vocab = self.node.model_info().vocab_size
        self.verifier = Verifier(
            RoleContext(
                participant="judge",
                key=self.judge_key,
                ledger=self.ledger,
                engine=self.node,
                model="fake",
                clock=lambda: now,
            ),
            executors=lambda _a: None,
            epoch_seed=b"\x01" * 32,
            rng=random.Random(3),
        )

    def grade(self, record: Any, body: bytes) -> Any:
        class _Serves:
            async def payload(self, envelope: bytes) -> bytes:
                return body

        self.verifier.executors = lambda _a: _Serves()
        return self.loop.run_until_complete(self.verifier._grade(record))


_WORLD: _PayloadWorld | None = None


def payload_world() -> _PayloadWorld:
    global _WORLD
    if _WORLD is None:
        _WORLD = _PayloadWorld()
    return _WORLD


payload_input = st.one_of(
    st.tuples(st.just("bytes"), seeds, st.booleans()),
    st.tuples(st.just("artifact"), seeds),
    st.tuples(st.just("request"), seeds),
    st.tuples(st.just("resigned_request"), seeds),
    st.tuples(
        st.just("forged"),
        st.integers(0, 2**32 - 1),
        st.sampled_from(["ids", OUT_OF_VOCAB, "logprobs", NAN_LOGPROB, "count", "finish"]),
    ),
    st.tuples(st.just("fetch"), st.integers(0, 5), st.booleans(), seeds, st.booleans()),
)


def _forged(world: _PayloadWorld, seed: int, what: Any) -> tuple[bytes, Any]:
    """A payload the executor could really have committed to: its hashes match the record."""
    art = world.artifact
    r = np.random.default_rng(seed)
    out = np.array(art.output_ids, dtype=np.int64)
    lps = np.array(art.token_logprobs, dtype=np.float32)
    top_ids, top_lps = np.array(art.top_ids, dtype=np.int64), np.array(art.top_logprobs)
    finish = art.finish_reason
    if what == "ids":
        out = r.integers(0, world.vocab, len(out))
    elif what == OUT_OF_VOCAB:
        out[r.integers(0, len(out))] = r.choice([world.vocab, world.vocab + 1, 2**32 - 1])
    elif what == "logprobs":
        lps = r.choice([0.0, -1e4, np.nan, np.inf, -np.inf], len(lps)).astype(np.float32)
        top_lps = r.choice([0.0, -1e4, np.nan, -np.inf], top_lps.shape)
    elif what == NAN_LOGPROB:
        lps[r.integers(0, len(lps))] = np.nan
    elif what == "count":
        keep = int(r.integers(0, len(out) + 1))
        out, lps, top_ids, top_lps = out[:keep], lps[:keep], top_ids[:keep], top_lps[:keep]
    else:
        finish = str(r.choice([f for f in FINISH_REASONS if f != finish]))
    forged = Artifact.build(
        prompt_ids=art.prompt_ids,
        output_ids=out,
        token_logprobs=lps,
        top_ids=top_ids,
        top_logprobs=top_lps,
        seed=art.seed,
        temperature=art.temperature,
        top_p=art.top_p,
        top_k=art.top_k,
        finish_reason=finish,
    )
    body = wire.encode(wire.Payload(request=world.request, artifact=forged.to_compact()))
    record = dataclasses.replace(
        world.record,
        completion_tokens=forged.num_output_tokens,
        finish_reason=forged.finish_reason,
        response_hash=app.prompt_hash([int(t) for t in forged.output_ids]),
        artifact_hash=forged.hash(),
        payload_hash=hashlib.sha256(body).digest(),
    )
    return body, record


def run_payload(case: tuple) -> str:
    from gonka_ray.protocol.verification_policy import decide
    from gonka_ray.verification.checks import VerificationResult

    world = payload_world()
    kind = case[0]
    if kind == "fetch":
        return _run_fetch(world, case)
    payload = wire.decode(world.body, expect=wire.Payload)
    record = world.record
    if kind == "bytes":
        body = mutate_bytes(world.body, random_byte_mutations(random.Random(case[1])))
        if case[2]:  # the executor re-committed to the mutated bytes
            record = dataclasses.replace(record, payload_hash=hashlib.sha256(body).digest())
    elif kind in ("artifact", "request", "resigned_request"):
        art, req = payload.artifact, payload.request
        rng = random.Random(case[1])
        if kind == "artifact":
            art = mutate_bytes(art, random_byte_mutations(rng))
        elif kind == "request":
            req = mutate_bytes(req, random_byte_mutations(rng))
        else:
            type_name, version, body_bytes, _pk, _sig = msgpack.unpackb(req)
            tree = random_tree_mutation(rng)
            mutated = _pack(mutate_tree(msgpack.unpackb(body_bytes), tree)) or body_bytes
            req = sign_raw(
                crypto.KeyPair.from_seed("fuzz-payload-client"),
                type_name,
                version,
                mutated,
                PAYLOAD_CHAIN,
            )
        body = wire.encode(wire.Payload(request=req, artifact=art))
        record = dataclasses.replace(record, payload_hash=hashlib.sha256(body).digest())
    else:
        body, record = _forged(world, case[1], case[2])
    result = world.grade(record, body)
    if not isinstance(result, VerificationResult):
        raise AssertionError(f"grading returned {type(result).__name__}")
    if kind == "forged" and case[2] == OUT_OF_VOCAB and not result.structural_error:
        raise AssertionError("an out-of-vocabulary output was scored")
    verdict = decide(result, world.verifier.thresholds)
    if kind == "forged" and case[2] == NAN_LOGPROB and verdict.passed:
        raise AssertionError("an output with a NaN logprob passed the check")
    if body == world.body:
        return "unchanged"
    return "failed:structural" if result.structural_error else "graded"


def _run_fetch(world: _PayloadWorld, case: tuple) -> str:
    _, who, honest_hash, seed, mutate = case
    keys = [*world.participant_keys, _STRANGER]
    key = keys[who % len(keys)]
    digest = world.record.payload_hash if honest_hash else hashlib.sha256(b"nothing").digest()
    envelope = wire.seal(
        wire.PayloadRequest(inference_id=world.iid, payload_hash=digest, timestamp_ms=1),
        key,
        PAYLOAD_CHAIN,
    )
    if mutate:
        envelope = mutate_bytes(envelope, random_byte_mutations(random.Random(seed)))
    try:
        body = world.loop.run_until_complete(world.executor.payload(envelope))
    except (PayloadUnavailable, WireError) as exc:
        return f"refused:{type(exc).__name__}"
    if key is _STRANGER or hashlib.sha256(body).digest() != digest:
        raise AssertionError("a payload was served to a stranger or under the wrong hash")
    return "served"


payload_cases = st.lists(payload_input, min_size=4, max_size=4)
PAYLOAD = Target("payload", payload_cases, _each(run_payload, list))


# --- http -----------------------------------------------------------------------------------

HTTP_CLIENT = crypto.KeyPair.from_seed("fuzz-http-client")
API_KEY = "sk-fuzz"


class _Remote:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def options(self, **_kw: Any) -> _Remote:
        return self

    def remote(self, *args: Any) -> Any:
        return self.fn(*args)


async def _value(v: Any) -> Any:
    return v


class _FakeMLNode:
    def __init__(self) -> None:
        from gonka_ray.engine.base import ModelInfo

        info = ModelInfo("fake", "fake", 1000, 4096, (0,), "float32", "cpu")
        self.model_info = _Remote(lambda: _value(info))
        self.tokenize = _Remote(lambda text: _value(list(text.encode("utf-8", "replace"))))
        self.apply_chat_template = _Remote(
            lambda msgs: _value([1] * sum(len(m["content"]) + 4 for m in msgs))
        )
        self.token_strings = _Remote(lambda ids: _value([f"t{i}" for i in ids]))


class _FakeTA:
    """Stands in for a transport agent: verifies the signed request, answers two tokens."""

    def __init__(self) -> None:
        self.submit = _Remote(self._submit)

    async def _submit(self, envelope: bytes):
        signed = wire.open_envelope(envelope, expect=wire.InferenceRequest, chain=CHAIN)
        k = signed.message.sampling.logprobs
        for i in range(2):
            chunk = wire.StreamChunk(
                i,
                5 + i,
                f"w{i}",
                -0.5,
                (5, 6, 7)[: k + 1],
                (-0.5, -1.0, -2.0)[: k + 1],
                "stop" if i else "",
            )
            yield _value(wire.encode(chunk))
        done = wire.InferenceDone(signed.id, "x", 0, 3, 2, 5, "stop")
        yield _value(wire.encode(done))


class _FakeLedger:
    def __init__(self) -> None:
        self.participants = _Remote(lambda: _value({}))
        self.inference = _Remote(lambda iid: _value(None))


def make_ingress() -> Any:
    from gonka_ray.serve.ingress import GonkaIngress

    fakes = {"mlnode": _FakeMLNode(), "ta": _FakeTA(), "ledger": _FakeLedger()}

    class InProcessIngress(GonkaIngress):
        def _handle(self, participant: str, role: str) -> Any:
            return fakes[role]

    from gonka_ray.protocol.admission import RateLimiter

    ingress = InProcessIngress(
        network="fuzz",
        chain=CHAIN,
        namespace="fuzz",
        participants={"p0": "a0", "p1": "a1"},
        model="fake",
        api_keys={API_KEY: HTTP_CLIENT.seed},
    )
    ingress.lookups = RateLimiter(1e9, 1e9)  # every fuzzed lookup reaches the handler
    return ingress


# Any code point, lone surrogates included (JSON "\ud800" escapes decode to them).
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | any_text,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
CHAT_FIELDS = (
    "model",
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stream",
    "stop",
    "seed",
    "logprobs",
    "top_logprobs",
    "max_completion_tokens",
    "prompt",
    "echo",
)
http_body = st.one_of(
    st.tuples(st.just("valid"), st.booleans(), st.booleans()),
    st.tuples(
        st.just("field"),
        st.sampled_from(CHAT_FIELDS),
        json_values,
        st.dictionaries(any_text, json_values, max_size=3),
    ),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("raw"), st.binary(max_size=200)),
    st.tuples(st.just("nested"), st.integers(1, 200_000)),
)
http_headers = st.tuples(
    st.sampled_from(["valid", "none", "random", "basic", "empty"]),
    st.text(max_size=20),
    st.sampled_from(["none", "p1", "random"]),
    st.sampled_from(["none", "valid", "mutated", "random", "other_type", "prompt_only"]),
    seeds,
    st.lists(st.tuples(st.binary(min_size=1, max_size=12), st.binary(max_size=40)), max_size=2),
)
http_input = st.tuples(
    st.sampled_from(["chat", "completion", "inference"]), http_body, http_headers
)
http_cases = st.tuples(http_input, st.lists(seeds, min_size=3, max_size=3))


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _http_inputs(case: tuple) -> list[tuple]:
    """The drawn request, then variants: one field replaced, headers re-rolled."""
    first, batch = case
    out = [first]
    kind, _body_spec, headers = first
    for seed in batch:
        rng = random.Random(seed)
        field = rng.choice(CHAT_FIELDS)
        body_spec = ("field", field, _jsonable(random_value(rng)), {})
        auth = rng.choice(("valid", "valid", "none", "random", "basic", "empty"))
        signed = rng.choice(("none", "none", "valid", "mutated", "random", "other_type"))
        ta = rng.choice(("none", "none", "p1", "random"))
        out.append((kind, body_spec, (auth, headers[1], ta, signed, seed, headers[5])))
    return out


def _body(spec: tuple, kind: str) -> bytes:
    base: dict[str, Any] = {"model": "fake", "max_tokens": 4}
    if kind == "chat":
        base["messages"] = [{"role": "user", "content": "hello"}]
    else:
        base["prompt"] = "hello"
    if spec[0] == "valid":
        base["stream"], base["logprobs"] = spec[1], (spec[2] if kind == "chat" else 2)
        return json.dumps(base).encode()
    if spec[0] == "field":
        base[spec[1]] = spec[2]
        base.update(spec[3])
        return json.dumps(base).encode()
    if spec[0] == "json":
        return json.dumps(spec[1]).encode()
    if spec[0] == "raw":
        return spec[1]
    return b"[" * spec[1] + b"]" * spec[1]


def _signed_header(choice: str, seed: int, kind: str) -> bytes | None:
    rng = random.Random(seed)
    if choice == "none":
        return None
    if choice == "random":
        return rng.choice([base64.b64encode(rng.randbytes(rng.randint(0, 80))), rng.randbytes(9)])
    from gonka_ray.sdk import sign_chat

    if choice == "other_type":
        env = wire.seal(wire.Ping(1, 2), HTTP_CLIENT, CHAIN)
    elif (choice == "prompt_only") == (kind == "chat"):  # the other endpoint's form
        env = sign_chat(HTTP_CLIENT, model="fake", prompt="hi", max_tokens=4, chain=CHAIN)
    else:
        env = sign_chat(
            HTTP_CLIENT,
            model="fake",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            chain=CHAIN,
        )
    if choice == "mutated":
        env = mutate_bytes(env, random_byte_mutations(rng))
    return base64.b64encode(env)


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("latin-1", "replace"),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
    }


_INGRESS: Any = None
_HTTP_LOOP: asyncio.AbstractEventLoop | None = None


def run_http(case: tuple) -> str:
    from starlette.requests import Request
    from starlette.responses import StreamingResponse

    global _INGRESS, _HTTP_LOOP
    if _INGRESS is None:
        _INGRESS, _HTTP_LOOP = make_ingress(), asyncio.new_event_loop()
    ingress, loop = _INGRESS, _HTTP_LOOP
    kind, body_spec, (auth, auth_text, ta, signed, seed, extra) = case
    body = _body(body_spec, kind)
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
    if auth == "valid":
        headers.append((b"authorization", f"Bearer {API_KEY}".encode()))
    elif auth != "none":
        value = {"random": auth_text, "basic": f"Basic {auth_text}", "empty": "Bearer "}[auth]
        headers.append((b"authorization", value.encode("utf-8")))
    if ta != "none":
        headers.append((b"x-gonka-ta", b"p1" if ta == "p1" else auth_text.encode("utf-8")))
    sig = _signed_header(signed, seed, kind)
    if sig is not None:
        headers.append((b"x-gonka-signed-request", sig))
    headers += [(k.lower(), v) for k, v in extra]
    path = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}.get(
        kind, "/v1/inferences/"
    )

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def call() -> tuple[int, bytes]:
        request = Request(_scope("POST" if kind != "inference" else "GET", path, headers), receive)
        if kind == "inference":
            response = await ingress.inference(request, auth_text)
        else:
            response = await ingress._complete(request, kind)
        if isinstance(response, StreamingResponse):
            chunks = [c async for c in response.body_iterator]
            data = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
            if b'"error"' in data:
                raise AssertionError(f"a stream ended with an error: {data[-300:]!r}")
            return response.status_code, data
        return response.status_code, response.body

    status, data = loop.run_until_complete(call())
    if ingress.inflight != 0 or ingress.client_inflight:
        raise AssertionError(f"{ingress.inflight} requests left in flight")
    if status >= 500 or (status != 200 and status < 400):
        raise AssertionError(f"HTTP {status}: {data[:300]!r}")
    if status != 200:
        err = json.loads(data)["error"]
        assert {"message", "type", "code", "param"} <= set(err)
    return "200" if status == 200 else f"4xx:{status}"


HTTP = Target("http", http_cases, _each(run_http, _http_inputs))

TARGETS = {t.name: t for t in (WIRE, LEDGER, EPOCHS, ARTIFACT, PAYLOAD, HTTP)}
_ = GonkaError  # re-exported for callers that classify crashes
