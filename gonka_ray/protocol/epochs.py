"""The epoch clock: epoch index, phase and seed, derived only from committed height (DESIGN §5).

Every replica computes the same answers from the same committed height and the same
:class:`~gonka_ray.config.EpochConfig`, so phase changes need no transaction of their own.

Layout of epoch ``e`` (``B = epoch_blocks``, heights ``e·B + offset`` for offset in ``0..B-1``)::

    [0, S)            POC_SPRINT       participants run the PoC transformer, submit nonce claims
    [S, S+V)          POC_VALIDATION   validators recompute samples; weights fixed at its end
    [S+V, B-T)        INFERENCE        executor draws use this epoch's weights
    [B-T, B)          SETTLEMENT       SeedReveal / reward claims; the epoch settles at its
                                       last block (height ``(e+1)·B - 1``)

with ``S = poc_sprint_blocks``, ``V = poc_validation_blocks`` and ``T`` =
:func:`settlement_blocks` (a tenth of what is left after PoC, at least 1, and never the whole
of it when at least two blocks remain, so the inference phase is never empty in a usable config).

Invariants: heights are non-negative integers; the consensus core's genesis is height 0 and
its first committed block height 1, so epoch 0 is one block short of the others in practice
(harmless: height 0 never carries transactions). Phases partition every epoch.

The epoch seed is ``sha256(domain ‖ chain_id ‖ epoch ‖ opening_hash)`` where ``opening_hash``
is the hash of the committed block at :func:`seed_source_height` — the last block of the
previous epoch. NOTE: that block is committed before the epoch opens, so every replica knows
the seed at the epoch's first height, and nobody knows it before the previous epoch's last block
commits. A leader could grind the block's contents to bias the seed; hashing the block's commit
certificate (> 2/3 signatures, not chosen by one party) instead of the header removes that, and is
what the ledger should pass as ``opening_hash`` once certificates are available.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from gonka_ray.config import EpochConfig
from gonka_ray.constants import SETTLEMENT_SHARE_DIVISOR

SEED_DOMAIN = b"gonka_ray/epoch-seed/v1"


class Phase(StrEnum):
    POC_SPRINT = "poc_sprint"
    POC_VALIDATION = "poc_validation"
    INFERENCE = "inference"
    SETTLEMENT = "settlement"


@dataclass(frozen=True)
class EpochPosition:
    """Where a height falls: its epoch, phase and the bounds of both (heights, inclusive start)."""

    height: int
    epoch: int
    phase: Phase
    offset: int  # height - epoch_start
    epoch_start: int
    epoch_end: int  # first height of the next epoch
    phase_start: int
    phase_end: int  # first height of the next phase


def settlement_blocks(cfg: EpochConfig) -> int:
    """Blocks of the settlement (reveal and claim) window at the end of each epoch."""
    room = cfg.epoch_blocks - cfg.poc_sprint_blocks - cfg.poc_validation_blocks
    if room <= 1:
        return room  # config validation guarantees room >= 1; a 1-block room is all settlement
    return min(room - 1, max(1, room // SETTLEMENT_SHARE_DIVISOR))


def phase_bounds(cfg: EpochConfig) -> dict[Phase, tuple[int, int]]:
    """Each phase's ``[start, end)`` offsets within an epoch."""
    s, v, t = cfg.poc_sprint_blocks, cfg.poc_validation_blocks, settlement_blocks(cfg)
    b = cfg.epoch_blocks
    return {
        Phase.POC_SPRINT: (0, s),
        Phase.POC_VALIDATION: (s, s + v),
        Phase.INFERENCE: (s + v, b - t),
        Phase.SETTLEMENT: (b - t, b),
    }


def _check_height(height: int) -> None:
    if type(height) is not int or height < 0:
        raise ValueError(f"height must be a non-negative integer, got {height!r}")


def epoch_of(height: int, cfg: EpochConfig) -> int:
    """The epoch index of ``height``."""
    _check_height(height)
    return height // cfg.epoch_blocks


def epoch_start(epoch: int, cfg: EpochConfig) -> int:
    """First height of ``epoch``."""
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    return epoch * cfg.epoch_blocks


def phase_of(height: int, cfg: EpochConfig) -> Phase:
    return position(height, cfg).phase


def position(height: int, cfg: EpochConfig) -> EpochPosition:
    """Epoch, phase and bounds of ``height``.

    Raises:
        ValueError: ``height`` is negative or not an int.
    """
    epoch = epoch_of(height, cfg)
    start = epoch_start(epoch, cfg)
    offset = height - start
    for phase, (lo, hi) in phase_bounds(cfg).items():
        if lo <= offset < hi:
            return EpochPosition(
                height=height,
                epoch=epoch,
                phase=phase,
                offset=offset,
                epoch_start=start,
                epoch_end=start + cfg.epoch_blocks,
                phase_start=start + lo,
                phase_end=start + hi,
            )
    raise AssertionError("unreachable: phases partition the epoch")  # pragma: no cover


def is_epoch_start(height: int, cfg: EpochConfig) -> bool:
    """True at the first height of an epoch (SeedCommit window opens, PoC sprint begins)."""
    _check_height(height)
    return height % cfg.epoch_blocks == 0


def is_settlement_height(height: int, cfg: EpochConfig) -> bool:
    """True at the last height of an epoch: the ledger settles ``epoch_of(height)`` after it."""
    _check_height(height)
    return height % cfg.epoch_blocks == cfg.epoch_blocks - 1


def is_weights_height(height: int, cfg: EpochConfig) -> bool:
    """True at the last height of PoC validation: the epoch's weights are fixed after it."""
    _check_height(height)
    return height % cfg.epoch_blocks == cfg.poc_sprint_blocks + cfg.poc_validation_blocks - 1


def seed_source_height(epoch: int, cfg: EpochConfig) -> int:
    """The committed height whose hash seeds ``epoch``: the previous epoch's last block.

    Epoch 0 uses height 0 (genesis).
    """
    return max(0, epoch_start(epoch, cfg) - 1)


def epoch_seed(epoch: int, opening_hash: bytes, chain_id: str = "gonka") -> bytes:
    """The public 32-byte seed of ``epoch`` from a committed ledger value.

    Args:
        epoch: the epoch index.
        opening_hash: hash of the block (ideally its commit certificate) at
            :func:`seed_source_height`.
        chain_id: network name, so two networks never share PoC models.
    """
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    if not isinstance(opening_hash, bytes | bytearray) or not opening_hash:
        raise ValueError("opening_hash must be non-empty bytes")
    chain = chain_id.encode()
    msg = (
        SEED_DOMAIN
        + len(chain).to_bytes(2, "big")
        + chain
        + epoch.to_bytes(8, "big")
        + bytes(opening_hash)
    )
    return hashlib.sha256(msg).digest()


def seed_to_u64(seed: bytes) -> int:
    """The first 8 bytes of a seed as an unsigned integer (for torch generators and hashes)."""
    if len(seed) < 8:
        raise ValueError("seed must be at least 8 bytes")
    return int.from_bytes(seed[:8], "big")
