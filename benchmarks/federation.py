"""Federation: every participant its own Ray cluster; one killed whole under load, then restarted.

Run: ``.venv/bin/python benchmarks/federation.py`` (writes ``results/federation.json``). Protocol
only: the fake engine (fixed token delay), four participants as four ``gonka-ray node``
processes (:class:`~gonka_ray.federation.LocalFederation`: own Ray cluster, own fresh key,
loopback ports), reached only over their HTTP front doors, as any client would.

1. **Separation.** Distinct Ray clusters (GCS addresses); from each participant's Ray, the named
   actors of other participants it can see (``ray.util.list_named_actors``; a single-cluster
   network would show 15 per participant).
2. **Load and a whole-participant kill.** A bounded closed loop of chat requests to p0-p2's front
   doors (never p3's); after ``--kill-after`` answers, p3's node is killed with SIGKILL (its
   process group: the node and the Ray cluster it started: executor, ledger replica, TA,
   verifier at once). Requests cut by the kill fail and are resent as new requests (a client's
   resend); ``errors_after_kill`` shows the kill hit work in flight (the run fails if it is 0).
   Then p3's node starts again from its state directory with its key.
3. **Nothing lost.** Every answered request's inference must be on the ledger of every live
   participant and of the restarted p3 (``participant_kill_lost_records``: answered requests
   missing from any of them).
4. **A participant that stops is dropped.** p3 is stopped (SIGTERM) for good; it misses the next
   Proof of Compute, and the seconds until p0's ledger gives it weight 0
   (``stopped_participant_dropped_after_s``) and whether the other three still serve afterwards
   (``served_after_drop``) are recorded.
5. **No Ray call crosses a participant.** After the load, the kill and the join, each running
   node's GCS job table is read: every driver that ever connected to that participant's Ray
   cluster other than its own node process and this benchmark's probes counts in
   ``cross_participant_ray_calls`` (a Ray call into a cluster needs a driver of it; its workers
   are started by its own raylet for its own jobs).
6. **Peer fuzz.** ``--fuzz-cases`` hostile byte streams into a peer connection (the ``peer`` fuzz
   target: handshake, frames, calls): ``peer_crashes`` must be 0.

7. **A newcomer joins mid-run.** While a closed loop keeps sending requests to p0-p2, ``p4``
   (not in the genesis, a fresh key) runs ``gonka-ray join`` through the genesis peers: it
   registers as a guest, syncs the ledger and serves its front door (``joiner_ready_s``), earns
   Proof-of-Compute weight at the next epoch (``joiner_weight_after_s``, ``joiner_weight``), and
   is then drawn as an executor and validates others (``joiner_served``, ``joiner_validated``:
   p0's ledger's counters); its own ledger must hold every answered request
   (``joiner_records_missing``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from tqdm import tqdm

from benchmarks._common import print_table, write_results
from gonka_ray.demo import demo_network_config
from gonka_ray.federation import LocalFederation

API_KEY = "sk-federation-bench"
KILLED = "p3"
JOINER = "p4"
FRONT_DOORS = ("p0", "p1", "p2")
LIST_ACTORS = """
import os, sys, ray
ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", log_to_driver=False)
from ray.util import list_named_actors
print("\\n".join(a["name"] for a in list_named_actors(all_namespaces=True)))
print("probe", os.getpid())
for job in ray._private.state.jobs():  # every driver that ever connected to this cluster
    print("driver", job["DriverPid"], job["DriverIPAddress"])
"""


def named_actors(gcs_address: str) -> list[str]:
    """The named actors of one Ray cluster (asked from a fresh process: a driver joins one
    cluster at a time), then ``probe PID`` and one ``driver PID IP`` line per driver in the
    cluster's job table."""
    out = subprocess.run(
        [sys.executable, "-c", LIST_ACTORS, gcs_address],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        check=True,
    )
    return [line for line in out.stdout.splitlines() if line.strip()]


def foreign_drivers(fed: LocalFederation, probes: set[int]) -> dict[str, list[str]]:
    """Per running node: the drivers its Ray cluster's GCS has seen other than the node's own
    process and this benchmark's probes. A Ray call into a participant's cluster needs a driver
    (or worker) of that cluster, and workers are started by its own raylet for its own jobs,
    so any call from another participant would show here as a foreign driver."""
    out = {}
    for name, info in fed.nodes.items():
        lines = named_actors(info.gcs_address)
        probe = {int(ln.split()[1]) for ln in lines if ln.startswith("probe ")}
        drivers = [ln.split()[1:] for ln in lines if ln.startswith("driver ")]
        out[name] = [
            f"{pid}@{ip}" for pid, ip in drivers if int(pid) not in {info.pid, *probe, *probes}
        ]
    return out


