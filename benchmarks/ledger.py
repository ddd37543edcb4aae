"""Ledger throughput and commit latency: replica groups of 4 and 7, open-loop load.

Run: ``.venv/bin/python benchmarks/ledger.py`` (writes ``results/ledger.json`` and
``results/ledger_latency.png``). Starts its own loopback Ray. For each replica count it offers
signed transfers at several rates (transactions pre-signed by 1,000 funded clients, sent in
batches every 20 ms round-robin to the replicas, which gossip them), and measures committed
transactions per second at replica 0 and submit-to-commit latency at the replica each
transaction was submitted to (same clock). Every replica verifies every signature, persists to
SQLite before sending, and applies every block. The replicas are Ray actors (for the load
generator's handles) joined by the TCP peer transport the network uses (``--transport ray``: by
Ray actor calls instead, the old baseline); the summary's ``transport`` says which. The machine's 1-minute load average at the
start and the end goes into the JSON: on a shared 2-core machine other work can halve the
figures.

**What a block costs** (``block_cost``): an idle group of 4 replicas making heartbeat blocks
(one every 100 ms, 20 ms ticks), measured three times: all four in this process over an
in-memory transport (no Ray), and as Ray actors (CPU from ``/proc`` of their processes) joined
by Ray actor calls and by the TCP peer transport. The differences are what the consensus
messages cost over each.

**What limits the peak** (the 4-replica goal): every level's row has the replicas' CPU over
it (``replica_cpu_cores``, from ``/proc``) and per committed transaction
(``replica_cpu_us_per_tx``); the summary gives it at the peak, one Ed25519 check
(``ed25519_verify_us``: ``crypto.verify``, best of five, measured before and after the groups,
the better of the two; both are in ``ed25519_verify_us_before_after``: this shared machine's
speed drifts within minutes), and ``signature_share_of_cpu_in_process``: the signature checks'
share of a saturated group's CPU in ``cpu_breakdown_us_per_tx_in_process``, which splits that
CPU by stage (4 replicas in this process, no Ray, no TCP; exclusive timers, which add about a
microsecond per timed call).

**What an inference costs** (``inference_record_rows``): a third 4-replica group with the
inference app takes each inference's Start, Finish and OutputDelivered as the actors sign
them, at ``--inference-rates``; ``recorded_inferences_per_s_4_replicas`` is the peak of
inferences whose records all committed (:mod:`benchmarks.ledger_records`; ``--only records``
runs that group alone and prints it).

**What durability costs** (``durability``, run first, before Ray starts): the replicas run with
the durable default (``power_loss_safe=True``: SQLite ``synchronous=FULL``, the WAL fsynced at
every commit; ``--power-loss-unsafe`` benchmarks ``NORMAL`` instead, and the summary's
``durable`` says which ran). Side by side in the same run, interleaved: the store writes a
replica makes per block on its critical path (``persist`` of the block and safety record before
its vote leaves, then ``record_commit``) at FULL and at NORMAL, in ms per block and blocks/s;
the open-time ``quick_check``; and the crash-injection matrix of
``tests/store_crash.py``: writer processes killed at every point of every kind of write and at
random moments, ``power_loss_lost_commits`` = acknowledged writes missing after reopening (must be
0). NOTE: that matrix kills processes, it does not cut power; power-loss safety rests on FULL
sync (SQLite's WAL protocol and a disk that honours fsync). ``--only durability`` runs this part
alone and prints it without writing the results file.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
import time
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from tqdm import tqdm

from benchmarks._common import RESULTS_DIR, print_table, write_results
from benchmarks.ledger_records import SIGNATURES_PER_INFERENCE, bench_records
from benchmarks.ray_transport import RayPeerTransport
from gonka_ray import crypto, wire
from gonka_ray.ledger.quorum import block_hash
from gonka_ray.ledger.replica import LedgerReplica
from gonka_ray.ledger.state import BlockResult, TxResult
from gonka_ray.ledger.storage import LedgerStore
from gonka_ray.ledger.transport import InProcessNetwork
from gonka_ray.peer.tcp import TcpPeerTransport, loopback_addresses
from gonka_ray.raykit import ActorOptions, remote
from gonka_ray.wire import (
    Block,
    BlockHeader,
    CommitCertificate,
    ConsensusSafety,
    GenesisAccount,
    GenesisParticipant,
    LedgerGenesis,
    QuorumCert,
    Transfer,
)
from tests.store_crash import crash_matrix

CLIENTS = 1_000
BATCH_INTERVAL_S = 0.02
# every saturated group's replicas: 10 ms ticks, blocks of up to 2,000 transactions, no snapshots
LOAD_GROUP: dict[str, Any] = {
    "tick_ms": 10,
    "timeout_ticks": 200,
    "max_block_txs": 2_000,
    "snapshot_every": 10**9,
}


def keys(prefix: str, n: int) -> list[crypto.KeyPair]:
    return [crypto.KeyPair.from_seed(f"bench/{prefix}-{i}") for i in range(n)]


def presign(
    clients: list[crypto.KeyPair], nonces: list[int], count: int, n: int, chain: str
) -> list[list[bytes]]:
    """``count`` transfers split by replica: client ``k`` always submits to replica ``k % n``,
    so each client's nonces arrive in order."""
    dest = clients[0].address
    out: list[list[bytes]] = [[] for _ in range(n)]
    for j in range(count):
        k = j % len(clients)
        out[k % n].append(
            wire.seal(Transfer(to=dest, amount=1, nonce=nonces[k]), clients[k], chain)
        )
        nonces[k] += 1
    return out


