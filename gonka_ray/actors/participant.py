"""A participant's roles as Ray actors: the thin shell around the plain role classes.

Each actor is built from a :class:`ParticipantSpec` (plain data: names, the participant's key
seed, the genesis bytes, the protocol parameters), so a restart (``max_restarts``) rebuilds it
from the same spec: the payload store and the ledger replica recover from their SQLite files.
Handles to other actors are looked up by name (``<network>.<participant>.<role>``) when first
needed, so actors can start in any order.

- :class:`ParticipantReplica` — a :class:`~gonka_ray.ledger.replica.LedgerReplica` with the
  inference protocol installed, an event log of committed lifecycle transactions, and the
  queries the participant's own actors use; it reaches the other replicas through the
  transport it is given (:func:`ledger_transport`: the replica actors of the network by name).
- :class:`ReplicaLedgerPort` — the :class:`~gonka_ray.actors.ledger_port.LedgerPort` the roles
  use: submissions go through :class:`~gonka_ray.ledger.client.LedgerClient` (receipts verified
  offline), queries go to the participant's own replica (it trusts its own state).
- :class:`TransportAgentActor`, :class:`ExecutorActor`, :class:`VerifierActor`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gonka_ray import crypto, wire
from gonka_ray import metrics as M
from gonka_ray.actors.epoch_worker import EpochWorker, PocSettings
from gonka_ray.actors.executor import Executor
from gonka_ray.actors.ledger_port import EventLog, LedgerEvent, TxOutcome, participant_infos
from gonka_ray.actors.payload_store import PayloadStore
from gonka_ray.actors.transport import TransportAgent
from gonka_ray.actors.verifier import Verifier
from gonka_ray.config import EpochConfig
from gonka_ray.ledger import epoch_app, inference_app
from gonka_ray.ledger.replica import LedgerReplica
from gonka_ray.ledger.transport import PeerTransport
from gonka_ray.peer.ray_transport import RayPeerTransport
from gonka_ray.protocol.lifecycle import InferenceRecord
from gonka_ray.protocol.verification_policy import thresholds_for
from gonka_ray.protocol.versions import Chain, chain_of
from gonka_ray.verification.adversary import SAMPLING_CHEATS, sampling_hook


@dataclass(frozen=True)
class ParticipantSpec:
    """Everything a participant's actors need to (re)build themselves. Plain, picklable data."""

    network: str
    namespace: str
    name: str
    index: int  # position in the genesis participant list
    key_seed: bytes  # NOTE: the participant's own secret, handed only to its own actors
    genesis: bytes  # encoded LedgerGenesis
    participant_names: dict[str, str]  # address -> participant name, for handle lookups
    model: str
    price_per_token: int
    expiry_blocks: int
    vote_blocks: int
    epochs_to_max_reputation: int
    storage_dir: str
    adversary: str | None = None
    epochs: EpochConfig = field(default_factory=EpochConfig)
    poc: PocSettings = field(default_factory=PocSettings)
    extra: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"  # the network's model dtype: picks the verification thresholds

    def actor_name(self, role: str, participant: str | None = None) -> str:
        return f"{self.network}.{participant or self.name}.{role}"

    @property
    def app_config(self) -> inference_app.InferenceAppConfig:
        return inference_app.InferenceAppConfig(
            price_per_token=self.price_per_token,
            expiry_blocks=self.expiry_blocks,
            vote_blocks=self.vote_blocks,
        )

    @property
    def chain(self) -> Chain:
        """The network's chain id and rule schedule (from the genesis)."""
        return chain_of(wire.decode(self.genesis, wire.LedgerGenesis))

    @property
    def epoch_app_config(self) -> epoch_app.EpochAppConfig:
        genesis = wire.decode(self.genesis, wire.LedgerGenesis)
        return epoch_app.EpochAppConfig(epoch=self.epochs, chain_id=genesis.chain_id)

    def epoch_seed(self, epoch: int) -> bytes:
        """This participant's secret seed for ``epoch`` (derived from its secret key seed)."""
        return hashlib.sha256(
            b"gonka_ray/epoch-seed/" + self.key_seed + epoch.to_bytes(8, "big")
        ).digest()


