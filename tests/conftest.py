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
TIERS = ("unit", "sim", "cluster", "e2e", "gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier (the folder it lives in)."""
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(TESTS_DIR.resolve())
        tier = rel.parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots, tables)."""
    path = TESTS_DIR / "artifacts"
    path.mkdir(exist_ok=True)
    return path
