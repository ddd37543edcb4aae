"""Sim tier: seeded in-memory networks; like unit tests, no Ray."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _forbid_starting_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tests/sim must not start Ray")

    monkeypatch.setattr(ray, "init", refuse)