class _Handles:
    """Lazy, cached actor lookups by name."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._cache: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        handle = self._cache.get(name)
        if handle is None:
            import ray

            handle = ray.get_actor(name, namespace=self.namespace)
            self._cache[name] = handle
        return handle

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)


# --- ledger ----------------------------------------------------------------------------------


METRICS_SCAN_INTERVAL_S = 1.0  # replica: how often the invalidations gauge rescans records
METRICS_PUBLISH_INTERVAL_S = 2.0  # verifier: how often its counters are published as metrics


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
        M.set_gauge("gonka_ledger_height", height, participant=self.spec.name)
        M.inc("gonka_ledger_txs", txs, participant=self.spec.name)
        now = time.monotonic()
        if txs and now - getattr(self, "_invalidations_at", 0.0) > METRICS_SCAN_INTERVAL_S:
            # NOTE: a scan of the participant records, at most once per interval.
            self._invalidations_at = now
            total = sum(
                r.invalidated_total for r in inference_app.participant_records(self.sm).values()
            )
            M.set_gauge("gonka_invalidations", total, participant=self.spec.name)

    async def participants(self) -> dict:
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


def _names_by_index(spec: ParticipantSpec) -> list[str]:
    genesis = wire.decode(spec.genesis, wire.LedgerGenesis)
    return [p.name for p in genesis.participants]


def ledger_transport(spec: ParticipantSpec) -> RayPeerTransport:
    """The link of ``spec``'s ledger replica to the network's other replica actors (by name,
    genesis order). Plain data until first used, so it travels in the actor's arguments."""
    names = [spec.actor_name("ledger", n) for n in _names_by_index(spec)]
    return RayPeerTransport(names, index=spec.index, namespace=spec.namespace)


class ReplicaLedgerPort:
    """LedgerPort over the replica group (see the module docstring)."""

    def __init__(self, spec: ParticipantSpec, handles: _Handles, *, timeout_s: float = 20.0):
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
                for n in _names_by_index(self.spec)
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
        M.observe(
            "gonka_ledger_commit_latency_s", time.perf_counter() - t0, participant=self.spec.name
        )
        height = receipt.certificate.headers[0].height if receipt.certificate.headers else 0
        return TxOutcome(receipt.ok, receipt.reason, int(height), receipt.tx_hash)

    async def participants(self):
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


# --- roles -----------------------------------------------------------------------------------


class _Role:
    def __init__(self, spec: ParticipantSpec) -> None:
        self.spec = spec
        self.key = crypto.KeyPair.from_seed(spec.key_seed)
        self.handles = _Handles(spec.namespace)
        self.ledger = ReplicaLedgerPort(spec, self.handles)

    def _engine(self) -> Any:
        return self.handles.get(self.spec.actor_name("mlnode"))

    def _executor_of(self, address: str) -> Any:
        return self.handles.get(
            self.spec.actor_name("executor", self.spec.participant_names[address])
        )

    @staticmethod
    def _rng(spec: ParticipantSpec, role: str) -> random.Random:
        # Nonces only need to be unique; seed from the OS so restarts never reuse them.
        return random.Random(
            hashlib.sha256(spec.key_seed + role.encode() + str(time.time_ns()).encode()).digest()
        )


class TransportAgentActor(_Role):
    """The participant's transport agent as a Ray actor (streaming ``submit``)."""

    def __init__(self, spec: ParticipantSpec) -> None:
        super().__init__(spec)
        self.ta = TransportAgent(
            participant=spec.name,
            key=self.key,
            ledger=self.ledger,
            engine=_LazyHandle(self._engine),
            executors=self._executor_of,
            model=spec.model,
            price_per_token=spec.price_per_token,
            rng=self._rng(spec, "ta"),
        )

    async def submit(self, envelope: bytes) -> AsyncIterator[bytes]:
        outcome = "error"
        try:
            async for item in self.ta.submit(envelope):
                yield item
            outcome = "ok"
        finally:
            M.inc("gonka_ta_requests", participant=self.spec.name, outcome=outcome)

    async def stats(self) -> dict:
        return {"participant": self.spec.name, **self.ta.stats()}

    async def ping(self) -> str:
        return self.spec.name


class ExecutorActor(_Role):
    """The participant's executor as a Ray actor (streaming ``execute``, ``payload``)."""

    def __init__(self, spec: ParticipantSpec) -> None:
        super().__init__(spec)
        store = PayloadStore(Path(spec.storage_dir) / spec.name / "payloads.sqlite")
        hook = sampling_hook(spec.adversary) if spec.adversary in SAMPLING_CHEATS else None
        self.executor = Executor(
            participant=spec.name,
            key=self.key,
            engine=_LazyHandle(self._engine),
            ledger=self.ledger,
            store=store,
            model=spec.model,
            sampling_hook=hook,
            withhold_payloads=spec.adversary == "withhold_payload",
            rng=self._rng(spec, "executor"),
        )

    async def execute(self, envelope: bytes) -> AsyncIterator[bytes]:
        async for item in self.executor.execute(envelope):
            yield item

    async def payload(self, envelope: bytes) -> bytes:
        return await self.executor.payload(envelope)

    async def stats(self) -> dict:
        return {"participant": self.spec.name, **self.executor.stats()}


