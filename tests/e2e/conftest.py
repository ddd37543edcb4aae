"""E2E tier: Ray Serve through the openai client, on the same shared loopback Ray.

One served network per session (:mod:`tests.served_network`): launching one takes most of the
tier's time, and every e2e module only reads from it or adds its own inferences.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ray_session import shared_ray
from tests.served_network import served_network


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    yield from shared_ray()


@pytest.fixture(scope="session")
def served(ray_session) -> Iterator[dict]:
    yield from served_network()
