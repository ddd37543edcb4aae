"""E2E tier: Ray Serve through the openai client, on the same shared loopback Ray."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ray_session import shared_ray


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    yield from shared_ray()
