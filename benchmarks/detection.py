"""Detection benchmark, part 1: collect honest and cheating verifications over real traffic.

Every sample is one request from :mod:`gonka_ray.verification.traffic` (temperature
0–2, top-p, top-k, 1–1,024 output tokens, prompts from one word to near the 2,048-token context,
stop strings, EOS finishes) executed by an honest or cheating executor and scored by a verifier
with one prefill. Honest executors vary what an honest network varies: batch size (1–64),
torch threads, the transformers engine's own step loop (streaming and not) and the vLLM engine;
the verifier differs from the executor in batch size and thread count in every sample.

Two **splits** come from separate runs: ``calibration`` (thresholds are fitted on it) and
``heldout`` (other prompts, other seeds: every headline figure is measured on it). Cheats run on
held-out requests at 64 tokens (and int8 in bfloat16 also at 256), each next to the honest
output of the same request so that a cheat that changed nothing is counted apart.

Phases (each appends to ``$GONKA_DETECTION_DIR/<phase>-<dtype>-<split>.pkl``, default
``~/.cache/gonka_ray/detection``; ``benchmarks/detection_report.py`` analyses them)::

    detection.py vllm-verifier --count 48
    detection.py cost
    detection.py cheats --dtype bfloat16 --count 200
    detection.py cheats --dtype float32 --count 200
    detection.py engines --dtype float32 --split heldout --count 150
    detection.py engines --dtype bfloat16 --split heldout --count 90
    detection.py honest --dtype float32 --split calibration --count 1200
    detection.py honest --dtype bfloat16 --split calibration --count 500
    detection.py honest --dtype float32 --split heldout --count 1700
    detection.py honest --dtype bfloat16 --split heldout --count 1100

``detection.py all`` runs them in that order. Run from a committed tree on a quiet machine
(2 cores: hours; every phase resumes what an interrupted run stored). Samples record the commit they were made with.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from tqdm import tqdm

from benchmarks._common import git_commit
from gonka_ray.adversary.cheats import cheat_model
from gonka_ray.constants import DEFAULT_TOP_K_LOGPROBS
from gonka_ray.engine.base import SamplingParams
from gonka_ray.engine.models import load_hf
from gonka_ray.verification import harness, traffic

MODEL = "smollm2-135m-instruct"
CONTEXT = 2048
DATA_DIR = Path(
    os.environ.get("GONKA_DETECTION_DIR", Path.home() / ".cache" / "gonka_ray" / "detection")
)
# the verifier's replay tolerance while collecting (raw logit units): the gate the rows are
# expected to get (fp32: the floor; bf16: the pilot's fitted gate). Margins are stored, so the
# analysis can apply any gate; only mask ambiguity is decided at this tolerance.
COLLECT_TOLERANCE = {"float32": 0.005, "bfloat16": 1.6}
EXEC_BATCHES = (64, 16, 64, 4, 1, 16, 64, 32, 8, 1, 1)  # cycled over same-length chunks
VERIFY_BATCHES = (8, 32, 1, 8, 16)
RUN_SEED = {"calibration": 1, "heldout": 2}
MAX_BATCH_TOKENS = 16_384  # prompt tokens per executor batch
CHEAT_START = 100_000  # cheats use held-out requests from here (not in the honest held-out run)
MODEL_CHEATS = ("int8", "int4", "truncate_layers_2", "truncate_layers_6")
SAMPLING_CHEATS = ("wrong_temperature", "greedy", "ignore_seed")
BF16_CHEATS = ("int8",)


def sampling_of(req: traffic.TrafficRequest, **over) -> SamplingParams:
    """The engine's sampling params for a traffic request (artifact top-k: the default)."""
    sp = SamplingParams(
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        max_tokens=req.max_tokens,
        seed=req.seed,
        logprobs=DEFAULT_TOP_K_LOGPROBS,
        stop=req.stop,
    )
    return replace(sp, **over)


