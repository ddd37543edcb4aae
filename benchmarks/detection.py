"""Detection power of the verification checks against every cheat, on SmolLM2-135M.

For each prompt, an honest float32 executor and each cheater generate ``--tokens`` tokens with
the shared replayable sampler (T = 0.7, per-prompt seed); a float32 verifier scores each output
by one prefill and the checks grade it (Gonka distance, gated replay, logprob deviation). Honest
samples use a different torch thread count for generation and verification (honest variation).

Reported per cheat and check: ROC AUC of the check's statistic (cheat vs honest), TPR at the
shipped policy thresholds, and the honest false-positive count at those thresholds. With N honest
samples an FPR below 1/N cannot be demonstrated: the JSON says how many there were.

Run: ``.venv/bin/python benchmarks/detection.py --prompts 16 --tokens 64``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from tqdm import tqdm

from benchmarks._common import RESULTS_DIR, print_table, write_results
from gonka_ray.engine import sampler
from gonka_ray.engine.models import fake_quantize, load_hf, truncate_layers
from gonka_ray.protocol.verification_policy import decide, thresholds_for
from gonka_ray.verification.artifact import Artifact
from gonka_ray.verification.checks import VerifierScores, verify

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
K = 5


def prompt_ids(tok, text: str) -> torch.Tensor:
    return tok.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]


@torch.no_grad()
def generate(model, ids: torch.Tensor, seed: int, n: int, temperature: float = TEMPERATURE):
    """Tokens and raw logprob rows [n, V] from decoding with KV cache and the shared sampler."""
    out = model(ids, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1].float()
    toks, rows = [], []
    for pos in range(n):
        s = sampler.sample(
            logits,
            temperature=torch.tensor([temperature]),
            seeds=torch.tensor([sampler.seed_to_int64(seed)]),
            positions=torch.tensor([pos]),
        )
        t = int(s.tokens[0])
        toks.append(t)
        rows.append(torch.log_softmax(logits, -1)[0])
        out = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1].float()
    return toks, torch.stack(rows)


@torch.no_grad()
def prefill(model, ids: torch.Tensor, toks: list[int], seed: int):
    full = torch.cat([ids, torch.tensor([toks])], 1)
    logits = model(full).logits[0, ids.shape[1] - 1 : -1].float()
    s = sampler.sample(
        logits,
        temperature=torch.full((len(toks),), TEMPERATURE),
        seeds=torch.full((len(toks),), sampler.seed_to_int64(seed)),
        positions=torch.arange(len(toks)),
    )
    return torch.log_softmax(logits, -1), s.tokens, s.margins


def artifact_of(ids, toks, rows, seed) -> Artifact:
    t = torch.tensor(toks)
    top = torch.topk(rows, K, -1)
    return Artifact.build(
        prompt_ids=ids[0].tolist(),
        output_ids=toks,
        token_logprobs=rows.gather(1, t[:, None])[:, 0].numpy(),
        top_ids=top.indices.numpy(),
        top_logprobs=top.values.numpy(),
        seed=seed,
        temperature=TEMPERATURE,
        top_p=1.0,
        top_k=0,
        finish_reason="length",
    )


def grade(model, ids, art: Artifact, seed: int, gate: float):
    toks = [int(x) for x in art.output_ids]
    vlp, choice, margin = prefill(model, ids, toks, seed)
    t = torch.tensor(toks)
    top = torch.topk(vlp, K, -1)
    scores = VerifierScores(
        top_ids=top.indices.numpy(),
        top_logprobs=top.values.numpy(),
        token_logprobs=vlp.gather(1, t[:, None])[:, 0].numpy(),
        choice=choice.numpy(),
        margin=margin.numpy(),
    )
    return verify(art, scores, replay_gate=gate)


def auc(pos: list[float], neg: list[float]) -> float:
    """P(cheat statistic > honest statistic) + ties/2."""
    if not pos or not neg:
        return float("nan")
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    thr = thresholds_for("smollm2-135m-instruct")
    model, tok = load_hf("smollm2-135m-instruct")
    cheap = {
        "int8": fake_quantize(model, 8),
        "int4": fake_quantize(model, 4),
        "truncate_layers_2": truncate_layers(model, 2),
        "truncate_layers_6": truncate_layers(model, 6),
    }
    stats: dict[str, dict[str, list[float]]] = {}
    verdicts: dict[str, list[bool]] = {}
    gen_s = ver_s = 0.0
    bpt = []

    def record(name: str, res) -> None:
        d = stats.setdefault(name, {"distance": [], "replay": [], "logprob_dev": []})
        d["distance"].append(res.distance)
        d["replay"].append(res.replay_mismatches)
        d["logprob_dev"].append(res.logprob_deviation)
        verdicts.setdefault(name, []).append(not decide(res, thr).passed)

    for i in tqdm(range(args.prompts), desc="detection"):
        ids = prompt_ids(tok, PROMPTS[i % len(PROMPTS)])
        seed = 10_000 + i
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        toks, rows = generate(model, ids, seed, args.tokens)
        gen_s += time.perf_counter() - t0
        honest = artifact_of(ids, toks, rows, seed)
        bpt.append(honest.bytes_per_token())
        torch.set_num_threads(max(2, args.threads + 1))  # verifier: other thread count
        t0 = time.perf_counter()
        record("honest", grade(model, ids, honest, seed, thr.replay_gate))
        ver_s += time.perf_counter() - t0
        torch.set_num_threads(args.threads)
        cases = {name: generate(m, ids, seed, args.tokens) for name, m in cheap.items()}
        cases["wrong_temperature"] = generate(model, ids, seed, args.tokens, TEMPERATURE * 2 + 0.3)
        cases["greedy"] = generate(model, ids, seed, args.tokens, 0.0)
        cases["ignore_seed"] = generate(model, ids, seed + 7_777_777, args.tokens)
        for name, (ctoks, crows) in cases.items():
            # cheaters claim the client's parameters (temperature, seed) in the artifact
            record(
                name, grade(model, ids, artifact_of(ids, ctoks, crows, seed), seed, thr.replay_gate)
            )
        ltoks = cases["truncate_layers_6"][0]
        lrows, _, _ = prefill(model, ids, ltoks, seed)
        record(
            "launder",
            grade(model, ids, artifact_of(ids, ltoks, lrows, seed), seed, thr.replay_gate),
        )
        rtoks = list(toks)
        alt = torch.topk(rows[0], 2).indices.tolist()
        rtoks[0] = alt[1] if alt[0] == rtoks[0] else alt[0]
        rrows, _, _ = prefill(model, ids, rtoks, seed)  # the cheater reports honest logprobs
        record(
            "replace_1_in_64",
            grade(model, ids, artifact_of(ids, rtoks, rrows, seed), seed, thr.replay_gate),
        )

    honest = stats["honest"]
    rows_out, detail = [], {}
    for name, d in stats.items():
        if name == "honest":
            continue
        entry = {
            "cheat": name,
            "auc_distance": auc(d["distance"], honest["distance"]),
            "auc_replay": auc(d["replay"], honest["replay"]),
            "auc_logprob_dev": auc(d["logprob_dev"], honest["logprob_dev"]),
            "tpr_policy": float(np.mean(verdicts[name])),
        }
        rows_out.append(entry)
        detail[name] = {**entry, "stats": d}
    fp = int(sum(verdicts["honest"]))
    n_honest = len(verdicts["honest"])
    print_table(rows_out)
    print(f"honest samples: {n_honest}, false positives at policy thresholds: {fp}")
    tpr = {r["cheat"]: r["tpr_policy"] for r in rows_out}
    summary = {
        f"min_tpr_at_fpr_1e-3_{args.tokens}tok": min(tpr.values()),
        f"laundering_tpr_at_fpr_1e-3_{args.tokens}tok": tpr["launder"],
        "honest_samples": n_honest,
        "honest_false_positives": fp,
        "verify_cost_ratio": round(ver_s / gen_s, 4),
        "artifact_bytes_per_token": round(float(np.mean(bpt)), 2),
    }
    _plot(stats, args.tokens)
    path = write_results(
        "detection",
        summary,
        tokens=args.tokens,
        thresholds=thr.__dict__,
        cheats=detail,
        honest=honest,
        structural_cheats={
            "drop_system": "prompt hash differs from the TA's commitment (structural, always caught)",
            "truncate_output": "'stop' without EOS or stop string (structural, always caught)",
            "withhold_payload": "payload unavailable counts as a failed check (structural)",
        },
        note="TPR measured at the shipped policy thresholds; with N honest samples an FPR below 1/N is not demonstrated.",
    )
    print(f"wrote {path}")


def _plot(stats, tokens: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, key, label in zip(
        axes,
        ("distance", "replay", "logprob_dev"),
        ("Gonka distance", "gated replay mismatches", "mean |Δ logprob|"),
        strict=True,
    ):
        neg = np.asarray(stats["honest"][key])
        for name, d in stats.items():
            if name == "honest":
                continue
            pos = np.asarray(d[key])
            ts = np.unique(np.concatenate([pos, neg, [np.inf]]))
            tpr = [(pos >= t).mean() for t in ts]
            fpr = [(neg >= t).mean() for t in ts]
            ax.plot(fpr, tpr, label=name, marker=".")
        ax.set_title(f"{label} ({tokens} tokens)")
        ax.set_xlabel("false-positive rate (honest)")
        ax.set_ylabel("true-positive rate")
        ax.set_xscale("symlog", linthresh=0.01)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / "detection_roc.png", dpi=110)


if __name__ == "__main__":
    main()