async def run_level(
    handles: list, txs: list[list[bytes]], rate: float, duration_s: float, pids: Sequence[int] = ()
) -> dict:
    """Offer ``rate`` tx/s for ``duration_s``, then drain; return throughput and latencies, and
    with the replicas' ``pids`` their CPU (from ``/proc``) over the same window."""
    n = len(handles)
    await asyncio.gather(*[h.take_metrics.remote() for h in handles])  # reset latencies
    m0 = await handles[0].take_metrics.remote()
    cpu0 = _group_cpu_s(pids)
    per_replica = max(1, round(rate * BATCH_INTERVAL_S / n))
    sent, t0, i, pos = 0, time.monotonic(), 0, 0
    total = sum(len(t) for t in txs)
    refs = []
    while time.monotonic() - t0 < duration_s and sent < total:
        for r in range(n):
            batch = txs[r][pos : pos + per_replica]
            if batch:
                refs.append(handles[r].submit_many.remote(batch))
                sent += len(batch)
        pos += per_replica
        i += 1
        next_t = t0 + i * BATCH_INTERVAL_S
        await asyncio.sleep(max(0.0, next_t - time.monotonic()))
    await asyncio.gather(*refs)
    offered_s = time.monotonic() - t0
    # Drain: wait until replica 0 committed everything sent (or give up).
    target = m0["committed_txs"] + sent
    deadline = time.monotonic() + 20
    m1 = m0
    lat: list[float] = []
    while time.monotonic() < deadline:
        m1 = await handles[0].take_metrics.remote()
        lat += m1["latencies_s"]  # take_metrics drains them: keep replica 0's
        if m1["committed_txs"] >= target:
            break
        await asyncio.sleep(0.05)
    cpu = _group_cpu_s(pids) - cpu0
    metrics = await asyncio.gather(*[h.take_metrics.remote() for h in handles])
    for m in metrics:
        lat += m["latencies_s"]
    committed = m1["committed_txs"] - m0["committed_txs"]
    elapsed = m1["time"] - m0["time"]
    lat_ms = np.array(lat) * 1000 if lat else np.array([float("nan")])
    row = {
        "offered_tx_per_s": round(sent / offered_s, 1),
        "committed": committed,
        "sent": sent,
        "tx_per_s": round(committed / max(elapsed, 1e-9), 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 1),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 1),
        "latency_samples": len(lat),
        "elapsed_s": round(elapsed, 4),  # replica 0's window: its first to its last poll
    }
    if pids:
        # NOTE: the window runs from m0 to the last poll, a little past the last commit
        row["replica_cpu_cores"] = round(cpu / max(elapsed, 1e-9), 2)
        row["replica_cpu_us_per_tx"] = round(1e6 * cpu / max(committed, 1), 1)
    return row


