"""Closed-loop load generation for ``gonka-ray bench`` (transport-agnostic, no Ray here).

:func:`run_closed_loop` keeps ``concurrency`` requests in flight: each worker sends its next
request as soon as its previous one finished, until ``requests`` have been sent. ``send`` is an
async callable returning the completion tokens of one request (over Ray or HTTP).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values`` by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


async def run_closed_loop(
    send: Callable[[], Awaitable[int]],
    requests: int,
    concurrency: int,
    *,
    progress: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Send ``requests`` requests with ``concurrency`` workers; returns the summary dict
    (requests, ok, errors, concurrency, wall_s, latency p50/p99/mean in ms, req/s, tokens/s,
    first_error). A failed request counts as an error and the worker goes on."""
    latencies: list[float] = []
    tokens = 0
    errors: list[str] = []
    issued = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=requests, unit="req", desc="bench", leave=False)

    async def worker() -> None:
        nonlocal issued, tokens
        while issued < requests:
            issued += 1
            t0 = clock()
            try:
                n = int(await send())  # NOTE: not `tokens += await ...` (reads before awaiting)
                tokens += n
                latencies.append(clock() - t0)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            if bar is not None:
                bar.update(1)

    start = clock()
    try:
        await asyncio.gather(*[worker() for _ in range(min(concurrency, requests))])
    finally:
        if bar is not None:
            bar.close()
    wall = max(clock() - start, 1e-9)
    ms = [x * 1000 for x in latencies]
    return {
        "requests": requests,
        "ok": len(latencies),
        "errors": len(errors),
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "latency_p50_ms": round(percentile(ms, 0.5), 1),
        "latency_p99_ms": round(percentile(ms, 0.99), 1),
        "latency_mean_ms": round(sum(ms) / len(ms), 1) if ms else float("nan"),
        "requests_per_s": round(len(latencies) / wall, 2),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "first_error": errors[0] if errors else None,
    }


def format_table(result: dict[str, Any]) -> str:
    """The result as a two-column table."""
    rows = [
        ("target", result.get("target", "")),
        ("requests", f"{result['requests']} ({result['ok']} ok, {result['errors']} errors)"),
        ("concurrency", result["concurrency"]),
        ("wall time", f"{result['wall_s']:.2f} s"),
        ("latency p50", f"{result['latency_p50_ms']:.1f} ms"),
        ("latency p99", f"{result['latency_p99_ms']:.1f} ms"),
        ("requests/s", f"{result['requests_per_s']:.2f}"),
        ("tokens/s", f"{result['tokens_per_s']:.1f} ({result['completion_tokens']} tokens)"),
    ]
    if result.get("first_error"):
        rows.append(("first error", result["first_error"][:120]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
