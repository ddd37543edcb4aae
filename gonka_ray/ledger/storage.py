"""Durable replica storage in SQLite: blocks, safety state, commits, receipts, snapshots.

One file per replica in WAL mode: when :meth:`LedgerStore.persist` returns, the blocks and the
consensus safety record are committed, so the shell may send the votes they cover (persist, then
send). NOTE: by default ``synchronous=NORMAL``: a committed write survives the replica *process*
being killed (the failure Ray restarts handle) but the last writes may be lost on power failure,
which could let a replica vote twice; ``fsync=True`` (``synchronous=FULL``) closes that at about
4 ms per write on this machine's disk. Blocks and commit certificates are append-only; the state
machine is snapshotted every ``snapshot_every`` blocks and rebuilt on restart from the latest
snapshot plus the committed blocks after it. A replica killed at any point reloads to its last
persisted state; blocks it committed but had not recorded are committed again when its peers'
QCs arrive (the consensus core walks from its committed tip).

The class is synchronous (sqlite3); async shells call it directly for small writes or through
``asyncio.to_thread``. No Ray here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack

from gonka_ray import wire
from gonka_ray.exceptions import StorageError
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
    """SQLite storage of one replica. ``path`` is the database file (created if missing)."""

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self.db.executescript(_LEDGER_STORE_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open ledger store {self.path}: {exc}") from None

    def close(self) -> None:
        self.db.close()

    # --- writes ----------------------------------------------------------------------------

    def persist(self, items: list) -> None:
        """Durably write a Ready's ``to_persist`` (blocks and safety records) in one transaction."""
        if not items:
            return
        blocks = [b for b in items if isinstance(b, Block)]
        safety = [s for s in items if isinstance(s, ConsensusSafety)]
        from gonka_ray.ledger.quorum import block_hash

        with self._tx():
            self.db.executemany(
                "INSERT OR IGNORE INTO blocks VALUES (?, ?, ?)",
                [(block_hash(b.header), b.header.height, wire.encode_body(b)) for b in blocks],
            )
            if safety:
                self.db.execute(
                    "INSERT OR REPLACE INTO safety VALUES (1, ?)", (wire.encode(safety[-1]),)
                )

    def record_commit(
        self, block: Block, block_hash: bytes, cert: CommitCertificate, result: BlockResult
    ) -> None:
        """Record a committed, applied block: certificate, state hash and per-tx receipts."""
        receipts = [[r.tx_id, r.tx_hash, r.ok, r.reason] for r in result.receipts]
        with self._tx():
            self.db.execute(
                "INSERT OR REPLACE INTO commits VALUES (?, ?, ?, ?, ?)",
                (
                    result.height,
                    block_hash,
                    result.state_hash,
                    wire.encode(cert),
                    msgpack.packb(receipts, use_bin_type=True),
                ),
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO tx_index VALUES (?, ?, ?, ?, ?)",
                [
                    (r.tx_hash, result.height, i, int(r.ok), r.reason)
                    for i, r in enumerate(result.receipts)
                ],
            )

    def save_snapshot(self, height: int, data: bytes, *, keep: tuple[int, ...] = ()) -> None:
        """Store the snapshot at ``height``; older ones go, except those at ``keep``."""
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?)", (height, data))
            marks = ",".join("?" * len(keep)) or "NULL"
            self.db.execute(
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
        with self._tx():
            self.db.execute(
                "INSERT OR IGNORE INTO blocks VALUES (?, ?, ?)",
                (block_hash, h, wire.encode_body(block)),
            )
            self.db.execute("DELETE FROM commits WHERE height <= ?", (h,))
            self.db.execute(
                "INSERT INTO commits VALUES (?, ?, ?, ?, ?)",
                (h, block_hash, state_hash, wire.encode(cert), msgpack.packb([])),
            )
            self.db.execute("DELETE FROM snapshots")
            self.db.execute("INSERT INTO snapshots VALUES (?, ?)", (h, data))

    # --- reads -----------------------------------------------------------------------------

    def load(self) -> Recovered:
        """Everything the consensus core needs after a restart."""
        blocks = [
            wire.decode_body(Block, bytes(row[0]))
            for row in self.db.execute("SELECT data FROM blocks ORDER BY height")
        ]
        rows = self.db.execute("SELECT height, hash FROM commits ORDER BY height").fetchall()
        first = rows[0][0] if rows else 1
        hashes = []
        for i, (height, h) in enumerate(rows):
            if height != first + i:
                break  # a gap: only the run from the first commit is usable
            hashes.append(bytes(h))
        row = self.db.execute("SELECT data FROM safety WHERE id = 1").fetchone()
        safety = wire.decode(bytes(row[0]), ConsensusSafety) if row else None
        return Recovered(blocks=blocks, committed_hashes=hashes, safety=safety, first_height=first)

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        row = self.db.execute(
            "SELECT height, data FROM snapshots ORDER BY height DESC LIMIT 1"
        ).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate, bytes] | None:
        """(block, certificate, state hash) committed at ``height``."""
        row = self.db.execute(
            "SELECT c.certificate, c.state_hash, b.data FROM commits c "
            "JOIN blocks b ON b.hash = c.hash WHERE c.height = ?",
            (height,),
        ).fetchone()
        if row is None:
            return None
        cert = wire.decode(bytes(row[0]), CommitCertificate)
        return wire.decode_body(Block, bytes(row[2])), cert, bytes(row[1])

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

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"ledger store write failed: {exc}") from None
