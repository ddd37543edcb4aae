"""The main job: a 4-participant federation on loopback, one participant cheating, a fifth joining.

:func:`run_demo` starts each participant as its own Ray cluster in its own process
(:class:`~gonka_ray.federation.LocalFederation`; SmolLM2-135M-Instruct on the transformers engine
by default; participant ``p3`` serves an int4-quantised copy). Requests go to the honest
participants' OpenAI-compatible front doors with the ``openai`` client (the first one streamed to
the terminal), spread over at least two epochs. Once the four serve, ``p4``, not in the genesis,
joins the running network (``gonka-ray join``) while they earn weight and serve the first half;
it earns Proof-of-Compute weight and takes part in the second half.
The demo then waits for background verification and votes and for the ledger to settle every
epoch that carried traffic (weights, fees, the reward mint, the cheater paid nothing), reads the
committed ledger through ``p0``'s Ray cluster (as p0's operator would), reports per participant
and per epoch and writes ``benchmarks/results/demo.json``. It exits on its own and stops every
node.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gonka_ray.config import NetworkConfig, parse_config
from gonka_ray.protocol.lifecycle import InferenceStatus

DEMO_API_KEY = "sk-gonka-demo"  # bound to the demo's funded client account 0 on every node
DEMO_JOINER = "p4"  # the participant that joins mid-run (not in the genesis)
DEMO_RESENDS = 5  # times the demo's client sends a request refused with 503/429 again
# extra rounds of requests at most, until the newcomer served and checked and every cheater was
# caught (draws and checks are random; a cheater at some reputation is only sampled)
DEMO_EXTRA_ROUNDS = 10
DEMO_EXTRA_ROUND_SIZE = 8

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
    joiner: str | None = DEMO_JOINER,
    root: Path | None = None,
    results_path: Path | None = Path("benchmarks/results/demo.json"),
    echo: Any = print,
) -> DemoReport:
    """Run the demo scenario as a local federation (each participant its own Ray cluster,
    :class:`~gonka_ray.federation.LocalFederation`); ``joiner`` joins mid-run. This process
    attaches to ``p0``'s Ray cluster only, as that participant's operator would, to read the
    committed ledger; the requests go to the participants' HTTP front doors (the ``openai``
    client). Returns the tables and summary. Ray must not be initialised in this process."""
    import tempfile

    from gonka_ray.federation import LocalFederation

    config = config or demo_network_config()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gonka_demo_") as tmp:
        fed = LocalFederation(config, Path(root or tmp), api_keys={DEMO_API_KEY: 0})
        try:
            echo(
                f"starting {len(config.participants)} participants ({config.model.name}), "
                "each its own Ray cluster ..."
            )
            fed.start()
            nodes = await asyncio.to_thread(fed.wait_ready)
            echo(f"network ready in {time.perf_counter() - t0:.0f} s")
            for name, info in sorted(nodes.items()):
                echo(f"  {name}: {info.url}v1  (Ray {info.gcs_address}, peer {info.peer_address})")
            reader = await _attach(config, nodes[config.participants[0].name])
            return await _scenario(
                fed,
                reader,
                config,
                requests=requests,
                max_tokens=max_tokens,
                concurrency=concurrency,
                min_epochs=min_epochs,
                settle_timeout_s=settle_timeout_s,
                joiner=joiner,
                results_path=results_path,
                echo=echo,
            )
        finally:
            import ray

            ray.shutdown()
            codes = fed.stop()
            echo(f"stopped: {sum(c == 0 for c in codes.values())} of {len(codes)} cleanly")


@dataclass
class _Reader:
    """What the demo reads: one participant's ledger replica (committed state, the same on every
    replica) and the stats of that participant's roles (the only ones this process reaches)."""

    participant: str
    ledger: Any
    roles: dict[str, Any]  # role -> handle
    epoch: Any  # the network's EpochConfig
    names: dict[str, str]  # address -> participant name (from the ledger; joiners too)

    async def refresh(self) -> None:
        parts = await self.ledger.participants.remote()
        self.names = {a: p.name for a, p in parts.items()}

    def name_of(self, address: str) -> str:
        return self.names.get(address, address[:12])

    def address_of(self, name: str) -> str | None:
        return next((a for a, n in self.names.items() if n == name), None)

    async def participants(self) -> dict:
        return await self.ledger.participants.remote()

    async def stats(self) -> dict[str, dict]:
        return {
            self.participant: {r: await h.stats.remote() for r, h in self.roles.items()},
        }


