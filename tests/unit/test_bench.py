"""The closed-loop load generator behind ``gonka-ray bench`` (no Ray, no network)."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner

from gonka_ray.bench import format_table, percentile, run_closed_loop
from gonka_ray.cli import main


def test_percentile_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


def test_closed_loop_keeps_concurrency_in_flight_and_counts_errors() -> None:
    inflight = peak = calls = 0

    async def send() -> int:
        nonlocal inflight, peak, calls
        calls += 1
        if calls == 3:
            raise RuntimeError("boom")
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.01)
        inflight -= 1
        return 5

    result = asyncio.run(run_closed_loop(send, 12, 4))
    assert result["requests"] == 12 and calls == 12
    assert result["ok"] == 11 and result["errors"] == 1 and "boom" in result["first_error"]
    assert peak == 4 and result["completion_tokens"] == 55
    assert result["latency_p99_ms"] >= result["latency_p50_ms"] >= 10.0
    table = format_table(result)
    assert "latency p99" in table and "tokens/s" in table and "1 errors" in table


def test_bench_over_http_needs_a_key(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(main, ["bench", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "--api-key" in result.output