class VerifierActor(_Role):
    """The participant's verifier and epoch duties as a Ray actor; :meth:`start` commits the
    epoch seeds and begins following the ledger in the background. The constructor starts it
    too (retrying until it succeeds), so a verifier Ray restarted resumes its duties by itself."""

    def __init__(self, spec: ParticipantSpec) -> None:
        super().__init__(spec)
        self.verifier = Verifier(
            participant=spec.name,
            key=self.key,
            ledger=self.ledger,
            engine=_LazyHandle(self._engine),
            executors=self._executor_of,
            model=spec.model,
            thresholds=thresholds_for(spec.model, spec.dtype),
            epoch_seed=spec.epoch_seed,
            epochs=spec.epochs,
            rng=self._rng(spec, "verifier"),
        )
        self.worker = EpochWorker(
            participant=spec.name,
            key=self.key,
            ledger=self.ledger,
            engine=_LazyHandle(self._engine),
            model=spec.model,
            seed_for=spec.epoch_seed,
            epochs=spec.epochs,
            poc=spec.poc,
            rng=self._rng(spec, "epochs"),
        )
        self._tasks: list = []
        self._start_lock = asyncio.Lock()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside an event loop (plain use): start() when ready
            loop = None
        if loop is not None:
            # NOTE: Ray runs an async actor's constructor on its event loop; without this a
            # verifier restarted by max_restarts would sit idle until someone called start().
            self._autostart = loop.create_task(self._start_until_done())

    async def _start_until_done(self, retry_s: float = 1.0) -> None:
        while not self._tasks:
            try:
                await self.start()
            except Exception:  # the ledger or MLNode may still be (re)starting: try again
                logging.getLogger(__name__).exception("%s: verifier start failed", self.spec.name)
                await asyncio.sleep(retry_s)

    async def start(self, poll_interval_s: float = 0.3) -> bool:
        """Commit this epoch's and the next epoch's seeds, then follow the ledger."""
        async with self._start_lock:
            if not self._tasks:
                await self._start(poll_interval_s)
        return True

    async def _start(self, poll_interval_s: float) -> None:
        await self.worker.run_once()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.verifier.run(poll_interval_s)),
            loop.create_task(self._epoch_loop(poll_interval_s)),
            loop.create_task(self._publish_metrics()),
        ]

    async def _publish_metrics(self) -> None:
        """Publish the verifier's counters as Ray metrics (deltas, every few seconds), so the
        checks themselves make no metric calls."""
        last = {"checked": 0, "failed": 0, "votes": 0}
        name = self.spec.name
        while True:
            await asyncio.sleep(METRICS_PUBLISH_INTERVAL_S)
            now = self.verifier.stats()
            failed = now["failed"] - last["failed"]
            passed = now["checked"] - last["checked"] - failed
            M.inc("gonka_validations", passed, participant=name, passed=True)
            M.inc("gonka_validations", failed, participant=name, passed=False)
            M.inc("gonka_votes", now["votes"] - last["votes"], participant=name)
            last = {k: now[k] for k in last}

    async def _epoch_loop(self, poll_interval_s: float) -> None:
        while True:
            try:
                await self.worker.run_once()
            except Exception:  # keep going whatever one duty did
                logging.getLogger(__name__).exception("%s: epoch duty failed", self.spec.name)
            await asyncio.sleep(poll_interval_s / 2)

    async def run_once(self) -> int:
        return await self.verifier.run_once()

    async def stats(self) -> dict:
        return {
            "participant": self.spec.name,
            **self.verifier.stats(),
            "epochs": self.worker.stats(),
        }


class _LazyHandle:
    """Resolves an actor handle on first use (the MLNode may start after its callers)."""

    def __init__(self, resolve) -> None:
        self._resolve = resolve
        self._handle = None

    def __getattr__(self, name: str) -> Any:
        if self._handle is None:
            self._handle = self._resolve()
        return getattr(self._handle, name)