def genesis_of(
    replicas: Sequence[crypto.KeyPair], chain_id: str, clients: Sequence[crypto.KeyPair] = ()
) -> bytes:
    """The encoded genesis of a group of ``replicas`` (weight 1 each), ``clients`` funded."""
    return wire.encode(
        LedgerGenesis(
            chain_id=chain_id,
            accounts=tuple(GenesisAccount(address=c.address, balance=10**12) for c in clients),
            participants=tuple(
                GenesisParticipant(public_key=k.public_key, name=f"r{i}", weight=1)
                for i, k in enumerate(replicas)
            ),
        )
    )


def group_transport(kind: str, names: list[str], keys_, genesis: bytes, ns: str):
    """Each replica's transport: ``"tcp"`` (the network's) or ``"ray"`` (actor calls)."""
    if kind == "ray":
        return [RayPeerTransport(names, index=i, namespace=ns) for i in range(len(names))]
    addresses = loopback_addresses(len(names))
    return [
        TcpPeerTransport.for_genesis(genesis, index=i, key=k, addresses=addresses)
        for i, k in enumerate(keys_)
    ]


async def start_group(
    ray,
    prefix: str,
    replicas: Sequence[crypto.KeyPair],
    genesis: bytes,
    storage_dir: str,
    transport: str = "tcp",
    **kw,
) -> list:
    """One Ray replica actor per key, named ``<prefix>-<i>``, joined by ``transport``, started;
    ``kw`` go to each."""
    names = [f"{prefix}-{i}" for i in range(len(replicas))]
    ns = ray.get_runtime_context().namespace
    links = group_transport(transport, names, replicas, genesis, ns)
    handles = [
        remote(LedgerReplica, ActorOptions(name=names[i], namespace=ns, num_cpus=0)).remote(
            index=i,
            key_seed=k.seed,
            genesis=genesis,
            storage_dir=storage_dir,
            transport=links[i],
            **kw,
        )
        for i, k in enumerate(replicas)
    ]
    await asyncio.gather(*[h.start.remote() for h in handles])
    return handles


async def bench_group(
    ray,
    n: int,
    rates: list[float],
    duration_s: float,
    tmp: str,
    power_loss_safe: bool = True,
    transport: str = "tcp",
) -> list[dict]:
    replicas = keys(f"replica{n}", n)
    clients = keys("client", CLIENTS)
    chain = f"bench-{n}"
    handles = await start_group(
        ray,
        f"bench-ledger-{n}",
        replicas,
        genesis_of(replicas, chain, clients),
        f"{tmp}/g{n}",
        transport,
        **LOAD_GROUP,
        track_latency=True,
        apply_in_thread=False,  # apply mostly hits the admission cache now
        power_loss_safe=power_loss_safe,
    )
    nonces = [0] * CLIENTS
    rows = []
    try:
        pids = await actor_pids(handles)
        # Warm up (actor lookups, first blocks) so the first level does not pay for it.
        await run_level(handles, presign(clients, nonces, 200, n, chain), 100, 2.0)
        for rate in tqdm(rates, desc=f"{n} replicas"):
            txs = presign(clients, nonces, int(rate * duration_s), n, chain)
            row = {"replicas": n, **await run_level(handles, txs, rate, duration_s, pids)}
            rows.append(row)
            tqdm.write(str(row))
    finally:
        for h in handles:
            ray.kill(h, no_restart=True)
    return rows


