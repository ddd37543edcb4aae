"""Admission of a client's signed request at a transport agent (DESIGN §2.2), pure.

A request is admitted when its signature verifies (done by ``wire.open_envelope`` before this),
its timestamp lies in ``[now − max_age, now + max_skew_ahead]``, its id has not been seen within
that window, and the client can cover the escrow. :class:`ReplayGuard` remembers ids only as long
as their timestamps could still be accepted, so memory is bounded by traffic × window.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from gonka_ray.constants import REQUEST_MAX_AGE_S, REQUEST_MAX_SKEW_AHEAD_S
from gonka_ray.exceptions import ExpiredRequest, ReplayedRequest


def check_timestamp(
    timestamp_ms: int,
    now_ms: int,
    *,
    max_age_s: float = REQUEST_MAX_AGE_S,
    max_ahead_s: float = REQUEST_MAX_SKEW_AHEAD_S,
) -> None:
    """Raise :class:`ExpiredRequest` when ``timestamp_ms`` is outside the accepted window."""
    if timestamp_ms < now_ms - max_age_s * 1000:
        raise ExpiredRequest(
            f"request is {(now_ms - timestamp_ms) / 1000:.1f} s old (max {max_age_s:g} s)",
            field="timestamp_ms",
        )
    if timestamp_ms > now_ms + max_ahead_s * 1000:
        raise ExpiredRequest(
            f"request is dated {(timestamp_ms - now_ms) / 1000:.1f} s ahead "
            f"(max {max_ahead_s:g} s)",
            field="timestamp_ms",
        )


class ReplayGuard:
    """Remembers admitted request ids until their timestamps fall out of the window."""

    def __init__(self, *, max_age_s: float = REQUEST_MAX_AGE_S) -> None:
        self._max_age_ms = int(max_age_s * 1000)
        self._seen: set[bytes] = set()
        self._expiry: list[tuple[int, bytes]] = []  # min-heap of (timestamp_ms, id)

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, request_id: bytes, timestamp_ms: int, now_ms: int) -> None:
        """Record ``request_id``; raise :class:`ReplayedRequest` if it was seen."""
        self._evict(now_ms)
        if request_id in self._seen:
            raise ReplayedRequest("this signed request was already submitted", field="signature")
        self._seen.add(request_id)
        heapq.heappush(self._expiry, (timestamp_ms, request_id))

    def forget(self, request_id: bytes) -> None:
        """Undo :meth:`admit` for a request rejected before anything was escrowed."""
        self._seen.discard(request_id)

    def _evict(self, now_ms: int) -> None:
        cutoff = now_ms - self._max_age_ms
        while self._expiry and self._expiry[0][0] < cutoff:
            _, rid = heapq.heappop(self._expiry)
            self._seen.discard(rid)


class RateLimiter:
    """Token buckets per key (a client's address): ``rate`` per second, bursts of ``burst``.

    Used for the public read-only lookups (an inference's record, the explorer), which cost a
    ledger read each. At most ``max_keys`` buckets are kept; the fullest (idlest) are dropped
    first, which only ever lets a client through sooner. ``clock`` is injected (seconds).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_keys = float(rate), float(burst), max_keys
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def wait_s(self, key: str) -> float:
        """Take one token for ``key``: 0.0 when allowed, else the seconds until one is free."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_keys:
            # drop the idlest tenth at once, so a flood of new keys sorts once per tenth
            idlest = sorted(self._buckets, key=lambda k: self._buckets[k][1])
            for k in idlest[: len(self._buckets) - self.max_keys * 9 // 10]:
                del self._buckets[k]
        return 0.0
