"""A guest's link to one participant's peer endpoint: how a joiner talks to the network before
it has a place in the peer directory.

A participant that is not registered yet has no directory index, so the others neither dial it
nor accept its hellos as a member. It connects as a **guest** (hello index
``PEER_GUEST_INDEX``, its own key): the acceptor authenticates the connection to that key but
gives it no consensus role; a guest may send sync requests (``snapshot_offer``,
``attest_state``) and call the methods served with ``guests=True`` (a joiner's registration),
nothing else (:mod:`~gonka_ray.peer.tcp`). The guest, in turn, takes the acceptor's key as it
comes: what it learns carries its own proof (a receipt with its commit certificate, a snapshot
attested by more than a third of the genesis power), or is checked as soon as the joiner's own
replica has synced.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import msgpack

from gonka_ray import crypto, wire
from gonka_ray.constants import JOIN_RECEIPT_TIMEOUT_S, PEER_GUEST_INDEX
from gonka_ray.exceptions import (
    CommitTimeout,
    PeerCallFailed,
    PeerProtocolError,
    PeerUnavailable,
    WireError,
)
from gonka_ray.peer.calls import CallService, first
from gonka_ray.peer.connection import PeerConnection
from gonka_ray.peer.limits import PeerLimits
from gonka_ray.peer.tcp import (
    ATTEST_STATE,
    FRAME_OVERHEAD,
    SNAPSHOT_OFFER,
    resolve_response,
    send_request,
    sync_answer,
)
from gonka_ray.wire import PeerEndpoint, PeerResponse, RegisterParticipant, parse_address

if TYPE_CHECKING:
    from gonka_ray.ledger.replica import LedgerReplica
    from gonka_ray.peer.tcp import TcpPeerTransport

# What a member answers a guest (see :func:`serve_joiners`).
JOIN_SUBMIT = "join_submit"
JOIN_DIRECTORY = "join_directory"
# the transactions a guest may hand a member: the ones that make it a participant
JOIN_TX_TYPES = frozenset({(RegisterParticipant.TYPE, 1), (PeerEndpoint.TYPE, 1)})


class GuestLink:
    """One guest connection to the peer endpoint at ``address`` (see the module docstring).

    Args:
        key: the guest's key (its hellos are signed with it; the acceptor sees this key).
        chain_id: the network's chain id.
        address: the peer endpoint's ``host:port``.
        limits: the bounds (defaults from :mod:`gonka_ray.constants`).
        clock: wall-clock seconds (hello timestamps).
    """

    guests = False  # a guest accepts nobody

    def __init__(
        self,
        *,
        key: crypto.KeyPair,
        chain_id: str,
        address: str,
        limits: PeerLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.index = PEER_GUEST_INDEX
        self.chain_id = chain_id
        self.address = address
        self.peer_keys: list[bytes] = []
        self.limits = limits or PeerLimits()
        self.calls = CallService(self.limits, FRAME_OVERHEAD)
        self.peer_key: bytes | None = None  # the acceptor's key, once connected
        self._clock = clock
        self._conn: PeerConnection | None = None
        self._ready: asyncio.Future[None] | None = None
        self._ids = itertools.count(1)

    async def connect(self, timeout_s: float = 10.0) -> GuestLink:
        """Open the connection and complete the handshake.

        Raises:
            PeerUnavailable: not reachable, or the handshake failed or took over ``timeout_s``.
        """
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        host, port = parse_address(self.address)
        try:
            async with asyncio.timeout(timeout_s):
                _, self._conn = await loop.create_connection(
                    lambda: PeerConnection(self, dial=PEER_GUEST_INDEX), host, port
                )
                await asyncio.shield(self._ready)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise PeerUnavailable(f"no guest session with {self.address}: {exc!r}") from None
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.shutdown()

    async def __aenter__(self) -> GuestLink:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def call(self, method: str, body: bytes) -> bytes:
        """The one reply of the acceptor's ``method(body)``.

        Raises:
            PeerUnavailable: the connection dropped or stalled.
            PeerCallFailed: the acceptor answered with an error (``not_for_guests``, ...).
        """
        return await first(self.calls.stream(self._conn, method, body))

    async def request(self, method: str, height: int = 0) -> PeerResponse:
        """A sync request (``snapshot_offer``, ``attest_state``) and its answer.

        Raises:
            PeerUnavailable: not connected, or no answer within ``request_timeout_s``.
        """
        return await send_request(
            self._conn, next(self._ids), method, height, self.limits, self.address
        )

    # --- SyncPeer (snapshot sync from a guest link) -----------------------------------------

    async def snapshot_offer(self):
        return sync_answer(SNAPSHOT_OFFER, await self.request(SNAPSHOT_OFFER))

    async def attest_state(self, height: int):
        return sync_answer(ATTEST_STATE, await self.request(ATTEST_STATE, height))

    # --- ConnectionOwner ---------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def admit(self, conn: PeerConnection) -> bool:  # pragma: no cover - a guest never listens
        return False

    def on_session(self, conn: PeerConnection) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def on_lost(self, conn: PeerConnection) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(OSError("connection lost during the handshake"))
        for fut in conn.pending.values():
            if not fut.done():
                fut.set_exception(PeerUnavailable(f"guest link to {self.address} dropped"))
        self.calls.on_lost(conn)

    def on_cut(self, conn: PeerConnection, reason: str) -> None:
        pass  # on_lost follows and fails what waits

    def on_batch(self, conn: PeerConnection, messages: list[bytes]) -> None:
        raise PeerProtocolError("consensus messages to a guest", reason="unknown_kind")

    def on_request(self, conn: PeerConnection, body: bytes) -> None:
        raise PeerProtocolError("a request to a guest", reason="unknown_kind")

    def on_call(self, conn: PeerConnection, body: bytes) -> None:
        raise PeerProtocolError("a call to a guest", reason="unknown_kind")

    def on_response(self, conn: PeerConnection, body: bytes) -> None:
        resolve_response(conn, body)

    def on_reply(self, conn: PeerConnection, body: bytes) -> None:
        self.calls.on_reply(conn, body)

    def on_cancel(self, conn: PeerConnection, body: bytes) -> None:
        pass

    def on_writable(self, conn: PeerConnection) -> None:
        pass


def serve_joiners(transport: TcpPeerTransport, replica: LedgerReplica) -> None:
    """Answer guests that come to join: ``join_submit`` takes a signed registration or
    endpoint transaction (nothing else) into ``replica``'s mempool and answers its receipt once
    committed (empty when not within ``JOIN_RECEIPT_TIMEOUT_S``); ``join_directory(address)``
    answers the peer directory as ``replica`` sees it, ``[[public_key, endpoint], ...]`` by
    index, the account nonce of ``address`` and the digest of ``replica``'s genesis (a joiner
    whose own differs would run other rules: it stops before registering)."""

    async def submit(body: bytes, caller: int) -> AsyncIterator[bytes]:
        try:
            kind = wire.peek_type(body)
        except WireError:
            kind = None
        if kind not in JOIN_TX_TYPES:
            raise PeerCallFailed("only registration transactions", reason="not_for_guests")
        th = await replica.submit(body)
        try:
            yield await replica.wait_receipt(th, timeout_s=JOIN_RECEIPT_TIMEOUT_S)
        except CommitTimeout:
            yield b""

    async def directory(body: bytes, caller: int) -> AsyncIterator[bytes]:
        address = body.decode(errors="replace")[:64]
        rows = [[e.public_key, e.endpoint] for e in replica.directory()]
        digest = wire.digest(replica.genesis)
        yield msgpack.packb([rows, replica.sm.nonce(address), digest], use_bin_type=True)

    transport.serve(JOIN_SUBMIT, submit, guests=True)
    transport.serve(JOIN_DIRECTORY, directory, guests=True)


async def join_directory(
    link: GuestLink, address: str = ""
) -> tuple[list[tuple[bytes, str | None]], int, bytes]:
    """The peer directory as the member at the other end of ``link`` sees it, the account
    nonce of ``address`` there and the digest of its genesis.

    Raises:
        PeerUnavailable, PeerCallFailed: see :meth:`GuestLink.call`.
        PeerProtocolError: the answer is not a directory.
    """
    try:
        rows, nonce, digest = msgpack.unpackb(
            await link.call(JOIN_DIRECTORY, address.encode()), raw=False
        )
        directory = [(bytes(pk), None if ep is None else str(ep)) for pk, ep in rows]
        return directory, int(nonce), bytes(digest)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise PeerProtocolError(f"not a directory: {exc}", reason="bad_reply") from None