def local_group(
    keys_: Sequence[crypto.KeyPair], genesis: bytes, storage_dir: str, **kw: Any
) -> list[LedgerReplica]:
    """A replica per key in this process, joined by an in-memory transport (not started)."""
    net = InProcessNetwork()
    replicas: list[LedgerReplica] = []
    for i, k in enumerate(keys_):
        replicas.append(
            LedgerReplica(
                index=i,
                key_seed=k.seed,
                genesis=genesis,
                storage_dir=storage_dir,
                transport=net.transport(i),
                **kw,
            )
        )
        net.add(i, replicas[i])
    return replicas


async def block_cost_in_process(
    tmp: str, seconds: float = 8.0, power_loss_safe: bool = True
) -> float:
    """CPU ms per committed heartbeat block per replica, 4 replicas in this process, no Ray."""
    keys_ = keys("blockcost", 4)
    replicas = local_group(
        keys_,
        genesis_of(keys_, "blockcost-local"),
        f"{tmp}/local",
        tick_ms=20,
        timeout_ticks=100,
        empty_block_interval_ms=100,
        power_loss_safe=power_loss_safe,
    )
    for r in replicas:
        await r.start()
    await asyncio.sleep(2.0)
    h0, c0 = replicas[0].core.committed_height, time.process_time()
    await asyncio.sleep(seconds)
    blocks = replicas[0].core.committed_height - h0
    cpu = time.process_time() - c0
    for r in replicas:
        await r.stop()
    return round(1000 * cpu / max(1, blocks) / 4, 2)


async def cpu_breakdown_in_process(
    tmp: str, n_tx: int = 20_000, power_loss_safe: bool = True
) -> dict[str, float]:
    """Where the CPU of a saturated group goes, in microseconds per committed transaction for
    the whole group of 4: the replicas in this process over an in-memory transport (no Ray, no
    TCP), ``n_tx`` signed transfers submitted as fast as the group takes them. Timers (process
    CPU) around each replica's stages, exclusive: a stage's figure leaves out the stages timed
    inside it (the signature checks inside apply or the envelope decode, the state hash inside
    apply). ``other`` is the rest of the process (event loop, mempool, precheck scheduling)."""
    keys_ = keys("replica4", 4)
    clients = keys("client", CLIENTS)
    chain = "breakdown-4"
    replicas = local_group(
        keys_,
        genesis_of(keys_, chain, clients),
        f"{tmp}/breakdown",
        **LOAD_GROUP,
        apply_in_thread=False,
        power_loss_safe=power_loss_safe,
    )
    acc: dict[str, float] = {}
    inner: list[float] = []  # CPU of timed stages running inside the current one

    def timed(label: str, fn: Any) -> Any:
        def run(*a: Any, **kw: Any) -> Any:
            inner.append(0.0)
            t0 = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                dt = time.process_time() - t0
                acc[label] = acc.get(label, 0.0) + dt - inner.pop()
                if inner:
                    inner[-1] += dt

        return run

    for r in replicas:
        r.sm.apply_block = timed("apply", r.sm.apply_block)
        r.sm._open = timed("envelope_decode", r.sm._open)
        r.sm._rehash = timed("state_hash", r.sm._rehash)
        r.store.record_commit = timed("store_record_commit", r.store.record_commit)
        r.store.persist = timed("store_persist", r.store.persist)
        r.core.step = timed("consensus_messages", r.core.step)
    verify = crypto.verify  # wire.codec and the consensus core call it through the module
    crypto.verify = timed("signature_verify", verify)
    try:
        for r in replicas:
            await r.start()
        txs = presign(clients, [0] * CLIENTS, n_tx, 4, chain)
        await asyncio.sleep(0.5)
        acc.clear()
        c0 = time.process_time()
        for pos in range(0, len(txs[0]), 25):
            for r, mine in zip(replicas, txs, strict=True):
                if batch := mine[pos : pos + 25]:
                    await r.submit_many(batch)
            await asyncio.sleep(0)
        deadline = time.monotonic() + 120
        while replicas[0]._committed_txs < n_tx and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        cpu = time.process_time() - c0
        committed = replicas[0]._committed_txs
    finally:
        crypto.verify = verify
        for r in replicas:
            await r.stop()
    out = {k: round(1e6 * v / committed, 1) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}
    out["other"] = round(1e6 * (cpu - sum(acc.values())) / committed, 1)
    out["total"] = round(1e6 * cpu / committed, 1)
    return out


