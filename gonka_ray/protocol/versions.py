"""Protocol rule versions and the heights at which they take effect.

A network's genesis names the rules version it starts with (``protocol_version``) and any
scheduled upgrades (``upgrades``: version from height). Every rule that ever changed is a field
of :class:`Rules`; code that applies such a rule asks :func:`rules_at` for the block's height
instead of assuming the newest behaviour, so a replica that replays blocks written under older
rules reaches the same state as the replicas that wrote them.

Versions:

- **1** — retries draw the executor *with* replacement (attempt ``a`` is drawn from everyone).
- **2** — retries draw *without* replacement (attempt ``a`` skips attempts ``0 … a−1``'s
  executors), so a dead executor cannot fail all of a request's attempts.
- **3** — a Finish whose signed prompt count contradicts the TA's Start opens a vote (the TA
  the accuser): upheld convicts the TA, which forfeits its epoch like a caught executor
  (version 2 only charged the smaller count and counted the dispute, so inflating cost nothing).
  Every pass carries a verification receipt, which its executor may challenge
  (:mod:`gonka_ray.protocol.receipts`): a validator could pass without running anything.
  Whoever forfeits an epoch for being caught (an invalidated inference, a broken receipt, a
  false challenge, a refuted prompt count, INVALID) also sits out the next
  ``caught_sit_out_epochs`` epochs (weight 0): one lost epoch did not deter cheating on a few
  inferences in a quiet network (a caught cheat must cost about five epochs of income there).
- **4** — the sit-out is at least as long as it takes the caught participant to forgo
  ``caught_sit_out_inferences`` inferences' worth of income at its epoch's traffic (at most
  ``caught_sit_out_max_epochs``; :func:`gonka_ray.protocol.settlement.sit_out_epochs`): with
  about one inference per participant per epoch, four epochs left cheating on 1% of one's work
  earning 97% of honest (``economics.json`` at v3); the penalty must scale with the work a
  catch puts at stake, not with the calendar.
- **5** — a vote still open at its deadline invalidates only with more than a third of the
  eligible weight invalid (:func:`gonka_ray.protocol.votes.tally`); short of that it lapses and
  the executor keeps its fee. Under v4 an accusation nobody else voted on in time convicted on
  the accuser's word alone: honest executors were invalidated in the crash-fault run (a check
  whose payload fetch failed while a peer restarted, no other vote by the deadline). The same
  holds for a challenged receipt's judges (a lone "broken" no longer convicts), and a new
  accusation on an inference a vote already cleared starts a vote with no ballots.

Adding a version: add its :class:`Rules` to ``RULES``, raise
:data:`gonka_ray.constants.PROTOCOL_VERSION` for new networks, and schedule it for running ones
with a genesis ``ProtocolUpgrade`` (a software release that knows the version must be running
on ≥ 2/3 of the voting power before its height; a replica that does not know a scheduled version
refuses to start rather than diverge).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gonka_ray.constants import PROTOCOL_VERSION
from gonka_ray.exceptions import ConfigError


@dataclass(frozen=True)
class Rules:
    """The rules that differ between versions."""

    version: int
    retry_draws_without_replacement: bool
    prompt_count_mismatch_votes: bool = False
    receipts: bool = False
    caught_sit_out_epochs: int = 0
    caught_sit_out_inferences: int = 0  # v4: a sit-out forgoes at least this many inferences
    caught_sit_out_max_epochs: int = 0
    vote_quorum_at_deadline: bool = False  # v5: a lone accusation lapses at the deadline


_V3 = Rules(
    3,
    retry_draws_without_replacement=True,
    prompt_count_mismatch_votes=True,
    receipts=True,
    caught_sit_out_epochs=4,
)
RULES: dict[int, Rules] = {
    1: Rules(1, retry_draws_without_replacement=False),
    2: Rules(2, retry_draws_without_replacement=True),
    3: _V3,
    4: replace(_V3, version=4, caught_sit_out_inferences=32, caught_sit_out_max_epochs=64),
}
RULES[5] = replace(RULES[4], version=5, vote_quorum_at_deadline=True)
CURRENT = RULES[PROTOCOL_VERSION]  # what this software applies where no schedule says otherwise


@dataclass(frozen=True)
class Schedule:
    """Which rules apply at which height: ``steps`` is ``((from_height, version), …)``,
    ascending, starting at height 0."""

    steps: tuple[tuple[int, int], ...]

    def rules_at(self, height: int) -> Rules:
        """The rules of the block at ``height``."""
        version = self.steps[0][1]
        for start, v in self.steps:
            if height < start:
                break
            version = v
        return RULES[version]


def schedule_of(genesis) -> Schedule:
    """The rule schedule a genesis defines.

    Raises:
        ConfigError: an unknown version (this software cannot apply it), or upgrades that do
            not raise the version at strictly increasing heights above 0.
    """
    version = int(genesis.protocol_version)
    if version not in RULES:
        raise ConfigError(f"genesis protocol_version {version} is unknown to this software")
    steps = [(0, version)]
    for up in genesis.upgrades:
        if up.version not in RULES:
            raise ConfigError(
                f"upgrade to protocol version {up.version} at height {up.height} is unknown to "
                "this software: run a release that knows it"
            )
        if up.version <= steps[-1][1] or up.height <= steps[-1][0]:
            raise ConfigError("upgrades must raise the version at strictly increasing heights")
        steps.append((int(up.height), int(up.version)))
    return Schedule(tuple(steps))


@dataclass(frozen=True)
class Chain:
    """What every signer and verifier of a network's envelopes needs: its chain id (bound into
    every envelope signature, :func:`gonka_ray.wire.seal`) and its rule schedule."""

    id: str
    schedule: Schedule

    def rules_at(self, height: int) -> Rules:
        return self.schedule.rules_at(height)


def chain_of(genesis) -> Chain:
    """The :class:`Chain` of a genesis (raises ConfigError like :func:`schedule_of`)."""
    return Chain(str(genesis.chain_id), schedule_of(genesis))
