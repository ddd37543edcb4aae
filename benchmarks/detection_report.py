"""Detection benchmark, part 2: fit on the calibration split, judge on the held-out split.

Reads the samples ``benchmarks/detection.py`` collected and writes
``benchmarks/results/detection.json`` (summary keys below) and ``detection.png``:

- thresholds per network dtype fitted by :func:`gonka_ray.verification.calibration.fit_thresholds`
  on the **calibration** split only (``--write-thresholds`` ships them as package data);
- false positives of those thresholds on every **held-out** honest output (other prompts,
  seeds, engines, batch sizes and threads), with the modelled false-positive rate beside the
  count, and per cell of the traffic grid;
- per cheat at 64 tokens: the share of outputs token-for-token identical to the honest output of
  the same request (no harm done) and the true-positive rate over the outputs that differ;
- half precision: per-inference TPR of int8 at 64 and 256 tokens, and the epoch rule judged on
  epochs of 20 checked inferences resampled (seeded) from held-out honest and int8 outputs;
- the vLLM verifier's share of decided replay positions; artifact bytes per token; the
  verifier's cost against generation.

Run: ``.venv/bin/python benchmarks/detection_report.py [--write-thresholds]``. With
``--refresh-cheats`` it only re-judges the cheat samples on hand under the thresholds the
committed ``detection.json`` holds and replaces those cheat rows (a cheat phase collected again
without the honest phases; the JSON records which rows came from which samples).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._common import RESULTS_DIR, print_table, write_results
from benchmarks.detection import DATA_DIR, MODEL, load_samples
from gonka_ray.constants import EVIDENCE_CLAMP_RATIO
from gonka_ray.protocol.verification_policy import EpochRule
from gonka_ray.verification import calibration as cal
from gonka_ray.verification.checks import logit_margins, logprob_excess

EPOCH_INFERENCES = 20
EPOCH_DRAWS = 100_000
LENGTH_BUCKETS = (1, 2, 4, 16, 64, 256, 1024)


def record(s: dict) -> cal.HonestRecord:
    mism = s["out"].astype(np.int64) != s["choice"].astype(np.int64)
    lm = logit_margins(s["margin"], s["T"])
    return cal.HonestRecord(
        variant=s["variant"].split("/verify_batch")[0],
        deltas=s["v"].astype(np.float64) - s["e"].astype(np.float64),
        logprobs=s["o"],
        verifier_logprobs=s["v"].astype(np.float64),
        flip_margins=tuple(float(m) for m in lm[mism & (lm > 0)]),
        temperature=s["T"],
    )


def judge(s: dict, row: dict) -> tuple[bool, str]:
    """(rejected, by which check) under a thresholds row — the policy's decision."""
    n = len(s["out"])
    if n == 0:
        return False, ""
    mism = s["out"].astype(np.int64) != s["choice"].astype(np.int64)
    gated = mism & (logit_margins(s["margin"], s["T"]) > row["replay_gate"])
    if int(gated.sum()) > row["max_replay_mismatches"]:
        return True, "replay"
    exc = float(logprob_excess(s["o"], s["v"]).mean())
    if not exc <= row["max_logprob_excess"]:
        return True, "logprobs"
    return False, ""


def modelled_fpr(row: dict, n: int) -> float:
    t = row["token_tail"]
    tail = cal.TokenTail(t["x0"], t["q"], t["beta"], t["tokens"], t["max_abs_delta_seen"])
    return cal.excess_fpr(tail, row["max_logprob_excess"], n) + cal.replay_fpr(
        tail, row["replay_gate"], n, row["max_replay_mismatches"]
    )


def bucket(n: int) -> int:
    return next(b for b in LENGTH_BUCKETS if n <= b) if n <= LENGTH_BUCKETS[-1] else 1024


def is_honest(s: dict) -> bool:
    return s["kind"] == "honest"


