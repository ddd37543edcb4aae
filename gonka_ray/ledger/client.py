"""Client of the replica group: submit a transaction, get back a verified receipt.

:class:`LedgerClient` talks to replica actor handles. ``submit`` sends the signed transaction to
one replica (it gossips it to the others), waits for the commit, and checks the returned
:class:`~gonka_ray.wire.TxReceipt` offline against the genesis validator set before returning it,
so a lying replica cannot fake a commit. If the replica dies or times out it tries the next one:
transactions are idempotent by id, so resubmitting is safe.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from gonka_ray import wire
from gonka_ray.exceptions import CommitTimeout, LedgerError
from gonka_ray.ledger import merkle
from gonka_ray.ledger.quorum import Validator, ValidatorSet, block_hash, genesis_block
from gonka_ray.ledger.receipts import verify_receipt
from gonka_ray.ledger.replica import validators_of
from gonka_ray.wire import LedgerGenesis, TxReceipt


class LedgerClient:
    """Args:
    handles: replica actor handles (index order does not matter).
    genesis: the network's genesis (for the validator set and chain id).
    timeout_s: how long one replica may take to commit a transaction.
    seed: seeds the choice of replica.
    prefer_first: always try ``handles[0]`` first (a participant's own, trusted replica) and
        the others, in random order, only if it fails.
    """

    def __init__(
        self,
        handles: list[Any],
        genesis: LedgerGenesis,
        *,
        timeout_s: float = 10.0,
        seed: int = 0,
        prefer_first: bool = False,
    ) -> None:
        if not handles:
            raise ValueError("a LedgerClient needs at least one replica handle")
        self.handles = list(handles)
        self.genesis = genesis
        self.validators = validators_of(genesis)
        self.chain = block_hash(genesis_block(wire.digest(genesis)).header)
        self.timeout_s = timeout_s
        self.rng = random.Random(seed)
        self.prefer_first = prefer_first

    async def submit(
        self,
        tx: bytes,
        *,
        attempts: int | None = None,
        accepted: asyncio.Event | None = None,
    ) -> TxReceipt:
        """Submit ``tx`` and return its verified receipt (``ok``/``reason`` say whether it
        applied). ``accepted`` is set as soon as a replica has taken ``tx`` into its mempool
        (and gossiped it to the others), before the commit.

        Raises:
            CommitTimeout: no replica reported the commit in time (it may still commit).
            LedgerError: a replica returned a receipt that does not verify.
        """
        tx_hash = merkle.tx_hash(tx)
        if self.prefer_first:
            order = [0, *self.rng.sample(range(1, len(self.handles)), len(self.handles) - 1)]
        else:
            order = self.rng.sample(range(len(self.handles)), len(self.handles))
        last: Exception | None = None
        for i in order[: attempts or len(order)]:
            handle = self.handles[i]
            try:
                await handle.submit.remote(tx)
                if accepted is not None:
                    accepted.set()
                raw = await handle.wait_receipt.remote(tx_hash, self.timeout_s)
            except Exception as exc:  # RayActorError, CommitTimeout from the replica, ...
                last = exc
                continue
            receipt = wire.decode(raw, TxReceipt)
            if not await self._verify(handle, receipt, tx):
                raise LedgerError(f"replica {i} returned a receipt that does not verify")
            return receipt
        raise CommitTimeout(f"transaction {tx_hash.hex()[:16]} not committed: {last!r}")

    async def _verify(self, handle: Any, receipt: TxReceipt, tx: bytes) -> bool:
        if verify_receipt(receipt, self.validators, self.chain, tx):
            return True
        if not receipt.certificate.headers:
            return False
        # A block of a later consensus epoch is signed by that epoch's set under its chain id.
        # NOTE: the set is taken from the replica that answered (it is committed state, which
        # has no proofs yet: see the AdHash NOTE in ledger/state.py); a client that must not
        # trust one replica for it should ask several and compare.
        method = getattr(handle, "epoch_context", None)
        if method is None:
            return False
        try:
            ctx = await method.remote(receipt.certificate.headers[0].height)
        except Exception:  # RayActorError and the like: treat as unverified
            return False
        if ctx is None:
            return False
        chain, members = ctx
        vs = ValidatorSet([Validator(k, w) for k, w in members])
        return verify_receipt(receipt, vs, chain, tx)

    async def balance(self, address: str) -> int:
        """A balance from committed state (of one replica; not a proof)."""
        return await self.rng.choice(self.handles).balance.remote(address)
