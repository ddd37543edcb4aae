"""How participant actors see the ledger: submit a transaction, read committed state, follow events.

:class:`LedgerPort` is the interface the transport agent, executor and verifier use. Two
implementations:

- :class:`LocalLedger` — one :class:`~gonka_ray.ledger.state.StateMachine` in the caller's
  process that applies submitted transactions in blocks of whatever arrived since the last block.
  It is the real state machine without replication: for unit tests of the actors and for
  single-process simulations, never for a network that strangers use.
- the replica-group adapter (``gonka_ray.ledger.client``), where blocks come from BFT consensus.

Both feed the same :class:`EventLog`: the shell derives events from committed blocks (the
transactions that applied and their receipts), like Tendermint's event stream, so verifiers can
follow ``FinishInference`` and failed ``Validation`` records without scanning the whole state.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gonka_ray import crypto, wire
from gonka_ray.ledger import epoch_app, inference_app, receipt_app
from gonka_ray.ledger.state import PARTICIPANTS, BlockResult, StateMachine
from gonka_ray.protocol.lifecycle import InferenceRecord, ParticipantRecord
from gonka_ray.protocol.receipts import Sealed
from gonka_ray.protocol.reputation import reputation
from gonka_ray.protocol.settlement import EpochSnapshot
from gonka_ray.protocol.versions import Chain


@dataclass(frozen=True)
class TxOutcome:
    """A committed transaction's receipt: applied or rejected (with the state machine's reason)."""

    ok: bool
    reason: str
    height: int
    tx_id: bytes


@dataclass(frozen=True)
class ParticipantInfo:
    address: str
    name: str
    public_key: bytes
    weight: int
    status: str
    reputation: int
    record: ParticipantRecord


@dataclass(frozen=True)
class LedgerEvent:
    """One applied lifecycle transaction. ``kind`` is the message type name."""

    seq: int
    height: int
    kind: str
    inference_id: bytes
    sender: str
    passed: bool | None = None  # Validation only
    validator: str = ""  # ReceiptChallenge / ReceiptVote only


def _seq_of(event: LedgerEvent) -> int:
    return event.seq


class EventLog:
    """Events from committed blocks, numbered from 1; bounded (old events are dropped)."""

    def __init__(self, chain: str, max_events: int = 100_000) -> None:
        self.chain = chain
        self.events: list[LedgerEvent] = []
        self.max_events = max_events
        self._next = 1
        # long polls (wait_since) wait on this; feed() sets it from whatever thread applies
        self._grew: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def feed(self, result: BlockResult, txs: Sequence[bytes]) -> None:
        first = self._next
        for tx, receipt in zip(txs, result.receipts, strict=True):
            if not receipt.ok:
                continue
            signed = wire.open_applied(tx)  # verified once, by the state machine
            msg = signed.message
            if isinstance(msg, wire.StartInference):
                iid = inference_app.inference_id_of(msg.request)
            elif hasattr(msg, "inference_id"):
                iid = msg.inference_id
            else:
                continue
            self.events.append(
                LedgerEvent(
                    seq=self._next,
                    height=result.height,
                    kind=type(msg).TYPE,
                    inference_id=iid,
                    sender=signed.signer_address,
                    passed=getattr(msg, "passed", None),
                    validator=getattr(msg, "validator", ""),
                )
            )
            self._next += 1
        if len(self.events) > self.max_events:
            del self.events[: len(self.events) - self.max_events]
        if self._grew is not None and self._next > first:
            loop, grew = self._grew
            self._grew = None
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(grew.set)

    def since(self, seq: int) -> list[LedgerEvent]:
        """Events with sequence number > ``seq`` (a binary search: every verifier asks a few
        times a second, and the log holds up to ``max_events``)."""
        return self.events[bisect.bisect_right(self.events, seq, key=_seq_of) :]

    async def wait_since(self, seq: int, wait_s: float) -> list[LedgerEvent]:
        """:meth:`since`, but with none yet, wait up to ``wait_s`` for the next block that
        brings events (a long poll: a follower asks once per such block, not on a timer)."""
        out = self.since(seq)
        if out or wait_s <= 0:
            return out
        loop = asyncio.get_running_loop()
        if self._grew is None or self._grew[0] is not loop:
            self._grew = (loop, asyncio.Event())
        grew = self._grew[1]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(grew.wait(), wait_s)
        return self.since(seq)


class LedgerPort(Protocol):
    """What actors need from the ledger (all answers from committed state).

    ``submit`` returns once the transaction committed (its receipt); when ``accepted`` is given
    it is set as soon as a replica has taken the transaction into its mempool and passed it on
    to the group, long before the commit. ``chain`` is the network's chain id and rule schedule
    (from its genesis): roles sign and open envelopes for it.
    """

    chain: Chain

    async def submit(self, tx: bytes, *, accepted: asyncio.Event | None = None) -> TxOutcome: ...
    async def participants(self) -> dict[str, ParticipantInfo]: ...
    async def balance(self, address: str) -> int: ...
    async def nonce(self, address: str) -> int: ...
    async def inference(self, inference_id: bytes) -> InferenceRecord | None: ...
    async def sealed_receipt(self, inference_id: bytes, validator: str) -> Sealed | None: ...
    async def published_receipt(self, inference_id: bytes, validator: str) -> tuple | None: ...
    async def events_since(self, seq: int, wait_s: float = 0.0) -> list[LedgerEvent]: ...
    async def height(self) -> int: ...
    async def epoch_view(self) -> epoch_app.EpochView: ...
    async def epoch_snapshot(self, epoch: int) -> EpochSnapshot | None: ...
    async def poc_claim(self, epoch: int, address: str) -> list[int] | None: ...


def participant_infos(sm: StateMachine, epochs_to_max: int) -> dict[str, ParticipantInfo]:
    """Every registered participant with its protocol counters, from committed state."""
    out = {}
    for address, rec in inference_app.participant_records(sm).items():
        public_key, name, weight = sm.get(PARTICIPANTS, address)
        out[address] = ParticipantInfo(
            address=address,
            name=name,
            public_key=public_key,
            weight=int(weight),
            status=rec.status.value,
            reputation=reputation(rec.epochs_active, epochs_to_max),
            record=rec,
        )
    return out


class LocalLedger:
    """A single in-process state machine behind the :class:`LedgerPort` interface (tests, sims).

    ``submit`` queues the transaction; a block is cut as soon as the previous one is applied, so
    concurrent submissions share blocks like they would on the replica group.
    """

    def __init__(
        self,
        genesis: wire.LedgerGenesis,
        config: inference_app.InferenceAppConfig,
        *,
        epochs_to_max_reputation: int = 30,
        epoch: epoch_app.EpochAppConfig | None = None,
    ) -> None:
        self.sm = StateMachine(genesis)
        self.chain = self.sm.chain
        self.epoch_config = epoch or epoch_app.EpochAppConfig(chain_id=genesis.chain_id)
        epoch_app.install_protocol(self.sm, config, self.epoch_config)
        self.log = EventLog(self.chain.id)
        self.epochs_to_max = epochs_to_max_reputation
        self._queue: list[tuple[bytes, asyncio.Future]] = []
        self._cutting = False

    async def submit(self, tx: bytes, *, accepted: asyncio.Event | None = None) -> TxOutcome:
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((tx, fut))
        if accepted is not None:
            accepted.set()
        if not self._cutting:
            self._cutting = True
            try:
                await asyncio.sleep(0)  # let concurrent submitters join this block
                while self._queue:
                    self.cut_block()
            finally:
                self._cutting = False
        return await fut

    def cut_block(self) -> BlockResult:
        """Apply everything queued as the next block (also used to advance time in tests)."""
        batch, self._queue = self._queue, []
        txs = tuple(tx for tx, _ in batch)
        height = self.sm.height + 1
        result = self.sm.apply_block(height, crypto.sha256(b"local-block-%d" % height), txs)
        self.log.feed(result, txs)
        for (_, fut), receipt in zip(batch, result.receipts, strict=True):
            if not fut.done():
                fut.set_result(TxOutcome(receipt.ok, receipt.reason, height, receipt.tx_id))
        return result

    async def participants(self) -> dict[str, ParticipantInfo]:
        return participant_infos(self.sm, self.epochs_to_max)

    async def balance(self, address: str) -> int:
        return self.sm.balance(address)

    async def nonce(self, address: str) -> int:
        return self.sm.nonce(address)

    async def inference(self, inference_id: bytes) -> InferenceRecord | None:
        return inference_app.inference_record(self.sm, inference_id)

    async def sealed_receipt(self, inference_id: bytes, validator: str) -> Sealed | None:
        return receipt_app.sealed_of(self.sm.get, inference_id, validator)

    async def published_receipt(self, inference_id: bytes, validator: str) -> tuple | None:
        return receipt_app.revealed_of(self.sm.get, inference_id, validator)

    async def events_since(self, seq: int, wait_s: float = 0.0) -> list[LedgerEvent]:
        return await self.log.wait_since(seq, wait_s)

    async def height(self) -> int:
        return self.sm.height

    async def epoch_view(self) -> epoch_app.EpochView:
        return epoch_app.epoch_view(self.sm, self.epoch_config)

    async def epoch_snapshot(self, epoch: int) -> EpochSnapshot | None:
        return epoch_app.snapshot_of(self.sm.get, epoch)

    async def poc_claim(self, epoch: int, address: str) -> list[int] | None:
        return epoch_app.poc_claim_nonces(self.sm, epoch, address)
