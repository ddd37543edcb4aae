"""Content-addressed payload store of an executor (SQLite).

Each payload (prompt, output tokens and artifact, as compact bytes) is stored under
``sha256(bytes)``; ``put`` is idempotent and ``get`` checks the hash on the way out, so a corrupted
row is reported as missing rather than served. Writes commit before ``put`` returns, so a payload
whose hash went into a ``FinishInference`` survives a crash of the executor.

Beside the payloads, the executor's *private ranks* of each inference (its top-k + more per
output position, kept from generation and never served): what it audits verification receipts
against (:mod:`gonka_ray.protocol.receipts`).

And the executor's *pending Finishes*: a ``FinishInference`` is journalled here before the stream's
last token leaves the executor and dropped once the ledger decided it, so an executor killed
between the two resubmits it when it restarts (an answered inference is never left to expire).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

from gonka_ray.exceptions import StorageError

_PAYLOADS_SCHEMA = """
CREATE TABLE IF NOT EXISTS payloads (
    hash BLOB PRIMARY KEY,
    body BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS private_ranks (
    inference_id BLOB PRIMARY KEY,
    body BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending_finishes (
    inference_id BLOB PRIMARY KEY,
    tx BLOB NOT NULL
) WITHOUT ROWID;
"""


class PayloadStore:
    """A small SQLite key-value store keyed by content hash. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_PAYLOADS_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open payload store {self.path}: {exc}") from None

    def put(self, body: bytes, *, now_ms: int = 0) -> bytes:
        """Store ``body``; returns its sha256. Idempotent."""
        digest = hashlib.sha256(body).digest()
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO payloads (hash, body, created_ms) VALUES (?, ?, ?)",
                (digest, bytes(body), now_ms),
            )
        return digest

    def get(self, digest: bytes) -> bytes | None:
        """The payload with this hash, or None (missing or corrupt)."""
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM payloads WHERE hash = ?", (bytes(digest),)
            ).fetchone()
        if row is None or hashlib.sha256(row[0]).digest() != digest:
            return None
        return bytes(row[0])

    def get_ranks(self, inference_id: bytes) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM private_ranks WHERE inference_id = ?", (bytes(inference_id),)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def record(
        self, inference_id: bytes, payload: bytes, ranks: bytes, finish_tx: bytes, *, now_ms=0
    ) -> bytes:
        """Store an inference's payload, its private ranks and its sealed Finish (pending) in one
        transaction; returns the payload's sha256. Idempotent."""
        digest = hashlib.sha256(payload).digest()
        iid = bytes(inference_id)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO payloads (hash, body, created_ms) VALUES (?, ?, ?)",
                    (digest, bytes(payload), now_ms),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO private_ranks (inference_id, body) VALUES (?, ?)",
                    (iid, bytes(ranks)),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO pending_finishes (inference_id, tx) VALUES (?, ?)",
                    (iid, bytes(finish_tx)),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return digest

    def pending_finishes(self) -> list[tuple[bytes, bytes]]:
        """``(inference_id, sealed Finish)`` of every Finish not yet known to be decided."""
        with self._lock:
            rows = self._db.execute("SELECT inference_id, tx FROM pending_finishes").fetchall()
        return [(bytes(i), bytes(t)) for i, t in rows]

    def pending_finish(self, inference_id: bytes) -> bytes | None:
        """The sealed Finish journalled for this inference, or None once it was decided."""
        with self._lock:
            row = self._db.execute(
                "SELECT tx FROM pending_finishes WHERE inference_id = ?", (bytes(inference_id),)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def replace_pending_finish(self, inference_id: bytes, finish_tx: bytes) -> None:
        """Journal a resealed Finish (a fresh nonce) in place of the one pending, if any."""
        with self._lock:
            self._db.execute(
                "UPDATE pending_finishes SET tx = ? WHERE inference_id = ?",
                (bytes(finish_tx), bytes(inference_id)),
            )

    def finish_settled(self, inference_id: bytes) -> None:
        """The ledger decided this inference's Finish (committed, or refused for good)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM pending_finishes WHERE inference_id = ?", (bytes(inference_id),)
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM payloads").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