def grid_table(samples: list[dict], rows: dict) -> tuple[list[dict], int]:
    cells: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    fps = 0
    for s in samples:
        bad, _ = judge(s, rows[s["dtype"]])
        fps += bad
        for key in (
            ("temperature", s["T"]),
            ("top_p", s["top_p"]),
            ("top_k", s["top_k"]),
            ("output_tokens", bucket(len(s["out"]))),
            ("prompt", s["prompt_size"]),
            ("finish", s["finish"]),
            ("stop_strings", s["stop"]),
            ("source", "/".join(s["variant"].split("/")[:2])),
        ):
            c = cells[(s["dtype"], *key)]
            c[0] += 1
            c[1] += bad
    table = [
        {"dtype": k[0], "axis": k[1], "value": k[2], "outputs": v[0], "false_positives": v[1]}
        for k, v in sorted(cells.items(), key=lambda kv: tuple(map(str, kv[0])))
    ]
    return table, fps


def cheat_rows(samples: list[dict], row: dict, dtype: str, length: int) -> list[dict]:
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        if s["dtype"] == dtype and s["kind"] != "honest" and len(s["out"]) == length:
            by_kind[s["kind"]].append(s)
    out = []
    for kind, ss in sorted(by_kind.items()):
        differ = [s for s in ss if not s.get("identical")]
        caught = [judge(s, row) for s in differ]
        by = defaultdict(int)
        for bad, check in caught:
            by[check] += bad
        out.append(
            {
                "cheat": kind,
                "dtype": dtype,
                "tokens": length,
                "samples": len(ss),
                "identical_to_honest": len(ss) - len(differ),
                "identical_share": round((len(ss) - len(differ)) / max(1, len(ss)), 4),
                "tpr_over_differing": round(sum(b for b, _ in caught) / max(1, len(differ)), 4),
                "tpr_all": round(sum(b for b, _ in caught) / max(1, len(ss)), 4),
                "caught_by_replay": by["replay"],
                "caught_by_logprobs": by["logprobs"],
            }
        )
    return out


def bf16_cheat_rows(samples: list[dict], row: dict) -> list[dict]:
    """The bfloat16 cheat rows: int8 at 64 and at 256 tokens."""
    return [r for n in (64, 256) for r in cheat_rows(samples, row, "bfloat16", n)]


def cheat_summary(cheats: list[dict], bf16_cheats: list[dict]) -> dict:
    """The summary keys the cheat rows give (float32 cheats at 64 tokens; int8 in bfloat16)."""
    identical = sum(c["identical_to_honest"] for c in cheats)
    int8_bf16 = {c["tokens"]: c["tpr_over_differing"] for c in bf16_cheats if c["cheat"] == "int8"}
    return {
        "min_tpr_at_fpr_1e-3_64tok": min((c["tpr_over_differing"] for c in cheats), default=None),
        "worst_cheat_64tok": min(cheats, key=lambda c: c["tpr_over_differing"])["cheat"]
        if cheats
        else None,
        "cheat_samples_min": min((c["samples"] for c in cheats), default=0),
        "cheat_identical_to_honest_share": round(
            identical / max(1, sum(c["samples"] for c in cheats)), 4
        ),
        "int8_tpr_bf16_64tok": int8_bf16.get(64),
        "int8_tpr_bf16_256tok": int8_bf16.get(256),
    }


