"""A participant's roles as Ray actors: the thin shells around the plain role classes.

Each shell builds its role from the participant's :class:`~gonka_ray.actors.spec.ParticipantSpec`
and one :class:`~gonka_ray.actors.role.RoleContext` (name, key, ledger port, MLNode, model), so
a restart rebuilds it from the same spec. Handles to the participant's other actors are looked up
by name (``<network>.<participant>.<role>``) when first needed, so actors can start in any order;
another participant's actors are never looked up (its executor is a
:class:`~gonka_ray.actors.clients.RemoteExecutor`: calls over the peer transport).

- :class:`TransportAgentActor` — the transport agent (streaming ``submit``).
- :class:`ExecutorActor` — the executor (streaming ``execute``, ``payload``); an adversarial
  spec gets a :class:`~gonka_ray.adversary.actors.CheatingExecutor`.
- :class:`VerifierEpochActor` — the verifier *and* the epoch duties (seed commits, PoC sprint
  and validation, settlement): both follow the ledger and share one MLNode.

The ledger replica actor and the ledger port are in :mod:`gonka_ray.actors.replica`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gonka_ray import crypto, metrics
from gonka_ray.actors.clients import RemoteExecutor
from gonka_ray.actors.epoch_worker import EpochWorker
from gonka_ray.actors.executor import Executor
from gonka_ray.actors.handles import HandleCache, LazyHandle
from gonka_ray.actors.payload_store import PayloadStore
from gonka_ray.actors.replica import ReplicaLedgerPort
from gonka_ray.actors.role import RoleContext
from gonka_ray.actors.spec import ParticipantSpec
from gonka_ray.actors.transport import TransportAgent
from gonka_ray.actors.verifier import Verifier
from gonka_ray.adversary.actors import CheatingExecutor
from gonka_ray.constants import VERIFIER_METRICS_PUBLISH_INTERVAL_S
from gonka_ray.protocol.verification_policy import thresholds_for


class _RoleShell:
    def __init__(self, spec: ParticipantSpec) -> None:
        self.spec = spec
        self.key = crypto.KeyPair.from_seed(spec.key_seed)
        self.handles = HandleCache(spec.namespace, spec.actor_name(""))
        self.ledger = ReplicaLedgerPort(spec, self.handles)
        self.ctx = RoleContext(
            participant=spec.name,
            key=self.key,
            ledger=self.ledger,
            engine=LazyHandle(self._engine),
            model=spec.model,
        )

    def _engine(self) -> Any:
        return self.handles.get(self.spec.actor_name("mlnode"))

    def _executor_of(self, address: str) -> RemoteExecutor:
        # NOTE: another participant's executor is reached over the peer transport, through
        # this participant's own replica actor (its peer endpoint), never through Ray.
        return RemoteExecutor(self.handles.get(self.spec.actor_name("ledger")), address)

    @staticmethod
    def _rng(spec: ParticipantSpec, role: str) -> random.Random:
        # Nonces only need to be unique; seed from the OS so restarts never reuse them.
        return random.Random(
            hashlib.sha256(spec.key_seed + role.encode() + str(time.time_ns()).encode()).digest()
        )


class TransportAgentActor(_RoleShell):
    """The participant's transport agent as a Ray actor (streaming ``submit``)."""

    def __init__(self, spec: ParticipantSpec) -> None:
        super().__init__(spec)
        self.ta = TransportAgent(
            self.ctx,
            executors=self._executor_of,
            price_per_token=spec.app_config.price_per_token,  # the genesis's
            rng=self._rng(spec, "ta"),
        )

    async def submit(self, envelope: bytes) -> AsyncIterator[bytes]:
        outcome = "error"
        try:
            async for item in self.ta.submit(envelope):
                yield item
            outcome = "ok"
        finally:
            metrics.inc("gonka_ta_requests", participant=self.spec.name, outcome=outcome)

    async def stats(self) -> dict:
        return {"participant": self.spec.name, **self.ta.stats()}

    async def drain(self) -> None:
        """Wait for the ledger submissions of answered requests (graceful shutdown)."""
        await self.ta.drain()

    async def ping(self) -> str:
        return self.spec.name


class ExecutorActor(_RoleShell):
    """The participant's executor as a Ray actor (streaming ``execute``, ``payload``). The
    constructor resubmits the Finishes journalled before a crash and keeps resubmitting those the
    ledger has not decided (:meth:`Executor.keep_finishing`)."""

    def __init__(self, spec: ParticipantSpec) -> None:
        super().__init__(spec)
        store = PayloadStore(Path(spec.storage_dir) / spec.name / "payloads.sqlite")
        rng = self._rng(spec, "executor")
        if spec.adversary in CheatingExecutor.KINDS:
            self.executor = CheatingExecutor(self.ctx, kind=spec.adversary, store=store, rng=rng)
        else:
            self.executor = Executor(self.ctx, store=store, rng=rng)
        with contextlib.suppress(RuntimeError):  # no event loop (plain use): resume() by hand
            # NOTE: Ray runs an async actor's constructor on its event loop.
            self._finishing = asyncio.get_running_loop().create_task(self.executor.keep_finishing())

    async def execute(self, envelope: bytes) -> AsyncIterator[bytes]:
        async for item in self.executor.execute(envelope):
            yield item

    async def payload(self, envelope: bytes) -> bytes:
        return await self.executor.payload(envelope)

    async def audit_receipt(self, inference_id: bytes, validator: str, receipt: tuple) -> bool:
        """Asked by this participant's own verifier (never over the peer transport)."""
        return await self.executor.audit_receipt(inference_id, validator, receipt)

    async def stats(self) -> dict:
        return {"participant": self.spec.name, **self.executor.stats()}

    async def drain(self) -> None:
        """Wait for the Finish submissions of executed requests (graceful shutdown)."""
        await self.executor.drain()


class VerifierEpochActor(_RoleShell):
    """The participant's verifier and epoch duties as a Ray actor; :meth:`start` commits the
    epoch seeds and begins following the ledger in the background. The constructor starts it
    too (retrying until it succeeds), so a verifier Ray restarted resumes its duties by itself."""

    def __init__(self, spec: ParticipantSpec) -> None:
        super().__init__(spec)
        epochs = spec.epoch_app_config.epoch  # the genesis's numbers
        self.verifier = Verifier(
            self.ctx,
            executors=self._executor_of,
            thresholds=thresholds_for(spec.model, spec.dtype),
            epoch_seed=spec.epoch_seed,
            epochs=epochs,
            rng=self._rng(spec, "verifier"),
            own_executor=LazyHandle(lambda: self.handles.get(spec.actor_name("executor"))),
        )
        self.worker = EpochWorker(
            self.ctx,
            seed_for=spec.epoch_seed,
            epochs=epochs,
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
            await asyncio.sleep(VERIFIER_METRICS_PUBLISH_INTERVAL_S)
            now = self.verifier.stats()
            failed = now["failed"] - last["failed"]
            passed = now["checked"] - last["checked"] - failed
            metrics.inc("gonka_validations", passed, participant=name, passed=True)
            metrics.inc("gonka_validations", failed, participant=name, passed=False)
            metrics.inc("gonka_votes", now["votes"] - last["votes"], participant=name)
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
