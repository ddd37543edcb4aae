"""What the consensus core and its shell exchange.

:class:`Ready` is the output of every step of :class:`~gonka_ray.ledger.consensus.ConsensusCore`
(``step``, ``tick``, ``submit``, ``start_epoch``); :class:`Committed` is one committed block in
it; :class:`Recovered` is what a restarted shell reloads from storage and hands the core.

**The shell must persist before it sends**: for every :class:`Ready`, write ``to_persist``
durably, *then* deliver ``outbound``, then apply ``committed`` (see the consensus module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gonka_ray.wire import Block, CommitCertificate, ConsensusSafety


@dataclass
class Committed:
    """A block the replica group committed, with the certificate that proves it."""

    block: Block
    hash: bytes
    certificate: CommitCertificate


@dataclass
class Ready:
    """What the shell must do after a step, **in this order**: persist ``to_persist`` durably,
    then send ``outbound`` (``dest`` is a validator index, ``None`` = every other replica),
    then apply ``committed`` (in order) to the state machine."""

    outbound: list[tuple[int | None, bytes]] = field(default_factory=list)
    to_persist: list[Any] = field(default_factory=list)  # Block | ConsensusSafety
    committed: list[Committed] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.outbound or self.to_persist or self.committed)


@dataclass
class Recovered:
    """What a restarted replica reloads from its storage."""

    blocks: list[Block]  # every stored block (any order)
    committed_hashes: list[bytes]  # heights first_height, first_height + 1, ...
    safety: ConsensusSafety | None
    # > 1 after a snapshot sync: the block at first_height is the trusted root and the
    # hashes below it are unknown here (ZERO_HASH placeholders).
    first_height: int = 1
    # blocks below this height were not loaded (older than the previous epoch, which the core
    # does not keep in memory): their committed hashes are taken from the store as they are,
    # and the committed block at this height is the root the loaded blocks link to
    blocks_from: int = 0