def merge_cheat_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with every row of a (cheat, dtype, tokens) that ``new`` has replaced by it."""
    key = lambda c: (c["cheat"], c["dtype"], c["tokens"])  # noqa: E731
    fresh = {key(c): c for c in new}
    kept = [c for c in old if key(c) not in fresh]
    return sorted(kept + list(fresh.values()), key=key)


def refresh_cheats(samples: list[dict]) -> Path:
    """Re-judge the cheat samples on hand under the thresholds the committed
    ``detection.json`` was fitted with (its calibration split) and replace those cheat rows;
    every honest figure stays the committed run's. For a cheat phase collected again (more
    requests, a new cheat) without collecting the honest phases again: the cheats are held-out
    requests either way, and which rows came from which samples is recorded."""
    path = RESULTS_DIR / "detection.json"
    old = json.loads(path.read_text())
    rows = old["thresholds_calibrated"]
    new = cheat_rows(samples, rows["float32"], "float32", 64)
    new_bf16 = bf16_cheat_rows(samples, rows["bfloat16"])
    if not new and not new_bf16:
        raise SystemExit(f"no cheat samples under {DATA_DIR}")
    cheats = merge_cheat_rows(old["cheats"], new)
    bf16_cheats = merge_cheat_rows(old["bf16_cheats"], new_bf16)
    print_table(new + new_bf16)
    summary = {**old["summary"], **cheat_summary(cheats, bf16_cheats)}
    print(json.dumps(summary, indent=1))
    meta = ("summary", "machine", "git_commit", "git_dirty_files", "created_unix_s")
    honest_from = old.get("honest_figures_from", old["git_commit"])
    refreshed = old.get("cheat_rows_refreshed", [])
    refreshed.append(
        {
            "rows": [[c["cheat"], c["dtype"], c["tokens"]] for c in new + new_bf16],
            "sample_commits": sorted({s.get("commit", "?") for s in samples}),
            "honest_figures_from": honest_from,
        }
    )
    detail = {k: v for k, v in old.items() if k not in meta}
    detail.update(
        cheats=cheats,
        bf16_cheats=bf16_cheats,
        honest_figures_from=honest_from,
        cheat_rows_refreshed=refreshed,
    )
    return write_results("detection", summary, **detail)


def epoch_rates(
    pool: list[tuple[float, float]], rule: EpochRule, rng, draws: int, validators: int = 3
) -> float:
    """Share of ``draws`` epochs of EPOCH_INFERENCES inferences resampled from ``pool`` that the
    ledger's rule convicts (protocol/evidence.py: per-inference cap, trimmed statistic, and the
    conviction standing without each validator's reports). Each inference is checked by one of
    ``validators`` validators drawn uniformly — 3 is the smallest network's case, where leaving
    one out costs the most inferences."""
    arr = np.array(pool, np.float64)
    idx = rng.integers(0, len(arr), size=(draws, EPOCH_INFERENCES))
    w = arr[idx, 1]
    a = np.minimum(arr[idx, 0], EVIDENCE_CLAMP_RATIO * rule.mu * w)
    who = rng.integers(0, validators, size=a.shape)
    convicted = ~(cal.trimmed_ratios(a, w, rule.trim) <= _thresholds(rule, a.shape[1], w.sum(1)))
    for v in range(validators):
        keep = who != v
        m_v = keep.sum(1)
        stat = cal.trimmed_ratios(np.where(keep, a, 0.0), np.where(keep, w, 1e-12), rule.trim)
        thr = _thresholds(rule, m_v, np.where(keep, w, 0.0).sum(1))
        convicted &= (m_v > 0) & ~(stat <= thr)
    return float(np.mean(convicted))


def _epoch_rule(ep: dict) -> EpochRule:
    """A fitted row's epoch rule, judged at EPOCH_INFERENCES checked inferences."""
    return EpochRule(
        ep["mu"], ep["kappa"], ep["z"], ep["safety"], EPOCH_INFERENCES, ep["trim"], ep["sigma"]
    )


def _thresholds(rule: EpochRule, inferences, weight: np.ndarray) -> np.ndarray:
    """``rule.threshold`` per epoch (vectorised over epochs)."""
    m = np.broadcast_to(np.asarray(inferences), weight.shape)
    return np.array(
        [rule.threshold(max(1, int(k)), float(x)) for k, x in zip(m, weight, strict=True)]
    )


def _flag_rates(entry: dict) -> list[float]:
    return [v for k, v in entry.items() if k.startswith("flag_rate")]


