"""Unit tier: pure code only. Starting Ray here is a bug, so ray.init is forbidden."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _forbid_starting_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tests/unit must not start Ray; move this test to tests/cluster")

    monkeypatch.setattr(ray, "init", refuse)
