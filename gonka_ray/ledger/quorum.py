"""Validator sets, the bytes consensus signs, and offline checks of its certificates.

Pure functions, usable without a replica: a client checks a receipt's
:class:`~gonka_ray.wire.CommitCertificate` against a :class:`ValidatorSet` and a chain id with
:func:`verify_commit_certificate`, and the consensus core (:mod:`gonka_ray.ledger.consensus`,
where the protocol is described) verifies the QCs and TCs it receives with :func:`verify_qc` and
:func:`verify_tc`. A quorum is strictly more than 2/3 of the voting power. Proposals, votes and
timeouts are signed with their own purposes over ``(chain, view, ...)``; ``chain`` is the genesis
block hash in epoch 0 and :func:`epoch_chain_id` after, so no signature is valid in another epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from gonka_ray import crypto, wire
from gonka_ray.ledger import merkle
from gonka_ray.wire import Block, BlockHeader, CommitCertificate, QuorumCert, TimeoutCert

PROPOSAL_PURPOSE = b"consensus/proposal"
VOTE_PURPOSE = b"consensus/vote"
TIMEOUT_PURPOSE = b"consensus/timeout"
ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class Validator:
    public_key: bytes
    power: int


class ValidatorSet:
    """An ordered set of validators with voting power; the index is the on-wire identity."""

    def __init__(self, validators: Sequence[Validator]) -> None:
        if not validators:
            raise ValueError("a validator set needs at least one validator")
        if any(v.power < 0 for v in validators) or sum(v.power for v in validators) <= 0:
            raise ValueError("voting power must be non-negative with a positive total")
        keys = [v.public_key for v in validators]
        if len(set(keys)) != len(keys):
            raise ValueError("validator public keys must be unique")
        self.validators = tuple(validators)
        self.total = sum(v.power for v in validators)
        self._index = {v.public_key: i for i, v in enumerate(validators)}

    def __len__(self) -> int:
        return len(self.validators)

    def index_of(self, public_key: bytes) -> int | None:
        return self._index.get(public_key)

    def leader(self, view: int) -> int:
        return view % len(self.validators)

    def power_of(self, indices: Iterable[int]) -> int:
        return sum(self.validators[i].power for i in set(indices))

    def is_quorum(self, indices: Iterable[int]) -> bool:
        """Strictly more than 2/3 of total power."""
        return 3 * self.power_of(indices) > 2 * self.total

    def is_one_third(self, indices: Iterable[int]) -> bool:
        """Strictly more than 1/3 of total power (at least one honest replica)."""
        return 3 * self.power_of(indices) > self.total


def _pack(*items: Any) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


def vote_bytes(chain: bytes, view: int, block_hash: bytes) -> bytes:
    return _pack(chain, view, block_hash)


def timeout_bytes(chain: bytes, view: int, high_qc_view: int) -> bytes:
    return _pack(chain, view, high_qc_view)


def block_hash(header: BlockHeader) -> bytes:
    """The content id of a block (its header commits to the transactions via ``tx_root``)."""
    return crypto.sha256(b"gonka_ray/block\x00" + wire.encode_body(header))


def genesis_block(genesis_digest: bytes) -> Block:
    """Height 0: no transactions; ``tx_root`` binds the genesis definition."""
    header = BlockHeader(
        height=0,
        view=0,
        parent=ZERO_HASH,
        justify=QuorumCert(view=0, block_hash=ZERO_HASH, sigs=()),
        tx_root=crypto.sha256(b"gonka_ray/genesis\x00" + genesis_digest),
        tx_count=0,
        proposer=0,
    )
    return Block(header=header, txs=())


def epoch_chain_id(genesis_hash: bytes, epoch: int, base_hash: bytes) -> bytes:
    """The chain id that signatures of consensus epoch ``epoch`` bind (epoch 0: genesis)."""
    if epoch == 0:
        return genesis_hash
    return crypto.sha256(b"gonka_ray/epoch\x00" + genesis_hash + _pack(epoch) + base_hash)


def verify_qc(
    qc: QuorumCert,
    validators: ValidatorSet,
    chain: bytes,
    known: set[tuple[int, bytes]] | None = None,
    base: bytes | None = None,
) -> bool:
    """True when ``qc`` carries > 2/3 of power in valid, distinct votes (or is the view-0 QC
    of the epoch's base block ``base``, which is ``chain`` itself in epoch 0).

    ``known`` holds ``(index, signature)`` pairs already verified for this QC's view and block
    (a replica's cache of votes it checked one by one); those are not verified again.
    """
    if qc.view == 0:
        return qc.block_hash == (chain if base is None else base) and not qc.sigs
    indices = [s.index for s in qc.sigs]
    if len(set(indices)) != len(indices) or any(i >= len(validators) for i in indices):
        return False
    if not validators.is_quorum(indices):
        return False
    msg = vote_bytes(chain, qc.view, qc.block_hash)
    return all(
        (known is not None and (s.index, s.signature) in known)
        or crypto.is_valid_signature(
            validators.validators[s.index].public_key, VOTE_PURPOSE, msg, s.signature
        )
        for s in qc.sigs
    )


def verify_tc(tc: TimeoutCert, validators: ValidatorSet, chain: bytes) -> bool:
    """True when > 2/3 of power signed a timeout of ``tc.view``."""
    indices = [s.index for s in tc.sigs]
    if len(set(indices)) != len(indices) or any(i >= len(validators) for i in indices):
        return False
    if not validators.is_quorum(indices):
        return False
    return all(
        crypto.is_valid_signature(
            validators.validators[s.index].public_key,
            TIMEOUT_PURPOSE,
            timeout_bytes(chain, tc.view, s.high_qc_view),
            s.signature,
        )
        for s in tc.sigs
    )


def verify_commit_certificate(
    cert: CommitCertificate, validators: ValidatorSet, chain: bytes
) -> bool:
    """True when ``cert`` proves ``cert.headers[0]`` committed (offline; pure).

    The headers must be parent-linked, each ``justify`` must certify its parent, the last three
    must have consecutive views, and ``cert.qc`` must certify the last one with > 2/3 of power.
    """
    hs = cert.headers
    if len(hs) < 3:
        return False
    hashes = [block_hash(h) for h in hs]
    for prev, cur, prev_hash in zip(hs, hs[1:], hashes, strict=False):
        if cur.parent != prev_hash or cur.justify.block_hash != prev_hash:
            return False
        if cur.height != prev.height + 1 or cur.view <= prev.view:
            return False
        if cur.justify.view != prev.view:
            return False
    a, b, c = hs[-3], hs[-2], hs[-1]
    if not (b.view == a.view + 1 and c.view == b.view + 1):
        return False
    if cert.qc.block_hash != hashes[-1] or cert.qc.view != c.view:
        return False
    # The justify QCs of the last two headers and the final QC make the 3-chain.
    return (
        verify_qc(b.justify, validators, chain)
        and verify_qc(c.justify, validators, chain)
        and verify_qc(cert.qc, validators, chain)
    )


def check_block(block: Block, max_txs: int) -> bool:
    """Structural checks that need no state: counts, Merkle root, parent = justify."""
    h = block.header
    if h.tx_count != len(block.txs) or len(block.txs) > max_txs:
        return False
    if h.parent != h.justify.block_hash or h.justify.view >= h.view:
        return False
    return merkle.root([merkle.tx_hash(t) for t in block.txs]) == h.tx_root