def chat(url: str, i: int, max_tokens: int) -> tuple[int, str]:
    """(HTTP status, inference id or error code)."""
    try:
        r = httpx.post(
            url + "v1/chat/completions",
            json={
                "model": "fake",
                "messages": [{"role": "user", "content": f"request {i}"}],
                "max_tokens": max_tokens,
            },
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=180,
        )
    except httpx.HTTPError as exc:
        return 0, type(exc).__name__
    if r.status_code == 200:
        return 200, r.json()["inference_id"]
    try:
        return r.status_code, r.json()["error"]["code"]
    except (ValueError, KeyError):
        return r.status_code, "?"


def load_with_kill(
    fed: LocalFederation, requests: int, concurrency: int, kill_after: int, max_tokens: int
) -> dict:
    """Closed loop of ``requests`` answers; SIGKILL p3's node after ``kill_after`` of them."""
    lock = threading.Lock()
    answered: list[str] = []
    errors: Counter[str] = Counter()
    errors_after_kill = 0
    killed_at: list[float] = []
    sent = 0
    bar = tqdm(total=requests, desc="requests", unit="req")

    def worker(w: int) -> None:
        nonlocal sent, errors_after_kill
        while True:
            with lock:
                if len(answered) >= requests:
                    return
                sent += 1
                i = sent
            status, what = chat(fed.nodes[FRONT_DOORS[i % 3]].url, i, max_tokens)
            with lock:
                if status == 200:
                    answered.append(what)
                    bar.update()
                    if len(answered) == kill_after and not killed_at:
                        os.killpg(fed.procs[KILLED].pid, signal.SIGKILL)
                        killed_at.append(time.monotonic())
                else:
                    errors[f"{status}:{what}"] += 1
                    errors_after_kill += bool(killed_at)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    return {
        "answered": answered,
        "sent": sent,
        "errors": dict(errors),
        "errors_after_kill": errors_after_kill,
        "seconds": round(time.monotonic() - t0, 1),
        "killed": bool(killed_at),
    }


def missing_records(url: str, ids: list[str], timeout_s: float) -> list[str]:
    """The ids whose ledger record ``url``'s participant does not have, waiting for it to catch
    up until a whole pass found nothing new for ``timeout_s``. A front door allows each client
    ``LOOKUP_RATE_PER_S`` lookups: a 429 is waited out (its Retry-After), never counted as
    missing; any answer other than 200, 404 and 429 fails the run."""
    missing = list(ids)
    progress_at = time.monotonic()
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {API_KEY}"}) as h:
        while missing:
            still = []
            for i in missing:
                while (r := h.get(url + f"v1/inferences/{i}")).status_code == 429:
                    time.sleep(float(r.headers.get("Retry-After", "1")))
                if r.status_code not in (200, 404):
                    raise SystemExit(f"{url} answered {r.status_code} for {i}: {r.text[:300]}")
                if r.status_code == 404:
                    still.append(i)
            if len(still) < len(missing):
                progress_at = time.monotonic()
            missing = still
            if missing and time.monotonic() - progress_at > timeout_s:
                break
            if missing:
                time.sleep(1.0)
    return missing


def missing_everywhere(checks: dict[str, tuple[str, list[str]]], timeout_s: float) -> dict:
    """:func:`missing_records` for each ``name: (url, ids)`` at once (each front door limits its
    clients' lookups on its own)."""
    with ThreadPoolExecutor(len(checks)) as pool:
        futures = {
            n: pool.submit(missing_records, u, ids, timeout_s) for n, (u, ids) in checks.items()
        }
        return {n: f.result() for n, f in futures.items()}


def height(url: str) -> int:
    """The committed height of ``url``'s ledger (explorer JSON)."""
    return int(httpx.get(url + "v1/explorer", timeout=30).json()["height"])


def weights(url: str) -> dict[str, int]:
    """Participant name -> this epoch's weight, from ``url``'s explorer JSON."""
    doc = httpx.get(url + "v1/explorer", timeout=30).json()
    return {p["name"]: int(p["weight"]) for p in doc["participants"]}


