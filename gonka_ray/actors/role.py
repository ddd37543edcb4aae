"""What the participant roles share: the :class:`RoleContext` they are built from, their base
class, fire-and-forget background tasks and resubmission of ledger transactions.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from gonka_ray import crypto
from gonka_ray.actors.clients import EngineClient
from gonka_ray.actors.ledger_port import LedgerPort

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoleContext:
    """What every role of one participant shares: who it is, its key, its ledger view, its own
    MLNode, the served model and the clock. Built once per participant and handed to each role
    (:class:`~gonka_ray.actors.executor.Executor`, :class:`~gonka_ray.actors.transport.TransportAgent`,
    :class:`~gonka_ray.actors.verifier.Verifier`, :class:`~gonka_ray.actors.epoch_worker.EpochWorker`).

    Attributes:
        participant: the participant's name (logs, metrics).
        key: the participant's signing key.
        ledger: committed-state access and transaction submission.
        engine: the participant's MLNode, a Ray actor handle or a plain object.
        model: the model id the participant serves.
        clock: seconds since the epoch (injected for tests).
    """

    participant: str
    key: crypto.KeyPair
    ledger: LedgerPort
    engine: object
    model: str
    clock: Callable[[], float] = time.time


class RoleBase:
    """A role of one participant: its :class:`RoleContext` unpacked into attributes, plus its own
    source of transaction nonces (``rng``; seeded per role so roles never share nonces)."""

    def __init__(self, ctx: RoleContext, *, rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self.participant = ctx.participant
        self.key = ctx.key
        self.address = ctx.key.address
        self.ledger = ctx.ledger
        self.chain = ctx.ledger.chain  # the network's chain id and rule schedule (LedgerPort)
        self.engine = EngineClient(ctx.engine)
        self.model = ctx.model
        self.clock = ctx.clock
        self.rng = rng or random.Random()

    async def draws_without_replacement(self, attempt: int) -> bool:
        """Whether a retry's executor draw skips the earlier attempts' executors under the
        rules of the ledger's current height (attempt 0 draws the same under every version)."""
        if attempt == 0:
            return True
        rules = self.chain.rules_at(await self.ledger.height())
        return rules.retry_draws_without_replacement


class BackgroundTasks:
    """Fire-and-forget coroutines (ledger submissions) that tests and shutdown can wait for.

    NOTE: each runs in a fresh ``contextvars`` context: Ray reads the current task from a
    context variable, so a background submission started while serving a request would
    otherwise count as a child of that request's Ray task and be cancelled with it.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def submit_until(
    ledger: LedgerPort,
    tx: bytes,
    deadline_s: float,
    retry_s: float = 0.5,
    *,
    accepted: asyncio.Event | None = None,
):
    """Submit ``tx`` to a LedgerPort, resubmitting after a commit timeout or an unreachable
    replica until ``deadline_s`` passed (transactions are idempotent by id, so a resend is safe).
    ``accepted`` is set once a replica took it in (see :class:`LedgerPort`)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await ledger.submit(tx, accepted=accepted)
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise
            log.info("ledger submission failed, resending: %r", exc)
            await asyncio.sleep(retry_s)
