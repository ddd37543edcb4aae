"""Crash injection for :class:`~gonka_ray.ledger.storage.LedgerStore`: kill a writer process at
every point of every write, then check what a reopened store holds.

A scripted replica history (:func:`workload`: blocks and safety records persisted, commits
recorded, snapshots saved and pruned, a snapshot-sync install) is first run once in this process
with a recording ``crash_point`` hook: that lists every crash point the script passes (``events``)
and the table contents after each write (``states``). Then, for each event, a forked child runs
the same script on a fresh file and dies at that event (SIGKILL to itself, or ``os._exit`` without
cleanup); it acknowledges each write that returned over a pipe, as a replica acknowledges by
sending. A few more children are SIGKILLed by the parent at random moments (inside SQLite's own
code too). After each death the parent reopens the file and checks:

- **no acknowledged write lost, no partial write**: the tables equal exactly the state after the
  acknowledged writes, or (a kill after COMMIT, before the ack) after one more;
- **recovery**: ``load()`` decodes, the committed heights run without a gap and name stored
  blocks, and the latest snapshot plus the committed blocks after it replay to the recorded
  state hash (what ``LedgerReplica`` does at a restart);
- **further writes**: the rest of the script runs on the reopened store and ends in the same
  state as the crash-free run.

This shows the store survives *process* death at every point; it does not cut power. Power-loss
safety rests on SQLite WAL with ``synchronous=FULL`` (the WAL is fsynced at every commit, before
the write returns) and on a disk that honours fsync. Shared by
``tests/unit/test_ledger_store_crash.py`` and ``benchmarks/ledger.py``.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gonka_ray import wire
from gonka_ray.ledger import merkle
from gonka_ray.ledger.quorum import ZERO_HASH, block_hash, genesis_block
from gonka_ray.ledger.state import StateMachine
from gonka_ray.ledger.storage import LedgerStore
from gonka_ray.wire import (
    Block,
    BlockHeader,
    CommitCertificate,
    ConsensusSafety,
    QuorumCert,
    Transfer,
)
from tests.sim.network import SIM_CHAIN, make_genesis, sim_key

GENESIS = make_genesis(4, balance=10**6)
TABLES = ("blocks", "safety", "commits", "tx_index", "snapshots")
CRASH_EXIT = 75  # the child's exit status when it dies by os._exit at a crash point

Write = tuple[str, Callable[[LedgerStore], None]]


@dataclass
class CrashReport:
    """What a crash matrix found. ``lost_acknowledged`` must be 0 and ``failures`` empty."""

    crashes: int = 0  # children that died mid-script (at a crash point or by a timed SIGKILL)
    points: list[str] = field(default_factory=list)  # distinct crash-point labels hit
    writes: int = 0  # writes in the script
    lost_acknowledged: int = 0  # acknowledged writes missing after a reopen, summed over crashes
    after_commit_kept: int = 0  # kills after COMMIT whose unacknowledged write was kept
    failures: list[str] = field(default_factory=list)  # any check that did not hold
    seconds: float = 0.0


def chain(blocks: int, txs_per_block: int = 3):
    """``blocks`` blocks of signed transfers with their results, certificates and the state
    snapshot after each: ``[(block, hash, cert, result, snapshot)]`` (index 0 = height 1)."""
    sm = StateMachine(GENESIS)
    prev = block_hash(genesis_block(wire.digest(GENESIS)).header)
    nonces = [0] * 4
    out = []
    for h in range(1, blocks + 1):
        txs = []
        for j in range(txs_per_block):
            k = (h + j) % 4
            to = sim_key(f"client-{(k + 1) % 4}").address
            tx = Transfer(to=to, amount=1 + j, nonce=nonces[k])
            txs.append(wire.seal(tx, sim_key(f"client-{k}"), SIM_CHAIN))
            nonces[k] += 1
        header = BlockHeader(
            height=h,
            view=h,
            parent=prev,
            justify=QuorumCert(view=h - 1, block_hash=prev, sigs=()),
            tx_root=merkle.root([merkle.tx_hash(t) for t in txs]),
            tx_count=len(txs),
            proposer=h % 4,
        )
        block = Block(header=header, txs=tuple(txs))
        bh = block_hash(header)
        result = sm.apply_block(h, bh, block.txs)
        cert = CommitCertificate(headers=(header,), qc=QuorumCert(view=h, block_hash=bh, sigs=()))
        out.append((block, bh, cert, result, sm.snapshot()))
        prev = bh
    return out


def safety(view: int, locked: bytes = ZERO_HASH) -> ConsensusSafety:
    return ConsensusSafety(
        cur_view=view,
        last_voted_view=view,
        locked_hash=locked,
        high_qc=QuorumCert(view=max(0, view - 1), block_hash=locked, sigs=()),
        timeout_view=0,
    )


def workload() -> list[Write]:
    """A replica's writes in order, every kind of write the shell makes: blocks with a safety
    record, a safety record alone, blocks alone, commits, snapshots (pruning, with one kept) and
    a snapshot-sync install that drops the commits below it."""
    c = chain(8)

    def persist(*items):
        return lambda s: s.persist(list(items))

    def commit(h):
        block, bh, cert, result, _ = c[h - 1]
        return lambda s: s.record_commit(block, bh, cert, result)

    def snapshot(h, keep=()):
        return lambda s: s.save_snapshot(h, c[h - 1][4], keep=keep)

    def install(h):
        block, bh, cert, result, snap = c[h - 1]
        return lambda s: s.install_snapshot(block, bh, cert, result.state_hash, snap)

    b = [None] + [x[0] for x in c]
    return [
        ("persist blocks+safety", persist(b[1], safety(1))),
        ("persist safety", persist(safety(2, c[0][1]))),
        ("persist blocks", persist(b[2], b[3])),
        ("record_commit", commit(1)),
        ("record_commit", commit(2)),
        ("save_snapshot", snapshot(2)),
        ("persist blocks+safety", persist(b[4], b[5], safety(5, c[3][1]))),
        ("record_commit", commit(3)),
        ("save_snapshot keep", snapshot(3, keep=(2,))),
        ("record_commit", commit(4)),
        ("install_snapshot", install(6)),
        ("persist blocks+safety", persist(b[7], safety(7, c[5][1]))),
        ("record_commit", commit(7)),
        ("save_snapshot prune", snapshot(7)),
    ]


def table_state(store: LedgerStore) -> str:
    """A digest of every row of every table (order-independent within a table)."""
    h = hashlib.sha256()
    for t in TABLES:
        rows = sorted(repr(r) for r in store.db.execute(f"SELECT * FROM {t}"))
        h.update(f"{t}:{len(rows)}:".encode() + "\n".join(rows).encode())
    return h.hexdigest()


def check_recovered(store: LedgerStore) -> None:
    """What ``LedgerReplica`` does at a restart, checked: the Recovered state decodes, its
    committed heights name stored blocks, and snapshot + replay reach the recorded state hash.

    Raises:
        AssertionError: on any inconsistency.
    """
    rec = store.load()
    stored = {block_hash(b.header) for b in rec.blocks}
    assert all(h in stored for h in rec.committed_hashes), "a commit names a missing block"
    tip = rec.first_height + len(rec.committed_hashes) - 1 if rec.committed_hashes else 0
    assert store.committed_height() == tip, "the committed heights have a gap"
    sm = StateMachine(GENESIS)
    snap = store.latest_snapshot()
    if snap is not None and snap[0] <= tip:
        sm.restore(snap[1])
    for h in range(sm.height + 1, tip + 1):
        found = store.committed_block(h)
        assert found is not None, f"commit {h} unreadable"
        block, _, state_hash = found
        assert sm.apply_block(h, block_hash(block.header), block.txs).state_hash == state_hash
    assert sm.height == tip, f"state rebuilt to {sm.height}, commits end at {tip}"


def reference(
    path: Path, writes: list[Write], writer: type[LedgerStore] = LedgerStore
) -> tuple[list[tuple[int, str]], list[str]]:
    """Run ``writes`` without crashing: ``(events, states)`` where ``events[i] = (write index,
    label)`` is the i-th crash point passed and ``states[k]`` the table digest after k writes."""
    events: list[tuple[int, str]] = []
    current = [0]
    store = writer(path, crash_point=lambda label: events.append((current[0], label)))
    states = [table_state(store)]
    for k, (_, write) in enumerate(writes):
        current[0] = k
        write(store)
        states.append(table_state(store))
    store.close()
    assert len(set(states)) == len(states), "every write of the script must change the store"
    return events, states


def _child(
    path: Path,
    writes: list[Write],
    ack_fd: int,
    crash_at: int | None,
    how: str,
    writer: type[LedgerStore],
) -> None:
    seen = 0

    def crash_point(label: str) -> None:
        nonlocal seen
        seen += 1
        if seen == crash_at:
            if how == "exit":
                os._exit(CRASH_EXIT)  # no cleanup: SQLite never closes, nothing is flushed
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # SIGKILL is delivered before this returns

    store = writer(path, crash_point=crash_point)
    for _, write in writes:
        write(store)
        os.write(ack_fd, b"a")  # acknowledged: the write returned


def run_child(
    path: Path,
    writes: list[Write],
    *,
    crash_at: int | None = None,
    how: str = "sigkill",
    kill_after_s: float | None = None,
    writer: type[LedgerStore] = LedgerStore,
) -> tuple[int, bool]:
    """Fork a child that runs ``writes`` on ``path`` with a ``writer`` store, dying at the
    ``crash_at``-th crash point (1-based) or SIGKILLed by this process after ``kill_after_s``.
    Returns ``(acknowledged writes, died)``; ``died`` is False when it ran the whole script."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller (pytest, the benchmark)
        code = 0
        try:
            os.close(r)
            _child(path, writes, w, crash_at, how, writer)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    acked = b""
    while chunk := os.read(r, 4096):
        acked += chunk
    os.close(r)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1:
        raise RuntimeError(f"the writer child failed (not a crash) on {path}")
    died = os.WIFSIGNALED(status) or (os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0)
    return len(acked), died


