"""Verification receipts (protocol v3): what a pass must name, and when it holds."""

from __future__ import annotations

import hashlib

import numpy as np

from gonka_ray.protocol import receipts
from gonka_ray.protocol.receipts import Dispute, Entry, Outcome

K = 5
VOCAB = 200
IID = hashlib.sha256(b"receipt-test").digest()


def ranked(logits: np.ndarray, depth: int) -> tuple[list[list[int]], list[list[float]]]:
    """Top-``depth`` ids and log-softmax values per row, best first."""
    lp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    order = np.argsort(-lp, axis=1)[:, :depth]
    return order.tolist(), np.take_along_axis(lp, order, axis=1).tolist()


def inference(n: int = 40, seed: int = 0, noise: float = 0.0):
    """An executor's logits, an honest validator's (with ``noise``), the artifact's top-k."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, VOCAB))
    mine = logits + rng.normal(0.0, noise, size=logits.shape) if noise else logits
    artifact_ids, _ = ranked(logits, K)
    return logits, mine, artifact_ids


def test_positions_are_the_validators_own_and_always_include_the_last() -> None:
    a = receipts.positions(IID, "v1", 100)
    assert a == receipts.positions(IID, "v1", 100)  # deterministic
    assert len(set(a)) == len(a) == 4 and list(a) == sorted(a) and a[-1] == 99
    assert a != receipts.positions(IID, "v2", 100)  # another validator's cannot be reused
    assert receipts.positions(IID, "v1", 3) == (0, 1, 2)


def test_an_honest_receipt_holds_against_the_executors_ranks_and_a_judges() -> None:
    for seed in range(20):
        logits, mine, shown = inference(seed=seed, noise=1e-3)
        ids, lps = ranked(mine, K + 1)
        receipt = receipts.make(IID, "v1", shown, ids, lps)
        assert all(e.token not in shown[e.position] for e in receipt)
        ex_ids, ex_lps = ranked(logits, K + receipts.PRIVATE_RANKS)
        assert receipts.holds(receipt, IID, "v1", shown, ex_ids, ex_lps, slack=2)
        judge_ids, judge_lps = ranked(logits + 1e-3, K + receipts.RECEIPT_RANKS)
        assert receipts.holds(receipt, IID, "v1", shown, judge_ids, judge_lps)


def test_a_receipt_without_a_model_run_does_not_hold() -> None:
    logits, _, shown = inference(seed=3)
    ref_ids, ref_lps = ranked(logits, K + receipts.PRIVATE_RANKS)
    where = receipts.positions(IID, "v1", len(shown))
    # copied from the artifact: its k-th token (the best a copier has)
    copied = tuple(Entry(p, shown[p][-1], -2_000_000) for p in where)
    assert not receipts.holds(copied, IID, "v1", shown, ref_ids, ref_lps, slack=2)
    # guessed tokens outside the artifact
    rng = np.random.default_rng(1)
    for _ in range(50):
        guess = tuple(Entry(p, int(rng.integers(VOCAB)), -5_000_000) for p in where)
        assert not receipts.holds(guess, IID, "v1", shown, ref_ids, ref_lps, slack=2)
    # an honest receipt's values at another validator's positions
    ids, lps = ranked(logits, K + 1)
    other = receipts.make(IID, "v2", shown, ids, lps)
    assert not receipts.holds(other, IID, "v1", shown, ref_ids, ref_lps)
    # the right token with a logprob off by more than the tolerance
    honest = receipts.make(IID, "v1", shown, ids, lps)
    off = (Entry(honest[0].position, honest[0].token, honest[0].logprob_micro - 3_000_000),)
    assert not receipts.holds((*off, *honest[1:]), IID, "v1", shown, ref_ids, ref_lps, slack=2)


def test_a_near_tie_reordered_by_noise_still_holds() -> None:
    logits, _, shown = inference(seed=5)
    p = receipts.positions(IID, "v1", len(shown))[0]
    order = np.argsort(-logits[p])
    mine = logits.copy()
    mine[p, order[K]], mine[p, order[K + 1]] = logits[p, order[K + 1]], logits[p, order[K]]
    ids, lps = ranked(mine, K + 1)  # the validator's (k+1)-th is the executor's (k+2)-th
    receipt = receipts.make(IID, "v1", shown, ids, lps)
    assert receipt[0].token == int(order[K + 1])
    ref_ids, ref_lps = ranked(logits, K + receipts.RECEIPT_RANKS)
    assert receipts.holds(receipt, IID, "v1", shown, ref_ids, ref_lps)


def test_a_dispute_is_decided_by_the_judges_weight() -> None:
    judges = {"a": 10, "b": 10, "c": 10}
    d = Dispute(challenger="ex", deadline=9, ballots={"a": False, "b": False})
    assert receipts.decide(d, judges, deadline_passed=False) is Outcome.BROKEN
    d = Dispute(challenger="ex", deadline=9, ballots={"a": True})
    assert receipts.decide(d, judges, deadline_passed=False) is Outcome.OPEN
    assert receipts.decide(d, judges, deadline_passed=True) is Outcome.UPHELD
    assert receipts.decide(Dispute("ex", 9), judges, deadline_passed=True) is Outcome.UNJUDGED
    # v5: one judge of three ("broken", nobody else in time) convicts nobody at the deadline
    lone = Dispute(challenger="ex", deadline=9, ballots={"a": False})
    assert receipts.decide(lone, judges, deadline_passed=True) is Outcome.BROKEN  # v4
    v5 = receipts.decide(lone, judges, deadline_passed=True, quorum_at_deadline=True)
    assert v5 is Outcome.UNJUDGED
    judges["a"] = 11  # more than a third of the judges' weight: convicts
    assert (
        receipts.decide(lone, judges, deadline_passed=True, quorum_at_deadline=True)
        is Outcome.BROKEN
    )


def test_a_sealed_receipt_opens_for_its_executor_and_with_its_revealed_key_only() -> None:
    from gonka_ray import crypto

    validator = crypto.KeyPair.from_seed("receipt-validator")
    executor = crypto.KeyPair.from_seed("receipt-executor")
    other = crypto.KeyPair.from_seed("receipt-other")
    entries = (Entry(3, 17, -2_345_678), Entry(9, 4, -7_000_001))
    sealed = receipts.seal(validator, executor.public_key, IID, entries)
    assert sealed.commitment == receipts.commitment(
        IID, validator.address, receipts.encode(entries)
    )
    assert receipts.open_as_executor(executor, sealed, IID, validator.address) == entries
    assert receipts.open_as_executor(other, sealed, IID, validator.address) is None
    key = receipts.ephemeral_secret(validator.seed, IID)
    args = (executor.public_key, sealed, IID, validator.address)
    assert receipts.open_with_key(key, *args) == entries
    assert receipts.open_with_key(b"\x01" * 32, *args) is None
    # a box that does not hold what the commitment names does not open as the receipt
    forged = receipts.Sealed(b"\x00" * 32, sealed.ephemeral_public, sealed.ciphertext)
    assert receipts.open_with_key(key, executor.public_key, forged, IID, validator.address) is None
    assert (
        receipts.decode(b"\xc1") is None
        and receipts.decode(receipts.encode([Entry(0, 0, 5)])) is None
    )
