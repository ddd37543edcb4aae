"""Calls between participants over their peer connections: a request, a stream of replies.

Everything a participant asks of another one that is not a consensus message travels as a
call on the same authenticated connection: the transport agent's ``execute`` (the token stream
back), the verifier's ``payload`` fetch. A call is a CALL frame (:class:`~gonka_ray.wire.PeerCall`:
id, method, the method's signed envelope), answered by REPLY frames
(:class:`~gonka_ray.wire.PeerReply`) until one with ``end``; the caller sends CANCEL
(:class:`~gonka_ray.wire.PeerCancel`) when it stops listening early (its client left), and the
callee's handler is cancelled, as it is when the connection drops.

The callee trusts nothing of the connection beyond the caller's index: every body is a signed
envelope its handler checks as it would from anywhere. Bounds: at most ``max_inflight_calls``
open calls per connection (one more cuts the connection: ``too_many_calls``); a reply larger
than a frame is refused with ``too_large``; a caller waits at most ``call_idle_timeout_s`` for
each item.

:class:`CallService` is the state of both sides for one :class:`~gonka_ray.peer.tcp.TcpPeerTransport`:
the handlers served and the calls open per connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from gonka_ray import wire
from gonka_ray.constants import PEER_GUEST_INDEX, WIRE_MAX_MESSAGE_BYTES
from gonka_ray.exceptions import PeerCallFailed, PeerProtocolError, PeerUnavailable, WireError
from gonka_ray.peer.connection import PeerConnection
from gonka_ray.peer.framing import Kind
from gonka_ray.peer.limits import PeerLimits
from gonka_ray.wire import PeerCall, PeerCancel, PeerReply

log = logging.getLogger("gonka_ray.peer")
# A handler answers one call: ``handler(body, caller_index)`` yields the reply bodies.
Handler = Callable[[bytes, int], AsyncIterator[bytes]]
_REPLY_OVERHEAD = 64  # PeerReply's fields and msgpack headers around the body (generous)


class CallService:
    """Both sides of calls on one transport's connections (see the module docstring)."""

    def __init__(self, limits: PeerLimits, frame_overhead: int) -> None:
        self.limits = limits
        self.handlers: dict[str, Handler] = {}
        self._ids = itertools.count(1)
        # the largest reply body that fits a frame and the wire's message cap
        self.max_body = (
            min(limits.max_frame_bytes - frame_overhead, WIRE_MAX_MESSAGE_BYTES) - _REPLY_OVERHEAD
        )
        self.served = 0
        self.refused = 0
        self.guest_methods: set[str] = set()

    def serve(self, method: str, handler: Handler, *, guests: bool = False) -> None:
        """Answer calls of ``method`` with ``handler`` (from guests too with ``guests``)."""
        self.handlers[method] = handler
        if guests:
            self.guest_methods.add(method)

    # --- caller side -------------------------------------------------------------------------

    async def stream(self, conn: PeerConnection | None, method: str, body: bytes):
        """The reply bodies of ``method(body)`` at the peer of ``conn``.

        Raises:
            PeerUnavailable: not connected, too many calls open, the connection dropped, or no
                item within ``call_idle_timeout_s``.
            PeerCallFailed: the peer answered with an error (``reason``: its word for it).
        """
        if conn is None or conn.closed:
            raise PeerUnavailable("no connection to that peer")
        if len(conn.calls) >= self.limits.max_inflight_calls:
            raise PeerUnavailable(f"too many calls open at peer {conn.peer}")
        rid = next(self._ids)
        queue: asyncio.Queue[PeerReply | Exception] = asyncio.Queue()
        conn.calls[rid] = queue
        ended = False
        try:
            conn.send(Kind.CALL, wire.encode(PeerCall(rid, method, body)))
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.limits.call_idle_timeout_s)
                except TimeoutError:
                    raise PeerUnavailable(f"peer {conn.peer} stopped answering {method}") from None
                if isinstance(item, Exception):
                    ended = True
                    raise item
                if item.end:
                    ended = True
                    if item.error:
                        raise PeerCallFailed(
                            f"peer {conn.peer} could not answer {method}: {item.error}",
                            reason=item.error,
                        )
                    return
                yield item.body
        finally:
            conn.calls.pop(rid, None)
            if not ended and not conn.closed:
                conn.send(Kind.CANCEL, wire.encode(PeerCancel(rid)))

    def on_reply(self, conn: PeerConnection, body: bytes) -> None:
        try:
            reply = wire.decode(body, PeerReply)
        except WireError as exc:
            raise PeerProtocolError(f"bad reply: {exc}", reason="bad_reply") from None
        queue = conn.calls.get(reply.request_id)
        if queue is not None:
            queue.put_nowait(reply)
        # else: a reply to a call we cancelled; nothing waits for it

    # --- callee side -------------------------------------------------------------------------

    def on_call(self, conn: PeerConnection, body: bytes, tasks: set[asyncio.Task]) -> None:
        try:
            call = wire.decode(body, PeerCall)
        except WireError as exc:
            raise PeerProtocolError(f"bad call: {exc}", reason="bad_call") from None
        if len(conn.serving) >= self.limits.max_inflight_calls:
            raise PeerProtocolError("too many calls open", reason="too_many_calls")
        if call.request_id in conn.serving:
            raise PeerProtocolError("a call id already open", reason="bad_call")
        task = asyncio.get_running_loop().create_task(self._answer(conn, call))
        conn.serving[call.request_id] = task
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_cancel(self, conn: PeerConnection, body: bytes) -> None:
        try:
            rid = wire.decode(body, PeerCancel).request_id
        except WireError as exc:
            raise PeerProtocolError(f"bad cancel: {exc}", reason="bad_call") from None
        task = conn.serving.get(rid)
        if task is not None:
            task.cancel()

    async def _answer(self, conn: PeerConnection, call: PeerCall) -> None:
        rid = call.request_id
        handler = self.handlers.get(call.method)
        error = ""
        try:
            if conn.peer == PEER_GUEST_INDEX and call.method not in self.guest_methods:
                error = "not_for_guests"
                self.refused += 1
                return
            if handler is None:
                error = "unknown_method"
                self.refused += 1
                return
            assert conn.peer is not None
            async for item in handler(call.body, conn.peer):
                if len(item) > self.max_body:
                    error = "too_large"
                    return
                if conn.closed:
                    return
                conn.send(Kind.REPLY, wire.encode(PeerReply(rid, item)))
            self.served += 1
        except asyncio.CancelledError:
            conn.serving.pop(rid, None)
            raise  # cancelled by the caller, or the connection dropped: no answer to send
        except PeerCallFailed as exc:  # the handler's own refusal: the caller gets its reason
            error = exc.reason
        except Exception:
            log.exception("peer call %s from %s failed", call.method, conn.peer)
            error = "failed"
        finally:
            if conn.serving.pop(rid, None) is not None and not conn.closed:
                conn.send(Kind.REPLY, wire.encode(PeerReply(rid, end=True, error=error)))

    def on_lost(self, conn: PeerConnection) -> None:
        for task in conn.serving.values():
            task.cancel()
        for queue in conn.calls.values():
            queue.put_nowait(PeerUnavailable(f"connection to peer {conn.peer} dropped"))


async def first(replies: AsyncIterator[bytes]) -> bytes:
    """The one reply of a unary call (the rest, if any, is drained).

    Raises:
        PeerCallFailed: the call ended without a reply (``reason`` ``"empty"``).
    """
    result: Any = None
    async for item in replies:
        if result is None:
            result = item
    if result is None:
        raise PeerCallFailed("the call ended without a reply", reason="empty")
    return result
