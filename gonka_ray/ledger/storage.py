"""Durable replica storage in SQLite: blocks, safety state, commits, receipts, snapshots.

One file per replica in WAL mode: when :meth:`LedgerStore.persist` returns, the blocks and the
consensus safety record are committed, so the shell may send the votes they cover (persist, then
send). Every write is one ``BEGIN IMMEDIATE … COMMIT`` transaction: after a crash either all of it
or none of it is there.

Durability, by default (``power_loss_safe=True``): ``synchronous=FULL``, so SQLite fsyncs the
write-ahead log at every commit and a write that returned survives power loss, not only the
replica *process* being killed. That rests on SQLite's WAL protocol and on the disk honouring
fsync (no lying write cache); the tests kill processes at every point of every write
(tests/unit/test_ledger_store_crash.py) but cannot cut power. ``power_loss_safe=False``
(``synchronous=NORMAL``: the WAL is synced only at checkpoints) keeps process-crash safety and
gives up power-loss safety, where a replica could forget a vote it sent and vote twice.
One write skips the fsync even then: :meth:`LedgerStore.record_commit` commits at NORMAL. What it
writes (certificate, state hash, receipts) is derived from blocks and QCs that an earlier,
fsync'd ``persist`` holds, and the WAL is sequential, so a power cut can only lose the newest
commit records, which the replica commits again from its peers' QCs (as after any restart);
the next fsync'd write makes them durable too. Receipts of those blocks are briefly unknown
after such a cut, never different. That fsync was about a fifth of an idle block's store CPU. FULL
costs the fsync: at the median about 1-2 ms more per ``persist`` and 3-5 ms more per block of 100
transactions (``persist`` + ``record_commit``) on this shared VM's disk under load
(benchmarks/ledger.py, ``durability``; about 0.8 ms per commit when the disk is quiet).

Corruption: at open, ``PRAGMA quick_check`` reads every page (about 60 ms for a 76 MB store here,
a fifth of what loading its blocks takes); a file that is not a database, or damage found then or
by the reads recovery makes (a row that does not decode), raises
:class:`~gonka_ray.exceptions.CorruptStore` naming the file; the replica shell refuses to start on
it or moves it aside (:func:`move_aside`) and resyncs.

Blocks and commit certificates are append-only; the state machine is snapshotted every
``snapshot_every`` blocks and rebuilt on restart from the latest snapshot plus the committed
blocks after it. A replica killed at any point reloads to its last persisted state; blocks it
committed but had not recorded are committed again when its peers' QCs arrive (the consensus core
walks from its committed tip).

The class is synchronous (sqlite3); async shells call it directly for small writes or through
``asyncio.to_thread``. No Ray here.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import msgpack

from gonka_ray import wire
from gonka_ray.exceptions import CorruptStore, StorageError, WireError
from gonka_ray.ledger import quorum
from gonka_ray.ledger.ready import Recovered
from gonka_ray.ledger.receipts import make_receipt
from gonka_ray.ledger.state import BlockResult
from gonka_ray.wire import Block, CommitCertificate, ConsensusSafety, TxReceipt

_LEDGER_STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (hash BLOB PRIMARY KEY, height INTEGER, data BLOB);
CREATE TABLE IF NOT EXISTS safety (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB);
CREATE TABLE IF NOT EXISTS commits (
    height INTEGER PRIMARY KEY, hash BLOB, state_hash BLOB, certificate BLOB, receipts BLOB);
CREATE TABLE IF NOT EXISTS tx_index (
    tx_hash BLOB PRIMARY KEY, height INTEGER, idx INTEGER, ok INTEGER, reason TEXT);
CREATE TABLE IF NOT EXISTS snapshots (height INTEGER PRIMARY KEY, data BLOB);
"""


