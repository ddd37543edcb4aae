"""Scaling: throughput with 2, 4, 8 federated participants on FakeEngine (issue 10, issue 18).

Run: ``.venv/bin/python benchmarks/scaling.py`` (writes ``results/scaling.json`` and
``results/scaling.png``; ``--sizes 2,4`` for a shorter run).

Every participant is its own Ray cluster in its own process (``gonka-ray node`` under
:class:`~gonka_ray.federation.LocalFederation`: own key, loopback ports; MLNode with a FakeEngine
whose service time is a fixed ``--token-delay-ms`` per token, ledger replica, executor, transport
agent, verifier, Serve front door), joined only by the signed peer transport. Streamed chat
requests go to the participants' OpenAI-compatible front doors (round-robin over them, as
clients spread over the network) in a closed loop with ``--clients-per-participant`` requests in
flight per participant, a bounded number of requests per size and a wall-clock cap, so each size
stops by itself. Epochs are made long enough that no epoch transition (PoC sprint) falls in a
run; every participant keeps its genesis weight and reputation 0, so all its work is checked.

Reported per size: requests/s, tokens/s, latency p50/p99, the client-side first-token p50, the
efficiency against the ideal closed loop (``clients / service_time``; the fake engine overlaps
requests, so the ideal grows linearly with participants) and against linear scaling from the
smallest measured size, and the CPU seconds each role's processes used during the load (``/proc``
before/after: every process descended from the node processes, by Ray's process title
``ray::<Class>``; each cluster's own GCS, raylet and helpers apart; this process, the clients,
as ``client``), which is how the first bottleneck is named. All of it shares the machine's cores:
n participants are n Ray clusters on 2 cores, so the figures measure the protocol's CPU cost per
request, not what n machines would serve.

NOTE: one participant cannot serve at all: a TA never draws its own participant as executor
(DESIGN §2.3), so 1 is reported as not measurable rather than run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from tqdm import tqdm

from benchmarks._common import RESULTS_DIR, print_table, stream_chat, write_results
from gonka_ray.bench import percentile, run_closed_loop
from gonka_ray.config import parse_config
from gonka_ray.federation import LocalFederation

ROLE_OF_CLASS = {
    "MLNode": "mlnode",
    "ParticipantReplica": "ledger",
    "ExecutorActor": "executor",
    "TransportAgentActor": "ta",
    "VerifierEpochActor": "verifier",
}
SERVE_CLASSES = ("ServeController", "ProxyActor", "ServeReplica")
PROMPT = [{"role": "user", "content": "Write one sentence about the sea."}]
API_KEY = "sk-scaling-bench"


def network_config(n: int, token_delay_ms: float) -> Any:
    return parse_config(
        {
            "name": f"scale{n}",
            "participants": [{"name": f"p{i}", "weight": 100} for i in range(n)],
            "model": {"name": "fake"},
            "engine": {"kind": "fake", "fake_token_delay_ms": token_delay_ms},
            "ledger": {"expiry_blocks": 100_000},
            "epoch": {"epoch_blocks": 1_000_000},  # no epoch transition during a run
        },
        source="scaling",
    )


def _proc_table() -> dict[int, tuple[str, int, float, float]]:
    """pid → (command line, parent pid, CPU seconds, RSS GiB) of every process (``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    raw = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * page / 2**30
        except OSError:
            continue
        secs = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        raw[pid] = (args, int(fields[1]), secs, rss)
    return raw


def cpu_by_process(nodes: set[int]) -> dict[int, tuple[str, float, float]]:
    """pid → (title, CPU seconds, RSS GiB) of this process (``client``) and of every process
    descended from the ``nodes`` (each ``node``, its Ray cluster's ``gcs_server`` and
    ``raylet``, the raylet's ``ray::<Class>`` workers, other helpers as ``ray_other``). Other
    processes on the machine (other sessions share it) are left out."""
    raw = _proc_table()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (_, ppid, _, _) in raw.items():
        children[ppid].append(pid)
    procs = {}
    if (me := os.getpid()) in raw:
        procs[me] = ("client", raw[me][2], raw[me][3])
    stack, seen = [p for p in nodes if p in raw], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        args, _, secs, rss = raw[pid]
        if pid in nodes:
            title = "node"
        elif args.startswith("ray::"):
            title = args.split()[0]
        elif "gcs_server" in args:
            title = "gcs_server"
        elif "raylet" in args:
            title = "raylet"
        else:
            title = "ray_other"
        procs[pid] = (title, secs, rss)
        stack.extend(children[pid])
    return procs


def session_cpu() -> dict[int, tuple[str, float, float]]:
    """:func:`cpu_by_process` over this process's tree, for one Ray cluster started here (not
    a federation): ``ray.init`` starts its ``gcs_server``, ``raylet`` and helpers as children of
    this process, which is the ``driver`` (left out of the network's figures)."""
    procs = cpu_by_process({os.getpid()})
    _, secs, rss = procs[os.getpid()]
    procs[os.getpid()] = ("driver", secs, rss)
    return procs


def role_of(title: str) -> str:
    """A process title's role: the protocol actor it hosts, ``serve``, or the title itself."""
    m = re.match(r"ray::(\w+)", title)
    if not m:
        return title
    if m.group(1).startswith(SERVE_CLASSES):
        return "serve"
    return ROLE_OF_CLASS.get(m.group(1), "ray_other")


def start_profiles(seconds: float, out_dir: Path, nodes: set[int]) -> list[tuple[str, Path, Any]]:
    """``py-spy record`` (raw collapsed stacks, non-blocking) on one process per role of the
    ``nodes``' clusters; returns (role, output path, process) for :func:`profile_tops`."""
    import shutil
    import subprocess

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    for pid, (title, _, _) in cpu_by_process(nodes).items():
        role = role_of(title)
        if title.startswith("ray::") and role != "ray_other" and role not in seen:
            seen[role] = pid
    procs = []
    for role, pid in sorted(seen.items()):
        path = out_dir / f"pyspy_{role}.txt"
        cmd = [spy, "record", "--nonblocking", "-r", "50", "-d", str(int(seconds)), "-f", "raw"]
        cmd += ["-o", str(path), "-p", str(pid)]
        procs.append(
            (
                role,
                path,
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            )
        )
    return procs


def profile_tops(procs: list[tuple[str, Path, Any]], top: int = 6) -> dict[str, list]:
    """Per role: the functions with the most samples anywhere on the stack (inclusive share)
    and the leaf frames with the most samples (self share), from py-spy's collapsed stacks."""
    out: dict[str, Any] = {}
    for role, path, proc in procs:
        try:
            proc.wait(timeout=60)
        except Exception:
            proc.kill()
        if not path.exists():
            continue
        incl: dict[str, int] = {}
        leaf: dict[str, int] = {}
        total = 0
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [
                f.split(" (")[0] + " (" + f.split(" (")[-1].split("/")[-1] for f in stack.split(";")
            ]
            for f in set(frames):
                incl[f] = incl.get(f, 0) + n
            leaf[frames[-1]] = leaf.get(frames[-1], 0) + n
        skip = ("<module>", "run (", "_run_once", "run_forever", "run_until_complete", "main (")
        ranked = [
            (f, round(c / total, 3))
            for f, c in sorted(incl.items(), key=lambda kv: -kv[1])
            if not f.startswith(skip) and "worker.py" not in f and "threading.py" not in f
        ]
        out[role] = {
            "samples": total,
            "top_inclusive": ranked[:top],
            "top_self": [
                (f, round(c / total, 3))
                for f, c in sorted(leaf.items(), key=lambda kv: -kv[1])[:top]
            ],
        }
    return out


def role_cpu(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per role between two snapshots (process titles mapped to roles)."""
    roles: dict[str, float] = {}
    for pid, (title, secs, _) in after.items():
        used = secs - before.get(pid, (title, 0.0, 0.0))[1]
        role = role_of(title)
        roles[role] = roles.get(role, 0.0) + max(0.0, used)
    return roles


async def measure(n: int, args: argparse.Namespace, start_timeout_s: float, root: Path) -> dict:
    config = network_config(n, args.token_delay_ms)
    fed = LocalFederation(config, root / f"n{n}", api_keys={API_KEY: 0})
    t_launch = time.perf_counter()
    fed.start()
    try:
        try:
            nodes = await asyncio.to_thread(fed.wait_ready, start_timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"{n} participant clusters not ready within {start_timeout_s:.0f} s "
                "(2 shared cores)"
            ) from None
        startup_s = time.perf_counter() - t_launch
        urls = [nodes[p.name].url for p in config.participants]
        pids = {info.pid for info in nodes.values()}
        order = itertools.count()
        first: list[float] = []
        limits = httpx.Limits(max_connections=4 * n * args.clients_per_participant)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(timeout=120, headers=headers, limits=limits) as h:

            async def send() -> int:
                url = urls[next(order) % n] + "v1/chat/completions"
                body = {"model": "fake", "messages": PROMPT, "max_tokens": args.max_tokens}
                tokens, first_s = await stream_chat(h, url, {**body, "stream": True})
                if first_s is not None:
                    first.append(1000 * first_s)
                return tokens

            await asyncio.gather(*[send() for _ in range(2 * n)])  # warm-up: every path once
            first.clear()
            clients = args.clients_per_participant * n
            requests = args.requests_per_client * clients
            profiling = (
                start_profiles(args.py_spy_s, Path("/tmp") / f"gonka_scaling_pyspy_{n}", pids)
                if n == args.profile_size and args.py_spy_s > 0
                else []
            )
            h0 = (await h.get(urls[0] + "v1/explorer")).json()["height"]
            before = cpu_by_process(pids)
            t0 = time.perf_counter()
            try:
                res = await asyncio.wait_for(
                    run_closed_loop(send, requests, clients, progress=True), args.size_timeout_s
                )
            except TimeoutError:
                raise TimeoutError(
                    f"{requests} requests not done within {args.size_timeout_s:.0f} s"
                ) from None
            wall = time.perf_counter() - t0
            after = cpu_by_process(pids)
            height = (await h.get(urls[0] + "v1/explorer")).json()["height"]
        profiles = profile_tops(profiling)
        service_s = args.max_tokens * args.token_delay_ms / 1000
        ideal_rps = clients / service_s
        cpu = role_cpu(before, after)
        return {
            "participants": n,
            "status": "ok",
            "participant_clusters": len({info.gcs_address for info in nodes.values()}),
            "startup_s": round(startup_s, 1),
            "clients": clients,
            **{k: res[k] for k in ("requests", "ok", "errors", "first_error")},
            "requests_per_s": res["requests_per_s"],
            "tokens_per_s": res["tokens_per_s"],
            "latency_p50_ms": res["latency_p50_ms"],
            "latency_p99_ms": res["latency_p99_ms"],
            "service_time_ms": round(1000 * service_s, 1),
            "ideal_requests_per_s": round(ideal_rps, 2),
            "efficiency_vs_ideal": round(res["requests_per_s"] / ideal_rps, 3),
            "first_token_p50_ms": round(percentile(first, 0.5), 1),
            "first_token_p99_ms": round(percentile(first, 0.99), 1),
            "blocks_during_load": height - h0,
            "wall_s": round(wall, 1),
            "cpu_s_by_role": {k: round(v, 2) for k, v in sorted(cpu.items())},
            "rss_gib_all_processes": round(sum(x[2] for x in after.values()), 2),
            "py_spy": profiles,
            "cpu_share_of_machine": round(sum(cpu.values()) / (wall * (os.cpu_count() or 1)), 3),
        }
    finally:
        await asyncio.to_thread(fed.stop)


def mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,2,4,8")
    ap.add_argument("--token-delay-ms", type=float, default=20.0, help="FakeEngine per token")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--clients-per-participant", type=int, default=4)
    ap.add_argument("--requests-per-client", type=int, default=6)
    ap.add_argument("--start-timeout-s", type=float, default=420.0)
    ap.add_argument("--size-timeout-s", type=float, default=240.0)
    ap.add_argument("--budget-s", type=float, default=900.0, help="no new size after this")
    ap.add_argument("--deadline-s", type=float, default=1500.0, help="whole run, start included")
    ap.add_argument("--py-spy-s", type=float, default=15.0, help="profile seconds (0: off)")
    ap.add_argument("--profile-size", type=int, default=4, help="participants to profile at")
    ap.add_argument("--gib-per-participant", type=float, default=1.5, help="memory guard")
    ap.add_argument(
        "--merge", action="store_true", help="keep the JSON's rows of sizes not run now"
    )
    ap.add_argument(
        "--from-results", action="store_true", help="re-derive summary and plot from the JSON"
    )
    args = ap.parse_args()
    if args.from_results:
        doc = json.loads((RESULTS_DIR / "scaling.json").read_text())
        report(doc["rows"], argparse.Namespace(**doc["settings"]), final=True)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    t_start = time.monotonic()
    tmp = tempfile.TemporaryDirectory(prefix="gonka_scaling_")
    kept: list[dict[str, Any]] = []
    if args.merge and (RESULTS_DIR / "scaling.json").exists():
        old = json.loads((RESULTS_DIR / "scaling.json").read_text())["rows"]
        kept = [r for r in old if r["participants"] not in sizes]
    rows: list[dict[str, Any]] = []
    for n in tqdm(sizes, desc="sizes", unit="size"):
        if n < 2:
            rows.append(
                {
                    "participants": n,
                    "status": "not measurable: a TA never executes "
                    "its own participant's requests, so 1 participant has no executor",
                }
            )
            continue
        need = args.gib_per_participant * n + 2
        if mem_available_gib() < need:
            rows.append({"participants": n, "status": f"skipped: < {need:.0f} GiB available"})
            continue
        if time.monotonic() - t_start > args.budget_s:
            rows.append({"participants": n, "status": "skipped: time budget spent"})
            continue
        left = args.deadline_s - (time.monotonic() - t_start)
        start_timeout = min(args.start_timeout_s, left - args.size_timeout_s / 2)
        if start_timeout < 30:
            rows.append({"participants": n, "status": "skipped: run deadline too close"})
            continue
        try:
            rows.append(asyncio.run(measure(n, args, start_timeout, Path(tmp.name))))
        except TimeoutError as exc:
            rows.append({"participants": n, "status": f"timed out: {exc or 'start or load'}"})
        except Exception as exc:  # record and go on: the table says what did not fit
            rows.append({"participants": n, "status": f"failed: {type(exc).__name__}: {exc}"[:300]})
        time.sleep(2)  # let the stopped clusters' processes exit before the next size
        report(_merged(kept, rows), args, final=False)  # a cut-off run keeps its data
    report(_merged(kept, rows), args, final=True)


def _merged(kept: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(kept + rows, key=lambda r: r["participants"])


def report(rows: list[dict[str, Any]], args: argparse.Namespace, *, final: bool) -> None:
    """Efficiencies, summary, JSON and plot from the rows so far (table printed when final)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if ok:
        base = ok[0]
        for r in ok:
            linear = base["requests_per_s"] * r["participants"] / base["participants"]
            r["efficiency_vs_linear"] = round(r["requests_per_s"] / linear, 3)
            cpu = r["cpu_s_by_role"]
            r["top_cpu_role"] = max(cpu, key=cpu.get)
    cols = [
        "participants", "status", "clients", "ok", "requests_per_s", "ideal_requests_per_s",
        "efficiency_vs_ideal", "efficiency_vs_linear", "latency_p50_ms", "latency_p99_ms",
        "first_token_p50_ms", "blocks_during_load", "cpu_share_of_machine", "top_cpu_role",
    ]  # fmt: skip
    if final:
        print_table(rows, cols)
    for r in ok if final else []:
        print(f"n={r['participants']} CPU s by role: {r['cpu_s_by_role']}")
    biggest = ok[-1] if ok else {}
    summary = {
        "max_participants": biggest.get("participants", 0),
        "efficiency_max_participants": biggest.get("efficiency_vs_linear"),
        "efficiency_vs_ideal_max_participants": biggest.get("efficiency_vs_ideal"),
        "requests_per_s_max_participants": biggest.get("requests_per_s"),
        "first_bottleneck": bottleneck(ok),
        "service_time_ms": args.max_tokens * args.token_delay_ms,
    }
    path = write_results("scaling", summary, settings=vars(args), rows=rows)
    plot(ok)
    if final:
        print(f"first bottleneck: {summary['first_bottleneck']}")
        print(f"wrote {path}")


def bottleneck(ok: list[dict]) -> str:
    """Name the first bottleneck from the measured evidence of the largest size: CPU seconds per
    request (all of this network's processes) against the cores, the top roles, the ledger."""
    if not ok:
        return "nothing measured"
    r = ok[-1]
    cpu = r["cpu_s_by_role"]
    total = sum(cpu.values()) or 1.0
    cpu_ms_per_req = 1000 * total / max(r["ok"], 1)
    cores = os.cpu_count() or 1
    cpu_limit_rps = 1000 * cores / cpu_ms_per_req
    top = sorted(cpu.items(), key=lambda kv: -kv[1])[:3]
    parts = ", ".join(f"{k} {v / total:.0%}" for k, v in top)
    ledger_ms = [1000 * x["cpu_s_by_role"].get("ledger", 0) / max(x["ok"], 1) for x in ok]
    system = sum(cpu.get(k, 0.0) for k in ("gcs_server", "raylet", "ray_other")) / total
    return (
        f"CPU: {cpu_ms_per_req:.0f} CPU-ms per request across the network's processes caps "
        f"{cores} cores at {cpu_limit_rps:.1f} req/s (measured {r['requests_per_s']}, ideal "
        f"{r['ideal_requests_per_s']}; this network used {r['cpu_share_of_machine']:.0%} of the "
        f"cores, other sessions the rest); top roles {parts}; ledger CPU-ms per request "
        f"{' -> '.join(f'{x:.0f}' for x in ledger_ms)} over sizes "
        f"{[x['participants'] for x in ok]} (every replica verifies and applies every tx); "
        f"each cluster's own Ray (GCS, raylet, helpers) {system:.0%}; client-side first token "
        f"p50 {r['first_token_p50_ms']} ms"
    )


def plot(ok: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not ok:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ns = [r["participants"] for r in ok]
    ax1.plot(ns, [r["requests_per_s"] for r in ok], "o-", label="measured")
    ax1.plot(ns, [r["ideal_requests_per_s"] for r in ok], "k--", label="ideal (clients/service)")
    ax1.set_xlabel("participants")
    ax1.set_ylabel("requests/s")
    ax1.set_xscale("log", base=2)
    ax1.legend(fontsize=8)
    ax1.set_title("Federated participants, FakeEngine fixed service time", fontsize=9)
    roles = sorted({k for r in ok for k in r["cpu_s_by_role"]})
    bottom = [0.0] * len(ok)
    for role in roles:
        vals = [r["cpu_s_by_role"].get(role, 0.0) / max(r["ok"], 1) * 1000 for r in ok]
        ax2.bar([str(n) for n in ns], vals, bottom=bottom, label=role)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax2.set_xlabel("participants")
    ax2.set_ylabel("CPU ms per request")
    ax2.set_title("CPU per request by role", fontsize=9)
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / "scaling.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
