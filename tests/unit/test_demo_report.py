"""What the demo counts as a caught cheater, read from settled epochs like the ledger's own."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from gonka_ray import demo
from gonka_ray.ledger.epoch_app import SettlementRow, SettlementSummary


class _Method:
    def __init__(self, fn) -> None:
        self.remote = fn


def _row(address: str, *, invalid: bool = False, forfeited: bool = False, weight: int = 100):
    return SettlementRow(
        address=address,
        weight=weight,
        paid=0 if forfeited or invalid else 250_000,
        mint=0 if forfeited or invalid else 250_000,
        executor_fees=0,
        validator_fees=0,
        burned=250_000 if forfeited or invalid else 0,
        invalid=invalid,
        duty_met=True,
        required_checks=1,
        done_checks=1,
        forfeited=forfeited,
    )


def _reader(settled: dict[int, list[SettlementRow]], current_epoch: int):
    """A reader whose ledger settled ``settled`` (epoch -> rows); everyone is ACTIVE now."""
    names = {f"addr-{p}": p for p in ("p0", "p1", "p2", "p3")}

    async def settlement(epoch: int):
        rows = settled.get(epoch)
        return None if rows is None else SettlementSummary(epoch, 0, 0, 0, 0, 0, tuple(rows))

    async def participants():
        return {a: SimpleNamespace(status="ACTIVE") for a in names}

    async def epoch_view():
        return SimpleNamespace(epoch=current_epoch)

    ledger = SimpleNamespace(
        settlement=_Method(settlement),
        participants=_Method(participants),
        epoch_view=_Method(epoch_view),
    )
    return demo._Reader("p0", ledger, {}, None, names)


def test_a_cheater_that_forfeited_an_epoch_is_caught_without_ever_being_invalid() -> None:
    # the run that failed CI's demo test: p3 had 4 invalidations in epoch 3 (one short of
    # INVALID), forfeited it and sat out every later epoch with weight 0
    config = demo.demo_network_config(model="fake", cheat="wrong_temperature", engine="fake")
    honest = [_row(f"addr-p{i}") for i in range(3)]
    forfeited = {3: [*honest, _row("addr-p3", forfeited=True)]}
    forfeited |= {e: [*honest, _row("addr-p3", weight=0)] for e in (4, 5, 6)}
    caught = asyncio.run(demo._caught_so_far(_reader(forfeited, 7), config, first_epoch=2))
    assert caught == ["p3"]
    # nobody forfeited: nobody caught (the count can come out 0)
    clean = {3: [*honest, _row("addr-p3")]}
    assert asyncio.run(demo._caught_so_far(_reader(clean, 4), config, first_epoch=2)) == []
    # an epoch not settled yet does not count
    assert asyncio.run(demo._caught_so_far(_reader(forfeited, 3), config, first_epoch=2)) == []


def test_epoch_notes_name_both_ways_of_forfeiting() -> None:
    assert demo._epoch_note(_row("a", invalid=True), cheater=True) in demo._CAUGHT_NOTES
    assert demo._epoch_note(_row("a", forfeited=True), cheater=True) in demo._CAUGHT_NOTES
    assert demo._epoch_note(_row("a"), cheater=True) == " (cheater, not caught yet)"