class LedgerStore:
    """SQLite storage of one replica. ``path`` is the database file (created if missing).

    Args:
        path: the database file.
        power_loss_safe: ``synchronous=FULL`` (the default): every commit fsyncs the write-ahead
            log, so an acknowledged write survives power loss. ``False`` gives that up for
            ``synchronous=NORMAL`` (process crashes only; for tests and benchmarks that measure
            something else).
        quick_check: run ``PRAGMA quick_check`` at open, so a damaged page anywhere in the file
            is found before the replica starts on it (see the module docstring for its cost).
        crash_point: fault injection for tests only: called with a label at every point of a
            write transaction (``"<write>:begun"``, ``"<write>:statement-<i>"`` after each
            statement, ``"<write>:before-commit"``, ``"<write>:committed"`` before returning);
            a test kills the process from it. None (production) does nothing.

    Raises:
        CorruptStore: the file is not a readable SQLite database, or ``quick_check`` found damage.
        StorageError: the file cannot be opened for another reason (permissions, a full disk).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        power_loss_safe: bool = True,
        quick_check: bool = True,
        crash_point: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.power_loss_safe = power_loss_safe
        self._crash_point = crash_point
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open ledger store {self.path}: {exc}") from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if power_loss_safe else 'NORMAL'}")
            if quick_check:
                found = [r[0] for r in self.db.execute("PRAGMA quick_check(5)")]
                if found != ["ok"]:
                    raise CorruptStore(str(self.path), "quick_check: " + "; ".join(found))
            self.db.executescript(_LEDGER_STORE_SCHEMA)
        except CorruptStore:
            self.db.close()
            raise
        except sqlite3.Error as exc:
            self.db.close()
            raise _storage_error(self.path, "opening it", exc) from None

    def close(self) -> None:
        self.db.close()

    # --- writes ----------------------------------------------------------------------------

    def persist(self, items: list) -> None:
        """Durably write a Ready's ``to_persist`` (blocks and safety records) in one transaction."""
        if not items:
            return
        blocks = [b for b in items if isinstance(b, Block)]
        safety = [s for s in items if isinstance(s, ConsensusSafety)]
        with self._tx("persist") as tx:
            tx.executemany(
                "INSERT OR IGNORE INTO blocks VALUES (?, ?, ?)",
                [
                    (quorum.block_hash(b.header), b.header.height, wire.encode_body(b))
                    for b in blocks
                ],
            )
            if safety:
                tx.execute(
                    "INSERT OR REPLACE INTO safety VALUES (1, ?)", (wire.encode(safety[-1]),)
                )

    def record_commit(
        self, block: Block, block_hash: bytes, cert: CommitCertificate, result: BlockResult
    ) -> None:
        """Record a committed, applied block: certificate, state hash and per-tx receipts
        (without an fsync of its own: see the module docstring)."""
        receipts = [[r.tx_id, r.tx_hash, r.ok, r.reason] for r in result.receipts]
        with self._tx("record_commit", fsync=False) as tx:
            tx.execute(
                "INSERT OR REPLACE INTO commits VALUES (?, ?, ?, ?, ?)",
                (
                    result.height,
                    block_hash,
                    result.state_hash,
                    wire.encode(cert),
                    msgpack.packb(receipts, use_bin_type=True),
                ),
            )
            # NOTE: in key order (a duplicate's first inclusion still first): random keys
            # scattered over the index cost SQLite about a fifth more than sorted ones
            tx.executemany(
                "INSERT OR IGNORE INTO tx_index VALUES (?, ?, ?, ?, ?)",
                sorted(
                    (r.tx_hash, result.height, i, int(r.ok), r.reason)
                    for i, r in enumerate(result.receipts)
                ),
            )

    def save_snapshot(self, height: int, data: bytes, *, keep: tuple[int, ...] = ()) -> None:
        """Store the snapshot at ``height``; older ones go, except those at ``keep``."""
        with self._tx("save_snapshot") as tx:
            tx.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?)", (height, data))
            marks = ",".join("?" * len(keep)) or "NULL"
            tx.execute(
                f"DELETE FROM snapshots WHERE height < ? AND height NOT IN ({marks})",
                (height, *keep),
            )

    def snapshot_at(self, height: int) -> bytes | None:
        row = self.db.execute("SELECT data FROM snapshots WHERE height = ?", (height,)).fetchone()
        return bytes(row[0]) if row else None

    def install_snapshot(
        self,
        block: Block,
        block_hash: bytes,
        cert: CommitCertificate,
        state_hash: bytes,
        data: bytes,
    ) -> None:
        """Make a verified snapshot at ``block``'s height the root of this store (snapshot
        sync): the commits below it are dropped (their blocks and receipts stay)."""
        h = block.header.height
        with self._tx("install_snapshot") as tx:
            tx.execute(
                "INSERT OR IGNORE INTO blocks VALUES (?, ?, ?)",
                (block_hash, h, wire.encode_body(block)),
            )
            tx.execute("DELETE FROM commits WHERE height <= ?", (h,))
            tx.execute(
                "INSERT INTO commits VALUES (?, ?, ?, ?, ?)",
                (h, block_hash, state_hash, wire.encode(cert), msgpack.packb([])),
            )
            tx.execute("DELETE FROM snapshots")
            tx.execute("INSERT INTO snapshots VALUES (?, ?)", (h, data))

    # --- reads -----------------------------------------------------------------------------
    # NOTE: the reads recovery makes (load, latest_snapshot, committed_block) turn damage they
    # meet (SQLite corruption codes, rows that do not decode) into CorruptStore naming the file.

    def load(self, blocks_from: int = 0) -> Recovered:
        """Everything the consensus core needs after a restart: the blocks at heights
        ``blocks_from`` and up (the core keeps no older ones), every commit's hash, the safety
        record.

        Raises:
            CorruptStore: a row cannot be read or decoded.
        """
        with self._reading("blocks"):
            rows = self.db.execute(
                "SELECT hash, data FROM blocks WHERE height >= ? ORDER BY height", (blocks_from,)
            )
            blocks = [self._stored_block(key, data) for key, data in rows]
        with self._reading("commits"):
            rows = self.db.execute("SELECT height, hash FROM commits ORDER BY height").fetchall()
        first = rows[0][0] if rows else 1
        hashes = []
        for i, (height, h) in enumerate(rows):
            if height != first + i:
                break  # a gap: only the run from the first commit is usable
            hashes.append(bytes(h))
        with self._reading("the safety record"):
            row = self.db.execute("SELECT data FROM safety WHERE id = 1").fetchone()
            safety = wire.decode(bytes(row[0]), ConsensusSafety) if row else None
        return Recovered(
            blocks=blocks,
            committed_hashes=hashes,
            safety=safety,
            first_height=first,
            blocks_from=blocks_from,
        )

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        with self._reading("snapshots"):
            row = self.db.execute(
                "SELECT height, data FROM snapshots ORDER BY height DESC LIMIT 1"
            ).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate, bytes] | None:
        """(block, certificate, state hash) committed at ``height``.

        Raises:
            CorruptStore: the rows cannot be read or decoded.
        """
        with self._reading(f"the commit at height {height}"):
            row = self.db.execute(
                "SELECT c.certificate, c.state_hash, b.data FROM commits c "
                "JOIN blocks b ON b.hash = c.hash WHERE c.height = ?",
                (height,),
            ).fetchone()
            if row is None:
                return None
            cert = wire.decode(bytes(row[0]), CommitCertificate)
            return wire.decode_body(Block, bytes(row[2])), cert, bytes(row[1])

    def block(self, block_hash: bytes) -> Block | None:
        """The stored block ``block_hash`` (committed or not), or None.

        Raises:
            CorruptStore: its row does not decode or does not hash to its key.
        """
        with self._reading("a block"):
            row = self.db.execute(
                "SELECT data FROM blocks WHERE hash = ?", (block_hash,)
            ).fetchone()
            return None if row is None else self._stored_block(block_hash, row[0])

    def _stored_block(self, key: bytes, data: bytes) -> Block:
        """A block row decoded, refused (CorruptStore) unless it hashes to its key."""
        block = wire.decode_body(Block, bytes(data))
        if quorum.block_hash(block.header) != key:
            raise CorruptStore(
                str(self.path),
                f"the block stored at height {block.header.height} does not hash to its key",
            )
        return block

    def committed_height(self) -> int:
        row = self.db.execute("SELECT MAX(height) FROM commits").fetchone()
        return row[0] or 0

    def receipt(self, tx_hash: bytes) -> TxReceipt | None:
        """The receipt of the first committed inclusion of ``tx_hash``, or None."""
        row = self.db.execute(
            "SELECT height, idx, ok, reason FROM tx_index WHERE tx_hash = ?", (tx_hash,)
        ).fetchone()
        if row is None:
            return None
        found = self.committed_block(row[0])
        if found is None:
            return None
        block, cert, _ = found
        return make_receipt(block, row[1], cert, ok=bool(row[2]), reason=row[3])

    # --- helpers ---------------------------------------------------------------------------

    def _tx(self, write: str, *, fsync: bool = True) -> _Transaction:
        return _Transaction(self, write, fsync=fsync or not self.power_loss_safe)

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        try:
            yield
        except WireError as exc:
            raise CorruptStore(
                str(self.path), f"{what}: a stored row does not decode ({exc})"
            ) from None
        except sqlite3.Error as exc:
            raise _storage_error(self.path, f"reading {what}", exc) from None