def epoch_section(samples: list[dict], row: dict, rng, dtype: str = "bfloat16") -> dict:
    ep = row["epoch"]
    rule = _epoch_rule(ep)
    honest = [s for s in samples if s["dtype"] == dtype and is_honest(s)]
    held = [s for s in honest if s["split"] == "heldout"]
    out = {"rule": ep, "epochs_drawn": EPOCH_DRAWS, "inferences_per_epoch": EPOCH_INFERENCES}
    pools = {
        "honest_heldout_traffic": [record(s).evidence() for s in held if s["phase"] == "honest"],
        "honest_heldout_64tok": [record(s).evidence() for s in held if len(s["out"]) == 64],
        "honest_heldout_256tok": [record(s).evidence() for s in held if len(s["out"]) == 256],
    }
    # an executor serving only answers of one length class (1 token, 2, ≤ 4, ...)
    for b in (*cal.EPOCH_LENGTH_BUCKETS, 0):
        pool = [
            record(s).evidence()
            for s in held
            if s["phase"] == "honest" and len(s["out"]) and cal.length_bucket(len(s["out"])) == b
        ]
        if len(pool) >= 20:
            pools[f"honest_heldout_len_{b or 'over_256'}"] = pool
    for v in sorted({s["variant"].split("/verify_batch")[0] for s in held}):
        pool = [record(s).evidence() for s in held if s["variant"].startswith(v)]
        if len(pool) >= 20:
            pools[f"honest_{v}"] = pool
    for n in (64, 256):
        pools[f"int8_{n}tok"] = [
            record(s).evidence()
            for s in samples
            if s["dtype"] == dtype and s["kind"] == "int8" and len(s["out"]) == n
        ]
    rates = {}
    for name, pool in pools.items():
        if len(pool) >= 8:
            rates[name] = {
                "pool": len(pool),
                **{
                    f"flag_rate_{v}_validators": epoch_rates(pool, rule, rng, EPOCH_DRAWS, v)
                    for v in (3, 5)
                },
            }
    out["rates"] = rates
    honest_rates = [x for k, v in rates.items() if k.startswith("honest") for x in _flag_rates(v)]
    # headline: the worst over the 64- and 256-token pools and 3 or 5 validators
    int8_rates = [x for k, v in rates.items() if k.startswith("int8") for x in _flag_rates(v)]
    out["worst_honest_false_alarm"] = max(honest_rates, default=None)
    out["int8_detection_min"] = min(int8_rates, default=None)
    return out


def vllm_section() -> dict:
    path = DATA_DIR / "vllm_verifier.pkl"
    if not path.exists():
        return {}
    import pickle

    with open(path, "rb") as f:
        ss = pickle.load(f)
    pos = sum(len(s["vllm_margin"]) for s in ss)
    decided = sum(int((s["vllm_margin"] > 0).sum()) for s in ss)
    ref_decided = sum(int((s["ref_margin"] > 0).sum()) for s in ss)
    both = [(s["vllm_margin"] > 0) & (s["ref_margin"] > 0) for s in ss]
    agree = sum(
        int((s["vllm_choice"] == s["ref_choice"])[b].sum()) for s, b in zip(ss, both, strict=True)
    )
    return {
        "outputs": len(ss),
        "positions": pos,
        "vllm_decided_share": decided / max(1, pos),
        "transformers_decided_share": ref_decided / max(1, pos),
        "agreement_where_both_decide": agree / max(1, sum(int(b.sum()) for b in both)),
        "wall_s": ss[0]["wall_s"] if ss else None,
    }


