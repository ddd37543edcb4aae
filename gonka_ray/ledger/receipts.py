"""Transaction receipts: build one from a committed block, verify one offline (pure).

A :class:`~gonka_ray.wire.TxReceipt` proves that a transaction's bytes are in a committed block:
the Merkle path ties ``sha256(tx)`` to the block header's ``tx_root``, and the commit certificate
(a HotStuff 3-chain of headers with > 2/3 of voting power signing each link) proves that header
committed. Anyone holding the validator set and the chain id (genesis block hash) can check it;
``ok`` and ``reason`` are the state machine's verdict as reported by the replica (not proven).
"""

from __future__ import annotations

from gonka_ray.ledger import merkle
from gonka_ray.ledger.quorum import ValidatorSet, verify_commit_certificate
from gonka_ray.wire import Block, CommitCertificate, TxReceipt


def make_receipt(
    block: Block, index: int, certificate: CommitCertificate, *, ok: bool, reason: str
) -> TxReceipt:
    """The receipt of transaction ``index`` of ``block`` (committed by ``certificate``)."""
    hashes = [merkle.tx_hash(t) for t in block.txs]
    return TxReceipt(
        tx_hash=hashes[index],
        index=index,
        path=tuple(merkle.proof(hashes, index)),
        certificate=certificate,
        ok=ok,
        reason=reason[:256],
    )


def verify_receipt(
    receipt: TxReceipt, validators: ValidatorSet, chain: bytes, tx: bytes | None = None
) -> bool:
    """True when ``receipt`` proves its transaction committed (and, given ``tx``, that it is
    exactly these bytes)."""
    if tx is not None and merkle.tx_hash(tx) != receipt.tx_hash:
        return False
    headers = receipt.certificate.headers
    if not headers:
        return False
    header = headers[0]
    if not merkle.verify(
        receipt.tx_hash, receipt.index, header.tx_count, list(receipt.path), header.tx_root
    ):
        return False
    return verify_commit_certificate(receipt.certificate, validators, chain)
