"""The HTTP package's layering: views, the SDK and the CLI stay free of the web stack, and the
ingress binds every path in one route table."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("fastapi", "ray.serve", "starlette")


@pytest.mark.parametrize(
    "module",
    ["gonka_ray.serve.views", "gonka_ray.client_request", "gonka_ray.sdk", "gonka_ray.cli"],
)
def test_importing_views_sdk_or_cli_loads_neither_fastapi_nor_ray_serve(module: str) -> None:
    # A fresh interpreter: this test process may already hold FastAPI from other tests.
    code = f"import sys, {module}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"{module} loaded {out.stdout.strip()}"


def test_the_route_table_is_what_the_app_serves() -> None:
    from fastapi.routing import APIRoute

    from gonka_ray.serve.ingress import ROUTES, app

    served = {
        (method, r.path, r.endpoint)
        for r in app.routes
        if isinstance(r, APIRoute)
        for method in r.methods
    }
    table = {(method.upper(), path, endpoint) for method, path, endpoint in ROUTES}
    assert served == table
    # Serve's class-based ingress rebinds ``self`` only on endpoints defined in the class.
    assert all(endpoint.__qualname__.startswith("GonkaIngress.") for *_, endpoint in ROUTES)
