"""Run many seeded ledger simulations and count BFT property violations.

Run: ``.venv/bin/python benchmarks/ledger_sim.py --seeds 10000`` (writes
``results/ledger_sim.json``; ``--n 7`` writes ``results/ledger_sim_n7.json``); replay one seed
with ``--replay SEED``. Each seed is one :func:`tests.sim.network.run_scenario`: n replicas, up
to f = (n-1)//3 byzantine ones drawing from every mode of :mod:`tests.sim.byzantine` (real
equivocating leaders, coordinated double voting, lock attacks, twins, replays of old views and
epochs, and the older silent/junk-equivocating/forging/replaying modes; with f >= 2 they often
follow one plan), random drop/delay/duplication and partitions (twin-splitting ones with twins),
validator-set changes, then a heal. ``summary.violations`` counts runs where honest replicas
committed different blocks or state at a height (or a core raised ``SafetyViolation``);
``summary.liveness_failures`` runs where some honest replica missed a submitted transaction
after the heal. ``attacks`` sums what the adversary did (its counters), so a zero there would
show an attack that never happened.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from functools import partial
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm

from benchmarks._common import print_table, write_results
from tests.sim.byzantine import BYZANTINE_MODES
from tests.sim.network import run_scenario


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=2000)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n", type=int, default=4, help="replicas (f = (n-1)//3 byzantine)")
    ap.add_argument("--replay", type=int, default=None, help="run one seed and print it")
    args = ap.parse_args()
    if args.replay is not None:
        r = run_scenario(args.replay, n=args.n)
        print(r.describe())
        sys.exit(0 if r.ok else 1)
    seeds = range(args.start, args.start + args.seeds)
    t0 = time.perf_counter()
    safety, liveness = [], []
    modes: Counter[str] = Counter()
    failed_modes: Counter[str] = Counter()
    attacks: Counter[str] = Counter()
    colluding = 0
    ticks, messages = [], []
    with Pool(args.workers) as pool:
        runs = pool.imap_unordered(partial(run_scenario, n=args.n), seeds, chunksize=20)
        for r in tqdm(runs, total=len(seeds)):
            modes.update(r.byzantine.values() or ["none"])
            attacks.update(r.attacks)
            colluding += int(len(r.byzantine) >= 2 and len(set(r.byzantine.values())) == 1)
            ticks.append(r.ticks)
            messages.append(r.messages)
            if r.safety or r.error:
                safety.append(r.describe())
            elif not r.live:
                liveness.append(r.describe())
            if not r.ok:
                failed_modes.update(r.byzantine.values() or ["none"])
    wall_s = time.perf_counter() - t0
    summary = {
        "seeds": len(seeds),
        "violations": len(safety),
        "liveness_failures": len(liveness),
        "adversaries": [m for m in BYZANTINE_MODES if modes[m]],
        "replicas": args.n,
        "safety_violations": len(safety),  # = violations (the name earlier results used)
        "colluding_runs": colluding,
        "attacks": dict(sorted(attacks.items())),
    }
    rows = [
        {"metric": "seeds", "value": len(seeds)},
        {"metric": "safety_violations", "value": len(safety)},
        {"metric": "liveness_failures", "value": len(liveness)},
        {"metric": "runs with colluders on one plan", "value": colluding},
        {"metric": "mean ticks per run", "value": sum(ticks) / len(ticks)},
        {"metric": "mean messages per run", "value": sum(messages) / len(messages)},
        {"metric": "wall s", "value": wall_s},
    ]
    rows += [{"metric": f"byzantine: {m}", "value": modes[m]} for m in sorted(modes)]
    rows += [{"metric": f"attack: {a}", "value": attacks[a]} for a in sorted(attacks)]
    print_table(rows)
    for line in (safety + liveness)[:20]:
        print(line)
    path = write_results(
        "ledger_sim" if args.n == 4 else f"ledger_sim_n{args.n}",
        summary,
        replicas=args.n,
        start_seed=args.start,
        byzantine_modes=dict(modes),
        failed_by_mode=dict(failed_modes),
        mean_ticks=sum(ticks) / len(ticks),
        mean_messages=sum(messages) / len(messages),
        wall_s=round(wall_s, 1),
        failures=(safety + liveness)[:100],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