class _Transaction:
    """One ``BEGIN IMMEDIATE … COMMIT`` write; calls the store's crash point between steps."""

    def __init__(self, store: LedgerStore, write: str, *, fsync: bool = True) -> None:
        self.db = store.db
        self.write = write
        self.crash_point = store._crash_point
        self.statements = 0
        self.fsync = fsync  # False on a FULL store: this one commit at NORMAL (see record_commit)

    def execute(self, sql: str, params: Sequence = ()) -> None:
        self.db.execute(sql, params)
        self._step()

    def executemany(self, sql: str, rows: Iterable[Sequence]) -> None:
        self.db.executemany(sql, rows)
        self._step()

    def _step(self) -> None:
        self.statements += 1
        self._at(f"statement-{self.statements}")

    def _at(self, point: str) -> None:
        if self.crash_point is not None:
            self.crash_point(f"{self.write}:{point}")

    def __enter__(self) -> _Transaction:
        if not self.fsync:
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("BEGIN IMMEDIATE")
        self._at("begun")
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self._at("before-commit")
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"ledger store write failed: {exc}") from None
        finally:
            if not self.fsync:
                self.db.execute("PRAGMA synchronous=FULL")
        if exc_type is None:
            self._at("committed")


def _storage_error(path: Path, doing: str, exc: sqlite3.Error) -> StorageError:
    """CorruptStore when SQLite reports damage (``SQLITE_CORRUPT*``, ``SQLITE_NOTADB``),
    else a plain StorageError (permissions, a full disk, a lock)."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB":
        return CorruptStore(str(path), f"SQLite reports '{exc!s}' ({name}) while {doing}")
    return StorageError(f"ledger store {path}: {doing} failed: {exc}")


def move_aside(path: str | Path, *, stamp: str | None = None) -> Path:
    """Rename a (corrupt) database and its ``-wal``/``-shm`` files to ``<name>.corrupt-<stamp>``
    (``stamp`` defaults to the UTC time, ``YYYYmmddTHHMMSSZ``); returns the new database path.
    The renamed WAL keeps its database's name plus ``-wal``, so SQLite still pairs them."""
    path = Path(path)
    stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}.{n}")
        n += 1
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    if path.exists():
        path.rename(target)
    return target
