"""``gonka-ray bench`` through click's runner against the served network, over HTTP and Ray."""

from __future__ import annotations

import json

from click.testing import CliRunner

from gonka_ray.cli import main
from tests.served_network import NAMESPACE, NETWORK


def test_bench_over_http_and_over_ray(served) -> None:
    load = ["--requests", "6", "--concurrency", "3", "--max-tokens", "2"]
    http = CliRunner().invoke(
        main, ["bench", "--url", served["url"], "--api-key", served["api_key"], *load, "--json"]
    )
    assert http.exit_code == 0, http.output
    doc = json.loads(http.output.strip().splitlines()[-1])
    assert doc["requests"] == doc["ok"] == 6 and doc["errors"] == 0
    assert doc["completion_tokens"] >= 6 and doc["tokens_per_s"] > 0
    assert doc["latency_p99_ms"] >= doc["latency_p50_ms"] > 0

    ray_run = CliRunner().invoke(
        main, ["bench", "--network", NETWORK, "--namespace", NAMESPACE, *load]
    )
    assert ray_run.exit_code == 0, ray_run.output
    out = ray_run.output
    assert "6 (6 ok, 0 errors)" in out and "latency p50" in out and "tokens/s" in out
    assert f"{NETWORK} (Ray" in out