async def _attach(config: NetworkConfig, node: Any) -> _Reader:
    """Join ``node``'s Ray cluster (a driver of that participant) and find its actors."""
    import ray

    from gonka_ray.constants import env
    from gonka_ray.sdk import init_ray

    namespace = env("GONKA_NAMESPACE")
    # NOTE: ray.init installs a SIGTERM handler that aborts the process, which would leave the
    # nodes running: keep the caller's (the CLI's stops them)
    on_term = signal.getsignal(signal.SIGTERM)
    init_ray(node.gcs_address, namespace, loopback=True)  # the nodes serve on loopback
    signal.signal(signal.SIGTERM, on_term)

    def handle(role: str) -> Any:
        return ray.get_actor(f"{config.name}.{node.participant}.{role}", namespace=namespace)

    reader = _Reader(
        participant=node.participant,
        ledger=handle("ledger"),
        roles={r: handle(r) for r in ("ta", "executor", "verifier")},
        epoch=config.epoch,
        names={},
    )
    await reader.refresh()
    return reader


async def _scenario(
    fed: Any,
    reader: _Reader,
    config: NetworkConfig,
    *,
    requests: int,
    max_tokens: int,
    concurrency: int,
    min_epochs: int,
    settle_timeout_s: float,
    joiner: str | None,
    results_path: Path | None,
    echo: Any,
) -> DemoReport:
    import openai

    honest = [p.name for p in config.participants if not p.adversary]

    def client(name: str) -> openai.AsyncOpenAI:  # a front door; the demo resends itself
        url = f"{fed.nodes[name].url}v1"
        return openai.AsyncOpenAI(base_url=url, api_key=DEMO_API_KEY, timeout=300, max_retries=0)

    clients = {n: client(n) for n in honest}
    # the newcomer joins the running network now, while the genesis participants earn their
    # weight and serve the first half (it syncs, registers and runs the next Proof of Compute
    # meanwhile), and takes part in the second half
    joining = (
        asyncio.create_task(_join(fed, reader, joiner, settle_timeout_s, echo))
        if joiner is not None
        else None
    )
    # NOTE: the nodes start one by one while the chain already runs: the epochs that began
    # before all of them were up give weight only to those that committed a seed in time
    snapshots: dict[int, Any] = {}  # epoch -> its frozen snapshot (pruned at settlement)
    claims: set[tuple[int, str]] = set()  # (epoch, address) of each PoC claim seen
    watcher: asyncio.Task | None = None
    try:
        names = [p.name for p in config.participants]
        await _wait_weighted(reader, names, settle_timeout_s, echo)
        first_epoch = (await _epoch_view(reader)).epoch
        watcher = asyncio.create_task(_watch_snapshots(reader, snapshots, claims))
        first_text, first_id = await _stream_one(
            clients[honest[0]], config.model.name, PROMPTS[0], max_tokens, echo
        )
        ids = [first_id]
        sem = asyncio.Semaphore(concurrency)
        bar = tqdm(total=requests - 1, desc="requests", leave=False)

        resent: list[str] = []  # what a refused request was refused for (it is sent again)

        async def one(i: int, doors: list[str]) -> None:
            async with sem:
                for attempt in range(DEMO_RESENDS + 1):
                    try:
                        r = await clients[doors[i % len(doors)]].chat.completions.create(
                            model=config.model.name,
                            messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                            max_tokens=max_tokens,
                            seed=1000 + i,
                        )
                        break
                    except (openai.InternalServerError, openai.RateLimitError) as exc:
                        # 503 no executor / 429 overloaded: a client sends it again later
                        if attempt == DEMO_RESENDS:
                            raise
                        resent.append(f"{exc.status_code}")
                        await asyncio.sleep(2.0)
                ids.append(bytes.fromhex(r.model_extra["inference_id"]))
                bar.update(1)

        # the second half waits for the next epoch, so traffic spans at least two of them,
        # and for the newcomer (serving and weighted), which takes part in it
        half = requests // 2
        await asyncio.gather(*[one(i, honest) for i in range(1, half)])
        joined: dict[str, Any] = {}
        if joining is not None:
            joined = await joining
            if joined["ready"]:
                clients[joiner] = client(joiner)
        await _wait_epoch(reader, first_epoch + 1, settle_timeout_s, echo)
        doors = honest + ([joiner] if joined.get("ready") else [])
        await asyncio.gather(*[one(i, doors) for i in range(half, requests)])
        # draws and checks are random: keep the traffic going (bounded) until the newcomer has
        # both executed a request and checked one of the others', and every cheater was caught
        cheaters = sum(1 for p in config.participants if p.adversary)
        for round_ in range(DEMO_EXTRA_ROUNDS):
            await reader.refresh()
            worked = not joined.get("ready") or await _joiner_worked(reader, joiner, ids)
            if worked and len(await _caught_so_far(reader, config, first_epoch)) == cheaters:
                break
            bar.total += DEMO_EXTRA_ROUND_SIZE
            start = requests + round_ * DEMO_EXTRA_ROUND_SIZE
            await asyncio.gather(*[one(start + i, doors) for i in range(DEMO_EXTRA_ROUND_SIZE)])
            await asyncio.sleep(3.0)  # checks and votes land a few blocks after the Finish
        bar.close()
        echo(f"{len(ids)} requests answered; waiting for verification and votes ...")
        await _settle(reader, ids, settle_timeout_s)
        watcher.cancel()
        last = await _last_finish_epoch(reader, ids)
        target = max(last, first_epoch + min_epochs - 1)
        echo(f"waiting for the ledger to settle epoch {target} ...")
        await _wait_settled(reader, target, settle_timeout_s)
        await reader.refresh()
        report = await _report(
            reader, config, ids, first_text, range(first_epoch, target + 1), snapshots, joiner
        )
        report.summary["poc_claims"] = sum(first_epoch <= e <= target for e, _ in claims)
        report.summary["requests_resent"] = dict(Counter(resent))
        report.summary["participant_clusters"] = len({n.gcs_address for n in fed.nodes.values()})
        if joined.get("epoch") is not None:  # its rows from before it registered say nothing
            report.epochs = [
                r
                for r in report.epochs
                if r["participant"] != joiner or r["epoch"] >= joined["epoch"]
            ]
        report.summary.update(_join_summary(report, joined, joiner))
    finally:
        for task in (watcher, joining):
            if task is not None:
                task.cancel()
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


