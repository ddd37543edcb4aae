"""The epoch clock: phases partition each epoch, derived from height alone; seeds are fixed."""

from __future__ import annotations

import pytest

from gonka_ray.config import EpochConfig
from gonka_ray.protocol import epochs
from gonka_ray.protocol.epochs import Phase

CFG = EpochConfig(epoch_blocks=60, poc_sprint_blocks=10, poc_validation_blocks=5)


def test_phases_follow_height_in_order_and_partition_the_epoch() -> None:
    seen = [epochs.phase_of(h, CFG) for h in range(60)]
    assert seen[:10] == [Phase.POC_SPRINT] * 10
    assert seen[10:15] == [Phase.POC_VALIDATION] * 5
    t = epochs.settlement_blocks(CFG)
    assert t == 4  # 45 post-PoC blocks // 10
    assert seen[15 : 60 - t] == [Phase.INFERENCE] * (45 - t)
    assert seen[60 - t :] == [Phase.SETTLEMENT] * t
    # the next epoch starts over
    assert epochs.phase_of(60, CFG) is Phase.POC_SPRINT
    assert epochs.epoch_of(59, CFG) == 0 and epochs.epoch_of(60, CFG) == 1


def test_position_bounds_are_consistent() -> None:
    for h in range(0, 200, 7):
        pos = epochs.position(h, CFG)
        assert pos.epoch_start <= pos.phase_start <= h < pos.phase_end <= pos.epoch_end
        assert pos.epoch_end - pos.epoch_start == CFG.epoch_blocks
        assert pos.offset == h - pos.epoch_start


def test_boundary_heights() -> None:
    assert epochs.is_epoch_start(120, CFG) and not epochs.is_epoch_start(121, CFG)
    assert epochs.is_settlement_height(119, CFG) and not epochs.is_settlement_height(118, CFG)
    assert epochs.is_weights_height(74, CFG)  # 60 + 10 + 5 - 1
    assert epochs.phase_of(74, CFG) is Phase.POC_VALIDATION
    assert epochs.phase_of(75, CFG) is Phase.INFERENCE
    assert epochs.seed_source_height(2, CFG) == 119
    assert epochs.seed_source_height(0, CFG) == 0


def test_tight_config_keeps_one_inference_block() -> None:
    cfg = EpochConfig(epoch_blocks=4, poc_sprint_blocks=1, poc_validation_blocks=1)
    assert [epochs.phase_of(h, cfg) for h in range(4)] == [
        Phase.POC_SPRINT,
        Phase.POC_VALIDATION,
        Phase.INFERENCE,
        Phase.SETTLEMENT,
    ]


def test_negative_or_non_int_height_is_rejected() -> None:
    with pytest.raises(ValueError):
        epochs.position(-1, CFG)
    with pytest.raises(ValueError):
        epochs.epoch_of(1.5, CFG)  # type: ignore[arg-type]


def test_epoch_seed_is_deterministic_and_binds_every_input() -> None:
    h = b"\x01" * 32
    s = epochs.epoch_seed(3, h)
    assert s == epochs.epoch_seed(3, h) and len(s) == 32
    assert s != epochs.epoch_seed(4, h)
    assert s != epochs.epoch_seed(3, b"\x02" * 32)
    assert s != epochs.epoch_seed(3, h, chain_id="other")
    assert 0 <= epochs.seed_to_u64(s) < 2**64
    with pytest.raises(ValueError):
        epochs.epoch_seed(0, b"")
