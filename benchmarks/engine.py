"""Engine throughput and the cost of verification by prefill.

For each engine (transformers, and vLLM when installed) serving SmolLM2-135M-Instruct in
float32 on this machine's CPUs:

- generated tokens/s with 1, 4 and 8 concurrent requests (``ignore_eos``, fixed length);
- time of one ``score()`` prefill over prompt + N output tokens divided by the time it took to
  generate those N tokens alone, for N = 64 and 256 (what a verifier pays per inference,
  relative to the executor), and the share of positions whose replayed sampler choice the
  engine can decide (margin > 0; vLLM sees only its top candidates, see ``vllm_engine``).

Run: ``.venv/bin/python benchmarks/engine.py`` (writes ``results/engine.json``; ``--quick`` for
a smoke run). Figures on a shared machine are noisy; the table is for orders of magnitude.
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
from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.base import EngineRequest, InferenceEngine, SamplingParams

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


def _request(engine: InferenceEngine, i: int, max_tokens: int) -> EngineRequest:
    prompt = engine.apply_chat_template([{"role": "user", "content": QUESTIONS[i % 8]}])
    params = SamplingParams(
        temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=100 + i, ignore_eos=True
    )
    return EngineRequest(f"bench-{i}", tuple(prompt), params)


async def _throughput(engine: InferenceEngine, concurrency: int, max_tokens: int) -> float:
    reqs = [_request(engine, i, max_tokens) for i in range(concurrency)]
    t0 = time.perf_counter()
    results = await asyncio.gather(*[engine.generate_full(r) for r in reqs])
    elapsed = time.perf_counter() - t0
    return sum(len(r.output_ids) for r in results) / elapsed


async def _score_ratio(engine: InferenceEngine, n_tokens: int) -> tuple[float, float, float, float]:
    """(score time / generate time, generate s, score s, share of positions the replay
    decides, i.e. with a margin > 0)."""
    req = _request(engine, 0, n_tokens)
    t0 = time.perf_counter()
    res = await engine.generate_full(req)
    gen_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        sc = await engine.score(req.prompt_ids, res.output_ids, req.sampling)
        best = min(best, time.perf_counter() - t0)
    decided = sum(m > 0 for m in sc.margins) / len(sc.margins)
    return best / gen_s, gen_s, best, decided


async def bench_engine(
    kind: str, engine: InferenceEngine, max_tokens: int, lengths: list[int]
) -> dict[str, Any]:
    out: dict[str, Any] = {"engine": kind}
    await engine.generate_full(_request(engine, 0, 4))  # warm-up (vLLM compiles on first use)
    await engine.score(*_scoring_args(engine))
    steps = [("c", c) for c in (1, 4, 8)] + [("score", n) for n in lengths]
    for what, n in tqdm(steps, desc=kind, unit="run"):
        if what == "c":
            out[f"tok_s_c{n}"] = await _throughput(engine, n, max_tokens)
        else:
            ratio, gen_s, score_s, decided = await _score_ratio(engine, n)
            out[f"score_over_generate_{n}"] = ratio
            out[f"generate_{n}_s"] = gen_s
            out[f"score_{n}_s"] = score_s
            out[f"replay_decided_share_{n}"] = decided
    return out


def _scoring_args(engine: InferenceEngine) -> tuple[Any, Any, SamplingParams]:
    req = _request(engine, 1, 4)
    return req.prompt_ids, (1, 2, 3, 4), req.sampling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run, no JSON")
    parser.add_argument("--no-vllm", action="store_true", help="skip the vLLM engine")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (transformers)")
    args = parser.parse_args()
    max_tokens = 16 if args.quick else 64
    lengths = [16] if args.quick else [64, 256]
    model = ModelConfig()  # SmolLM2-135M-Instruct
    rows = []

    from gonka_ray.engine.transformers_engine import TransformersEngine

    hf = TransformersEngine(model, EngineConfig(torch_threads=args.threads, max_batch_size=8))
    rows.append(asyncio.run(bench_engine("transformers", hf, max_tokens, lengths)))
    hf.shutdown()
    del hf

    from gonka_ray.engine.vllm_engine import VLLMEngine, vllm_available

    if not args.no_vllm and vllm_available():
        t0 = time.perf_counter()
        vl = VLLMEngine(model, EngineConfig(kind="vllm", max_batch_size=8))
        start_s = time.perf_counter() - t0
        row = asyncio.run(bench_engine("vllm", vl, max_tokens, lengths))
        row["startup_s"] = start_s
        rows.append(row)
        vl.shutdown()

    cols = ["engine", "tok_s_c1", "tok_s_c4", "tok_s_c8"]
    cols += [f"score_over_generate_{n}" for n in lengths]
    cols += [f"replay_decided_share_{n}" for n in lengths]
    print_table(rows, cols)
    if args.quick:
        return
    by = {r["engine"]: r for r in rows}
    tf, vl_row = by["transformers"], by.get("vllm", {})
    summary = {
        "transformers_tok_s_c1": round(tf["tok_s_c1"], 2),
        "transformers_tok_s_c8": round(tf["tok_s_c8"], 2),
        "vllm_tok_s_c1": round(vl_row["tok_s_c1"], 2) if vl_row else None,
        "vllm_tok_s_c8": round(vl_row["tok_s_c8"], 2) if vl_row else None,
        # the transformers engine is the CPU default a verifier runs here
        "score_over_generate_64": round(tf["score_over_generate_64"], 4),
        "score_over_generate_256": round(tf["score_over_generate_256"], 4),
    }
    path = write_results(
        "engine",
        summary,
        model=model.name,
        dtype="float32",
        generate_max_tokens=max_tokens,
        engines=rows,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