async def _stream_one(
    client: Any, model: str, prompt: str, max_tokens: int, echo: Any
) -> tuple[str, bytes]:
    """Stream one answer to the terminal: (its text, its inference id)."""
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        seed=1,
        stream=True,
    )
    text, iid = [], ""
    async for chunk in stream:
        iid = chunk.model_extra.get("inference_id", iid)
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            text.append(delta)
            echo(delta, end="", flush=True)
    echo("")
    echo(f"  -> inference {iid[:16]}…")
    return "".join(text), bytes.fromhex(iid)


async def _join(
    fed: Any, reader: _Reader, name: str, timeout_s: float, echo: Any
) -> dict[str, Any]:
    """``name`` joins the running network (``gonka-ray join``); wait until it serves and has
    Proof-of-Compute weight (each bounded by ``timeout_s``)."""
    echo(f"{name} joins the running network (not in the genesis) ...")
    t0 = time.monotonic()
    fed.join(name)
    out: dict[str, Any] = {"ready": False, "ready_s": None, "weight_after_s": None}
    try:
        await asyncio.to_thread(fed.wait_ready, timeout_s)
    except (TimeoutError, RuntimeError) as exc:
        echo(f"  {name} did not start: {exc}")
        return out
    out.update(ready=True, ready_s=round(time.monotonic() - t0, 1))
    out["epoch"] = (await _epoch_view(reader)).epoch
    echo(f"  {name}: registered, synced and serving {fed.nodes[name].url}v1 in {out['ready_s']} s")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await reader.refresh()
        addr = reader.address_of(name)
        parts = await reader.participants()
        if addr in parts and parts[addr].weight > 0:
            out["weight_after_s"] = round(time.monotonic() - t0, 1)
            echo(f"  {name}: weight {parts[addr].weight} from Proof of Compute")
            break
        await asyncio.sleep(1.0)
    return out


