"""The bounds of the TCP peer transport, per peer and per server, and the token bucket.

:class:`PeerLimits` gathers them with their defaults from :mod:`gonka_ray.constants` (units in
the names; the NOTE there sizes them against an honest replica's traffic); tests and
benchmarks pass their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from gonka_ray.constants import (
    PEER_BAN_S,
    PEER_BATCH_MAX_BYTES,
    PEER_BATCH_MAX_MSGS,
    PEER_CALL_IDLE_TIMEOUT_S,
    PEER_CHECK_INTERVAL_S,
    PEER_CONNECT_TIMEOUT_S,
    PEER_FRAME_TIMEOUT_S,
    PEER_HANDSHAKE_TIMEOUT_S,
    PEER_HELLO_MAX_SKEW_S,
    PEER_IDLE_TIMEOUT_S,
    PEER_INBOUND_BURST_BYTES,
    PEER_INBOUND_BYTES_PER_S,
    PEER_INBOUND_MSGS_BURST,
    PEER_INBOUND_MSGS_PER_S,
    PEER_MAX_CONNECTIONS,
    PEER_MAX_CONNECTIONS_PER_SOURCE,
    PEER_MAX_FRAME_BYTES,
    PEER_MAX_GUESTS,
    PEER_MAX_HELLO_BYTES,
    PEER_MAX_INFLIGHT_CALLS,
    PEER_MAX_INFLIGHT_REQUESTS,
    PEER_MIN_FRAME_BYTES_PER_S,
    PEER_OUTBOUND_QUEUE_BYTES,
    PEER_OUTBOUND_QUEUE_MSGS,
    PEER_PING_INTERVAL_S,
    PEER_RECONNECT_MAX_S,
    PEER_RECONNECT_MIN_S,
    PEER_REQUEST_TIMEOUT_S,
    PEER_WRITE_BUFFER_BYTES,
)


@dataclass(frozen=True)
class PeerLimits:
    """Every bound of one :class:`~gonka_ray.peer.tcp.TcpPeerTransport` (see constants)."""

    max_frame_bytes: int = PEER_MAX_FRAME_BYTES
    max_hello_bytes: int = PEER_MAX_HELLO_BYTES
    batch_max_bytes: int = PEER_BATCH_MAX_BYTES
    batch_max_msgs: int = PEER_BATCH_MAX_MSGS
    outbound_queue_msgs: int = PEER_OUTBOUND_QUEUE_MSGS
    outbound_queue_bytes: int = PEER_OUTBOUND_QUEUE_BYTES
    write_buffer_bytes: int = PEER_WRITE_BUFFER_BYTES
    inbound_msgs_per_s: float = PEER_INBOUND_MSGS_PER_S
    inbound_msgs_burst: float = PEER_INBOUND_MSGS_BURST
    inbound_bytes_per_s: float = PEER_INBOUND_BYTES_PER_S
    inbound_burst_bytes: float = PEER_INBOUND_BURST_BYTES
    handshake_timeout_s: float = PEER_HANDSHAKE_TIMEOUT_S
    frame_timeout_s: float = PEER_FRAME_TIMEOUT_S
    min_frame_bytes_per_s: float = PEER_MIN_FRAME_BYTES_PER_S
    ping_interval_s: float = PEER_PING_INTERVAL_S
    idle_timeout_s: float = PEER_IDLE_TIMEOUT_S
    check_interval_s: float = PEER_CHECK_INTERVAL_S
    max_connections_per_source: int = PEER_MAX_CONNECTIONS_PER_SOURCE
    max_connections: int = PEER_MAX_CONNECTIONS
    max_guests: int = PEER_MAX_GUESTS  # guest sessions (joiners registering) at once
    hello_max_skew_s: float = PEER_HELLO_MAX_SKEW_S
    connect_timeout_s: float = PEER_CONNECT_TIMEOUT_S
    reconnect_min_s: float = PEER_RECONNECT_MIN_S
    reconnect_max_s: float = PEER_RECONNECT_MAX_S
    request_timeout_s: float = PEER_REQUEST_TIMEOUT_S
    max_inflight_requests: int = PEER_MAX_INFLIGHT_REQUESTS
    max_inflight_calls: int = PEER_MAX_INFLIGHT_CALLS
    call_idle_timeout_s: float = PEER_CALL_IDLE_TIMEOUT_S
    ban_s: float = PEER_BAN_S

    def frame_deadline_s(self, length: int | None) -> float:
        """How long a started frame of ``length`` bytes (None: header not in yet) may take."""
        return self.frame_timeout_s + (length or 0) / self.min_frame_bytes_per_s


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; starts full. Time comes from the caller."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._at = now

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens; False (taking nothing) when there are not that many."""
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True
