"""The ``calibrate`` tool: honest runs over real traffic → a thresholds row for a new model.

``python -m gonka_ray.verification.calibrate --model M [--dtype bfloat16]`` draws
``--requests`` requests from the calibration split of :mod:`gonka_ray.verification.traffic`
(every temperature, top-p, top-k, prompt size and stop strings of the grid; outputs capped at
``--max-tokens`` so the run takes minutes), executes them honestly under honest variation —
executor batch composition (same-length batches and one request at a time) and torch thread
count, the verifier always at another batch size and thread count — verifies each with one
prefill, and fits a row with the false-positive model of
:mod:`gonka_ray.verification.calibration`. The row is written under the model's name and the
network dtype in ``gonka_ray/data/verification_thresholds.json`` (or ``--out``).

The replay tolerance (mask ambiguity) used while verifying must match the gate the row ends up
with, so the verification runs again at the fitted gate when the first pass used a smaller one.

``benchmarks/detection.py`` + ``benchmarks/detection_report.py`` write the shipped SmolLM2 rows
from a far larger run and judge them on a held-out split. Uses torch; not used by participants.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from gonka_ray.constants import (
    CALIBRATE_FIRST_TOLERANCE,
    CALIBRATE_MAX_PROMPT_TOKENS,
    CALIBRATION_SAFETY,
    CALIBRATION_TARGET_FPR,
    DEFAULT_TOP_K_LOGPROBS,
)
from gonka_ray.verification import calibration as cal
from gonka_ray.verification import traffic

TABLE_PATH = Path(__file__).resolve().parent.parent / "data" / "verification_thresholds.json"


def records_from(execs, scores, variant: str) -> list[cal.HonestRecord]:
    """One :class:`~gonka_ray.verification.calibration.HonestRecord` per honest execution."""
    from gonka_ray.verification.checks import logit_margins

    out = []
    for ex, s in zip(execs, scores, strict=True):
        if ex.n == 0:
            continue
        mism = ex.output_ids.astype(np.int64) != s.choice.astype(np.int64)
        lm = logit_margins(s.margin, ex.sampling.temperature)
        out.append(
            cal.HonestRecord(
                variant=variant,
                deltas=s.token_logprobs.astype(np.float64) - ex.token_logprobs.astype(np.float64),
                logprobs=ex.token_logprobs.astype(np.float16),
                verifier_logprobs=np.asarray(s.token_logprobs, np.float64),
                flip_margins=tuple(float(m) for m in lm[mism & (lm > 0)]),
                temperature=ex.sampling.temperature,
            )
        )
    return out


def honest_executions(
    model_name: str,
    *,
    dtype: str = "float32",
    requests: int = 96,
    max_tokens: int = 64,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _m: None,
):
    """Honest executions of the calibration split: ``(model, [(variant, executions, verifier
    batch, verifier threads)])``."""
    import torch

    from gonka_ray.engine.base import SamplingParams
    from gonka_ray.engine.models import load_hf
    from gonka_ray.verification import harness

    model, tok = load_hf(model_name, dtype=dtype)
    eos = harness.eos_ids(model, tok)
    items = []
    for req in traffic.requests("calibration", requests, seed=seed):
        ids = harness.messages_ids(tok, req.chat())
        if len(ids) > CALIBRATE_MAX_PROMPT_TOKENS:
            continue
        sp = SamplingParams(
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            max_tokens=min(req.max_tokens, max_tokens),
            seed=req.seed,
            logprobs=DEFAULT_TOP_K_LOGPROBS,
            stop=req.stop,
        )
        items.append((ids, sp))
    threads = torch.get_num_threads()
    other = 1 if threads > 1 else 2
    runs = []
    by_len: dict[int, list] = {}
    for it in items[: len(items) - len(items) // 8]:
        by_len.setdefault(it[1].max_tokens, []).append(it)
    for n, group in sorted(by_len.items()):
        progress(f"executor batch {len(group)} at {n} tokens")
        torch.set_num_threads(threads)
        ex = harness.generate(
            model, [g[0] for g in group], [g[1] for g in group], tokenizer=tok, eos=eos
        )
        runs.append((f"batch/threads={threads}", ex, 8, other))
    singles = items[len(items) - len(items) // 8 :]
    progress(f"executor one request at a time ({len(singles)})")
    torch.set_num_threads(other)
    ex = [harness.generate(model, [p], [s], tokenizer=tok, eos=eos)[0] for p, s in singles]
    runs.append((f"batch_1/threads={other}", ex, 16, threads))
    torch.set_num_threads(threads)
    return model, runs


def calibrate(
    model_name: str,
    *,
    dtype: str = "float32",
    requests: int = 96,
    max_tokens: int = 64,
    target_fpr: float = CALIBRATION_TARGET_FPR,
    safety: float = CALIBRATION_SAFETY,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict:
    """Run the honest variation for ``model_name`` in ``dtype`` and fit its thresholds row.
    Writes nothing (see :func:`update_table`)."""
    import torch

    from gonka_ray.verification import harness

    t0 = time.monotonic()
    model, runs = honest_executions(
        model_name, dtype=dtype, requests=requests, max_tokens=max_tokens, progress=progress
    )
    tolerance = CALIBRATE_FIRST_TOLERANCE.get(dtype, 1.6)
    for _ in range(2):
        records = []
        for variant, execs, vb, vt in runs:
            torch.set_num_threads(vt)
            scores = harness.verify_batch(model, execs, tolerance=tolerance, batch_size=vb)
            records += records_from(execs, scores, variant)
        row = cal.fit_thresholds(records, target_fpr=target_fpr, safety=safety)
        if row["replay_gate"] <= tolerance:
            break
        progress(f"re-verifying at the fitted gate {row['replay_gate']}")
        tolerance = row["replay_gate"]
    row["source"] = (
        f"gonka_ray.verification.calibrate: {len(records)} honest outputs of the calibration "
        f"split (≤ {max_tokens} tokens), {dtype}, {time.monotonic() - t0:.0f} s"
    )
    return row


def update_table(model_name: str, rows: dict[str, dict], path: Path = TABLE_PATH) -> Path:
    """Replace ``model_name``'s rows (by network dtype) in the thresholds file, keeping the
    others. The file is rewritten atomically."""
    table = json.loads(path.read_text()) if path.exists() else {}
    entry = dict(table.get(model_name, {}))
    entry.update(rows)
    table[model_name] = entry
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), nargs="+", default=["float32"])
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--target-fpr", type=float, default=CALIBRATION_TARGET_FPR)
    ap.add_argument("--safety", type=float, default=CALIBRATION_SAFETY)
    ap.add_argument("--out", type=Path, default=TABLE_PATH, help="thresholds file to update")
    ap.add_argument("--dry-run", action="store_true", help="print the rows, write nothing")
    args = ap.parse_args(argv)
    rows = {
        d: calibrate(
            args.model,
            dtype=d,
            requests=args.requests,
            max_tokens=args.max_tokens,
            target_fpr=args.target_fpr,
            safety=args.safety,
            progress=lambda m: print(f"[calibrate] {m}", flush=True),
        )
        for d in args.dtype
    }
    print(json.dumps(rows, indent=1))
    if not args.dry_run:
        print(f"wrote {update_table(args.model, rows, args.out)}")


if __name__ == "__main__":
    main()
