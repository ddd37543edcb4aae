"""Protocol overhead apart from the model (issue 20): what the network itself adds per request.

Run: ``.venv/bin/python benchmarks/overhead_protocol.py`` (writes
``results/overhead_protocol.json``; ``overhead.py`` runs it too, as its first part).

One loopback Ray, one Serve HTTP proxy, the same engine on both sides: the fake engine with a
fixed **sleeping** service time per token (``--token-delay-ms``), so the service time costs no
CPU; what the MLNode processes still spend (the fake logits and sampler per token, the
verifiers' scoring, their Ray calls) is measured and reported apart, and what is left is the
protocol:

- **bare**: that engine in one plain Ray Serve deployment (FastAPI, SSE streaming).
- **gonka**: a 4-participant network running it, behind its OpenAI front door, with an API key.

Side by side in one run, closed loop at concurrency 1 and 8, ``--max-tokens`` per completion:
added p50 latency at concurrency 1 (``protocol_added_p50_ms_c1``), throughput ratio at
concurrency 8 (``protocol_throughput_ratio_c8``), added time to first token and added
inter-token latency (``(e2e - ttft) / (tokens - 1)``, gonka minus bare).

**CPU** (from ``/proc``, this Ray session's processes, by role): per request, sequential SDK
requests over Ray (no HTTP) on a 4- and an 8-participant network, minus each role's idle rate
measured just before; the MLNode processes (the engine's generation and the verifiers' prefill)
are left out, so the figure is the protocol's (``protocol_cpu_ms_per_request_4p`` / ``_8p``).
**Idle**: CPU cores a 4-participant network keeps busy with no traffic (``idle_cpu_cores_4p``;
MLNodes and the driver left out). What shares the 2 cores: the network's actors only (the bare
deployment idles during the network's cells; nothing else runs).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm

from benchmarks._common import print_table, write_results
from benchmarks.overhead import API_KEY, QUESTIONS, bare_app, run_cells
from benchmarks.scaling import role_cpu, session_cpu
from gonka_ray.config import parse_config

ENGINE_ROLES = ("mlnode",)  # the model's own CPU: generation and the verifiers' prefill
NOT_NETWORK = ("driver", "mlnode")


def fake_engine(token_delay_ms: float) -> dict[str, Any]:
    return {"kind": "fake", "fake_token_delay_ms": token_delay_ms, "max_batch_size": 64}


def network_config(n: int, token_delay_ms: float) -> Any:
    return parse_config(
        {
            "name": f"protocol{n}",
            "participants": [{"name": f"p{i}", "weight": 100} for i in range(n)],
            "model": {"name": "fake"},
            "engine": fake_engine(token_delay_ms),
            "ledger": {"expiry_blocks": 100_000},
            "epoch": {"epoch_blocks": 1_000_000},  # no PoC sprint during the run
        },
        source="overhead_protocol",
    )


def _cell(rows: list[dict], side: str, conc: int) -> dict:
    return next(r for r in rows if r["side"] == side and r["concurrency"] == conc)


def _intertoken_ms(row: dict) -> float:
    tokens = max(2, row["completion_tokens"] / max(1, row["ok"]))
    return (row["e2e_p50_ms"] - row["ttft_p50_ms"]) / (tokens - 1)


async def idle_cores(seconds: float) -> dict[str, float]:
    """Cores each role keeps busy over ``seconds`` with no traffic."""
    before, t0 = session_cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    used = role_cpu(before, session_cpu())
    wall = time.monotonic() - t0
    return {k: v / wall for k, v in used.items()}


async def protocol_cpu(net: Any, max_tokens: int, requests: int, idle_s: float) -> dict:
    """CPU ms per request by role (engine roles apart), sequential SDK requests over Ray."""
    from gonka_ray.sdk import Client

    names = list(net.specs)
    client = Client(net.client_key(), {n: net.ta(n) for n in names}, "fake", chain=net.chain_id)
    msgs = [{"role": "user", "content": QUESTIONS[1]}]
    for i in range(3 * len(names)):  # warm every path (each TA, most executors)
        await client.chat(msgs, max_tokens=max_tokens, seed=i, ta=names[i % len(names)])
    await asyncio.sleep(3.0)  # their checks
    idle = await idle_cores(idle_s)
    before, t0 = session_cpu(), time.monotonic()
    for i in range(requests):
        await client.chat(msgs, max_tokens=max_tokens, seed=100 + i, ta=names[i % len(names)])
    await asyncio.sleep(6.0)  # the verifiers' checks and the ledger records of the last ones
    used = role_cpu(before, session_cpu())
    wall = time.monotonic() - t0
    by_role = {
        k: round(1000 * (v - idle.get(k, 0.0) * wall) / requests, 2)
        for k, v in sorted(used.items(), key=lambda kv: -kv[1])
        if k != "driver"
    }
    protocol = sum(v for k, v in by_role.items() if k not in ENGINE_ROLES and v > 0)
    return {
        "requests": requests,
        "cpu_ms_per_request_by_role": by_role,
        "protocol_cpu_ms_per_request": round(protocol, 2),
        "idle_cores_by_role": {k: round(v, 4) for k, v in idle.items() if k != "driver"},
        "idle_cores_network": round(sum(v for k, v in idle.items() if k not in NOT_NETWORK), 4),
    }


def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both sides, the CPU figures; returns (summary, detail). Ray must be initialised and
    Serve started on ``args.port``."""
    from ray import serve

    from gonka_ray.network import launch, wait_ready
    from gonka_ray.serve.deployment import serve_network

    base = f"http://127.0.0.1:{args.port}"
    cells = argparse.Namespace(
        max_tokens=[args.protocol_max_tokens],
        concurrency=[1, 8],
        min_requests=args.min_requests,
        requests_per_client=args.requests_per_client,
    )
    bar = tqdm(total=4, desc="protocol cells", unit="cell")
    serve.run(bare_app("fake", fake_engine(args.token_delay_ms)), name="bare", route_prefix="/bare")
    rows = asyncio.run(run_cells("bare", f"{base}/bare/v1/chat/completions", "fake", cells, bar))
    serve.delete("bare")
    cpu: dict[int, dict] = {}
    net = launch(network_config(4, args.token_delay_ms), namespace="gonka_protocol4")
    try:
        asyncio.run(wait_ready(net, timeout_s=300))
        url = serve_network(net, api_keys={API_KEY: 0}, port=args.port, name="gonka-protocol")
        rows += asyncio.run(run_cells("gonka", f"{url}v1/chat/completions", "fake", cells, bar))
        serve.delete("gonka-protocol")
        cpu[4] = asyncio.run(
            protocol_cpu(net, args.protocol_max_tokens, args.cpu_requests, args.idle_s)
        )
    finally:
        net.teardown()
    bar.close()
    net = launch(network_config(8, args.token_delay_ms), namespace="gonka_protocol8")
    try:
        asyncio.run(wait_ready(net, timeout_s=400))
        cpu[8] = asyncio.run(
            protocol_cpu(net, args.protocol_max_tokens, args.cpu_requests, args.idle_s)
        )
    finally:
        net.teardown()
    b1, g1 = _cell(rows, "bare", 1), _cell(rows, "gonka", 1)
    b8, g8 = _cell(rows, "bare", 8), _cell(rows, "gonka", 8)
    summary = {
        "protocol_added_p50_ms_c1": round(g1["e2e_p50_ms"] - b1["e2e_p50_ms"], 1),
        "protocol_throughput_ratio_c8": round(g8["tokens_per_s"] / b8["tokens_per_s"], 3),
        "protocol_added_ttft_ms_c1": round(g1["ttft_p50_ms"] - b1["ttft_p50_ms"], 1),
        "protocol_added_intertoken_ms": round(_intertoken_ms(g1) - _intertoken_ms(b1), 2),
        "protocol_cpu_ms_per_request_4p": cpu[4]["protocol_cpu_ms_per_request"],
        "protocol_cpu_ms_per_request_8p": cpu[8]["protocol_cpu_ms_per_request"],
        "idle_cpu_cores_4p": cpu[4]["idle_cores_network"],
        "protocol_token_delay_ms": args.token_delay_ms,
        "protocol_max_tokens": args.protocol_max_tokens,
    }
    return summary, {"protocol_rows": rows, "protocol_cpu": {str(k): v for k, v in cpu.items()}}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--token-delay-ms", type=float, default=20.0)
    ap.add_argument("--protocol-max-tokens", type=int, default=16)
    ap.add_argument("--cpu-requests", type=int, default=40)
    ap.add_argument("--idle-s", type=float, default=10.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--min-requests", type=int, default=20)
    ap.add_argument("--port", type=int, default=18438)
    args = ap.parse_args()
    from ray import serve

    from gonka_ray.network import init_local_ray

    init_local_ray(num_cpus=8)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    summary, detail = run(args)
    print_table(
        detail["protocol_rows"],
        ["side", "concurrency", "ok", "ttft_p50_ms", "e2e_p50_ms", "e2e_p99_ms", "tokens_per_s"],
    )
    for n, c in detail["protocol_cpu"].items():
        print(f"{n} participants, CPU ms per request by role: {c['cpu_ms_per_request_by_role']}")
    print(summary)
    path = write_results("overhead_protocol", summary, **detail)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
