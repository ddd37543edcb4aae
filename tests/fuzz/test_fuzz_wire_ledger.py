"""Short fuzz runs (``make test``) of the wire, ledger (with and without epochs) and artifact
targets; the long run is ``benchmarks/fuzz.py``. See ``tests/fuzz/targets.py`` for what each
target feeds and checks."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.fuzz.targets import ARTIFACT, EPOCHS, LEDGER, WIRE, Target

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_all(target: Target, case) -> None:
    for check in target.inputs(case):
        check()  # raises on a crash; every typed refusal is a label


@FUZZ
@given(WIRE.cases)
def test_fuzz_wire_envelopes_fail_typed(case) -> None:
    check_all(WIRE, case)


@FUZZ
@given(LEDGER.cases)
def test_fuzz_ledger_rejected_txs_change_nothing(case) -> None:
    check_all(LEDGER, case)


@FUZZ
@given(EPOCHS.cases)
def test_fuzz_protocol_with_epochs_rejected_txs_change_nothing(case) -> None:
    check_all(EPOCHS, case)


@FUZZ
@given(ARTIFACT.cases)
def test_fuzz_artifact_codec_fails_typed(case) -> None:
    check_all(ARTIFACT, case)
