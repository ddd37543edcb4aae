"""Shared test setup: environment for loopback Ray and offline model loading, tier markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# NOTE: Ray maps 127.0.0.1 to the host's routable address unless this is off; keep it on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TESTS_DIR = Path(__file__).parent
# What each folder means (README "Tests"): what a test may use decides its tier.
TIERS = ("unit", "sim", "model", "fuzz", "cluster", "e2e", "gpu")
NO_RAY_TIERS = {"unit", "sim", "model", "fuzz"}  # in-process only: starting Ray there is a bug


def _tier(path: Path) -> str:
    return path.resolve().relative_to(TESTS_DIR.resolve()).parts[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier (the folder it lives in)."""
    for item in items:
        tier = _tier(Path(str(item.fspath)))
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def _forbid_ray_in_process_tiers(request: pytest.FixtureRequest, monkeypatch) -> None:
    """Tiers in NO_RAY_TIERS run in one process; a test there that starts Ray belongs in
    tests/cluster."""
    tier = _tier(Path(str(request.node.fspath)))
    if tier not in NO_RAY_TIERS:
        return
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"tests/{tier} must not start Ray; move this test to tests/cluster")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots, tables)."""
    path = TESTS_DIR / "artifacts"
    path.mkdir(exist_ok=True)
    return path