def ed25519_verify_us(repeats: int = 5, number: int = 2_000) -> float:
    """One Ed25519 check (``crypto.verify``) of a message the size of a transfer's signed
    bytes, best of ``repeats``: the part of a transaction no replica can skip."""
    key = crypto.KeyPair.from_seed("bench/verify")
    size = len(wire.seal(Transfer(to=key.address, amount=1, nonce=0), key, "bench-verify"))
    msg = os.urandom(size)
    sig = key.sign(b"bench", msg)
    best = min(
        timeit.repeat(
            lambda: crypto.verify(key.public_key, b"bench", msg, sig), number=number, repeat=repeats
        )
    )
    return round(1e6 * best / number, 1)


async def actor_pids(handles: Sequence) -> list[int]:
    """The process id of each Ray actor in ``handles``."""
    return await asyncio.gather(*[h.__ray_call__.remote(lambda _: os.getpid()) for h in handles])


def _group_cpu_s(pids: Sequence[int]) -> float:
    return sum(_proc_cpu_s(p) for p in pids)


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def block_cost_actors(
    ray, tmp: str, transport: str, seconds: float = 8.0, power_loss_safe: bool = True
) -> float:
    """The same group as Ray actors joined by ``transport``: CPU ms per heartbeat block per
    replica process."""
    keys_ = keys("blockcost", 4)
    handles = await start_group(
        ray,
        f"bench-blockcost-{transport}",
        keys_,
        genesis_of(keys_, f"blockcost-{transport}"),
        f"{tmp}/{transport}",
        transport,
        tick_ms=20,
        timeout_ticks=100,
        empty_block_interval_ms=100,
        power_loss_safe=power_loss_safe,
    )
    try:
        pids = await actor_pids(handles)
        await asyncio.sleep(2.0)
        h0 = (await handles[0].status.remote())["committed_height"]
        c0 = _group_cpu_s(pids)
        await asyncio.sleep(seconds)
        blocks = (await handles[0].status.remote())["committed_height"] - h0
        cpu = _group_cpu_s(pids) - c0
    finally:
        for h in handles:
            ray.kill(h, no_restart=True)
    return round(1000 * cpu / max(1, blocks) / 4, 2)


# --- durability ------------------------------------------------------------------------------


def synthetic_blocks(n: int, txs_per_block: int) -> list[tuple]:
    """``n`` chained blocks of ``txs_per_block`` random transactions the size of a signed
    transfer, each with a certificate, a result (receipts) and a safety record: what a replica
    writes per block. The store does not verify them, so no signing or applying is needed."""
    key = crypto.KeyPair.from_seed("bench/durability")
    tx_bytes = len(wire.seal(Transfer(to=key.address, amount=1, nonce=0), key, "bench"))
    prev, out = bytes(32), []
    for h in range(1, n + 1):
        txs = tuple(os.urandom(tx_bytes) for _ in range(txs_per_block))
        header = BlockHeader(
            height=h,
            view=h,
            parent=prev,
            justify=QuorumCert(view=h - 1, block_hash=prev, sigs=()),
            tx_root=os.urandom(32),
            tx_count=len(txs),
            proposer=h % 4,
        )
        bh = block_hash(header)
        qc = QuorumCert(view=h, block_hash=bh, sigs=())
        receipts = tuple(TxResult(os.urandom(32), os.urandom(32), True, "") for _ in txs)
        out.append(
            (
                Block(header=header, txs=txs),
                bh,
                CommitCertificate(headers=(header,), qc=qc),
                BlockResult(h, bh, os.urandom(32), receipts),
                ConsensusSafety(
                    cur_view=h, last_voted_view=h, locked_hash=prev, high_qc=qc, timeout_view=0
                ),
            )
        )
        prev = bh
    return out


