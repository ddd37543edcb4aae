"""The participant's ledger replica as an actor, and the ledger port its roles use.

- :class:`ParticipantReplica` — a :class:`~gonka_ray.ledger.replica.LedgerReplica` with the
  inference protocol installed, an event log of committed lifecycle transactions, and the
  queries the participant's own actors use. It is also the participant's **peer endpoint**:
  its :class:`~gonka_ray.peer.tcp.TcpPeerTransport` (:func:`ledger_transport`, on the
  participant's ``peer_address``) carries the consensus messages and the calls between
  participants: it answers other participants' ``execute`` and ``payload`` calls with its own
  executor, and carries its own roles' calls to the others (:meth:`ParticipantReplica.peer_stream`).
  No Ray call crosses a participant boundary. The payload store and the replica recover from
  their SQLite files on a restart.
- :class:`ReplicaLedgerPort` — the :class:`~gonka_ray.actors.ledger_port.LedgerPort` the roles
  use: submissions go through :class:`~gonka_ray.ledger.client.LedgerClient` to the
  participant's own replica (receipts verified offline; a restarting replica is waited for),
  queries go to it too (it trusts its own state).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gonka_ray import crypto, metrics, wire
from gonka_ray.actors.clients import EXECUTE, PAYLOAD, stream_call
from gonka_ray.actors.handles import HandleCache
from gonka_ray.actors.ledger_port import (
    EventLog,
    LedgerEvent,
    ParticipantInfo,
    TxOutcome,
    participant_infos,
)
from gonka_ray.actors.spec import ParticipantSpec
from gonka_ray.constants import (
    LEDGER_PORT_RETRY_S,
    REPLICA_METRICS_SCAN_INTERVAL_S,
    REPLICA_WARM_HANDLE_TIMEOUT_S,
)
from gonka_ray.exceptions import CommitTimeout, PeerUnavailable
from gonka_ray.ledger import epoch_app, inference_app, receipt_app
from gonka_ray.ledger.replica import LedgerReplica
from gonka_ray.ledger.transport import PeerTransport
from gonka_ray.peer.calls import first
from gonka_ray.peer.guest import serve_joiners
from gonka_ray.peer.tcp import TcpPeerTransport
from gonka_ray.protocol.lifecycle import InferenceRecord
from gonka_ray.protocol.receipts import Sealed


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
            **{"autostart": True, **replica_kwargs},
        )
        self.handles = HandleCache(spec.namespace, spec.actor_name(""))
        if isinstance(transport, TcpPeerTransport):  # the peer endpoint: answer the others
            transport.serve(EXECUTE, self._execute)
            transport.serve(PAYLOAD, self._payload)
            serve_joiners(transport, self)
        self._warm: asyncio.Task | None = None
        try:
            self._warm = asyncio.get_running_loop().create_task(self._warm_executor_handle())
        except RuntimeError:  # built outside an event loop (plain use): looked up when needed
            pass

    async def _warm_executor_handle(self) -> None:
        # NOTE: the first lookup of the executor's handle loads its actor class in this process
        # (imports, ~1-3 s of CPU). Done on the first peer call, it stalled this replica's event
        # loop, consensus included; done here, in a thread, at start-up, it stalls nothing.
        deadline = time.monotonic() + REPLICA_WARM_HANDLE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                await asyncio.to_thread(self._executor)
                return
            except ValueError:  # the executor actor is not up yet
                await asyncio.sleep(LEDGER_PORT_RETRY_S)

    # --- the peer endpoint ---------------------------------------------------------------

    def _executor(self) -> Any:
        return self.handles.get(self.spec.actor_name("executor"))

    async def _execute(self, envelope: bytes, caller: int) -> AsyncIterator[bytes]:
        # NOTE: the executor checks the envelope (the TA's signature, the client's request);
        # cancelling this generator (the caller left) cancels the executor's stream.
        async for item in stream_call(self._executor().execute, envelope):
            yield item

    async def _payload(self, envelope: bytes, caller: int) -> AsyncIterator[bytes]:
        yield await self._executor().payload.remote(envelope)

    def _place_of(self, address: str) -> int:
        for i, entry in enumerate(self._directory):
            if entry.address == address:
                return i
        raise PeerUnavailable(f"no participant {address} in the peer directory")

    async def peer_stream(self, dest: str, method: str, body: bytes) -> AsyncIterator[bytes]:
        """The replies of ``method(body)`` at the participant with account ``dest``, over the
        peer transport (this participant's own handlers when ``dest`` is itself). A streaming
        actor method: the participant's roles call it for everything they ask of another
        participant.

        Raises:
            PeerUnavailable: ``dest`` is unknown or not connected, or dropped or stalled
                mid-answer.
            PeerCallFailed: ``dest`` answered with an error.
        """
        index = self._place_of(dest)
        if index == self.index:
            replies = self._transport.calls.handlers[method](body, index)
        else:
            replies = self._transport.call_stream(index, method, body)
        async for item in replies:
            yield item

    async def peer_stats(self) -> dict[str, Any]:
        """The peer endpoint's state: connected peers (genesis indexes), calls answered and
        open, sessions, and connections cut by reason."""
        t = self._transport
        if not isinstance(t, TcpPeerTransport):
            return {}
        return {
            "connected": t.connected(),
            "calls_served": t.calls.served,
            "calls_open": sum(len(c.serving) for c in t._conns.values()),
            "sessions": t.stats.sessions,
            "cuts": dict(t.stats.cuts),
        }

    async def peer_call(self, dest: str, method: str, body: bytes) -> bytes:
        """The one reply of participant ``dest``'s ``method(body)`` (see :meth:`peer_stream`)."""
        return await first(self.peer_stream(dest, method, body))

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
        return participant_infos(self.sm, self.epoch_config.epoch.epochs_to_max_reputation)

    async def inference(self, inference_id: bytes) -> InferenceRecord | None:
        return inference_app.inference_record(self.sm, inference_id)

    async def sealed_receipt(self, inference_id: bytes, validator: str) -> Sealed | None:
        return receipt_app.sealed_of(self.sm.get, inference_id, validator)

    async def published_receipt(self, inference_id: bytes, validator: str) -> tuple | None:
        return receipt_app.revealed_of(self.sm.get, inference_id, validator)

    async def receipt_disputes(self) -> list[tuple[bytes, str, str, str]]:
        """Every receipt challenge: ``(inference id, validator, challenger, outcome)``."""
        out = []
        for key in self.sm.tables.get(receipt_app.RECEIPT_DISPUTES, {}):
            d = receipt_app.dispute_of(self.sm.get, *key)
            out.append((bytes(key[0]), str(key[1]), d.challenger, d.outcome.value))
        return out

    async def inferences(self, limit: int = 50) -> list[InferenceRecord]:
        """The most recently started inferences, newest first (explorer, demo tables)."""
        rows = self.sm.tables.get(inference_app.INFERENCES, {})
        recs = [inference_app.inference_record(self.sm, k) for k in rows]
        recs.sort(key=lambda r: (r.start_height, r.inference_id), reverse=True)
        return recs[:limit]

    async def events_since(self, seq: int, wait_s: float = 0.0) -> list[LedgerEvent]:
        return await self.events.wait_since(seq, wait_s)

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


def ledger_transport(spec: ParticipantSpec) -> TcpPeerTransport:
    """The peer endpoint of ``spec``'s participant: a TCP transport on its ``peer_address``, to
    the others' by genesis index. Plain data until started, so it travels in the replica actor's
    arguments (a restarted actor gets a fresh one, which binds the same address)."""
    key = crypto.KeyPair.from_seed(spec.key_seed)
    if spec.peer_keys:  # a joiner: its place is past the genesis participants
        return TcpPeerTransport(
            index=spec.index,
            key=key,
            chain_id=spec.chain.id,
            peer_keys=list(spec.peer_keys),
            addresses=list(spec.peer_addresses),
            listen_host=spec.peer_listen_host,
        )
    return TcpPeerTransport.for_genesis(
        spec.genesis,
        index=spec.index,
        key=key,
        addresses=list(spec.peer_addresses),
        listen_host=spec.peer_listen_host,
    )


class ReplicaLedgerPort:
    """LedgerPort over the participant's own replica (see the module docstring)."""

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
            # NOTE: the participant's own replica only: it is trusted, and the others are
            # reached only over the peer transport (they gossip what it accepts).
            self._client = LedgerClient(
                [self._own()], genesis, timeout_s=self.timeout_s, seed=self.spec.index
            )
        return self._client

    async def submit(self, tx: bytes, *, accepted: asyncio.Event | None = None) -> TxOutcome:
        """Submit ``tx`` to the own replica and wait for its verified receipt; while that
        replica restarts (calls fail at once) try again every ``LEDGER_PORT_RETRY_S`` until
        ``timeout_s`` (transactions are idempotent by id).

        Raises:
            CommitTimeout: not committed within ``timeout_s`` (it may still commit).
        """
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                receipt = await self._ledger_client().submit(tx, accepted=accepted)
                break
            except CommitTimeout:
                if time.monotonic() + LEDGER_PORT_RETRY_S >= deadline:
                    raise
                await asyncio.sleep(LEDGER_PORT_RETRY_S)
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

    async def sealed_receipt(self, inference_id: bytes, validator: str):
        return await self._own().sealed_receipt.remote(inference_id, validator)

    async def published_receipt(self, inference_id: bytes, validator: str):
        return await self._own().published_receipt.remote(inference_id, validator)

    async def events_since(self, seq: int, wait_s: float = 0.0):
        return await self._own().events_since.remote(seq, wait_s)

    async def height(self) -> int:
        return await self._own().height.remote()

    async def epoch_view(self):
        return await self._own().epoch_view.remote()

    async def epoch_snapshot(self, epoch: int):
        return await self._own().epoch_snapshot.remote(epoch)

    async def poc_claim(self, epoch: int, address: str):
        return await self._own().poc_claim.remote(epoch, address)