def _verify(
    path: Path, writes: list[Write], states: list[str], acked: int, committed: bool | None
) -> tuple[int, list[str], bool]:
    """Reopen ``path`` after a death with ``acked`` writes acknowledged; ``committed``: whether the
    write in flight had passed COMMIT (None: unknown, a timed kill). Returns ``(acknowledged
    writes lost, failures, in-flight write kept)``."""
    failures = []
    lost = 0
    try:  # recovery: the WAL is replayed and quick_check must pass
        # NOTE: the checks need no fsync (power_loss_safe=False): half the run time here.
        store = LedgerStore(path, power_loss_safe=False)
    except Exception as exc:
        return 0, [f"{path.name}: reopening failed: {type(exc).__name__}: {exc}"], False
    got = table_state(store)
    allowed = {False: [acked], True: [acked + 1], None: [acked, acked + 1]}[committed]
    matches = [k for k, s in enumerate(states) if s == got]
    kept = bool(matches) and matches[0] == acked + 1
    if not matches:
        failures.append(f"{path.name}: tables match no prefix of the script (partial write)")
    elif matches[0] not in allowed:
        if matches[0] < acked:
            lost = acked - matches[0]
        failures.append(
            f"{path.name}: state after {matches[0]} writes, {acked} acknowledged "
            f"(expected {allowed})"
        )
    try:
        check_recovered(store)
    except Exception as exc:
        failures.append(f"{path.name}: recovery inconsistent: {type(exc).__name__}: {exc}")
    resume = min(matches[0], acked) if matches else acked
    try:
        for _, write in writes[resume:]:
            write(store)
        if table_state(store) != states[-1]:
            failures.append(f"{path.name}: resumed writes end in another state")
    except Exception as exc:
        failures.append(f"{path.name}: a write after recovery failed: {exc}")
    store.close()
    return lost, failures, kept


