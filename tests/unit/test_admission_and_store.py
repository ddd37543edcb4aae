from __future__ import annotations

import hashlib
import sqlite3

import pytest

from gonka_ray.actors.payload_store import PayloadStore
from gonka_ray.exceptions import ExpiredRequest, ReplayedRequest
from gonka_ray.protocol.admission import ReplayGuard, check_timestamp

NOW = 1_700_000_000_000


def test_timestamp_window() -> None:
    check_timestamp(NOW - 59_000, NOW)
    check_timestamp(NOW + 29_000, NOW)
    with pytest.raises(ExpiredRequest, match="old"):
        check_timestamp(NOW - 61_000, NOW)
    with pytest.raises(ExpiredRequest, match="ahead"):
        check_timestamp(NOW + 31_000, NOW)


def test_replay_guard_rejects_and_evicts() -> None:
    guard = ReplayGuard(max_age_s=60)
    guard.admit(b"a", NOW, NOW)
    with pytest.raises(ReplayedRequest):
        guard.admit(b"a", NOW, NOW + 1000)
    for i in range(100):
        guard.admit(b"x%d" % i, NOW + i, NOW + i)
    assert len(guard) == 101
    guard.admit(b"late", NOW + 200_000, NOW + 200_000)  # everything before is out of window
    assert len(guard) == 1
    guard.forget(b"late")
    guard.admit(b"late", NOW + 200_000, NOW + 200_000)


def test_payload_store_is_content_addressed_and_durable(tmp_path) -> None:
    path = tmp_path / "p.sqlite"
    store = PayloadStore(path)
    h = store.put(b"payload")
    assert h == hashlib.sha256(b"payload").digest()
    assert store.put(b"payload") == h and len(store) == 1
    store.close()
    reopened = PayloadStore(path)
    assert reopened.get(h) == b"payload"
    assert reopened.get(b"\x00" * 32) is None
    reopened.close()
    db = sqlite3.connect(path)  # corrupt the row behind the store's back
    db.execute("UPDATE payloads SET body = ?", (b"tampered",))
    db.commit()
    db.close()
    assert PayloadStore(path).get(h) is None
