"""EpochWorker: a participant's epoch duties, driven by the committed epoch clock (DESIGN §4–§5).

Each :meth:`EpochWorker.run_once` reads the current :class:`~gonka_ray.ledger.epoch_app.EpochView`
from the participant's own replica and does whatever the phase asks and has not been done:

- commit ``sha256(seed)`` of its secret seed for the next epoch (the ledger accepts a commit
  for an epoch only before it starts, so nobody can grind a seed against finished work; the
  genesis epoch's during its PoC sprint);
- **PoC sprint**: run the seed-initialised transformer on its MLNode for a time budget that fits
  in what is left of the phase, and submit the passing nonces (``PocClaim``);
- **PoC validation**: recompute a sample of every other participant's claim, picked by its own
  secret seed, and submit a ``PocVerdict``;
- once epoch ``e`` starts: reveal the seed of ``e − 1`` (``SeedReveal``), its reward claim for
  ``e − 1``, which the ledger settles at ``e``'s last height.

A failed submission is retried on the next call; the ledger rejects duplicates, so retries are
harmless. The worker holds no state that matters across restarts: the ledger says what is done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gonka_ray import wire
from gonka_ray.actors.role import RoleBase, RoleContext
from gonka_ray.config import EpochConfig
from gonka_ray.constants import (
    EPOCH_WORKER_BLOCK_GUESS_S,
    POC_MAX_CLAIMED_NONCES,
    POC_SPRINT_COMPUTE_SHARE,
)
from gonka_ray.ledger.epoch_app import EpochView
from gonka_ray.protocol import validation_sampling
from gonka_ray.protocol.epochs import Phase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PocSettings:
    """How hard this participant works in a sprint.

    ``max_budget_s`` bounds one sprint's compute; ``max_nonces`` (optional) bounds the nonces
    tried — a stand-in for a slower machine in demos and tests.
    """

    max_budget_s: float = 2.0
    max_nonces: int | None = None
    enabled: bool = True


class EpochWorker(RoleBase):
    """One participant's epoch duties. See the module docstring.

    Args:
        ctx: the participant's name, key, ledger, MLNode, model and clock.
        seed_for: the participant's secret seed of an epoch.
        epochs: the network's epoch parameters (difficulty).
        poc: sprint budget settings.
        rng: transaction nonces.
        monotonic: the clock the block time is estimated with (seconds, monotonic).
    """

    def __init__(
        self,
        ctx: RoleContext,
        *,
        seed_for: Callable[[int], bytes],
        epochs: EpochConfig,
        poc: PocSettings | None = None,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(ctx, rng=rng)
        self.monotonic = monotonic
        self.seed_for = seed_for
        self.epochs = epochs
        self.poc = poc or PocSettings()
        self._last: tuple[int, float] | None = None
        self._block_s = EPOCH_WORKER_BLOCK_GUESS_S
        self._tried: set[tuple[str, int, Any]] = set()  # (duty, epoch, item) done this process
        self.sprints: list[dict] = []
        self.verdicts = 0
        self.rejected: Counter[str] = Counter()  # "<tx type>:<reason>" of refused submissions

    async def run_once(self) -> list[str]:
        """Do what the current phase asks; returns the duties carried out (for logs and tests)."""
        view: EpochView = await self.ledger.epoch_view()
        self._observe(view)
        done: list[str] = []
        e, phase = view.epoch, Phase(view.phase)
        if self.address not in view.committed:
            done += await self._once(("commit", e + 1, None), self._commit(e + 1))
        if e == 0 and phase is Phase.POC_SPRINT and self.address not in view.committed_now:
            done += await self._once(("commit", e, None), self._commit(e))
        sprint = phase is Phase.POC_SPRINT and self.poc.enabled and view.seed is not None
        if sprint and self.address not in view.claims and ("claim", e, None) not in self._tried:
            done += await self._sprint(view)
        if phase is Phase.POC_VALIDATION and view.weights.get(self.address, 0) > 0:
            done += await self._judge(view)
        # NOTE: the seed of e - 1 is revealed as soon as e starts: e - 1's inferences are all
        # finished, so the seed tells an executor nothing it can still act on, and an early
        # reveal cannot miss the window on a loaded machine. Checks of e - 1 go on meanwhile.
        me = self.address
        if me in view.committed_prev and me not in view.revealed:
            done += await self._once(("reveal", e - 1, None), self._reveal(e - 1))
        return done

    async def _once(self, item: tuple, work: Any) -> list[str]:
        """Run ``work`` unless ``item`` was already submitted (accepted or refused) here."""
        if item in self._tried:
            work.close()
            return []
        done = await work
        self._tried.add(item)
        return done

    # --- duties ----------------------------------------------------------------------------

    async def _commit(self, epoch: int) -> list[str]:
        commitment = validation_sampling.seed_commitment(self.seed_for(epoch))
        ok = await self._submit(wire.SeedCommit(epoch=epoch, commitment=commitment, nonce=0))
        return [f"commit:{epoch}"] if ok else []

    async def _reveal(self, epoch: int) -> list[str]:
        ok = await self._submit(wire.SeedReveal(epoch=epoch, seed=self.seed_for(epoch), nonce=0))
        return [f"reveal:{epoch}"] if ok else []

    async def _sprint(self, view: EpochView) -> list[str]:
        self._tried.add(("claim", view.epoch, None))
        # the model (seeded, calibrated) takes a while to build: do it first, then spend about
        # half of what is left of the sprint computing
        await self.engine.poc_prepare(view.seed, **self._poc_kw())
        view = await self.ledger.epoch_view()
        if view.phase != Phase.POC_SPRINT.value:
            return []
        left_s = max(0, view.phase_end - view.height) * self._block_s
        budget = min(self.poc.max_budget_s, max(0.05, POC_SPRINT_COMPUTE_SHARE * left_s))
        result = await self.engine.poc_sprint(
            view.seed,
            self.address,
            **self._poc_kw(),
            budget_s=budget,
            max_nonces=self.poc.max_nonces,
        )
        nonces = list(result.nonces)[:POC_MAX_CLAIMED_NONCES]
        self.sprints.append(
            {"epoch": view.epoch, "tried": result.tried, "found": len(nonces), "budget_s": budget}
        )
        ok = await self._submit(wire.PocClaim(epoch=view.epoch, nonces=nonces, nonce=0))
        return [f"claim:{view.epoch}:{len(nonces)}"] if ok else []

    async def _judge(self, view: EpochView) -> list[str]:
        """Recompute a sample of every claim not judged yet, then submit the verdicts together
        (one commit latency instead of one per claim: the phase is short)."""
        verdicts = []
        for claimant in sorted(view.claims):
            item = ("verdict", view.epoch, claimant)
            if claimant == self.address or (claimant, self.address) in view.verdicts:
                continue
            if item in self._tried:
                continue
            self._tried.add(item)
            nonces = await self.ledger.poc_claim(view.epoch, claimant)
            if nonces is None:
                continue
            check = await self.engine.poc_verify(
                view.seed,
                claimant,
                nonces,
                self.seed_for(view.epoch),
                **self._poc_kw(),
            )
            verdicts.append(
                wire.PocVerdict(
                    epoch=view.epoch,
                    participant=claimant,
                    accepted=check.accepted,
                    sampled=check.sampled,
                    failed=check.failed,
                    nonce=0,
                )
            )
        results = await asyncio.gather(*(self._submit(v) for v in verdicts))
        self.verdicts += sum(results)
        return [
            f"verdict:{v.epoch}:{v.participant[:10]}:{v.accepted}"
            for v, ok in zip(verdicts, results, strict=True)
            if ok
        ]

    def _poc_kw(self) -> dict[str, Any]:
        return {
            "difficulty": self.epochs.poc_difficulty,
            "calibration_nonces": self.epochs.poc_calibration_nonces,
        }

    async def _submit(self, msg: wire.Message) -> bool:
        msg = dataclasses.replace(msg, nonce=self.rng.getrandbits(64))
        outcome = await self.ledger.submit(wire.seal(msg, self.key, self.chain.id))
        if not outcome.ok:
            self.rejected[f"{type(msg).TYPE}:{outcome.reason}"] += 1
            log.info("%s %s rejected: %s", self.participant, type(msg).TYPE, outcome.reason)
        return outcome.ok

    def _observe(self, view: EpochView) -> None:
        now = self.monotonic()
        if self._last is not None and view.height > self._last[0]:
            per_block = (now - self._last[1]) / (view.height - self._last[0])
            self._block_s = 0.7 * self._block_s + 0.3 * per_block
        if self._last is None or view.height > self._last[0]:
            self._last = (view.height, now)

    def stats(self) -> dict:
        return {
            "sprints": list(self.sprints),
            "verdicts": self.verdicts,
            "rejected": dict(self.rejected),
            "block_s": self._block_s,
        }
