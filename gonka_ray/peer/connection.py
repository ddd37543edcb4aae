"""One TCP connection between two replicas: handshake, deadlines, inbound limits, dispatch.

:class:`PeerConnection` is an :class:`asyncio.Protocol` (the default loop and uvloop both drive
it). It owns the byte-level rules and nothing else; what to do with an authenticated frame is
its owner's (:class:`~gonka_ray.peer.tcp.TcpPeerTransport`, through :class:`ConnectionOwner`).

A connection is **cut** (aborted, the reason counted and logged) when the peer

- sends a frame that is not well formed, too large (refused on its header), fails the
  handshake or frame authentication, or is a batch, request or response that does not decode;
- does not complete the handshake within ``handshake_timeout_s``;
- starts a frame and does not finish it within ``frame_deadline_s`` (slow drip);
- sends more messages or bytes than its token buckets hold (flood);
- sends nothing, not even a ping, for ``idle_timeout_s`` (half-open connection);
- has more than ``max_inflight_requests`` sync requests or ``max_inflight_calls`` calls open.

Every callback catches what it raises, so a peer can never crash the server or stall the loop
for the other peers: the worst it gets is its own connection cut.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Protocol

from gonka_ray import crypto
from gonka_ray.exceptions import PeerProtocolError
from gonka_ray.peer.framing import FrameDecoder, Kind, frame, unpack_batch
from gonka_ray.peer.handshake import Handshake, Session
from gonka_ray.peer.limits import PeerLimits, TokenBucket

log = logging.getLogger("gonka_ray.peer")


class ConnectionOwner(Protocol):
    """What a connection needs from its transport."""

    key: crypto.KeyPair
    index: int
    chain_id: str
    peer_keys: list[bytes]
    limits: PeerLimits
    guests: bool

    def now_ms(self) -> int: ...
    def admit(self, conn: PeerConnection) -> bool: ...
    def on_session(self, conn: PeerConnection) -> None: ...
    def on_lost(self, conn: PeerConnection) -> None: ...
    def on_cut(self, conn: PeerConnection, reason: str) -> None: ...
    def on_batch(self, conn: PeerConnection, messages: list[bytes]) -> None: ...
    def on_request(self, conn: PeerConnection, body: bytes) -> None: ...
    def on_response(self, conn: PeerConnection, body: bytes) -> None: ...
    def on_call(self, conn: PeerConnection, body: bytes) -> None: ...
    def on_reply(self, conn: PeerConnection, body: bytes) -> None: ...
    def on_cancel(self, conn: PeerConnection, body: bytes) -> None: ...
    def on_writable(self, conn: PeerConnection) -> None: ...


class PeerConnection(asyncio.Protocol):
    """One connection; ``dial`` is the index dialed (None: accepted by the server)."""

    def __init__(self, owner: ConnectionOwner, *, dial: int | None = None) -> None:
        self.owner = owner
        self.limits = owner.limits
        self.dial = dial
        self.source = "?"  # the remote IP address
        self.session: Session | None = None
        self.closed = False
        self.paused = False  # the socket's write buffer is above its high-water mark
        self.inflight = 0  # the peer's requests being answered here
        self.pending: dict[int, asyncio.Future] = {}  # our requests awaiting its responses
        self.serving: dict[int, asyncio.Task] = {}  # the peer's calls being answered here
        self.calls: dict[int, asyncio.Queue] = {}  # our calls: the replies received so far
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()  # set when lost
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._frame_started: float | None = None
        self.decoder = FrameDecoder(self.limits.max_hello_bytes)

    @property
    def peer(self) -> int | None:
        """The authenticated peer index (None before the handshake completes)."""
        return None if self.session is None else self.session.peer

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peername = transport.get_extra_info("peername")
        self.source = str(peername[0]) if peername else "?"
        now = self._loop.time()
        self._opened = self._last_recv = self._last_sent = now
        if self.dial is None and not self.owner.admit(self):
            self.cut("too_many_connections")
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:  # pragma: no cover - not a TCP socket
                pass
        transport.set_write_buffer_limits(high=self.limits.write_buffer_bytes)
        lim = self.limits
        self._msgs = TokenBucket(lim.inbound_msgs_per_s, lim.inbound_msgs_burst, now)
        self._bytes = TokenBucket(lim.inbound_bytes_per_s, lim.inbound_burst_bytes, now)
        self.hs = Handshake(
            key=self.owner.key,
            index=self.owner.index,
            chain_id=self.owner.chain_id,
            peer_keys=self.owner.peer_keys,
            dialer=self.dial is not None,
            expect=self.dial,
            now_ms=self.owner.now_ms(),
            max_skew_ms=int(lim.hello_max_skew_s * 1000),
            guests=self.owner.guests and self.dial is None,
        )
        if self.dial is not None:  # the dialer speaks first (see the handshake module)
            self._write([self.hs.hello()])
        self._timer = self._loop.call_later(lim.check_interval_s, self._check)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        now = self._loop.time()
        self.decoder.feed(data)
        got = False
        try:
            while (payload := self.decoder.next_payload()) is not None:
                got = True
                self._on_payload(payload, now)
                if self.closed:
                    return
        except PeerProtocolError as exc:
            self.cut(exc.reason, str(exc))
            return
        except Exception:  # a bug here must cost this connection only
            log.exception("peer connection %s: unexpected error", self.source)
            self.cut("internal_error")
            return
        if got:
            self._last_recv = now
        if self.decoder.buffered == 0:
            self._frame_started = None
        elif got or self._frame_started is None:
            self._frame_started = now

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.owner.on_lost(self)
        if not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if not self.closed:
            self.owner.on_writable(self)

    # --- frames ------------------------------------------------------------------------------

    def _on_payload(self, payload: bytes, now: float) -> None:
        if self.session is None:
            replies, session = self.hs.receive(payload, self.owner.now_ms())
            if replies:
                self._write(replies)
            if session is not None:
                self.session = session
                self.decoder.max_frame_bytes = self.limits.max_frame_bytes
                self.owner.on_session(self)
            return
        self._charge(self._bytes, len(payload), now, "bytes")
        kind, body = self.session.recv.open(payload)
        if kind == Kind.BATCH:
            messages = unpack_batch(body, self.limits.batch_max_msgs)
            self._charge(self._msgs, len(messages), now, "messages")
            self.owner.on_batch(self, messages)
            return
        self._charge(self._msgs, 1, now, "messages")
        if kind == Kind.REQUEST:
            self.owner.on_request(self, body)
        elif kind == Kind.RESPONSE:
            self.owner.on_response(self, body)
        elif kind == Kind.CALL:
            self.owner.on_call(self, body)
        elif kind == Kind.REPLY:
            self.owner.on_reply(self, body)
        elif kind == Kind.CANCEL:
            self.owner.on_cancel(self, body)
        elif kind == Kind.HELLO:
            raise PeerProtocolError("a hello after the handshake", reason="unexpected_hello")
        # Kind.PING: nothing to do; it refreshed the idle deadline

    @staticmethod
    def _charge(bucket: TokenBucket, amount: int, now: float, what: str) -> None:
        if not bucket.take(amount, now):
            raise PeerProtocolError(f"over the inbound {what} rate", reason="flood")

    def send(self, kind: Kind, body: bytes = b"") -> None:
        """Seal and write one frame (authenticated connections only)."""
        assert self.session is not None
        self._write([self.session.send.seal(kind, body)])

    def send_many(self, kind: Kind, bodies: list[bytes]) -> None:
        """Seal and write several frames of one kind in one write."""
        assert self.session is not None
        seal = self.session.send.seal
        self._write([seal(kind, b) for b in bodies])

    def _write(self, payloads: list[bytes]) -> None:
        if self.closed or self._transport is None:
            return
        self._transport.write(b"".join(frame(p) for p in payloads))
        self._last_sent = self._loop.time()

    # --- deadlines and teardown --------------------------------------------------------------

    def _check(self) -> None:
        if self.closed:
            return
        now = self._loop.time()
        lim = self.limits
        if self.session is None and now - self._opened > lim.handshake_timeout_s:
            self.cut("handshake_timeout")
        elif self._frame_started is not None and now - self._frame_started > lim.frame_deadline_s(
            self.decoder.pending_length()
        ):
            self.cut("slow_frame")
        elif self.session is not None and now - self._last_recv > lim.idle_timeout_s:
            self.cut("idle")
        else:
            if self.session is not None and now - self._last_sent > lim.ping_interval_s:
                self.send(Kind.PING)
            self._timer = self._loop.call_later(lim.check_interval_s, self._check)

    def cut(self, reason: str, detail: str = "") -> None:
        """Drop the connection because the peer misbehaved (or was replaced); logged, counted."""
        if self.closed:
            return
        claimed = self.peer
        if claimed is None and hasattr(self, "hs"):
            claimed = self.hs.peer  # what it claimed in its hello, if it got that far
        log.warning(
            "peer connection from %s (index %s) cut: %s%s",
            self.source,
            claimed,
            reason,
            f" ({detail})" if detail else "",
        )
        self.owner.on_cut(self, reason)
        self.shutdown()

    def shutdown(self) -> None:
        """Close without blame (the transport is closing)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.abort()