def wait_dropped(url: str, name: str, timeout_s: float) -> float | None:
    """Seconds until ``url``'s ledger gives ``name`` weight 0 (None: not within the timeout)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if weights(url).get(name, 0) == 0:
            return round(time.monotonic() - t0, 1)
        time.sleep(1.0)
    return None


def explorer_row(url: str, name: str) -> dict:
    doc = httpx.get(url + "v1/explorer", timeout=30).json()
    return next((p for p in doc["participants"] if p["name"] == name), {})


def join_mid_run(fed: LocalFederation, concurrency: int, max_tokens: int, timeout_s: float) -> dict:
    """``JOINER`` joins while ``concurrency`` clients keep sending requests to the genesis
    front doors; the load stops once it served and validated (or at ``timeout_s``)."""
    stop = threading.Event()
    lock = threading.Lock()
    answered: list[str] = []
    sent = [0]

    def worker() -> None:
        while not stop.is_set():
            with lock:
                sent[0] += 1
                i = 20_000 + sent[0]
            status, what = chat(fed.nodes[FRONT_DOORS[i % 3]].url, i, max_tokens)
            if status == 200:
                with lock:
                    answered.append(what)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    out: dict = {"ready_s": None, "weight_after_s": None, "weight": 0, "row": {}}
    try:
        t0 = time.monotonic()
        fed.join(JOINER)
        fed.wait_ready()
        out["ready_s"] = round(time.monotonic() - t0, 1)
        out["own_front_door"] = chat(fed.nodes[JOINER].url, 30_000, max_tokens)[0]
        with tqdm(desc="joiner: weight, work", unit="poll") as bar:
            ready_at = time.monotonic()  # the window for weight and work starts once it serves
            while time.monotonic() - ready_at < timeout_s:
                row = explorer_row(fed.nodes["p0"].url, JOINER)
                if row.get("weight", 0) > 0 and out["weight_after_s"] is None:
                    out["weight_after_s"] = round(time.monotonic() - t0 - out["ready_s"], 1)
                    out["weight"] = row["weight"]
                out["row"] = row
                bar.update()
                if row.get("served", 0) > 0 and row.get("validations_done", 0) > 0:
                    break
                time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    out["answered"] = list(answered)
    out["sent"] = sent[0]
    return out


def peer_fuzz(cases: int) -> dict:
    from benchmarks.fuzz import ALL_TARGETS, fuzz

    with tqdm(total=cases, desc="peer fuzz", unit="case") as bar:
        return fuzz(ALL_TARGETS["peer"], cases, bar)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=240)
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--kill-after", type=int, default=80)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--token-delay-ms", type=float, default=25.0)
    ap.add_argument("--fuzz-cases", type=int, default=12_000)
    ap.add_argument("--drop-timeout-s", type=float, default=480.0)
    ap.add_argument("--join-timeout-s", type=float, default=300.0)
    ap.add_argument("--root", default=None, help="keep the nodes' files here (default: a temp dir)")
    args = ap.parse_args()
    config = demo_network_config(model="fake", cheat=None, engine="fake")
    config = config.model_copy(
        update={
            "name": "fedbench",
            "engine": config.engine.model_copy(update={"fake_token_delay_ms": args.token_delay_ms}),
        }
    )
    fuzz = peer_fuzz(args.fuzz_cases)
    with tempfile.TemporaryDirectory(prefix="gonka_fed_") as tmp:
        root = args.root or tmp
        fed = LocalFederation(config, Path(root), api_keys={API_KEY: 0})
        try:
            t0 = time.monotonic()
            fed.start()
            nodes = fed.wait_ready()
            start_s = round(time.monotonic() - t0, 1)
            names = {n: named_actors(info.gcs_address) for n, info in nodes.items()}
            probes = {int(a.split()[1]) for v in names.values() for a in v if a[:6] == "probe "}
            names = {n: [a for a in v if " " not in a] for n, v in names.items()}
            foreign = {
                n: [a for a in actors if a.startswith(f"{config.name}.") and f".{n}." not in a]
                for n, actors in names.items()
            }
            own = {n: sum(f".{n}." in a for a in actors) for n, actors in names.items()}
            run = load_with_kill(
                fed, args.requests, args.concurrency, args.kill_after, args.max_tokens
            )
            if not run["killed"] or run["errors_after_kill"] < 1:
                raise SystemExit(
                    f"the kill hit no work in flight: {run['errors']}, {run['seconds']} s for "
                    f"{len(run['answered'])} answers, killed {run['killed']}"
                )
            fed.procs[KILLED].wait(30)
            t1 = time.monotonic()
            fed.start([KILLED])  # same state directory, same key
            fed.wait_ready()
            restart_s = round(time.monotonic() - t1, 1)
            ids = run["answered"]
            missing = missing_everywhere(
                {n: (fed.nodes[n].url, ids) for n in (*FRONT_DOORS, KILLED)}, 120.0
            )
            joined = join_mid_run(fed, args.concurrency, args.max_tokens, args.join_timeout_s)
            # the requests answered while it joined, on a genesis ledger (lost anywhere?) and
            # every answered request on the joiner's (synced?), with both heights
            after_join = missing_everywhere(
                {
                    "p0": (fed.nodes["p0"].url, joined["answered"]),
                    JOINER: (fed.nodes[JOINER].url, ids + joined["answered"]),
                },
                120.0,
            )
            during_join_missing_p0, missing[JOINER] = after_join["p0"], after_join[JOINER]
            heights = {n: height(fed.nodes[n].url) for n in ("p0", JOINER)}
            foreign_ray = foreign_drivers(fed, probes)  # after the load, the kill and the join
            weight_before = weights(fed.nodes["p0"].url).get(KILLED, 0)
            stop_code = fed.stop([KILLED])[KILLED]  # it stops for good
            dropped_s = wait_dropped(fed.nodes["p0"].url, KILLED, args.drop_timeout_s)
            after = [chat(fed.nodes[FRONT_DOORS[i % 3]].url, 10_000 + i, 4) for i in range(6)]
        finally:
            codes = fed.stop()
    lost = len({i for n, m in missing.items() if n != JOINER for i in m})
    rows = [
        {
            "participant": n,
            "own actors": own.get(n, "-"),
            "foreign actors": len(foreign.get(n, ())),
            "records missing": len(missing[n]),
            "exit": codes.get(n),
        }
        for n in sorted(codes)
    ]
    print_table(rows)
    summary = {
        "participant_clusters": len({info.gcs_address for info in nodes.values()}),
        "foreign_actors_visible": sum(len(v) for v in foreign.values()),
        "cross_participant_ray_calls": sum(len(v) for v in foreign_ray.values()),
        "requests_answered": len(run["answered"]),
        "requests_sent": run["sent"],
        "errors_after_kill": run["errors_after_kill"],
        "participant_kill_lost_records": lost,
        "killed_participant_restart_s": restart_s,
        "killed_participant_caught_up": not missing[KILLED],
        "stopped_participant_weight_before": weight_before,
        "stopped_participant_exit": stop_code,
        "stopped_participant_dropped_after_s": dropped_s,
        "served_after_drop": sum(status == 200 for status, _ in after),
        "nodes_stopped_cleanly": sum(c == 0 for c in codes.values()),
        "federation_start_s": start_s,
        "peer_fuzz_cases": fuzz["cases"],
        "peer_crashes": fuzz["crashes"],
        "joined_mid_run": int(joined["ready_s"] is not None),
        "joiner_ready_s": joined["ready_s"],
        "joiner_front_door_status": joined.get("own_front_door"),
        "joiner_weight_after_s": joined["weight_after_s"],
        "joiner_weight": joined["weight"],
        "joiner_served": joined["row"].get("served", 0),
        "joiner_validated": joined["row"].get("validations_done", 0),
        "joiner_records_missing": len(missing[JOINER]),
        "during_join_records_missing_on_p0": len(during_join_missing_p0),
        "joiner_height_behind_p0": heights["p0"] - heights[JOINER],
        "requests_during_join": len(joined["answered"]),
    }
    print(json.dumps(summary, indent=1))
    path = write_results(
        "federation",
        summary,
        config={k: v for k, v in vars(args).items()},
        errors=run["errors"],
        load_seconds=run["seconds"],
        participants=rows,
        foreign_actor_names=foreign,
        foreign_ray_drivers=foreign_ray,
        joiner_missing_ids=missing[JOINER],
        during_join_missing_ids_p0=during_join_missing_p0,
        peer_fuzz_outcomes=fuzz["outcomes"],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
