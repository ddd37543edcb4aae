"""Do honest verification receipts hold under numerical noise, in float32 and in bfloat16?

Run: ``.venv/bin/python benchmarks/receipt_noise.py`` (writes ``results/receipt_noise.json`` and
``results/receipt_noise.png``; ``--count`` requests per dtype).

A receipt (:mod:`gonka_ray.protocol.receipts`) names, at four output positions, the validator's
most likely token outside the artifact's top-k and its logprob. Its executor challenges it when
it does not hold against the ranks the executor kept from generating (``slack`` 2), and the
judges break it when it does not hold against their own prefill (``slack`` 1): the token must be
in the reference's top k + 8·slack and its logprob within 1 nat·slack. Both margins were chosen
for ~0.1 nat of half-precision noise without a measurement; a wrongful break costs an honest
validator its epoch and, from protocol v4, a sit-out. This measures them, held out from that
choice: SmolLM2 (the embedded model) on requests of the detection benchmark's traffic grid
(held-out split, a run seed of its own), each computed three times the way the network computes
it, never twice alike:

- the **executor** generates (KV cache, left-padded batch of 16, 1 or 4 requests, 2 threads),
  keeping its top k + 16 per position (k = 5 in the artifact);
- the **validator** prefills prompt + output (batch 8, 1 thread) and makes its receipt;
- a **judge** prefills again (batch 1, 2 threads).

Per dtype: receipts an honest executor would challenge, receipts honest judges would break (both
must be 0), and the largest logprob difference and reference rank seen against the margins (the
judges' rank margin is k + 8 = 13: ``max_rank_histogram`` shows how close noise comes to it).
What shares the 2 cores: nothing but this script (one model, one process).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from tqdm import tqdm

from benchmarks._common import RESULTS_DIR, print_table, write_results
from benchmarks.detection import sampling_of
from gonka_ray.constants import (
    DEFAULT_TOP_K_LOGPROBS,
    RECEIPT_RANKS,
    RECEIPT_TOLERANCE_NATS,
)
from gonka_ray.engine.models import load_hf
from gonka_ray.protocol import receipts
from gonka_ray.verification import harness, traffic

MODEL = "smollm2-135m-instruct"
CONTEXT = 2048
RUN_SEED = 7  # a traffic run of its own (the detection benchmark uses 1 and 2)
EXEC_BATCHES = (16, 1, 4)
MAX_TOKENS = 64  # longer answers are cut here: receipts sample four positions of any length
VALIDATOR = "gonka" + "0" * 40  # receipt positions depend on the validator's address


def _ranks(logits: torch.Tensor, depth: int) -> tuple[np.ndarray, np.ndarray]:
    top = torch.topk(torch.log_softmax(logits.float(), -1), depth, -1)
    return top.indices.numpy(), top.values.numpy()


def _requests(tok, count: int) -> list[tuple[traffic.TrafficRequest, list[int]]]:
    out = []
    index = 0
    while len(out) < count:
        req = traffic.request("heldout", 200_000 + index, seed=RUN_SEED)
        index += 1
        req = replace(req, max_tokens=min(req.max_tokens, MAX_TOKENS))
        ids = harness.messages_ids(tok, req.chat())
        if len(ids) + req.max_tokens <= CONTEXT:
            out.append((req, ids))
    return out


def measure(dtype: str, count: int) -> dict:
    """Receipts of ``count`` requests in ``dtype``, each checked as the executor and a judge
    would."""
    model, tok = load_hf(MODEL, dtype=dtype)
    eos = harness.eos_ids(model, tok)
    k = DEFAULT_TOP_K_LOGPROBS
    kept = k + receipts.PRIVATE_RANKS
    reqs = _requests(tok, count)
    by_len: dict[int, list] = {}
    for item in reqs:
        by_len.setdefault(item[0].max_tokens, []).append(item)
    chunks, b = [], 0
    for items in by_len.values():
        while items:
            size = EXEC_BATCHES[b % len(EXEC_BATCHES)]
            chunks.append(items[:size])
            items = items[size:]
            b += 1
    rows = []
    bar = tqdm(total=len(reqs), desc=f"receipts {dtype}")
    for chunk in chunks:
        torch.set_num_threads(2)
        params = [sampling_of(r) for r, _ in chunk]
        with torch.inference_mode():
            execs = harness.generate(
                model, [ids for _, ids in chunk], params, k=kept, tokenizer=tok, eos=eos
            )
            execs = [e for e in execs if e.n > 0]
            torch.set_num_threads(1)
            val_logits = []
            for lo in range(0, len(execs), 8):
                part = execs[lo : lo + 8]
                val_logits += harness.prefill_logits(
                    model, [e.prompt_ids for e in part], [e.output_ids for e in part]
                )
            torch.set_num_threads(2)
            judge_logits = [
                harness.prefill_logits(model, [e.prompt_ids], [e.output_ids])[0] for e in execs
            ]
        for e, vl, jl in zip(execs, val_logits, judge_logits, strict=True):
            iid = hashlib.sha256(
                bytes(e.output_ids.astype(np.int32)) + e.sampling.seed.to_bytes(8, "big")
            ).digest()
            shown = e.top_ids[:, :k].tolist()
            v_ids, v_lps = _ranks(vl, k + 1)
            receipt = receipts.make(iid, VALIDATOR, shown, v_ids.tolist(), v_lps.tolist())
            j_ids, j_lps = _ranks(jl, k + RECEIPT_RANKS)
            ex_ids, ex_lps = e.top_ids.tolist(), e.top_logprobs.tolist()
            worst_delta, worst_rank = 0.0, 0
            for entry in receipt:
                for ids, lps in ((ex_ids, ex_lps), (j_ids.tolist(), j_lps.tolist())):
                    row = list(ids[entry.position])
                    if entry.token in row:
                        r = row.index(entry.token)
                        worst_rank = max(worst_rank, r)
                        d = abs(entry.logprob_micro / 1e6 - float(lps[entry.position][r]))
                        worst_delta = max(worst_delta, d)
                    else:
                        worst_rank = max(worst_rank, len(row))
            rows.append(
                {
                    "tokens": e.n,
                    "temperature": e.sampling.temperature,
                    "challenged": not receipts.holds(
                        receipt, iid, VALIDATOR, shown, ex_ids, ex_lps, slack=2
                    ),
                    "broken": not receipts.holds(
                        receipt, iid, VALIDATOR, shown, j_ids.tolist(), j_lps.tolist(), slack=1
                    ),
                    "max_logprob_delta": worst_delta,
                    "max_rank": worst_rank,
                }
            )
        bar.update(len(chunk))
    bar.close()
    deltas = np.array([r["max_logprob_delta"] for r in rows])
    return {
        "dtype": dtype,
        "receipts": len(rows),
        "positions": sum(min(4, r["tokens"]) for r in rows),
        "challenged": sum(r["challenged"] for r in rows),
        "broken": sum(r["broken"] for r in rows),
        "max_logprob_delta_nats": round(float(deltas.max()), 5) if len(rows) else None,
        "p99_logprob_delta_nats": round(float(np.percentile(deltas, 99)), 5) if len(rows) else None,
        "max_rank_seen": max((r["max_rank"] for r in rows), default=None),
        "rank_margin": k + RECEIPT_RANKS,
        "logprob_margin_nats": RECEIPT_TOLERANCE_NATS,
        "deltas": deltas.round(5).tolist(),
        # how far noise moved the named token: its rank in the executor's and the judge's lists
        # (the validator's own rank is the first outside the artifact's top-k, typically k)
        "max_rank_histogram": {
            str(r): n for r, n in sorted(Counter(x["max_rank"] for x in rows).items())
        },
    }


def plot(results: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in results:
        d = np.sort(np.maximum(np.array(r["deltas"]), 1e-7))
        ax.plot(d, 1 - np.arange(len(d)) / len(d), label=f"{r['dtype']} ({r['receipts']})")
    ax.axvline(RECEIPT_TOLERANCE_NATS, color="red", ls="--", label="judges' margin (1 nat)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("largest |receipt logprob − reference| per receipt (nats)")
    ax.set_ylabel("share of receipts ≥ x")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = RESULTS_DIR / "receipt_noise.png"
    fig.savefig(out, dpi=120)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=150, help="requests per dtype")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    t0 = time.time()
    results = [measure(d, args.count) for d in args.dtypes.split(",")]
    print_table([{k: v for k, v in r.items() if k != "deltas"} for r in results])
    summary = {"runtime_s": round(time.time() - t0, 1)}
    for r in results:
        tag = {"float32": "fp32", "bfloat16": "bf16"}.get(r["dtype"], r["dtype"])
        summary[f"{tag}_receipts"] = r["receipts"]
        summary[f"{tag}_honest_challenged"] = r["challenged"]
        summary[f"{tag}_honest_broken"] = r["broken"]
        summary[f"{tag}_max_logprob_delta_nats"] = r["max_logprob_delta_nats"]
        summary[f"{tag}_max_rank_seen"] = r["max_rank_seen"]
        summary[f"{tag}_receipts_at_rank_ge_9"] = sum(
            n for rank, n in r["max_rank_histogram"].items() if int(rank) >= 9
        )
    png = plot(results)
    path = write_results("receipt_noise", summary, results=results)
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