def plot(samples: list[dict], rows: dict, epoch: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    for ax, dtype in zip(axes[:2], ("float32", "bfloat16"), strict=False):
        floor = 1e-7
        hon = [
            max(floor, float(logprob_excess(s["o"], s["v"]).mean()))
            for s in samples
            if s["dtype"] == dtype and is_honest(s) and len(s["out"]) and s["split"] == "heldout"
        ]
        bins = np.logspace(-7, 0.5, 60)
        # share of outputs per bin (a density over log-spaced bins would inflate the narrow
        # bins at the floor, where every output with no excess beyond float16 rounding sits)
        share = np.full(len(hon), 1.0 / max(1, len(hon)))
        ax.hist(hon, bins=bins, weights=share, alpha=0.5, label=f"honest held-out ({len(hon)})")
        for kind in sorted({s["kind"] for s in samples if s["dtype"] == dtype} - {"honest"}):
            vals = [
                max(floor, float(logprob_excess(s["o"], s["v"]).mean()))
                for s in samples
                if s["dtype"] == dtype and s["kind"] == kind and not s.get("identical")
            ]
            if vals:
                w = np.full(len(vals), 1.0 / len(vals))
                ax.hist(vals, bins=bins, weights=w, histtype="step", label=kind)
        if dtype in rows:
            ax.axvline(rows[dtype]["max_logprob_excess"], color="k", ls=":", label="threshold")
        ax.set_xscale("log")
        ax.set_title(f"{dtype}: mean logprob excess per output (≤ 1e-7: none)")
        ax.set_ylabel("share of outputs")
        ax.legend(fontsize=7)
    ax = axes[2]
    if epoch and "bfloat16" in rows:
        # resampled epochs: the statistic T against the evidence weight W, and the bound
        rule = _epoch_rule(rows["bfloat16"]["epoch"])
        rng = np.random.default_rng(1)
        held = [s for s in samples if s["dtype"] == "bfloat16" and s["split"] == "heldout"]
        pools = {
            "honest held-out, every length": [
                record(s).evidence() for s in held if is_honest(s) and len(s["out"])
            ],
            "honest held-out, 1-2 tokens": [
                record(s).evidence() for s in held if is_honest(s) and 0 < len(s["out"]) <= 2
            ],
            "int8, 64 tokens": [
                record(s).evidence() for s in held if s["kind"] == "int8" and len(s["out"]) == 64
            ],
        }
        for name, pool in pools.items():
            if len(pool) < 8:
                continue
            a, w = np.array(pool).T
            idx = rng.integers(0, len(pool), size=(3_000, EPOCH_INFERENCES))
            t = cal.trimmed_ratios(a[idx], w[idx], rule.trim)
            ax.scatter(w[idx].sum(1), t, s=3, alpha=0.3, label=f"{name} ({len(pool)})")
        grid = np.logspace(0.5, 4.5, 100)
        bound = _thresholds(rule, EPOCH_INFERENCES, grid)
        ax.plot(grid, bound, "k--", label="bound safety·(μ + z·σ/√W)")
        ax.set_xscale("log")
        ax.set_ylim(0, 0.25)
        ax.set_xlabel("epoch evidence weight W = Σw")
        ax.set_ylabel("T (trimmed weighted mean excess/w)")
        ax.set_title(f"bf16 epochs of {EPOCH_INFERENCES} checked inferences (held out)")
        ax.legend(fontsize=7, markerscale=4)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / "detection.png", dpi=100)