def store_write_cost(
    tmp: str, blocks: int = 300, txs_per_block: int = 100, rounds: int = 6
) -> dict[str, Any]:
    """Per block, ``persist([block, safety])`` then ``record_commit`` on a store at FULL and one
    at NORMAL, in alternating rounds (same blocks, so load on the machine hits both alike)."""
    data = synthetic_blocks(blocks, txs_per_block)
    modes = {"full": True, "normal": False}
    stores = {
        m: LedgerStore(f"{tmp}/store-{m}.sqlite", power_loss_safe=v) for m, v in modes.items()
    }
    per_block: dict[str, list[float]] = {m: [] for m in modes}
    persist: dict[str, list[float]] = {m: [] for m in modes}
    chunk = max(1, blocks // rounds)
    for r in range(rounds):
        for m in list(modes)[:: 1 if r % 2 == 0 else -1]:
            for block, bh, cert, result, safety in data[r * chunk : (r + 1) * chunk]:
                t0 = time.perf_counter()
                stores[m].persist([block, safety])
                t1 = time.perf_counter()
                stores[m].record_commit(block, bh, cert, result)
                per_block[m].append(time.perf_counter() - t0)
                persist[m].append(t1 - t0)
    out: dict[str, Any] = {}
    for m in modes:
        ms = np.array(per_block[m]) * 1000
        out[m] = {
            "block_p50_ms": round(float(np.percentile(ms, 50)), 3),
            "block_p90_ms": round(float(np.percentile(ms, 90)), 3),
            "block_p99_ms": round(float(np.percentile(ms, 99)), 3),
            "block_mean_ms": round(float(ms.mean()), 3),
            "persist_p50_ms": round(float(np.percentile(np.array(persist[m]) * 1000, 50)), 3),
            # NOTE: from the mean, so stalls of a loaded machine count; compare p50s for the sync
            "blocks_per_s": round(1000 / float(ms.mean()), 1),
            "tx_per_s_store_ceiling": round(1000 * txs_per_block / float(ms.mean()), 1),
        }
    path = stores["full"].path
    for store in stores.values():
        store.close()
    out["quick_check"] = open_cost(path)
    out["txs_per_block"] = txs_per_block
    out["blocks_each"] = len(per_block["full"])
    return out


def open_cost(path: Path, repeats: int = 3) -> dict[str, float]:
    """Best of ``repeats``: ms to open ``path`` with and without ``quick_check``, and to load."""
    best = {"open_ms_quick_check": 1e9, "open_ms_no_check": 1e9, "load_ms": 1e9}
    for _ in range(repeats):
        for check, key in ((True, "open_ms_quick_check"), (False, "open_ms_no_check")):
            t0 = time.perf_counter()
            store = LedgerStore(path, quick_check=check)
            t1 = time.perf_counter()
            store.load()
            t2 = time.perf_counter()
            store.close()
            best[key] = min(best[key], (t1 - t0) * 1000)
            best["load_ms"] = min(best["load_ms"], (t2 - t1) * 1000)
    out = {k: round(v, 2) for k, v in best.items()}
    out["file_mb"] = round(path.stat().st_size / 1e6, 1)
    return out


def measure_durability(tmp: str) -> dict:
    """The ``durability`` section (see the module docstring). Forks writer processes: run it
    before Ray starts."""
    t0 = time.perf_counter()
    writes = store_write_cost(tmp)
    report = crash_matrix(Path(tmp) / "crash", timed_kills=16, seed=1)
    return {
        "store_writes": writes,
        "crash_injection": {
            "what": "writer processes killed (SIGKILL or os._exit) at every crash point of every "
            "kind of write, and by SIGKILL at random moments; no power cut",
            "crashes": report.crashes,
            "crash_points": len(report.points),
            "writes_in_script": report.writes,
            "lost_acknowledged_writes": report.lost_acknowledged,
            "after_commit_kills_kept": report.after_commit_kept,
            "failures": report.failures,
            "seconds": report.seconds,
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }


def print_durability(d: dict) -> None:
    w = d["store_writes"]
    print_table([{"sync": m.upper(), **w[m]} for m in ("full", "normal")])
    print(f"quick_check at open: {w['quick_check']}")
    print(f"crash injection: {d['crash_injection']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--rates",
        default="250,500,1000,2000,3000,4000,6000,8000",
        help="offered tx/s levels; the top ones must saturate 4 replicas (the peak is the goal)",
    )
    ap.add_argument("--duration-s", type=float, default=4.0)
    ap.add_argument("--groups", default="4,7")
    ap.add_argument(
        "--transport",
        choices=["tcp", "ray"],
        default="tcp",
        help="what joins the load groups' replicas (tcp: the network's peer transport)",
    )
    ap.add_argument(
        "--power-loss-unsafe",
        action="store_true",
        help="replicas at synchronous=NORMAL (the summary's durable is then false)",
    )
    ap.add_argument(
        "--inference-rates",
        default="300,600,800,1000,1200",
        help="offered inferences/s for the inference-records group (three transactions each)",
    )
    ap.add_argument(
        "--only",
        choices=["durability", "records"],
        help="run only this section and print it (no results file)",
    )
    args = ap.parse_args()
    safe = not args.power_loss_unsafe
    inference_rates = [float(r) for r in args.inference_rates.split(",")]
    if args.only != "records":
        with tempfile.TemporaryDirectory() as tmp:
            durability = measure_durability(tmp)  # forks writers: before Ray starts
        print_durability(durability)
        if args.only == "durability":
            return
    import ray

    options = {"include_dashboard": False, "namespace": "gonka_ray_bench", "log_to_driver": False}
    ray.init(_node_ip_address="127.0.0.1", **options)
    if args.only == "records":
        with tempfile.TemporaryDirectory() as tmp:
            print_table(records_rows(ray, inference_rates, args, tmp, safe))
        return
    rates = [float(r) for r in args.rates.split(",")]
    load_start = os.getloadavg()[0]
    all_rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        block_cost = {
            "in_process_cpu_ms_per_block_per_replica": asyncio.run(
                block_cost_in_process(tmp, power_loss_safe=safe)
            ),
            "over_ray_cpu_ms_per_block_per_replica": asyncio.run(
                block_cost_actors(ray, tmp, "ray", power_loss_safe=safe)
            ),
            "over_tcp_cpu_ms_per_block_per_replica": asyncio.run(
                block_cost_actors(ray, tmp, "tcp", power_loss_safe=safe)
            ),
        }
        print(f"heartbeat block cost: {block_cost}")
        breakdown = asyncio.run(cpu_breakdown_in_process(tmp, power_loss_safe=safe))
        verify_us = ed25519_verify_us()
        print(f"CPU per committed tx, 4 replicas in process (us): {breakdown}")
        print(f"one Ed25519 check: {verify_us} us")
        for n in [int(g) for g in args.groups.split(",")]:
            rows = asyncio.run(
                bench_group(ray, n, rates, args.duration_s, tmp, safe, args.transport)
            )
            if n == 4:
                peak = max(r["tx_per_s"] for r in rows)
                half = asyncio.run(
                    bench_group(
                        ray, n, [peak / 2], args.duration_s, tmp + "h", safe, args.transport
                    )
                )
                half[0]["half_load"] = True
                rows += half
            all_rows += rows
        record_rows = records_rows(ray, inference_rates, args, tmp, safe)
    ray.shutdown()
    # the machine's speed can drift within minutes (shared host): the same check again
    verify_us_after = ed25519_verify_us()
    print_table(all_rows)
    print_table(record_rows)

    def peak_row(n: int) -> dict:
        return max(
            (r for r in all_rows if r["replicas"] == n), key=lambda r: r["tx_per_s"], default={}
        )

    half_rows = [r for r in all_rows if r.get("half_load")]
    peak_records = max(record_rows, key=lambda r: r["inferences_per_s"], default={})
    cpu_per_tx = peak_row(4).get("replica_cpu_us_per_tx")
    summary = {
        "transport": args.transport,
        "tx_per_s_4_replicas": peak_row(4).get("tx_per_s", 0.0),
        "tx_per_s_7_replicas": peak_row(7).get("tx_per_s", 0.0),
        "p99_ms_half_load_4_replicas": half_rows[0]["p99_ms"] if half_rows else None,
        "block_cpu_ms_per_replica_in_process": block_cost[
            "in_process_cpu_ms_per_block_per_replica"
        ],
        "block_cpu_ms_per_replica_over_ray": block_cost["over_ray_cpu_ms_per_block_per_replica"],
        "block_cpu_ms_per_replica_over_tcp": block_cost["over_tcp_cpu_ms_per_block_per_replica"],
        "durable": safe,
        "power_loss_lost_commits": durability["crash_injection"]["lost_acknowledged_writes"],
        "store_ms_per_block_full": durability["store_writes"]["full"]["block_p50_ms"],
        "store_ms_per_block_normal": durability["store_writes"]["normal"]["block_p50_ms"],
        # what limits the peak: the group's CPU per committed transaction there, one Ed25519
        # check (the better of the two measurements: this machine's speed drifts), and the
        # signature checks' share of a saturated group's CPU (in process, timed in the same run)
        "replica_cpu_us_per_tx_4_replicas": cpu_per_tx,
        "ed25519_verify_us": min(verify_us, verify_us_after),
        "signature_share_of_cpu_in_process": round(
            breakdown["signature_verify"] / breakdown["total"], 3
        ),
        # what the network writes: an inference's Start, Finish and OutputDelivered, unbatched
        "recorded_inferences_per_s_4_replicas": peak_records.get("inferences_per_s", 0.0),
        "replica_cpu_us_per_inference_4_replicas": peak_records.get("replica_cpu_us_per_inference"),
        "signature_checks_per_inference_per_replica": SIGNATURES_PER_INFERENCE,
    }
    print(summary)
    load = {"start": round(load_start, 1), "end": round(os.getloadavg()[0], 1)}
    print(f"1-minute load average: {load}")
    path = write_results(
        "ledger",
        summary,
        rows=all_rows,
        duration_s=args.duration_s,
        load_avg_1m=load,
        block_cost=block_cost,
        cpu_breakdown_us_per_tx_in_process=breakdown,
        ed25519_verify_us_before_after=[verify_us, verify_us_after],
        durability=durability,
        inference_record_rows=record_rows,
    )
    print(f"wrote {path}")
    plot(all_rows)


def records_rows(ray, rates: list[float], args: Any, tmp: str, safe: bool) -> list[dict]:
    """The inference-records group's rows (:mod:`benchmarks.ledger_records`)."""
    return asyncio.run(
        bench_records(
            ray,
            rates,
            args.duration_s,
            tmp,
            safe,
            args.transport,
            start_group=functools.partial(start_group, **LOAD_GROUP),
            run_level=run_level,
            actor_pids=actor_pids,
        )
    )


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n in sorted({r["replicas"] for r in rows}):
        pts = sorted(
            (r["tx_per_s"], r["p50_ms"], r["p99_ms"])
            for r in rows
            if r["replicas"] == n and not r.get("half_load")
        )
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], "o-", label=f"{n} replicas p50")
        ax.plot(xs, [p[2] for p in pts], "s--", label=f"{n} replicas p99")
    ax.set_xlabel("committed tx/s")
    ax.set_ylabel("submit-to-commit latency (ms)")
    ax.set_yscale("log")
    ax.set_title("gonka_ray ledger: latency vs load (2-core machine, loopback Ray)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = RESULTS_DIR / "ledger_latency.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
