"""The ledger store is durable by default, survives a writer killed at any point of a write, and
refuses a damaged file with an error that says which file, what is wrong and what to do.

Crash injection (``tests/store_crash.py``): a forked writer runs a scripted replica history
through the real store API and dies at every crash point the store exposes (after BEGIN, after
each statement, just before COMMIT, just after COMMIT before returning) of every kind of write
(persist with blocks and/or a safety record, record_commit, save_snapshot with pruning,
install_snapshot), plus at random moments. This proves process-crash safety at every point; it
does not cut power: power-loss safety rests on SQLite WAL with ``synchronous=FULL`` (checked here
to be the default), which fsyncs the WAL at every commit before the write returns (except the
commit record, which is re-derived after a power cut: see the storage module).
"""

from __future__ import annotations

import sqlite3

import pytest

from gonka_ray.exceptions import CorruptStore, StorageError
from gonka_ray.ledger import storage
from gonka_ray.ledger.storage import LedgerStore, move_aside
from tests.store_crash import crash_matrix, workload

WRITE_KINDS = ("persist", "record_commit", "save_snapshot", "install_snapshot")
STEPS = ("begun", "statement-1", "statement-2", "before-commit", "committed")


def test_the_store_fsyncs_every_commit_by_default(tmp_path) -> None:
    store = LedgerStore(tmp_path / "s.sqlite")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()
    fast = LedgerStore(tmp_path / "t.sqlite", power_loss_safe=False)
    assert fast.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    fast.close()


def test_only_the_commit_record_skips_the_fsync_and_the_store_stays_full_after_it(tmp_path) -> None:
    # record_commit is re-derived from the fsync'd blocks and QCs after a power cut (storage
    # docstring), so it alone commits at NORMAL; every other write stays FULL.
    from tests.store_crash import chain, safety

    seen: dict[str, int] = {}
    store = LedgerStore(tmp_path / "s.sqlite")

    def at(label: str) -> None:
        if label.endswith(":begun"):
            seen[label] = store.db.execute("PRAGMA synchronous").fetchone()[0]

    store._crash_point = at
    block, bh, cert, result, _ = chain(1)[0]
    store.persist([block, safety(1)])
    store.record_commit(block, bh, cert, result)
    store.save_snapshot(1, b"snap")
    assert seen == {"persist:begun": 2, "record_commit:begun": 1, "save_snapshot:begun": 2}
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    assert store.committed_height() == 1
    store.close()
    fast = LedgerStore(tmp_path / "t.sqlite", power_loss_safe=False)
    fast.record_commit(block, bh, cert, result)
    assert fast.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # stays NORMAL
    fast.close()


def test_a_writer_killed_at_any_point_of_any_write_loses_no_acknowledged_write(tmp_path) -> None:
    report = crash_matrix(tmp_path, timed_kills=8)
    assert report.failures == []
    assert report.lost_acknowledged == 0
    for kind in WRITE_KINDS:
        for step in STEPS:
            assert f"{kind}:{step}" in report.points
    assert report.crashes >= 60  # every point of every write of the script, plus timed kills
    assert report.after_commit_kept > 0  # a kill after COMMIT keeps the unacknowledged write


class _StatementAtATime(LedgerStore):
    """A broken store: each statement of a write commits on its own."""

    def _tx(self, write: str, *, fsync: bool = True) -> storage._Transaction:
        tx = super()._tx(write, fsync=fsync)
        step = tx._step

        def commit_then_step() -> None:
            tx.db.execute("COMMIT")
            tx.db.execute("BEGIN IMMEDIATE")
            step()

        tx._step = commit_then_step
        return tx


def test_the_crash_matrix_catches_a_write_that_is_not_atomic(tmp_path) -> None:
    report = crash_matrix(tmp_path, timed_kills=0, only="statement-1", writer=_StatementAtATime)
    assert any("partial write" in f or "acknowledged" in f for f in report.failures)


# --- corrupt files ----------------------------------------------------------------------------


def _filled_store(path) -> None:
    store = LedgerStore(path)
    for _, write in workload()[:10]:
        write(store)
    store.close()  # checkpoints the WAL into the file


def test_an_overwritten_header_is_refused_naming_the_file_and_the_fix(tmp_path) -> None:
    path = tmp_path / "replica-0.sqlite"
    _filled_store(path)
    with open(path, "r+b") as f:
        f.write(b"\xff" * 100)
    with pytest.raises(CorruptStore) as err:
        LedgerStore(path)
    msg = str(err.value)
    assert str(path) in msg and "not a database" in msg
    assert "resync" in msg and "move the file" in msg
    assert err.value.path == str(path) and not err.value.recoverable


def test_every_overwritten_page_is_found_at_open(tmp_path) -> None:
    path = tmp_path / "s.sqlite"
    _filled_store(path)
    data = path.read_bytes()
    page = 4096
    assert len(data) // page >= 5
    for n in range(1, len(data) // page):
        damaged = tmp_path / f"page-{n}.sqlite"
        raw = bytearray(data)
        raw[n * page : (n + 1) * page] = bytes((n * 37 + i) % 251 for i in range(page))
        damaged.write_bytes(bytes(raw))
        with pytest.raises(CorruptStore, match=r"quick_check|SQLITE_CORRUPT"):
            LedgerStore(damaged).load()


def test_an_undecodable_block_is_refused_at_load(tmp_path) -> None:
    path = tmp_path / "s.sqlite"
    _filled_store(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE blocks SET data = ? WHERE height = 2", (b"\x93\x01\x02",))
    db.commit()
    db.close()
    store = LedgerStore(path)  # the file itself is sound
    with pytest.raises(CorruptStore, match="blocks: a stored row does not decode") as err:
        store.load()
    assert str(path) in str(err.value)
    store.close()


def test_a_block_that_does_not_hash_to_its_key_is_refused(tmp_path) -> None:
    path = tmp_path / "s.sqlite"
    _filled_store(path)
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE blocks SET data = (SELECT data FROM blocks WHERE height = 1) WHERE height = 2"
    )
    db.commit()
    db.close()
    store = LedgerStore(path)
    with pytest.raises(CorruptStore, match="does not hash to its key"):
        store.load()
    store.close()


def test_a_file_that_cannot_be_opened_is_a_storage_error_not_corruption(tmp_path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(StorageError) as err:
        LedgerStore(tmp_path / "dir.sqlite")
    assert not isinstance(err.value, CorruptStore)


def test_move_aside_renames_the_file_and_its_wal(tmp_path) -> None:
    path = tmp_path / "replica-0.sqlite"
    _filled_store(path)
    for suffix in ("-wal", "-shm"):  # as a killed replica leaves them
        path.with_name(path.name + suffix).write_bytes(b"x")
    moved = move_aside(path, stamp="T1")
    assert moved.name == "replica-0.sqlite.corrupt-T1" and moved.exists()
    assert moved.with_name(moved.name + "-wal").read_bytes() == b"x"
    assert moved.with_name(moved.name + "-shm").exists()
    assert not any(tmp_path.glob("replica-0.sqlite-*")) and not path.exists()
    path.write_bytes(b"")
    assert move_aside(path, stamp="T1").name == "replica-0.sqlite.corrupt-T1.1"
    fresh = LedgerStore(path)
    assert fresh.load().blocks == []
    fresh.close()