def _artifact_bytes(cost: dict, pairs: list[dict]) -> float | None:
    """Artifact bytes per output token (k = 5, prompt ids left out: they cost once per request):
    measured by the cost phase on 64 outputs of 64 tokens, else from cheat pairs' honest 64-token
    artifacts stored with that definition (either network dtype: the artifact stores float16)."""
    if "artifact" in cost:
        return round(cost["artifact"]["bytes_per_output_token"], 2)
    sizes = [s["bytes_per_token"] for s in pairs if s.get("bytes_per_token_def") == "output"]
    return round(float(np.mean(sizes)), 2) if sizes else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--write-thresholds", action="store_true")
    ap.add_argument(
        "--refresh-cheats",
        action="store_true",
        help="only re-judge the cheat samples on hand under the committed thresholds",
    )
    args = ap.parse_args()
    samples = [s for s in load_samples() if "out" in s]
    if args.refresh_cheats:
        print(f"wrote {refresh_cheats([s for s in samples if s['kind'] != 'honest'])}")
        return
    honest = [s for s in samples if is_honest(s)]
    rows = {}
    for dtype in ("float32", "bfloat16"):
        cal_recs = [
            record(s)
            for s in honest
            if s["dtype"] == dtype and s["split"] == "calibration" and len(s["out"])
        ]
        if cal_recs:
            rows[dtype] = cal.fit_thresholds(cal_recs)
            rows[dtype]["source"] = (
                f"benchmarks/detection_report.py: calibration split, {len(cal_recs)} honest "
                f"{dtype} outputs; judged on the held-out split (benchmarks/results/detection.json)"
            )
    held = [s for s in honest if s["split"] == "heldout" and s["dtype"] in rows]
    grid, grid_fps = grid_table([s for s in honest if s["dtype"] in rows], rows)
    fp = {d: [s for s in held if s["dtype"] == d and judge(s, rows[d])[0]] for d in rows}
    modelled = {
        d: float(np.mean([modelled_fpr(rows[d], len(s["out"])) for s in held if s["dtype"] == d]))
        for d in rows
    }
    cheats = cheat_rows(samples, rows["float32"], "float32", 64) if "float32" in rows else []
    bf16_cheats = bf16_cheat_rows(samples, rows["bfloat16"]) if "bfloat16" in rows else []
    rng = np.random.default_rng(0)
    epoch = epoch_section(samples, rows["bfloat16"], rng) if "bfloat16" in rows else None
    # a float32 network gets its row's epoch rule too: it must not flag honest fp32 executors
    # (other engines included) either
    epoch32 = epoch_section(samples, rows["float32"], rng, "float32") if "float32" in rows else None
    vllm = vllm_section()
    cost_path = DATA_DIR / "cost.json"
    cost = json.loads(cost_path.read_text()) if cost_path.exists() else {}
    pairs = [s for s in samples if s["variant"] == "cheat_pair"]
    summary = {
        "heldout_honest_samples": len(held),
        "heldout_false_positives": sum(len(v) for v in fp.values()),
        "heldout_modelled_fpr_per_output": modelled,
        "honest_grid_false_positives": grid_fps,
        "honest_samples_all": len([s for s in honest if s["dtype"] in rows]),
        **cheat_summary(cheats, bf16_cheats),
        "int8_bf16_epoch_detection": epoch["int8_detection_min"] if epoch else None,
        "honest_bf16_epoch_false_alarm": epoch["worst_honest_false_alarm"] if epoch else None,
        "honest_fp32_epoch_false_alarm": epoch32["worst_honest_false_alarm"] if epoch32 else None,
        "vllm_replay_decided_share": vllm.get("vllm_decided_share"),
        "artifact_bytes_per_token": _artifact_bytes(cost, pairs),
        "verify_cost_ratio_batch_16": round(cost["batch_16"]["ratio"], 4) if cost else None,
        "verify_cost_ratio_batch_1": round(cost["batch_1"]["ratio"], 4) if cost else None,
    }
    print_table(cheats + bf16_cheats)
    print(json.dumps(summary, indent=1))
    commits = sorted({s.get("commit", "?") for s in samples})
    path = write_results(
        "detection",
        summary,
        model=MODEL,
        sample_commits=commits,
        thresholds_calibrated=rows,
        heldout_false_positive_samples={
            d: [{k: s[k] for k in ("variant", "T", "top_p", "top_k", "req")} for s in v]
            for d, v in fp.items()
        },
        cheats=cheats,
        bf16_cheats=bf16_cheats,
        epoch=epoch,
        epoch_float32=epoch32,
        vllm_verifier=vllm,
        cost=cost,
        grid=grid,
        counts={
            f"{d}/{sp}/{ph}": len(
                [s for s in honest if s["dtype"] == d and s["split"] == sp and s["phase"] == ph]
            )
            for d in ("float32", "bfloat16")
            for sp in ("calibration", "heldout")
            for ph in ("honest", "engines", "cheats")
        },
        note=(
            "Thresholds are fitted on the calibration split only; every false-positive count and "
            "TPR is on the held-out split (other prompts, seeds, sampling params). TPR counts "
            "only cheat outputs that differ from the honest output of the same request; the "
            "identical ones did no harm and are reported as a share. Epoch figures resample "
            f"{EPOCH_INFERENCES} checked inferences per epoch ({EPOCH_DRAWS} epochs, seed 0) "
            "from held-out pools."
        ),
    )
    plot(samples, rows, epoch)  # after the JSON: its git_commit must see a clean tree
    print(f"wrote {path}")
    if args.write_thresholds:
        from gonka_ray.verification.calibrate import update_table

        update_table(MODEL, rows)
        print("wrote the calibrated rows to gonka_ray/data/verification_thresholds.json")


if __name__ == "__main__":
    main()
