"""The participant's ledger replica as an actor, and the ledger port its roles use.

- :class:`ParticipantReplica` — a :class:`~gonka_ray.ledger.replica.LedgerReplica` with the
  inference protocol installed, an event log of committed lifecycle transactions, and the
  queries the participant's own actors use; it reaches the other replicas through the
  transport it is given (:func:`ledger_transport`: the replica actors of the network by name).
  The payload store and the replica recover from their SQLite files on a restart.
- :class:`ReplicaLedgerPort` — the :class:`~gonka_ray.actors.ledger_port.LedgerPort` the roles
  use: submissions go through :class:`~gonka_ray.ledger.client.LedgerClient` (receipts verified
  offline), queries go to the participant's own replica (it trusts its own state).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from gonka_ray import metrics, wire
from gonka_ray.actors.handles import HandleCache
from gonka_ray.actors.ledger_port import (
    EventLog,
    LedgerEvent,
    ParticipantInfo,
    TxOutcome,
    participant_infos,
)
from gonka_ray.actors.spec import ParticipantSpec
from gonka_ray.constants import REPLICA_METRICS_SCAN_INTERVAL_S
from gonka_ray.ledger import epoch_app, inference_app
from gonka_ray.ledger.replica import LedgerReplica
from gonka_ray.ledger.transport import PeerTransport
from gonka_ray.peer.ray_transport import RayPeerTransport
from gonka_ray.protocol.lifecycle import InferenceRecord


class ParticipantReplica(LedgerReplica):
    """A ledger replica with the inference protocol and the participant-side queries."""

    def __init__(
        self, spec: ParticipantSpec, *, transport: PeerTransport, **replica_kwargs: Any
    ) -> None:
        self.spec = spec
        self.events = EventLog(spec.chain.id)

        self.epoch_config = spec.epoch_app_config

        def install(sm) -> None:
            epoch_app.install_protocol(sm, spec.app_config, self.epoch_config)
            apply = sm.apply_block

            def apply_and_log(height: int, block_hash: bytes, txs: tuple[bytes, ...]):
                result = apply(height, block_hash, txs)
                self.events.feed(result, txs)
                self._record_metrics(height, len(txs))
                return result

            sm.apply_block = apply_and_log

        super().__init__(
            index=spec.index,
            key_seed=spec.key_seed,
            genesis=spec.genesis,
            storage_dir=str(Path(spec.storage_dir) / spec.name),
            transport=transport,
            install=install,
            **replica_kwargs,
        )

    def _record_metrics(self, height: int, txs: int) -> None:
        metrics.set_gauge("gonka_ledger_height", height, participant=self.spec.name)
        metrics.inc("gonka_ledger_txs", txs, participant=self.spec.name)
        now = time.monotonic()
        if txs and now - getattr(self, "_invalidations_at", 0.0) > REPLICA_METRICS_SCAN_INTERVAL_S:
            # NOTE: a scan of the participant records, at most once per interval.
            self._invalidations_at = now
            total = sum(
                r.invalidated_total for r in inference_app.participant_records(self.sm).values()
            )
            metrics.set_gauge("gonka_invalidations", total, participant=self.spec.name)

    async def participants(self) -> dict[str, ParticipantInfo]:
        return participant_infos(self.sm, self.spec.epochs_to_max_reputation)

    async def inference(self, inference_id: bytes) -> InferenceRecord | None:
        return inference_app.inference_record(self.sm, inference_id)

    async def inferences(self, limit: int = 50) -> list[InferenceRecord]:
        """The most recently started inferences, newest first (explorer, demo tables)."""
        rows = self.sm.tables.get(inference_app.INFERENCES, {})
        recs = [inference_app.inference_record(self.sm, k) for k in rows]
        recs.sort(key=lambda r: (r.start_height, r.inference_id), reverse=True)
        return recs[:limit]

    async def events_since(self, seq: int) -> list[LedgerEvent]:
        return self.events.since(seq)

    async def nonce(self, address: str) -> int:
        return self.sm.nonce(address)

    async def height(self) -> int:
        return self.sm.height

    async def chain_id(self) -> str:
        """The network's chain id: clients sign their requests for it."""
        return self.sm.chain.id

    async def epoch_view(self) -> epoch_app.EpochView:
        return epoch_app.epoch_view(self.sm, self.epoch_config)

    async def epoch_snapshot(self, epoch: int):
        return epoch_app.snapshot_of(self.sm.get, epoch)

    async def poc_claim(self, epoch: int, address: str) -> list[int] | None:
        return epoch_app.poc_claim_nonces(self.sm, epoch, address)

    async def settlement(self, epoch: int) -> epoch_app.SettlementSummary | None:
        return epoch_app.settlement_summary(self.sm, epoch)


def ledger_transport(spec: ParticipantSpec) -> RayPeerTransport:
    """The link of ``spec``'s ledger replica to the network's other replica actors (by name,
    genesis order). Plain data until first used, so it travels in the actor's arguments."""
    names = [spec.actor_name("ledger", n) for n in spec.names_by_index()]
    return RayPeerTransport(names, index=spec.index, namespace=spec.namespace)


class ReplicaLedgerPort:
    """LedgerPort over the replica group (see the module docstring)."""

    def __init__(self, spec: ParticipantSpec, handles: HandleCache, *, timeout_s: float = 20.0):
        self.spec = spec
        self.handles = handles
        self.timeout_s = timeout_s
        self.chain = spec.chain
        self._client = None

    def _own(self) -> Any:
        return self.handles.get(self.spec.actor_name("ledger"))

    def _ledger_client(self):
        if self._client is None:
            from gonka_ray.ledger.client import LedgerClient

            genesis = wire.decode(self.spec.genesis, wire.LedgerGenesis)
            replicas = [
                self.handles.get(self.spec.actor_name("ledger", n))
                for n in self.spec.names_by_index()
            ]
            own = self.spec.index
            # NOTE: own replica first: it is local and trusted; others are fallbacks.
            replicas = [replicas[own], *replicas[:own], *replicas[own + 1 :]]
            self._client = LedgerClient(
                replicas, genesis, timeout_s=self.timeout_s, seed=own, prefer_first=True
            )
        return self._client

    async def submit(self, tx: bytes, *, accepted: asyncio.Event | None = None) -> TxOutcome:
        t0 = time.perf_counter()
        receipt = await self._ledger_client().submit(tx, accepted=accepted)
        metrics.observe(
            "gonka_ledger_commit_latency_s", time.perf_counter() - t0, participant=self.spec.name
        )
        height = receipt.certificate.headers[0].height if receipt.certificate.headers else 0
        return TxOutcome(receipt.ok, receipt.reason, int(height), receipt.tx_hash)

    async def participants(self) -> dict[str, ParticipantInfo]:
        return await self._own().participants.remote()

    async def balance(self, address: str) -> int:
        return await self._own().balance.remote(address)

    async def nonce(self, address: str) -> int:
        return await self._own().nonce.remote(address)

    async def inference(self, inference_id: bytes):
        return await self._own().inference.remote(inference_id)

    async def events_since(self, seq: int):
        return await self._own().events_since.remote(seq)

    async def height(self) -> int:
        return await self._own().height.remote()

    async def epoch_view(self):
        return await self._own().epoch_view.remote()

    async def epoch_snapshot(self, epoch: int):
        return await self._own().epoch_snapshot.remote(epoch)

    async def poc_claim(self, epoch: int, address: str):
        return await self._own().poc_claim.remote(epoch, address)