async def _joiner_worked(reader: _Reader, joiner: str, ids: list[bytes]) -> bool:
    """Whether ``joiner`` executed one of ``ids`` and checked one (committed; ``reader``
    refreshed since it registered)."""
    addr = reader.address_of(joiner)
    recs = [r for r in [await reader.ledger.inference.remote(i) for i in ids] if r is not None]
    served = any(r.executor == addr for r in recs)
    return served and any(addr in r.validations for r in recs)


async def _caught_so_far(reader: _Reader, config: NetworkConfig, first_epoch: int) -> list[str]:
    """The cheaters caught so far: :func:`_caught` over the epochs settled since
    ``first_epoch``."""
    caught: set[str] = set()
    for e in range(first_epoch, (await _epoch_view(reader)).epoch):
        s = await reader.ledger.settlement.remote(e)
        caught |= {reader.name_of(r.address) for r in s.rows if r.forfeited} if s else set()
    return _caught(config, reader, await reader.participants(), caught)


def _caught(config: NetworkConfig, reader: _Reader, parts: dict, caught_in: set[str]) -> list[str]:
    """The cheaters INVALID now (``parts``: the ledger's participants) or caught in a settled
    epoch (``caught_in``: the names a settlement made forfeit it, INVALID or for one
    vote-confirmed invalidation, DESIGN §4); statuses reset when an epoch settles, so the
    current status alone misses a cheater caught in an earlier epoch, and a cheater that forfeits
    sits out the next epochs (weight 0, no draws), so it may never reach INVALID at all."""
    return [
        p.name
        for p in config.participants
        if p.adversary
        and (p.name in caught_in or parts[reader.address_of(p.name)].status == "INVALID")
    ]


def _join_summary(report: DemoReport, joined: dict[str, Any], joiner: str | None) -> dict:
    if joiner is None:
        return {}
    row = next((r for r in report.rows if r["participant"] == joiner), {})
    return {
        "joined_mid_run": int(bool(joined.get("ready"))),
        "joiner_ready_s": joined.get("ready_s"),
        "joiner_weight_after_s": joined.get("weight_after_s"),
        "joiner_served": row.get("served", 0),
        "joiner_validated": row.get("checks_done", 0),
    }


async def _settle(reader: _Reader, ids: list[bytes], timeout_s: float) -> None:
    """Wait until no inference is still being verified or voted on (bounded): every record
    finished, no vote open, and the validations on the ledger unchanged for three polls."""
    deadline = time.monotonic() + timeout_s
    quiet, last = 0, -1
    while time.monotonic() < deadline:
        recs = [await reader.ledger.inference.remote(i) for i in ids]
        open_votes = sum(r is not None and r.status is InferenceStatus.VOTING for r in recs)
        unfinished = sum(r is None or r.status is InferenceStatus.STARTED for r in recs)
        checks = sum(len(r.validations) for r in recs if r is not None)
        seen = (await reader.roles["verifier"].stats.remote())["finished_seen"]
        if open_votes == 0 and unfinished == 0 and seen >= len(ids) and checks == last:
            quiet += 1
            if quiet >= 3:  # three quiet polls in a row: the verifiers are done
                return
        else:
            quiet = 0
        last = checks
        await asyncio.sleep(1.0)


