"""Short fuzz run (``make test``) of the TCP peer transport's framing and handshake; the long
run is ``benchmarks/fuzz.py`` (target ``peer``). See ``tests/fuzz/targets_peer.py``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.targets_peer import MODES, PEER, run_peer

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(PEER.cases)
def test_fuzz_peer_streams_are_cut_typed_or_pass_unaltered(case) -> None:
    for check in PEER.inputs(case):
        check()  # raises on a crash; every refusal is a label


@pytest.mark.parametrize("mode", sorted(set(MODES)))
def test_each_mode_reaches_its_outcomes(mode: str) -> None:
    """The target is not vacuous: a clean stream authenticates, each attack gets a refusal."""
    labels = {run_peer((mode, seed)) for seed in range(12)}
    if mode == "clean":
        assert "authenticated" in labels
    else:
        assert any(label.startswith("cut:") for label in labels), labels