class Collector:
    """Loads the model once, runs executions and verifications, stores samples."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.model, self.tok = load_hf(MODEL, dtype=dtype)
        self.eos = harness.eos_ids(self.model, self.tok)
        self.tolerance = COLLECT_TOLERANCE[dtype]
        self.commit = git_commit()

    def prompt(self, req: traffic.TrafficRequest) -> list[int] | None:
        ids = harness.messages_ids(self.tok, req.chat())
        return ids if len(ids) + req.max_tokens <= CONTEXT else None

    def params(self, req: traffic.TrafficRequest, **over) -> SamplingParams:
        return sampling_of(req, **over)

    def run(self, model, prompts, params, threads: int, **kw) -> list[harness.Execution]:
        torch.set_num_threads(threads)
        return harness.generate(model, prompts, params, tokenizer=self.tok, eos=self.eos, **kw)

    def verify(
        self, execs, threads: int, batch: int, claimed=None, verifier=None
    ) -> list[harness.VerifierScores]:
        torch.set_num_threads(threads)
        return harness.verify_batch(
            verifier or self.model,
            execs,
            tolerance=self.tolerance,
            claimed=claimed,
            batch_size=batch,
        )

    def sample(
        self, req, ex: harness.Execution, sc, *, phase, variant, kind="honest", claimed=None
    ):
        sp = claimed or ex.sampling
        return {
            "phase": phase,
            "split": req.split,
            "req": req.index,
            "variant": variant,
            "kind": kind,
            "dtype": self.dtype,
            "T": sp.temperature,
            "top_p": sp.top_p,
            "top_k": sp.top_k,
            "max_tokens": sp.max_tokens,
            "stop": bool(sp.stop),
            "finish": ex.finish_reason,
            "prompt_size": req.prompt_size,
            "prompt_len": len(ex.prompt_ids),
            "out": ex.output_ids.astype(np.int32),
            "o": ex.token_logprobs.astype(np.float16),
            "e": ex.token_logprobs.astype(np.float32),
            "v": np.asarray(sc.token_logprobs, np.float32),
            "margin": np.asarray(sc.margin, np.float32),
            # best minus the executor's token's perturbed score (not used by the shipped rule)
            "claimed_margin": None
            if sc.claimed_margin is None
            else np.asarray(sc.claimed_margin, np.float32),
            "choice": np.asarray(sc.choice, np.int32),
            "bytes_per_token": ex.artifact(sampling=sp).bytes_per_token() if ex.n else 0.0,
            "bytes_per_token_def": "output",  # prompt ids left out (older samples included them)
            "commit": self.commit,
        }


class GroupedCollector(Collector):
    """The cheat phase's collector: runs and verifies a chunk in sub-batches of similar length.

    A 50-request chunk mixes one-word prompts with 1,000-token ones, and one left-padded batch
    pads every row to the longest (the prefill, and the KV cache each step reads, grow with
    it). Rows sorted by length, at most 16 and ``MAX_BATCH_TOKENS`` per sub-batch; results come
    back in the caller's order. An honest run and a cheat run of the same chunk get the same
    sub-batches, so a cheat that changes nothing stays token-for-token identical."""

    def run(self, model, prompts, params, threads: int, **kw) -> list[harness.Execution]:
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list = [None] * len(prompts)
        lo = 0
        while lo < len(order):
            hi = lo + 1
            while hi < len(order) and hi - lo < 16:
                j = order[hi]
                if (hi - lo + 1) * (len(prompts[j]) + params[j].max_tokens) > MAX_BATCH_TOKENS:
                    break
                hi += 1
            group = order[lo:hi]
            sub = {k: [v[i] for i in group] for k, v in kw.items()}  # per-row lists only
            done = super().run(
                model, [prompts[i] for i in group], [params[i] for i in group], threads, **sub
            )
            for i, ex in zip(group, done, strict=True):
                out[i] = ex
            lo = hi
        return out

    def verify(self, execs, threads: int, batch: int, claimed=None, verifier=None):
        order = sorted(range(len(execs)), key=lambda i: len(execs[i].prompt_ids) + execs[i].n)
        scores = super().verify(
            [execs[i] for i in order],
            threads,
            batch,
            claimed=[claimed[i] for i in order] if claimed is not None else None,
            verifier=verifier,
        )
        out: list = [None] * len(execs)
        for i, sc in zip(order, scores, strict=True):
            out[i] = sc
        return out


def _path(phase: str, dtype: str, split: str) -> Path:
    return DATA_DIR / f"{phase}-{dtype}-{split}.pkl"


def _save(path: Path, samples: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(samples, f)
    tmp.replace(path)


def load_samples(pattern: str = "*.pkl") -> list[dict]:
    """Every stored verification sample (for the report; the vLLM verifier's are apart)."""
    out: list[dict] = []
    seen: set[tuple] = set()
    for p in sorted(DATA_DIR.glob(pattern)):
        if p.name == "vllm_verifier.pkl":
            continue
        with open(p, "rb") as f:
            for s in pickle.load(f):
                # a phase resumed with a larger --count redoes its last partial chunk: count each
                # (request, variant) once
                key = (
                    s.get("phase"),
                    s.get("dtype"),
                    s.get("split"),
                    s.get("req"),
                    s.get("variant"),
                )
                if key not in seen:
                    seen.add(key)
                    out.append(s)
    return out


def _requests(c: Collector, split: str, count: int, start: int = 0, **over):
    """(request, prompt ids) for ``count`` requests that fit the context."""
    out = []
    for req in traffic.requests(split, count, seed=RUN_SEED[split], start=start):
        if over:
            req = replace(req, **over)
        ids = c.prompt(req)
        if ids is not None:
            out.append((req, ids))
    return out


def _chunks(items, sizes):
    """Same-``max_tokens`` chunks of ``items`` with sizes cycling through ``sizes``."""
    by_len: dict[int, list] = {}
    for it in items:
        by_len.setdefault(it[0].max_tokens, []).append(it)
    out, j = [], 0
    for n in sorted(by_len):
        # similar prompt lengths share a batch (left padding to a 1,900-token neighbour would
        # multiply the prefill)
        group = sorted(by_len[n], key=lambda it: len(it[1]))
        while group:
            size = sizes[j % len(sizes)] if n <= 256 else min(16, sizes[j % len(sizes)])
            # bound a batch's prefill: eager attention over 64 rows of 1,900 tokens needs GBs
            while size > 1 and size * len(group[min(size, len(group)) - 1][1]) > MAX_BATCH_TOKENS:
                size //= 2
            out.append(group[:size])
            group = group[size:]
            j += 1
    return out


def phase_honest(args) -> None:
    c = Collector(args.dtype)
    path = _path("honest", args.dtype, args.split)
    samples: list[dict] = []
    if path.exists():  # resume: keep what an interrupted run stored
        with open(path, "rb") as f:
            samples = pickle.load(f)
    done = {s["req"] for s in samples}
    items = [
        it for it in _requests(c, args.split, args.count, args.start) if it[0].index not in done
    ]
    chunks = _chunks(items, EXEC_BATCHES)
    bar = tqdm(total=len(items), desc=f"honest {args.dtype} {args.split}")
    for j, chunk in enumerate(chunks):
        # executor threads 2 (1 every third chunk); the verifier uses the other count
        et = 1 if j % 3 == 2 else 2
        vt = 3 - et
        vb = VERIFY_BATCHES[j % len(VERIFY_BATCHES)]
        execs = c.run(c.model, [ids for _, ids in chunk], [c.params(r) for r, _ in chunk], et)
        scores = c.verify(execs, vt, vb)
        variant = f"harness/exec_batch={len(chunk)}/threads={et}/verify_batch={vb}"
        for (req, _), ex, sc in zip(chunk, execs, scores, strict=True):
            samples.append(c.sample(req, ex, sc, phase="honest", variant=variant))
        bar.update(len(chunk))
        _save(path, samples)
    bar.close()


async def _engine_runs(engine, items, params, streaming: bool) -> list[harness.Execution]:
    from gonka_ray.engine.base import EngineRequest

    async def one(i, ids, sp):
        req = EngineRequest(f"d{i}", tuple(ids), sp)
        if streaming:
            chunks = [ch async for ch in engine.generate(req)]
            out = [ch.token_id for ch in chunks]
            lps = [ch.logprob for ch in chunks]
            tids = [ch.top_ids for ch in chunks]
            tlps = [ch.top_logprobs for ch in chunks]
            finish = chunks[-1].finish_reason
        else:
            res = await engine.generate_full(req)
            out, lps, tids, tlps = res.output_ids, res.logprobs, res.top_ids, res.top_logprobs
            finish = res.finish_reason
        return harness.Execution(
            prompt_ids=list(ids),
            sampling=sp,
            output_ids=np.asarray(out, np.int64),
            token_logprobs=np.asarray(lps, np.float32),
            top_ids=np.asarray(tids, np.int64).reshape(-1, DEFAULT_TOP_K_LOGPROBS),
            top_logprobs=np.asarray(tlps, np.float32).reshape(-1, DEFAULT_TOP_K_LOGPROBS),
            finish_reason=finish,
        )

    return await asyncio.gather(
        *[one(i, ids, sp) for i, ((_, ids), sp) in enumerate(zip(items, params, strict=True))]
    )


def phase_engines(args) -> None:
    """The engines' own code paths: the transformers engine's step loop (streaming and full
    results, batch up to 8) and the vLLM engine (batch up to 16)."""
    c = Collector(args.dtype)
    path = _path("engines", args.dtype, args.split)
    items = _requests(c, args.split, args.count, args.start + 50_000)
    items = [(r, ids) for r, ids in items if r.max_tokens <= 256]
    params = [c.params(r) for r, _ in items]
    samples: list[dict] = []
    kinds = ["transformers_stream", "transformers_full"] + ([] if args.no_vllm else ["vllm"])
    for kind in tqdm(kinds, desc=f"engines {args.dtype}"):
        part = items[kinds.index(kind) :: len(kinds)]
        sp = params[kinds.index(kind) :: len(kinds)]
        try:
            execs = _run_engine(kind, args.dtype, part, sp)
        except Exception as exc:  # vLLM may not run here: say so, keep the rest
            print(f"engine {kind} failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        scores = c.verify(execs, 2, 8)
        for (req, _), ex, sc in zip(part, execs, scores, strict=True):
            samples.append(c.sample(req, ex, sc, phase="engines", variant=f"engine/{kind}"))
        _save(path, samples)


def _run_engine(kind: str, dtype: str, items, params) -> list[harness.Execution]:
    from gonka_ray.config import EngineConfig, ModelConfig

    if kind.startswith("transformers"):
        from gonka_ray.engine.transformers_engine import TransformersEngine

        eng = TransformersEngine(
            ModelConfig(name=MODEL),
            EngineConfig(kind="transformers", dtype=dtype, max_batch_size=8, torch_threads=2),
        )
        try:
            return asyncio.run(_engine_runs(eng, items, params, kind.endswith("stream")))
        finally:
            eng.shutdown()
    for k, v in {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_USE_V2_MODEL_RUNNER": "0",
        "VLLM_HOST_IP": "127.0.0.1",
    }.items():
        os.environ.setdefault(k, v)
    from gonka_ray.engine.vllm_engine import VLLMEngine

    eng = VLLMEngine(
        ModelConfig(name=MODEL),
        EngineConfig(kind="vllm", max_model_len=CONTEXT, max_batch_size=16, dtype=dtype),
    )
    try:
        return asyncio.run(_engine_runs(eng, items, params, False))
    finally:
        eng.shutdown()


def _cheap(model, kind: str):
    return cheat_model(model, kind).eval()


def phase_cheats(args) -> None:
    """Cheats on held-out requests, fixed length (``ignore_eos``), beside the honest output."""
    c = GroupedCollector(args.dtype)
    lengths = (64,) if args.dtype == "float32" else (64, 256)
    if getattr(args, "lengths", None):
        lengths = tuple(int(n) for n in args.lengths.split(","))
    kinds = (
        (MODEL_CHEATS + SAMPLING_CHEATS + ("launder", "replace_1_in_64"))
        if (args.dtype == "float32")
        else BF16_CHEATS
    )
    for n in lengths:
        count = args.count if n == 64 else args.count // 2
        path = _path(f"cheats{n}", args.dtype, "heldout")
        items = _requests(c, "heldout", count, CHEAT_START + n, max_tokens=n, prompt_size="cheat")
        items = [(r, ids) for r, ids in items if len(ids) <= 1024]
        samples: list[dict] = []
        if path.exists():  # resume: whole chunks an interrupted run stored are kept
            with open(path, "rb") as f:
                samples = pickle.load(f)
        done = {s["req"] for s in samples}
        bar = tqdm(total=len(items) * (1 + len(kinds)), desc=f"cheats {args.dtype} @{n}")
        for lo in range(0, len(items), 50):
            chunk = items[lo : lo + 50]
            if all(r.index in done for r, _ in chunk):
                bar.update(len(chunk) * (1 + len(kinds)))
                continue
            rng = np.random.default_rng([7, n, lo])  # per chunk, so a resumed run replays
            prompts = [ids for _, ids in chunk]
            claimed = [c.params(r, ignore_eos=True) for r, _ in chunk]
            honest = c.run(c.model, prompts, claimed, 2)
            h_scores = c.verify(honest, 2, 16)
            for (req, _), ex, sc in zip(chunk, honest, h_scores, strict=True):
                samples.append(c.sample(req, ex, sc, phase="cheats", variant="cheat_pair"))
            bar.update(len(chunk))
            for kind in kinds:
                execs = _cheat_execs(c, kind, prompts, claimed, honest, h_scores, rng)
                scores = c.verify(execs, 2, 16, claimed=claimed)
                for (req, _), ex, sc, h in zip(chunk, execs, scores, honest, strict=True):
                    s = c.sample(req, ex, sc, phase="cheats", variant=kind, kind=kind)
                    s["identical"] = bool(np.array_equal(ex.output_ids, h.output_ids))
                    samples.append(s)
                bar.update(len(chunk))
            _save(path, samples)
        bar.close()


def _cheat_execs(c: Collector, kind, prompts, claimed, honest, h_scores, rng):
    if kind in MODEL_CHEATS:
        if not hasattr(c, "_cheap"):
            c._cheap = {}
        if kind not in c._cheap:
            base = c.model if c.dtype == "float32" else load_hf(MODEL)[0]
            cheap = _cheap(base, kind)
            c._cheap[kind] = cheap.to(getattr(torch, c.dtype)).eval()
        return c.run(c._cheap[kind], prompts, claimed, 2)
    if kind == "wrong_temperature":
        run = [replace(p, temperature=p.temperature * 2.0 + 0.3) for p in claimed]
    elif kind == "greedy":
        run = [replace(p, temperature=0.0) for p in claimed]
    elif kind == "ignore_seed":
        run = [replace(p, seed=(p.seed * 6364136223846793005 + 1) % 2**64) for p in claimed]
    elif kind == "launder":  # cheap model picks the tokens, an honest prefill supplies logprobs
        if not hasattr(c, "_launder"):
            c._launder = _cheap(c.model, "truncate_layers_6")
        execs = c.run(c._launder, prompts, claimed, 2)
        return _with_honest_logprobs(c, execs)
    elif kind == "replace_1_in_64":
        return _replace_one(c, prompts, claimed, honest, rng)
    else:
        raise ValueError(kind)
    execs = c.run(c.model, prompts, run, 2)
    for ex, p in zip(execs, claimed, strict=True):
        ex.sampling = p
    return execs


def _with_honest_logprobs(c: Collector, execs):
    scores = c.verify(execs, 2, 16)
    for ex, s in zip(execs, scores, strict=True):
        ex.token_logprobs = np.asarray(s.token_logprobs, np.float32)
        ex.top_ids = np.asarray(s.top_ids, np.int64)
        ex.top_logprobs = np.asarray(s.top_logprobs, np.float32)
    return execs


def _replace_one(c: Collector, prompts, claimed, honest, rng):
    """One token (at a random position in the first 32) replaced by the most likely other
    token, the rest decoded honestly from there; logprobs from an honest prefill."""
    heads, cont_prompts, cont_params, starts = [], [], [], []
    for ex, p, sp in zip(honest, prompts, claimed, strict=True):
        pos = int(rng.integers(0, min(32, ex.n)))
        other = [int(t) for t in ex.top_ids[pos] if int(t) != int(ex.output_ids[pos])]
        head = [*ex.output_ids[:pos].tolist(), other[0]]
        heads.append(head)
        cont_prompts.append(list(p) + head)
        cont_params.append(replace(sp, max_tokens=max(1, sp.max_tokens - len(head))))
        starts.append(len(head))
    cont = c.run(c.model, cont_prompts, cont_params, 2, start_positions=starts)
    out = []
    for head, ex, p, sp in zip(heads, cont, prompts, claimed, strict=True):
        ids = np.asarray(head + ex.output_ids.tolist(), np.int64)[: sp.max_tokens]
        n = len(ids)
        out.append(
            harness.Execution(
                prompt_ids=list(p),
                sampling=sp,
                output_ids=ids,
                token_logprobs=np.zeros(n, np.float32),
                top_ids=np.zeros((n, DEFAULT_TOP_K_LOGPROBS), np.int64),
                top_logprobs=np.zeros((n, DEFAULT_TOP_K_LOGPROBS), np.float32),
            )
        )
    return _with_honest_logprobs(c, out)


def phase_vllm_verifier(args) -> None:
    """A vLLM verifier scores held-out honest outputs: how many positions it decides, and
    whether it agrees with the transformers verifier where both decide."""
    from gonka_ray.config import EngineConfig, ModelConfig

    for k, v in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1"}.items():
        os.environ.setdefault(k, v)
    from gonka_ray.engine.vllm_engine import VLLMEngine

    c = Collector("float32")
    items = _requests(c, "heldout", args.count, 300_000)
    items = [(r, ids) for r, ids in items if r.max_tokens <= 256]
    # bounded same-length batches (one batch of all would pad every row to the longest prompt)
    items = [it for chunk in _chunks(items, (16,)) for it in chunk]
    execs = [
        ex
        for chunk in _chunks(items, (16,))
        for ex in c.run(c.model, [ids for _, ids in chunk], [c.params(r) for r, _ in chunk], 2)
    ]
    ref = c.verify(execs, 2, 8)
    eng = VLLMEngine(
        ModelConfig(name=MODEL),
        EngineConfig(kind="vllm", max_model_len=CONTEXT, max_batch_size=16, dtype="float32"),
    )
    samples = []
    try:

        async def go():
            return await asyncio.gather(
                *[
                    eng.score(
                        ex.prompt_ids,
                        ex.output_ids.tolist(),
                        replace(ex.sampling, replay_tolerance=c.tolerance),
                    )
                    for ex in execs
                ]
            )

        t0 = time.perf_counter()
        res = asyncio.run(go())
        wall = time.perf_counter() - t0
    finally:
        eng.shutdown()
    for (req, _), ex, r, s in zip(items, execs, res, ref, strict=True):
        samples.append(
            {
                "req": req.index,
                "n": ex.n,
                "T": req.temperature,
                "top_p": req.top_p,
                "top_k": req.top_k,
                "vllm_margin": np.asarray(r.margins, np.float64),
                "vllm_choice": np.asarray(r.sampled_ids, np.int64),
                "ref_margin": np.asarray(s.margin, np.float64),
                "ref_choice": np.asarray(s.choice, np.int64),
                "out": ex.output_ids,
                "wall_s": wall,
            }
        )
    _save(DATA_DIR / "vllm_verifier.pkl", samples)


def phase_cost(args) -> None:
    """Wall time of generating 64 tokens vs verifying them (same threads, same batch)."""
    import json

    c = Collector("float32")
    items = _requests(c, "heldout", 64, 400_000, max_tokens=64, prompt_size="cost")
    cost = {}
    for b in (1, 16):
        chunk = items[:b]
        prompts = [ids for _, ids in chunk]
        params = [c.params(r, ignore_eos=True) for r, _ in chunk]
        c.run(c.model, prompts, [replace(p, max_tokens=4) for p in params], 2)  # warm-up
        g = v = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            execs = c.run(c.model, prompts, params, 2)
            g = min(g, time.perf_counter() - t0)
            t0 = time.perf_counter()
            c.verify(execs, 2, b)
            v = min(v, time.perf_counter() - t0)
        cost[f"batch_{b}"] = {"generate_s": g, "verify_s": v, "ratio": v / g}
        print(f"cost batch {b}: generate {g:.2f}s verify {v:.2f}s", flush=True)
    # artifact size per output token (prompt ids left out: they cost once per request) over all
    # 64 requests' 64-token outputs; with the prompt ids too for reference
    arts = [
        ex.artifact()
        for lo in range(0, len(items), 16)
        for ex in c.run(
            c.model,
            [ids for _, ids in items[lo : lo + 16]],
            [c.params(r, ignore_eos=True) for r, _ in items[lo : lo + 16]],
            2,
        )
    ]
    cost["artifact"] = {
        "outputs": len(arts),
        "k": DEFAULT_TOP_K_LOGPROBS,
        "bytes_per_output_token": float(np.mean([a.bytes_per_token() for a in arts])),
        "bytes_per_output_token_with_prompt": float(
            np.mean([a.bytes_per_token(include_prompt=True) for a in arts])
        ),
        "commit": c.commit,
    }
    print(f"artifact: {cost['artifact']['bytes_per_output_token']:.2f} B/output token", flush=True)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    (DATA_DIR / "cost.json").write_text(json.dumps(cost))


PLAN = (  # short, resumable phases first; honest runs resume where they stopped
    ("vllm-verifier", "float32", "heldout", 48),
    ("cost", "float32", "heldout", 0),
    ("cheats", "bfloat16", "heldout", 200),
    ("cheats", "float32", "heldout", 200),
    ("engines", "float32", "heldout", 150),
    ("engines", "bfloat16", "heldout", 90),
    ("honest", "float32", "calibration", 1200),
    ("honest", "bfloat16", "calibration", 500),
    ("honest", "float32", "heldout", 1700),
    ("honest", "bfloat16", "heldout", 1100),
)
PHASES = {
    "honest": phase_honest,
    "engines": phase_engines,
    "cheats": phase_cheats,
    "vllm-verifier": phase_vllm_verifier,
    "cost": phase_cost,
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("phase", choices=(*PHASES, "all"))
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--split", choices=traffic.SPLITS, default="heldout")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--scale", type=float, default=1.0, help="`all`: multiply every count")
    ap.add_argument(
        "--lengths",
        help="`cheats`: output lengths to run, e.g. 256 (default 64; bfloat16 64,256); at 256 "
        "the count is halved",
    )
    args = ap.parse_args(argv)
    random.seed(0)
    if args.phase != "all":
        PHASES[args.phase](args)
        return
    for phase, dtype, split, count in PLAN:
        sub = argparse.Namespace(**vars(args))
        sub.dtype, sub.split, sub.count = dtype, split, max(1, int(count * args.scale))
        print(f"== {phase} {dtype} {split} {sub.count}", flush=True)
        PHASES[phase](sub)


if __name__ == "__main__":
    main()