async def _watch_snapshots(
    reader: _Reader, into: dict[int, Any], claims: set[tuple[int, str]]
) -> None:
    """Keep each epoch's snapshot (reputations and weights frozen at its start) while it runs:
    the ledger prunes it at settlement, and the demo's figures need the reputation each
    executor had when it served. Likewise note each epoch's Proof-of-Compute claims once its
    sprint is over."""
    claimed: set[int] = set()
    while True:
        view = await _epoch_view(reader)
        if view.epoch not in into:
            snap = await reader.ledger.epoch_snapshot.remote(view.epoch)
            if snap is not None:
                into[view.epoch] = snap
        if view.epoch not in claimed and getattr(view.phase, "value", view.phase) != "poc_sprint":
            claimed.add(view.epoch)
            await reader.refresh()
            for address in reader.names:
                if await reader.ledger.poc_claim.remote(view.epoch, address) is not None:
                    claims.add((view.epoch, address))
        await asyncio.sleep(0.5)


async def _wait_weighted(reader: _Reader, names: list[str], timeout_s: float, echo: Any) -> None:
    """Wait (bounded) for an epoch in which every one of ``names`` has weight from a Proof of
    Compute it ran once all were up: an epoch's weights come from the previous epoch's
    sprint, so the second epoch after now at the earliest."""
    deadline = time.monotonic() + timeout_s
    after = (await _epoch_view(reader)).epoch + 2
    said = ""
    while time.monotonic() < deadline:
        view = await _epoch_view(reader)
        parts = await reader.participants()
        weights = {p.name: p.weight for p in parts.values()}
        missing = [n for n in names if weights.get(n, 0) <= 0]
        if view.epoch >= after and not missing:
            return
        why = f"no weight yet for {', '.join(missing)}" if missing else "Proof of Compute"
        line = f"epoch {view.epoch}: waiting for epoch {max(after, view.epoch + 1)} ({why}) ..."
        if line != said:
            echo(line)
            said = line
        await asyncio.sleep(1.0)


async def _epoch_view(reader: _Reader) -> Any:
    return await reader.ledger.epoch_view.remote()


async def _wait_epoch(reader: _Reader, epoch: int, timeout_s: float, echo: Any) -> None:
    """Wait until transactions land in ``epoch`` (bounded)."""
    deadline = time.monotonic() + timeout_s
    view = await _epoch_view(reader)
    if view.epoch < epoch:
        echo(f"epoch {view.epoch} ({view.phase}); waiting for epoch {epoch} ...")
    while view.epoch < epoch and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        view = await _epoch_view(reader)


async def _last_finish_epoch(reader: _Reader, ids: list[bytes]) -> int:
    from gonka_ray.protocol.epochs import epoch_of

    recs = [await reader.ledger.inference.remote(i) for i in ids]
    return max(epoch_of(r.finish_height, reader.epoch) for r in recs if r is not None)


