"""Cluster tier: one shared loopback Ray for the whole session (never one per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ray_session import shared_ray


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    yield from shared_ray()