def crash_matrix(
    directory: Path,
    *,
    timed_kills: int = 8,
    seed: int = 0,
    only: str = "",
    writer: type[LedgerStore] = LedgerStore,
) -> CrashReport:
    """Kill a writer at every crash point of :func:`workload` (alternating SIGKILL and
    ``os._exit``), then ``timed_kills`` times at random moments; check each reopened store.

    Args:
        directory: where the store files go (each is removed once checked).
        timed_kills: extra children SIGKILLed after a random delay within the script's run time.
        seed: of those delays.
        only: crash only at points whose label contains this (self-tests keep it short).
        writer: the store class the children write with (self-tests pass a broken one); the
            checks always reopen with :class:`LedgerStore`.
    """
    t0 = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    writes = workload()
    t_ref = time.perf_counter()
    events, states = reference(directory / "reference.sqlite", writes, writer)
    script_s = time.perf_counter() - t_ref
    hit = sorted({label for _, label in events if only in label})
    report = CrashReport(writes=len(writes), points=hit)
    runs: list[tuple[Path, int, bool | None]] = []
    for i, (k, label) in enumerate(events):
        if only not in label:
            continue
        path = directory / f"point-{i}.sqlite"
        how = "sigkill" if i % 2 == 0 else "exit"
        acked, died = run_child(path, writes, crash_at=i + 1, how=how, writer=writer)
        if not died:
            report.failures.append(f"crash point {i} ({label}) was not reached")
            _remove(path)
            continue
        if acked != k:
            report.failures.append(f"crash in write {k} ({label}) after {acked} acknowledgements")
        runs.append((path, acked, label.endswith(":committed")))
    rng = random.Random(seed)
    for j in range(timed_kills):
        path = directory / f"timed-{j}.sqlite"
        delay_s = rng.uniform(0.0, 1.2 * script_s)
        acked, died = run_child(path, writes, kill_after_s=delay_s, writer=writer)
        if died:
            runs.append((path, acked, None))
        else:
            _remove(path)  # it finished before the kill: nothing to check
    for path, acked, committed in runs:
        lost, failures, kept = _verify(path, writes, states, acked, committed)
        report.crashes += 1
        report.lost_acknowledged += lost
        report.after_commit_kept += int(kept)
        report.failures += failures
        _remove(path)
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


def _remove(path: Path) -> None:
    """The database and its ``-wal`` and ``-shm`` files."""
    for f in path.parent.glob(path.name + "*"):
        f.unlink()
