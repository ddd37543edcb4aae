"""The one served network the e2e tier shares (fake engine, three participants).

Launched once per test session on the shared loopback Ray and served by Ray Serve on a free
loopback port; :func:`served_network` yields ``{"net", "url", "api_key"}`` and tears it down.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

NETWORK = "openaitest"
NAMESPACE = "gonka_ray_tests"
API_KEY = "sk-test-custodial"
POOR_KEY = "sk-test-unfunded"


# Test servers' ports: below the kernel's ephemeral range (32768-60999 here: the Ray a test
# starts takes its own ports there, and once took the one handed out to Serve) and above the
# range local networks draw their peer ports from (PEER_LOCAL_PORTS), so neither can collide.
TEST_SERVER_PORTS = range(32_000, 32_768)


def free_port(count: int = 1) -> int:
    """The first of ``count`` consecutive free loopback ports in ``TEST_SERVER_PORTS``.

    Raises:
        OSError: no such run of free ports.
    """
    rng = random.Random()
    for base in rng.sample(TEST_SERVER_PORTS, len(TEST_SERVER_PORTS)):
        if base + count > TEST_SERVER_PORTS.stop:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise OSError(f"no {count} consecutive free ports in {TEST_SERVER_PORTS}")


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
