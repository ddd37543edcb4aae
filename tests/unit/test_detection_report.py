"""``benchmarks/detection_report.py --refresh-cheats``: cheat rows judged again under the committed
thresholds replace only their own rows, and every honest figure stays the committed run's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import benchmarks._common as common
import benchmarks.detection_report as report

ROW = {"replay_gate": 0.005, "max_replay_mismatches": 0, "max_logprob_excess": 0.001}


def _row(cheat: str, tokens: int = 64, tpr: float = 1.0, samples: int = 10, dtype="float32"):
    return {
        "cheat": cheat,
        "dtype": dtype,
        "tokens": tokens,
        "samples": samples,
        "identical_to_honest": 0,
        "tpr_over_differing": tpr,
    }


def _sample(kind: str, *, caught: bool, identical: bool = False) -> dict:
    out = np.arange(64, dtype=np.int32)
    choice = out + 1 if caught else out.copy()  # the replay picks other tokens: a mismatch
    lp = np.full(64, -0.5, np.float32)
    return {
        "kind": kind,
        "variant": kind,
        "dtype": "float32",
        "T": 1.0,
        "out": out,
        "choice": choice,
        "margin": np.full(64, 5.0, np.float32),  # far above the gate: decided positions
        "o": lp.astype(np.float16),
        "e": lp,
        "v": lp,
        "identical": identical,
        "commit": "c0ffee",
    }


def test_merge_replaces_only_the_rows_it_has() -> None:
    old = [_row("greedy", tpr=0.5), _row("int8"), _row("int8", 256, dtype="bfloat16")]
    merged = report.merge_cheat_rows(old, [_row("greedy", tpr=0.9, samples=200)])
    by = {(c["cheat"], c["dtype"], c["tokens"]): c for c in merged}
    assert len(merged) == 3
    assert by["greedy", "float32", 64]["tpr_over_differing"] == 0.9
    assert by["int8", "bfloat16", 256] == old[2]


def test_cheat_summary_takes_the_worst_cheat_and_the_fewest_samples() -> None:
    s = report.cheat_summary(
        [_row("greedy", tpr=0.97, samples=45), _row("int4", samples=200)],
        [_row("int8", 64, tpr=0.0, dtype="bfloat16"), _row("int8", 256, 0.4, dtype="bfloat16")],
    )
    assert s["min_tpr_at_fpr_1e-3_64tok"] == 0.97 and s["worst_cheat_64tok"] == "greedy"
    assert s["cheat_samples_min"] == 45
    assert s["int8_tpr_bf16_64tok"] == 0.0 and s["int8_tpr_bf16_256tok"] == 0.4


def test_refresh_rejudges_cheats_and_keeps_the_honest_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = {
        "summary": {"heldout_false_positives": 0, "heldout_honest_samples": 3472},
        "git_commit": "aaaa",
        "thresholds_calibrated": {"float32": ROW, "bfloat16": {**ROW, "replay_gate": 1.6}},
        "cheats": [_row("greedy", tpr=0.5, samples=45), _row("int4", samples=47)],
        "bf16_cheats": [_row("int8", dtype="bfloat16")],
        "grid": ["kept"],
    }
    (tmp_path / "detection.json").write_text(json.dumps(committed))
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    samples = [_sample("greedy", caught=True) for _ in range(3)]
    samples += [_sample("greedy", caught=False), _sample("greedy", caught=False, identical=True)]
    doc = json.loads(report.refresh_cheats(samples).read_text())
    greedy = next(c for c in doc["cheats"] if c["cheat"] == "greedy")
    assert greedy["samples"] == 5 and greedy["identical_to_honest"] == 1
    assert greedy["tpr_over_differing"] == 0.75  # 3 of the 4 that differ
    assert next(c for c in doc["cheats"] if c["cheat"] == "int4")["samples"] == 47  # kept
    assert doc["summary"]["min_tpr_at_fpr_1e-3_64tok"] == 0.75
    assert doc["summary"]["heldout_honest_samples"] == 3472 and doc["grid"] == ["kept"]
    assert doc["honest_figures_from"] == "aaaa"
    assert doc["cheat_rows_refreshed"][0]["rows"] == [["greedy", "float32", 64]]
    assert doc["cheat_rows_refreshed"][0]["sample_commits"] == ["c0ffee"]
