"""E2E tier: Ray Serve through the openai client, on the same shared loopback Ray.

One served network for the whole tier (:mod:`tests.served_network`): launching one takes most
of the tier's time, and every e2e module only reads from it or adds its own inferences. It is
package-scoped (``tests/e2e`` is a package), so it stops after the tier's last test instead of
ticking through the later tiers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ray_session import shared_ray
from tests.served_network import served_network


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    yield from shared_ray()


@pytest.fixture(scope="package")
def served(ray_session) -> Iterator[dict]:
    yield from served_network()