async def _wait_settled(reader: _Reader, epoch: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await reader.ledger.settlement.remote(epoch) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


async def _epoch_rows(
    reader: _Reader, config: NetworkConfig, epochs: range
) -> list[dict[str, Any]]:
    cheaters = {reader.address_of(p.name) for p in config.participants if p.adversary}
    rows = []
    for e in epochs:
        s = await reader.ledger.settlement.remote(e)
        if s is None:
            continue
        for r in s.rows:
            rows.append(
                {
                    "epoch": e,
                    "participant": reader.name_of(r.address),
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


_CAUGHT_NOTES = ("INVALID: paid nothing", "invalidated inference: paid nothing")


def _epoch_note(r: Any, cheater: bool) -> str:
    if r.invalid:
        return _CAUGHT_NOTES[0]
    if r.forfeited:
        return _CAUGHT_NOTES[1]
    note = ""
    if not r.duty_met:
        note = "no seed committed in time" if r.required_checks == 0 else "missed its checks"
    return note + (" (cheater, not caught yet)" if cheater else "")


async def _report(
    reader: _Reader,
    config: NetworkConfig,
    ids: list[bytes],
    first_text: str,
    epochs: range,
    snapshots: dict[int, Any],
    joiner: str | None = None,
) -> DemoReport:
    from gonka_ray.protocol.epochs import epoch_of

    parts = await reader.participants()
    stats = await reader.stats()
    recs = [r for r in [await reader.ledger.inference.remote(i) for i in ids] if r is not None]
    by_exec: dict[str, list] = {}
    for r in recs:
        by_exec.setdefault(r.executor, []).append(r)
    roles = {
        p.name: f"cheater ({p.adversary})" if p.adversary else "honest" for p in config.participants
    }
    if joiner is not None and reader.address_of(joiner) in parts:
        roles[joiner] = "honest, joined mid-run"
    rows = []
    for name, role in roles.items():
        addr = reader.address_of(name)
        info = parts[addr]
        mine = by_exec.get(addr, [])
        rows.append(
            {
                "participant": name,
                "role": role,
                "weight": info.weight,
                "reputation": info.reputation,
                "status": info.status,
                "served": len(mine),
                "verified": sum(1 for r in mine if r.validations),
                # the checks it committed on this run's inferences (from the ledger)
                "checks_done": sum(1 for r in recs if addr in r.validations),
                "invalidated": sum(1 for r in mine if r.status is InferenceStatus.INVALIDATED),
                "fees_pending": info.record.pending_fees,
                "false_accusations": info.record.false_accusations,
            }
        )
    cheaters = {reader.address_of(p.name) for p in config.participants if p.adversary}
    invalidated = [r for r in recs if r.status is InferenceStatus.INVALIDATED]
    spend = sum(r.cost for r in invalidated)
    # newcomers' work: the executor's reputation in the epoch it served (the sampling's input)
    reputation_then = {
        r.inference_id: snapshots[e].reputations.get(r.executor, 0)
        for r in recs
        if (e := epoch_of(r.finish_height, reader.epoch)) in snapshots
    }
    new_execs = [r for r in recs if reputation_then.get(r.inference_id) == 0]
    summary = {
        "requests": len(ids),
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
    # verification receipts (protocol v3): an honest validator's must never be found broken
    disputes = await reader.ledger.receipt_disputes.remote()
    summary["receipt_disputes"] = len(disputes)
    summary["honest_receipts_broken"] = sum(
        1 for _, v, _, outcome in disputes if v not in cheaters and outcome == "broken"
    )
    epoch_rows = await _epoch_rows(reader, config, epochs)
    cheater_names = {p.name for p in config.participants if p.adversary}
    caught_in = {r["participant"] for r in epoch_rows if r["note"] in _CAUGHT_NOTES}
    first_caught = {}
    for r in sorted(epoch_rows, key=lambda r: r["epoch"]):
        if r["note"] in _CAUGHT_NOTES:
            first_caught.setdefault(r["participant"], r["epoch"])
    for r in epoch_rows:  # a cheater's epochs after its forfeited one: it was caught already
        if r["epoch"] > first_caught.get(r["participant"], r["epoch"]):
            after = "weight 0 after it was caught" if not r["weight"] else "after it was caught"
            r["note"] = r["note"].replace("cheater, not caught yet", f"cheater, {after}")
    summary["cheaters_caught"] = len(_caught(config, reader, parts, caught_in))
    summary["epochs_settled"] = len({r["epoch"] for r in epoch_rows})
    # the epochs a cheater forfeited (INVALID, or a vote-confirmed invalidation): paid nothing
    summary["cheater_paid_in_invalid_epochs"] = sum(
        r["reward"]
        for r in epoch_rows
        if r["participant"] in cheater_names and r["note"] in _CAUGHT_NOTES
    )
    for row in rows:
        if row["participant"] in caught_in and row["status"] != "INVALID" and not row["weight"]:
            row["status"] = "EXCLUDED"  # caught in a settled epoch: weight 0 now (sitting out)
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
