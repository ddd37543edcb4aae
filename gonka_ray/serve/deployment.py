"""Deploy the ingress on Ray Serve: the deployment, ``serve_network`` and ``shutdown``.

:func:`serve_network` deploys :class:`~gonka_ray.serve.ingress.GonkaIngress` for a launched
network and returns the URL where Serve's proxy really listens (:func:`_bound`).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from gonka_ray import crypto
from gonka_ray.constants import SERVE_DEFAULT_PORT, SERVE_MAX_INFLIGHT, SERVE_MAX_ONGOING_REQUESTS
from gonka_ray.serve.body_limit import PROXY_CALLBACK_ENV
from gonka_ray.serve.ingress import GonkaIngress, app

log = logging.getLogger(__name__)


def _deployment():
    from ray import serve

    return serve.deployment(
        name="gonka_ingress",
        num_replicas=1,
        max_ongoing_requests=SERVE_MAX_ONGOING_REQUESTS,
        ray_actor_options={"num_cpus": 0},
    )(serve.ingress(app)(GonkaIngress))


# NOTE: defined at module level so Ray pickles it by reference.
GonkaDeployment = _deployment()


def build_app(**options: Any):
    """The Serve application: one replica of :class:`GonkaIngress` behind FastAPI.

    Args:
        options: :class:`GonkaIngress`'s keywords (network, chain, namespace, participants,
            model, api_keys, max_inflight, epoch, price_per_token).

    Raises:
        TypeError: an unknown or missing keyword (here, not later in the replica).
    """
    inspect.signature(GonkaIngress).bind(**options)
    return GonkaDeployment.bind(**options)


def serve_network(
    net: Any,
    *,
    api_keys: Mapping[str, crypto.KeyPair | int],
    port: int = SERVE_DEFAULT_PORT,
    route_prefix: str = "/",
    max_inflight: int = SERVE_MAX_INFLIGHT,
    name: str | None = None,
    host: str = "127.0.0.1",
    participants: Sequence[str] | None = None,
) -> str:
    """Deploy the OpenAI-compatible app for a launched :class:`~gonka_ray.network.Network` on
    loopback and return its base URL (``http://127.0.0.1:<port><prefix>``; the ``openai``
    client's ``base_url`` is that plus ``v1``).

    Args:
        net: the launched network.
        api_keys: API key -> the custodial client key it signs with (a KeyPair, or an index
            ``i`` meaning ``net.client_key(i)``, funded by the demo genesis for ``i <`` clients).
        port: the HTTP port Serve binds.
        route_prefix: where the app is mounted.
        max_inflight: requests in flight before the ingress answers 429.
        name: the Serve application's name (default ``gonka-<network>``).
        host: the address Serve's proxy binds (``0.0.0.0`` to serve other hosts).
        participants: whose transport agents and ledger replicas it uses (default: the
            participants launched on this Ray; a federation node: its own).

    If Serve already runs on this Ray with other HTTP options, it keeps them; the returned URL
    is where its proxy really listens.
    """
    from ray import serve

    seeds = {
        k: (v if isinstance(v, crypto.KeyPair) else net.client_key(int(v))).seed
        for k, v in api_keys.items()
    }
    if PROXY_CALLBACK_ENV not in os.environ:  # inherited by the proxy if Ray started here
        log.warning(
            "%s is not set: Serve's proxy buffers request bodies of any size "
            "(see gonka_ray.serve.body_limit)",
            PROXY_CALLBACK_ENV,
        )
    serve.start(http_options={"host": host, "port": port})
    application = build_app(
        network=net.config.name,
        chain=net.chain_id,
        namespace=net.namespace,
        participants={n: net.address_of(n) for n in (participants or net.here)},
        names={net.address_of(p.name): p.name for p in net.config.participants},
        model=net.config.model.name,
        api_keys=seeds,
        max_inflight=max_inflight,
        epoch=net.config.epoch.model_dump(),
        price_per_token=net.config.pricing.price_per_token,
    )
    serve.run(application, name=name or app_name(net), route_prefix=route_prefix)
    prefix = route_prefix if route_prefix.endswith("/") else route_prefix + "/"
    host, port = _bound(port)
    return f"http://{host}:{port}{prefix}"


def _bound(port: int) -> tuple[str, int]:
    """Where Serve's proxy really listens: when Serve was already running, ``serve.start`` keeps
    its old HTTP options, so the URL must come from the controller, not from the arguments."""
    try:
        from ray.serve.context import _get_global_client

        cfg = _get_global_client().http_config
        return ("127.0.0.1" if cfg.host in ("127.0.0.1", "localhost") else cfg.host), cfg.port
    except Exception:  # private API moved: trust the arguments
        return "127.0.0.1", port


def app_name(net: Any) -> str:
    return f"gonka-{net.config.name}"


def shutdown(net: Any | None = None) -> None:
    """Remove the network's app (``net`` given) or stop Serve entirely."""
    from ray import serve

    if net is None:
        serve.shutdown()
    else:
        serve.delete(app_name(net))
