"""Consensus scenarios written as scripts (``scenarios/*.scenario``, see :mod:`tests.sim.scenario`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sim.scenario import Scenario, ScenarioFailed

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.scenario"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    scenario = Scenario.run_file(path)
    assert scenario.net is not None and scenario.wanted  # it built a network and sent work


def test_a_false_expectation_fails_with_its_line() -> None:
    script = (
        "network seed=22\npartition 0,1,2 | 3\nsubmit count=5 to=0 run=3\nexpect height 3 >= 1\n"
    )
    with pytest.raises(ScenarioFailed, match=r"inline:4: 'expect height 3 >= 1': .*got 0 >= 1"):
        Scenario("inline").run_text(script)


def test_run_until_fails_when_no_quorum_can_form() -> None:
    script = "network seed=23\npartition 0,1 | 2,3\nsubmit count=3 to=0\nrun-until all-committed within=100\n"
    with pytest.raises(ScenarioFailed, match="miss transactions after 100 ticks"):
        Scenario("inline").run_text(script)


def test_unknown_command_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"inline:1: bad line 'explode now'"):
        Scenario("inline").run_text("explode now\n")
