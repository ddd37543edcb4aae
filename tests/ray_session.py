"""The one loopback Ray a test session shares (cluster and e2e tiers)."""

from __future__ import annotations

from collections.abc import Iterator


def shared_ray() -> Iterator[object]:
    """Start Ray on loopback once (or reuse the running one) and shut it down at the end."""
    import os

    import ray

    from gonka_ray.serve.body_limit import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    # Serve's proxy, a worker of this Ray, installs the body limit from its inherited env
    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    started = False
    if not ray.is_initialized():
        options = {"include_dashboard": False, "num_cpus": 4, "log_to_driver": False}
        ray.init(_node_ip_address="127.0.0.1", namespace="gonka_ray_tests", **options)
        started = True
    yield ray
    if started:
        ray.shutdown()
