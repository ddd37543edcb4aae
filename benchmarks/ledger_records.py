"""Recorded inferences per second (issue 20): the ledger's throughput in what the network uses it
for, beside ``ledger.py``'s transfers.

``ledger.py`` runs this as one section of its benchmark (``--only records`` runs it alone and
prints it). A group of 4 replicas with the inference app installed, joined by the same transport
as the transfer groups; its genesis participants are the four replicas' keys (weight 100 each)
and one funded client. Each inference is the records the network writes for it, pre-signed the
way the actors sign them: the client's signed request inside the TA's ``StartInference`` (the
executor the draw names), the drawn executor's ``FinishInference``, the TA's
``OutputDelivered``; unbatched, as the protocol writes them today: four Ed25519 checks per
inference per replica (the client's, the TA's twice, the executor's). An inference's three
transactions go, in order, to the replica of its TA (``ledger.py``'s open-loop load, 20 ms
batches). **Recorded** = its record in replica 0's state holds the Finish and the delivery,
read after the drain; ``inferences_per_s`` = recorded over the window replica 0 committed the
level's transactions in.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from gonka_ray import wire
from gonka_ray.ledger import inference_app as app
from tests.ledger_harness import BY_ADDR, KEYS, Chain

# a generous expiry: a saturated group's queue must not expire the records it is measuring
RECORDS_APP = app.InferenceAppConfig(price_per_token=1, expiry_blocks=100_000, vote_blocks=20)
TXS_PER_INFERENCE = 3
# Ed25519 checks per inference per replica: the client's request and the three envelopes
SIGNATURES_PER_INFERENCE = 1 + TXS_PER_INFERENCE


def presign_inferences(
    chain: Chain, count: int, first: int
) -> tuple[list[list[bytes]], list[bytes]]:
    """``count`` inferences' records, split by the replica of their TA (``p{i % 4}``), and
    their inference ids."""
    by_replica: list[list[bytes]] = [[] for _ in KEYS]
    ids = []
    for j in range(first, first + count):
        r = j % len(KEYS)
        ta = f"p{r}"
        request = chain.client_request(max_tokens=16)
        iid = app.inference_id_of(request)
        executor = BY_ADDR[chain.drawn(request, 0, ta)]
        txs = (
            chain.start_tx(request, ta=ta),
            chain.finish_tx(iid, executor, tokens=8),
            chain.tx(KEYS[ta], wire.OutputDelivered, inference_id=iid, output_hash=b"\x02" * 32),
        )
        by_replica[r] += txs
        ids.append(iid)
    return by_replica, ids


def recorded(sm: Any, inference_id: bytes) -> bool:
    """The inference's Start, Finish and OutputDelivered are all in ``sm``'s state."""
    rec = app.inference_record(sm, inference_id)
    return rec is not None and rec.finish_height > 0 and rec.delivered_hash != b""


async def count_recorded(handle: Any, inference_ids: Sequence[bytes]) -> int:
    """How many of ``inference_ids`` replica ``handle`` has recorded. NOTE: read on the actor
    after the drain (its state is plain dicts; the store's connection is its loop's alone)."""
    return await handle.__ray_call__.remote(
        lambda replica, ids: sum(recorded(replica.sm, i) for i in ids), list(inference_ids)
    )


async def bench_records(
    ray: Any,
    rates: Sequence[float],
    duration_s: float,
    tmp: str,
    power_loss_safe: bool,
    transport: str,
    *,
    start_group: Any,
    run_level: Any,
    actor_pids: Any,
) -> list[dict]:
    """One 4-replica group (``start_group`` brings the load groups' replica settings); per
    offered inference rate a row with ``inferences_per_s`` (recorded), the transactions'
    latency and the replicas' CPU per recorded inference."""
    chain = Chain(RECORDS_APP, client_balance=10**15)
    genesis = wire.encode(chain.sm.genesis)
    handles = await start_group(
        ray,
        "bench-records",
        list(KEYS.values()),
        genesis,
        f"{tmp}/records",
        transport,
        install=functools.partial(app.install, config=RECORDS_APP),
        track_latency=True,
        power_loss_safe=power_loss_safe,
    )
    rows, first = [], 0
    try:
        pids = await actor_pids(handles)
        warm, _ = presign_inferences(chain, 60, first)
        first += 60
        await run_level(handles, warm, 100, 2.0)
        for rate in tqdm(rates, desc="inference records, 4 replicas"):
            count = int(rate * duration_s)
            txs, ids = presign_inferences(chain, count, first)
            first += count
            row = await run_level(handles, txs, rate * TXS_PER_INFERENCE, duration_s, pids)
            n_recorded = await count_recorded(handles[0], ids)
            cpu_us = row.get("replica_cpu_us_per_tx")
            out = {
                "replicas": len(handles),
                "offered_inferences_per_s": round(row["offered_tx_per_s"] / TXS_PER_INFERENCE, 1),
                "inferences": count,
                # the offer stops at the level's end: the last inferences may not have gone out
                "sent": row["sent"] // TXS_PER_INFERENCE,
                "recorded": n_recorded,
                "inferences_per_s": round(n_recorded / max(row["elapsed_s"], 1e-9), 1),
                "tx_per_s": row["tx_per_s"],
                "p50_ms": row["p50_ms"],
                "p99_ms": row["p99_ms"],
                "replica_cpu_cores": row.get("replica_cpu_cores"),
                "replica_cpu_us_per_inference": (
                    round(cpu_us * row["committed"] / max(n_recorded, 1), 1) if cpu_us else None
                ),
            }
            tqdm.write(str(out))
            rows.append(out)
    finally:
        for h in handles:  # the group's actors go; its store goes with the caller's tmp
            ray.kill(h, no_restart=True)
    return rows
