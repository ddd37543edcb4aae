"""Long fuzz run: 100,000 hypothesis cases across the targets of ``tests/fuzz/targets.py``.

Every case must end in a typed refusal (wire error, rejected receipt, failed check, 4xx) or a
success that keeps the target's invariants; anything else is a *crash* and is listed with its
case. Hypothesis only generates here (no shrinking), so one run covers the full budget even if a
case crashes.

Run: ``nice -n 10 .venv/bin/python benchmarks/fuzz.py`` (writes ``results/fuzz.json``);
``--cases`` sets the total, ``--targets`` a subset.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, settings
from tqdm import tqdm

from benchmarks._common import print_table, write_results
from tests.fuzz.targets import TARGETS, Target
from tests.fuzz.targets_peer import PEER

ALL_TARGETS = {**TARGETS, PEER.name: PEER}

# Share of the total per target: the cheap parsers get more cases than the in-process stacks.
SHARES = {
    "wire": 0.25,
    "ledger": 0.15,
    "epochs": 0.15,
    "artifact": 0.15,
    "payload": 0.1,
    "http": 0.2,
    "peer": 0.12,  # with the default 100,000 cases: ~10,700
}
EXAMPLES_PER_RUN = 200  # hypothesis examples (batches of inputs) per run, until the budget
MAX_CRASHES_KEPT = 5  # distinct crashes per target, with their cases, in the JSON


def fuzz(target: Target, cases: int, bar: tqdm) -> dict:
    outcomes: Counter[str] = Counter()
    crashes: list[dict] = []
    count = 0

    @settings(
        max_examples=EXAMPLES_PER_RUN,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(target.cases)
    def one(case) -> None:
        nonlocal count
        if count >= cases:
            return
        for check in target.inputs(case):
            count += 1
            bar.update(1)
            try:
                outcomes[check()] += 1
            except Exception as exc:  # a crash: keep going with the next case, report it
                outcomes["CRASH"] += 1
                error = f"{type(exc).__name__}: {exc}"[:500]
                kinds = {c["error"][:60] for c in crashes}
                if len(crashes) < MAX_CRASHES_KEPT and error[:60] not in kinds:
                    crashes.append(
                        {
                            "error": error,
                            "where": traceback.format_exc(limit=-3)[-1500:],
                            "case": repr(case)[:1500],
                        }
                    )
                return
            if count >= cases:
                return

    t0 = time.perf_counter()
    while count < cases:  # each run is a fresh hypothesis run with a new random seed
        one()
    elapsed = time.perf_counter() - t0
    return {
        "cases": count,
        "crashes": outcomes["CRASH"],
        "seconds": round(elapsed, 1),
        "cases_per_s": round(count / elapsed, 1) if elapsed else None,
        "outcomes": dict(outcomes.most_common(25)),
        "crash_examples": crashes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000, help="total cases, all targets")
    parser.add_argument("--targets", default=",".join(SHARES), help="comma-separated subset")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    names = [n for n in args.targets.split(",") if n]
    total_share = sum(SHARES[n] for n in names)
    budget = {n: max(1, round(args.cases * SHARES[n] / total_share)) for n in names}
    detail: dict[str, dict] = {}
    with tqdm(total=sum(budget.values()), unit="case") as bar:
        for name in names:
            bar.set_description(name)
            detail[name] = fuzz(ALL_TARGETS[name], budget[name], bar)
    rows = [
        {
            "target": n,
            "cases": d["cases"],
            "crashes": d["crashes"],
            "seconds": d["seconds"],
            "cases/s": d["cases_per_s"],
            "top outcome": next(iter(d["outcomes"]), ""),
        }
        for n, d in detail.items()
    ]
    print_table(rows)
    summary = {
        "cases": sum(d["cases"] for d in detail.values()),
        "crashes": sum(d["crashes"] for d in detail.values()),
        "targets": len(detail),
        "seconds": round(sum(d["seconds"] for d in detail.values()), 1),
    }
    print(f"\n{summary['cases']:,} cases, {summary['crashes']} crashes")
    for name, d in detail.items():
        for crash in d["crash_examples"]:
            print(f"\n[{name}] {crash['error']}\n{crash['where']}")
    if not args.no_write:
        path = write_results("fuzz", summary, targets=detail, shares=SHARES)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
