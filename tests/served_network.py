"""The one served network the e2e tier shares (fake engine, three participants).

Launched once per test session on the shared loopback Ray and served by Ray Serve on a free
loopback port; :func:`served_network` yields ``{"net", "url", "api_key"}`` and tears it down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

NETWORK = "openaitest"
NAMESPACE = "gonka_ray_tests"
API_KEY = "sk-test-custodial"
POOR_KEY = "sk-test-unfunded"


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (and above Ray's worker ports).

    NOTE: not port 0's pick: the Ray a test then starts takes its own ports from the
    ephemeral range, and once took the one handed out here (Serve failed to bind it)."""
    from gonka_ray.peer.tcp import loopback_addresses

    return int(loopback_addresses(1)[0].rsplit(":", 1)[1])


def served_network() -> Iterator[dict]:
    from ray import serve

    from gonka_ray import crypto
    from gonka_ray.config import parse_config
    from gonka_ray.network import launch, wait_ready
    from gonka_ray.serve.deployment import serve_network

    config = parse_config(
        {
            "name": NETWORK,
            "participants": [{"name": f"p{i}", "weight": 100} for i in range(3)],
            "model": {"name": "fake"},
            "engine": {"kind": "fake"},
            "ledger": {"expiry_blocks": 5000, "block_interval_ms": 20},
        }
    )
    net = launch(config, namespace=NAMESPACE)
    try:
        asyncio.run(wait_ready(net, timeout_s=300))
        url = serve_network(
            net,
            api_keys={API_KEY: 0, POOR_KEY: crypto.KeyPair.from_seed("nobody-funded")},
            port=free_port(),
        )
        yield {"net": net, "url": url, "api_key": API_KEY}
    finally:
        try:
            serve.shutdown()
        finally:
            net.teardown()
