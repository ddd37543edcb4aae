"""Metrics are declared once and are silent no-ops outside Ray (unit tier: no Ray here)."""

from __future__ import annotations

import re

from gonka_ray import metrics
from gonka_ray.constants import LATENCY_BOUNDARIES_S


def test_recording_outside_ray_is_a_no_op(monkeypatch) -> None:
    import ray

    # NOTE: in a full run an earlier tier's Ray may still be up in this process: pretend not.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(metrics, "_made", {})
    metrics.inc("gonka_requests", endpoint="chat", code=200)
    metrics.observe("gonka_request_latency_s", 0.1, endpoint="chat", stream=False)
    metrics.set_gauge("gonka_ledger_height", 3, participant="p0")
    assert metrics._made == {}


def test_declarations_are_valid_prometheus_names() -> None:
    for name, (kind, desc, tags) in metrics.METRICS.items():
        assert re.fullmatch(r"gonka_[a-z_]+", name) and kind in ("counter", "gauge", "histogram")
        assert desc and all(re.fullmatch(r"[a-z_]+", t) for t in tags)
    assert sorted(LATENCY_BOUNDARIES_S) == LATENCY_BOUNDARIES_S
