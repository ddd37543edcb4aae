"""The main job: a 4-participant network on loopback Ray, one participant cheating.

:func:`run_demo` launches the network (SmolLM2-135M-Instruct on the transformers engine by
default; participant ``p3`` serves an int4-quantised copy), sends a batch of signed chat
requests through the honest participants' transport agents (the first one streamed to the
terminal) spread over at least two epochs, waits for background verification and votes, and
for the ledger to settle every epoch that carried traffic (Proof-of-Compute weights, fees, the
reward mint, the cheater paid nothing), then reports per participant and per epoch and writes
``benchmarks/results/demo.json``. It exits on its own and tears the network down.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gonka_ray import sdk, wire
from gonka_ray.config import NetworkConfig, parse_config
from gonka_ray.network import Network, launch, wait_ready
from gonka_ray.protocol.lifecycle import InferenceStatus

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the ocean.",
    "Give me two tips for learning to cook.",
    "Why is the sky blue? One sentence.",
    "Name three planets of the solar system.",
    "What does a bicycle chain do?",
    "Suggest a name for a friendly robot.",
    "How do plants make food?",
    "What is 12 times 7?",
    "Describe a cat in five words.",
    "What is a good breakfast?",
    "Tell me a fun fact about bees.",
]


DEMO_EPOCH = {  # short epochs (~35 s on an idle 2-core machine) so the demo sees several
    "epoch_blocks": 280,
    "poc_sprint_blocks": 64,
    "poc_validation_blocks": 40,
    "poc_budget_s": 1.0,
    "poc_calibration_nonces": 1024,
    "reward_per_epoch": 1_000_000,
}


def demo_network_config(
    model: str = "smollm2-135m-instruct",
    cheat: str = "int4",
    engine: str = "transformers",
    epoch: dict[str, Any] | None = None,
) -> NetworkConfig:
    """Four equal participants; ``p3`` cheats with ``cheat``; short epochs."""
    return parse_config(
        {
            "name": "demo",
            "participants": [
                {"name": f"p{i}", "weight": 100, **({"adversary": cheat} if i == 3 else {})}
                for i in range(4)
            ],
            "model": {"name": model},
            "engine": {"kind": engine, "torch_threads": 1, "max_batch_size": 8},
            "ledger": {"expiry_blocks": 5000, "block_interval_ms": 20},
            "epoch": {**DEMO_EPOCH, **(epoch or {})},
        },
        source="demo",
    )


@dataclass
class DemoReport:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    first_answer: str
    epochs: list[dict[str, Any]]  # one row per participant per settled epoch


async def run_demo(
    config: NetworkConfig | None = None,
    *,
    requests: int = 32,
    max_tokens: int = 24,
    concurrency: int = 4,
    min_epochs: int = 2,
    settle_timeout_s: float = 180.0,
    results_path: Path | None = Path("benchmarks/results/demo.json"),
    echo: Any = print,
) -> DemoReport:
    """Run the demo scenario on the current Ray; returns the table and summary."""
    config = config or demo_network_config()
    t0 = time.perf_counter()
    net = launch(config)
    watcher: asyncio.Task | None = None
    try:
        echo(f"launching {len(config.participants)} participants ({config.model.name}) ...")
        await wait_ready(net)
        echo(f"network ready in {time.perf_counter() - t0:.0f} s")
        honest_tas = [p.name for p in config.participants if not p.adversary]
        client = sdk.Client(
            net.client_key(),
            {n: net.ta(n) for n in honest_tas},
            config.model.name,
            chain=net.chain_id,
        )
        first_epoch = (await _epoch_view(net)).epoch
        snapshots: dict[int, Any] = {}  # epoch -> its frozen snapshot (pruned at settlement)
        watcher = asyncio.create_task(_watch_snapshots(net, snapshots))

        first = await client.chat(
            [{"role": "user", "content": PROMPTS[0]}],
            ta=honest_tas[0],
            max_tokens=max_tokens,
            seed=1,
            on_text=lambda t: echo(t, end="", flush=True),
        )
        echo("")
        echo(
            f"  -> inference {first.inference_id[:16]}… by {net.name_of(first.done.executor)}, "
            f"{first.done.completion_tokens} tokens, cost {first.done.cost}"
        )
        done = [first.done]
        sem = asyncio.Semaphore(concurrency)
        bar = tqdm(total=requests - 1, desc="requests", leave=False)

        async def one(i: int) -> None:
            async with sem:
                res = await client.chat(
                    [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    ta=honest_tas[i % len(honest_tas)],
                    max_tokens=max_tokens,
                    seed=1000 + i,
                )
                done.append(res.done)
                bar.update(1)

        # the second half waits for the next epoch, so traffic spans at least two of them
        half = requests // 2
        await asyncio.gather(*[one(i) for i in range(1, half)])
        await _wait_epoch(net, first_epoch + 1, settle_timeout_s, echo)
        await asyncio.gather(*[one(i) for i in range(half, requests)])
        bar.close()
        echo(f"{len(done)} requests answered; waiting for verification and votes ...")
        await _settle(net, [d.inference_id for d in done], settle_timeout_s)
        watcher.cancel()
        last = await _last_finish_epoch(net, done)
        target = max(last, first_epoch + min_epochs - 1)
        echo(f"waiting for the ledger to settle epoch {target} ...")
        await _wait_settled(net, target, settle_timeout_s)
        report = await _report(
            net, config, done, first.text, range(first_epoch, target + 1), snapshots
        )
        _print_table(report.rows, echo)
        echo("")
        echo("per epoch (weights from Proof of Compute; rewards = fees + minted reward):")
        _print_table(report.epochs, echo)
        for k, v in report.summary.items():
            echo(f"  {k}: {v}")
        if results_path is not None:
            _write_results(results_path, report)
            echo(f"wrote {results_path}")
        return report
    finally:
        if watcher is not None:
            watcher.cancel()
        net.teardown()


def _ledger(net: Network) -> Any:
    """The first participant's replica: committed state for the demo's reports."""
    return net.handle(next(iter(net.specs)), "ledger")


async def _settle(net: Network, ids: list[bytes], timeout_s: float) -> None:
    """Wait until no inference is still being verified or voted on (bounded)."""
    ledger = _ledger(net)
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        recs = [await ledger.inference.remote(i) for i in ids]
        open_votes = sum(r is not None and r.status is InferenceStatus.VOTING for r in recs)
        unfinished = sum(r is None or r.status is InferenceStatus.STARTED for r in recs)
        stats = await net.stats()
        seen = min(s["verifier"]["finished_seen"] for s in stats.values())
        if open_votes == 0 and unfinished == 0 and seen >= len(ids):
            quiet += 1
            if quiet >= 3:  # three quiet polls in a row: the verifiers are done
                return
        else:
            quiet = 0
        await asyncio.sleep(1.0)


async def _watch_snapshots(net: Network, into: dict[int, Any]) -> None:
    """Keep each epoch's snapshot (reputations and weights frozen at its start) while it runs:
    the ledger prunes it at settlement, and the demo's figures need the reputation each
    executor had when it served."""
    ledger = _ledger(net)
    while True:
        epoch = (await _epoch_view(net)).epoch
        if epoch not in into:
            snap = await ledger.epoch_snapshot.remote(epoch)
            if snap is not None:
                into[epoch] = snap
        await asyncio.sleep(0.5)


async def _epoch_view(net: Network) -> Any:
    return await _ledger(net).epoch_view.remote()


async def _wait_epoch(net: Network, epoch: int, timeout_s: float, echo: Any) -> None:
    """Wait until transactions land in ``epoch`` (bounded)."""
    deadline = time.monotonic() + timeout_s
    view = await _epoch_view(net)
    if view.epoch < epoch:
        echo(f"epoch {view.epoch} ({view.phase}); waiting for epoch {epoch} ...")
    while view.epoch < epoch and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        view = await _epoch_view(net)


async def _last_finish_epoch(net: Network, done: list[wire.InferenceDone]) -> int:
    from gonka_ray.protocol.epochs import epoch_of

    ledger = _ledger(net)
    recs = [await ledger.inference.remote(d.inference_id) for d in done]
    return max(epoch_of(r.finish_height, net.config.epoch) for r in recs if r is not None)


async def _wait_settled(net: Network, epoch: int, timeout_s: float) -> None:
    ledger = _ledger(net)
    deadline = time.monotonic() + timeout_s
    while await ledger.settlement.remote(epoch) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


async def _epoch_rows(net: Network, config: NetworkConfig, epochs: range) -> list[dict[str, Any]]:
    ledger = _ledger(net)
    cheaters = {net.address_of(p.name) for p in config.participants if p.adversary}
    rows = []
    for e in epochs:
        s = await ledger.settlement.remote(e)
        if s is None:
            continue
        for r in s.rows:
            rows.append(
                {
                    "epoch": e,
                    "participant": net.name_of(r.address),
                    "weight": r.weight,
                    "reward": r.paid,
                    "minted": r.mint,
                    "fees": r.executor_fees + r.validator_fees,
                    "burned": r.burned,
                    "checks": f"{r.done_checks}/{r.required_checks}",
                    "note": _epoch_note(r, r.address in cheaters),
                }
            )
    return rows


def _epoch_note(r: Any, cheater: bool) -> str:
    if r.invalid:
        return "INVALID: paid nothing"
    if r.forfeited:
        return "invalidated inference: paid nothing"
    note = ""
    if not r.duty_met:
        note = "no seed committed in time" if r.required_checks == 0 else "missed its checks"
    return note + (" (cheater, not caught yet)" if cheater else "")


async def _report(
    net: Network,
    config: NetworkConfig,
    done: list[wire.InferenceDone],
    first_text: str,
    epochs: range,
    snapshots: dict[int, Any],
) -> DemoReport:
    from gonka_ray.protocol.epochs import epoch_of

    ledger = _ledger(net)
    parts = await net.participants()
    stats = await net.stats()
    recs = [await ledger.inference.remote(d.inference_id) for d in done]
    by_exec: dict[str, list] = {}
    for r in recs:
        by_exec.setdefault(r.executor, []).append(r)
    rows = []
    for p in config.participants:
        addr = net.address_of(p.name)
        info = parts[addr]
        mine = by_exec.get(addr, [])
        rows.append(
            {
                "participant": p.name,
                "role": f"cheater ({p.adversary})" if p.adversary else "honest",
                "weight": info.weight,
                "reputation": info.reputation,
                "status": info.status,
                "served": len(mine),
                "verified": sum(1 for r in mine if r.validations),
                "checks_done": stats[p.name]["verifier"]["checked"],
                "invalidated": sum(1 for r in mine if r.status is InferenceStatus.INVALIDATED),
                "fees_pending": info.record.pending_fees,
                "false_accusations": info.record.false_accusations,
            }
        )
    cheaters = {net.address_of(p.name) for p in config.participants if p.adversary}
    invalidated = [r for r in recs if r.status is InferenceStatus.INVALIDATED]
    spend = sum(r.cost for r in invalidated)
    # newcomers' work: the executor's reputation in the epoch it served (the sampling's input)
    reputation_then = {
        r.inference_id: snapshots[e].reputations.get(r.executor, 0)
        for r in recs
        if (e := epoch_of(r.finish_height, net.config.epoch)) in snapshots
    }
    new_execs = [r for r in recs if reputation_then.get(r.inference_id) == 0]
    summary = {
        "requests": len(done),
        "cheaters": len(cheaters),
        "honest_invalidated": sum(1 for r in invalidated if r.executor not in cheaters),
        "refund_share": round(sum(r.refunded for r in invalidated) / spend, 4) if spend else None,
        "newcomer_inferences": len(new_execs),
        "verified_share_new_participants": round(
            sum(1 for r in new_execs if r.validations) / max(1, len(new_execs)), 4
        ),
        "checks_per_inference": round(sum(len(r.validations) for r in recs) / max(1, len(recs)), 4),
        "cheater_inferences_invalidated": len(invalidated),
        **_timing_summary(stats),
    }
    epoch_rows = await _epoch_rows(net, config, epochs)
    cheater_names = {p.name for p in config.participants if p.adversary}
    invalid_in = {r["participant"] for r in epoch_rows if r["note"].startswith("INVALID")}
    first_invalid = {}
    for r in sorted(epoch_rows, key=lambda r: r["epoch"]):
        if r["note"].startswith("INVALID"):
            first_invalid.setdefault(r["participant"], r["epoch"])
    for r in epoch_rows:  # a cheater's epochs after its INVALID one: it was caught already
        if r["epoch"] > first_invalid.get(r["participant"], r["epoch"]):
            after = "weight 0 after its INVALID epoch" if not r["weight"] else "after INVALID"
            r["note"] = r["note"].replace("cheater, not caught yet", f"cheater, {after}")
    # statuses reset when an epoch settles: count the cheaters that were INVALID at any point
    summary["cheaters_caught"] = sum(
        1
        for p in config.participants
        if p.adversary
        and (p.name in invalid_in or parts[net.address_of(p.name)].status == "INVALID")
    )
    summary["epochs_settled"] = len({r["epoch"] for r in epoch_rows})
    summary["poc_claims"] = sum(len(s["verifier"]["epochs"]["sprints"]) for s in stats.values())
    summary["cheater_paid_in_invalid_epochs"] = sum(
        r["reward"]
        for r in epoch_rows
        if r["participant"] in cheater_names and r["note"].startswith("INVALID")
    )
    for row in rows:
        if row["participant"] in invalid_in and row["status"] != "INVALID" and not row["weight"]:
            row["status"] = "EXCLUDED"  # INVALID last epoch: weight 0 this one
        row["rewards"] = sum(
            r["reward"] for r in epoch_rows if r["participant"] == row["participant"]
        )
    return DemoReport(rows, summary, first_text, epoch_rows)


def _timing_summary(stats: dict) -> dict[str, float | None]:
    """Medians of first-token time and StartInference commit time, both from request receipt.

    The TA submits the Start in a separate task, so the first token never waits for it; which
    of the two comes first depends on engine load and block time.
    """
    timings = [t for s in stats.values() for t in s["ta"]["timings"] if "start_commit_s" in t]
    if not timings:
        return {"first_token_p50_s": None, "start_commit_p50_s": None}
    first = sorted(t["first_token_s"] for t in timings)
    commit = sorted(t["start_commit_s"] for t in timings)
    return {
        "first_token_p50_s": round(first[len(first) // 2], 3),
        "start_commit_p50_s": round(commit[len(commit) // 2], 3),
    }


def _print_table(rows: list[dict[str, Any]], echo: Any) -> None:
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    echo("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    echo("  ".join("-" * w for w in widths))
    for r in rows:
        echo("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))


def _write_results(path: Path, report: DemoReport) -> None:
    try:
        from benchmarks._common import git_commit, git_dirty, machine
    except ImportError:  # installed without the repo's benchmarks folder

        def git_commit(dirty: list[str] | None = None) -> str:
            return "unknown"

        def git_dirty() -> list[str]:
            return []

        def machine() -> dict:
            return {}

    path.parent.mkdir(parents=True, exist_ok=True)
    dirty = git_dirty()
    doc = {
        "summary": report.summary,
        "machine": machine(),
        "git_commit": git_commit(dirty),
        "git_dirty_files": dirty,
        "participants": report.rows,
        "epochs": report.epochs,
        "first_answer": report.first_answer,
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
