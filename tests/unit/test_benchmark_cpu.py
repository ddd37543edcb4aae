"""The benchmarks' CPU accounting by process tree (``benchmarks/scaling.py``): what
``overhead.py`` and ``overhead_protocol.py`` charge to each role. A signature change there once
broke both without any test noticing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.scaling import role_cpu, session_cpu


def test_session_cpu_walks_this_process_tree_with_the_driver_apart() -> None:
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    child = subprocess.Popen([sys.executable, "-c", spin + "time.sleep(30)"])
    try:
        before = session_cpu()
        assert before[os.getpid()][0] == "driver"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the child has burnt its 0.3 s
            after = session_cpu()
            if child.pid in after and after[child.pid][1] >= 0.3:
                break
            time.sleep(0.1)
        assert child.pid in after and after[child.pid][0] == "ray_other"  # not a Ray title
        used = role_cpu(before, after)
        assert used["ray_other"] > 0.1  # (a Ray cluster other tests started here may add roles)
        assert "node" not in used and "client" not in used  # this process counts as the driver
    finally:
        child.kill()
        child.wait()


def test_the_ledger_benchmarks_inference_records_all_apply() -> None:
    # benchmarks/ledger_records.py counts an inference as recorded when its three transactions
    # commit ok; records the ledger refused (a wrong draw, an expired Start, a Finish before
    # its Start) would quietly measure nothing. Applied in the order each replica receives them.
    from benchmarks.ledger_records import (
        RECORDS_APP,
        TXS_PER_INFERENCE,
        presign_inferences,
        recorded,
    )
    from tests.ledger_harness import Chain

    chain = Chain(RECORDS_APP, client_balance=10**9)
    by_replica, ids = presign_inferences(chain, 12, 0)
    assert len(set(ids)) == 12 and sum(map(len, by_replica)) == 12 * TXS_PER_INFERENCE
    assert not any(recorded(chain.sm, i) for i in ids)
    result = chain.apply(*[tx for txs in by_replica for tx in txs])
    assert [(r.ok, r.reason) for r in result.receipts] == [(True, "")] * 36
    assert all(recorded(chain.sm, i) for i in ids)
