"""The ledger's peer transport over framed TCP: replicas in separate processes or clusters.

:class:`TcpPeerTransport` is a :class:`~gonka_ray.ledger.transport.PeerTransport` bound to one
replica: its key, its genesis index, the genesis keys and the peers' ``host:port`` addresses by
index. :meth:`TcpPeerTransport.start` listens on its own address and dials the others; the
replica's messages arrive as ``deliver(data, sender)`` / ``deliver_many(batch, sender)`` with
``sender`` the *authenticated* index of the connection they came on.

- **One long-lived connection per pair**: the lower index dials the higher (so two replicas
  never race to connect each other); the newest authenticated connection of an index replaces an
  older one (a restarted peer). A dialer redials with exponential backoff and jitter
  (``reconnect_min_s`` doubling to ``reconnect_max_s``, back to the minimum after a session).
- **Batching**: messages to one peer queue up and leave together at the next turn of the event
  loop, as few BATCH frames as fit (like the Ray transport's ``deliver_many``); order per peer is
  kept. The queue is bounded (messages and bytes): past the bound a message is dropped and
  counted in ``stats.dropped`` (consensus recovers by timeouts and block fetches). It also holds
  messages while the connection is down or its socket buffer is full.
- **Sync requests**: :meth:`sync_peers` gives a :class:`TcpSyncPeer` per connected peer;
  ``snapshot_offer`` and ``attest_state`` are REQUEST/RESPONSE frames matched by request id, with
  a timeout, at most ``max_inflight_requests`` per connection.
- **Calls**: :meth:`serve` / :meth:`call_stream`: a participant's requests to another one
  (execute with its token stream, payload fetches) on the same connection; see
  :mod:`~gonka_ray.peer.calls`.
- **Security**: see :mod:`~gonka_ray.peer.handshake` (mutual signed hellos, per-connection
  frame keys) and :mod:`~gonka_ray.peer.connection` (what gets a connection cut). The server
  also refuses more than ``max_connections_per_source`` inbound connections from one IP address
  and ``max_connections`` in all; an authenticated peer cut for a protocol violation
  (:data:`VIOLATIONS`) has its index refused for ``ban_s``, so a flooder cannot simply redial.

Frames: :mod:`~gonka_ray.peer.framing`. Bounds: :class:`~gonka_ray.peer.limits.PeerLimits`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gonka_ray import crypto, wire
from gonka_ray.constants import PEER_GUEST_INDEX, PEER_LOCAL_PORTS, WIRE_MAX_MESSAGE_BYTES
from gonka_ray.exceptions import PeerProtocolError, PeerUnavailable, WireError
from gonka_ray.ledger.state import PeerEntry
from gonka_ray.ledger.transport import LocalReplica, PeerTransport, SyncPeer
from gonka_ray.peer.calls import CallService, Handler
from gonka_ray.peer.connection import PeerConnection
from gonka_ray.peer.framing import Kind, batch_bytes, batches, pack_batch
from gonka_ray.peer.limits import PeerLimits
from gonka_ray.wire import (
    LedgerGenesis,
    PeerRequest,
    PeerResponse,
    SnapshotOffer,
    StateAttestation,
    parse_address,
)

log = logging.getLogger("gonka_ray.peer")
# Cuts that earn the peer index a ban (``ban_s``): protocol violations only, not a dead link.
VIOLATIONS = frozenset(
    {
        "bad_batch",
        "bad_call",
        "bad_reply",
        "bad_frame_auth",
        "bad_request",
        "bad_response",
        "flood",
        "guest_batch",
        "frame_too_large",
        "slow_frame",
        "too_many_calls",
        "too_many_requests",
        "unexpected_hello",
        "unknown_kind",
    }
)
SNAPSHOT_OFFER = "snapshot_offer"
ATTEST_STATE = "attest_state"
FRAME_OVERHEAD = 1 + crypto.AEAD_TAG_BYTES + 16  # kind, tag, msgpack headers (generous)


class LocalPeer(LocalReplica, Protocol):
    """The replica a transport delivers to (a :class:`LedgerReplica` is one)."""

    async def deliver_many(self, batch: list[bytes], sender: int) -> None: ...


def loopback_addresses(
    n: int, host: str = "127.0.0.1", ports: range = PEER_LOCAL_PORTS, seed: int | None = None
) -> list[str]:
    """``n`` distinct free ``host:port`` addresses (bound together, then released), drawn from
    ``ports``: by default below the kernel's ephemeral range and above Ray's worker ports, so
    that the ports Ray's own processes pick while a network starts cannot take them.

    Raises:
        OSError: not enough free ports in ``ports``.
    """
    rng = random.Random(seed)
    socks: list[socket.socket] = []
    try:
        for port in rng.sample(ports, len(ports)):
            if len(socks) == n:
                break
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < n:
            raise OSError(f"fewer than {n} free ports in {ports} on {host}")
        return [f"{host}:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class TcpStats:
    """Counters of one transport (for tests, logs and benchmarks)."""

    sent_msgs: int = 0
    sent_frames: int = 0
    received_msgs: int = 0
    sessions: int = 0  # authenticated connections, both directions
    guest_sessions: int = 0  # guests accepted
    dial_failures: int = 0
    dropped: Counter[int] = field(default_factory=Counter)  # by destination index
    cuts: Counter[str] = field(default_factory=Counter)  # by reason


@dataclass
class _Outbox:
    messages: deque[bytes] = field(default_factory=deque)
    size: int = 0  # bytes


class TcpPeerTransport(PeerTransport):
    """Args:
    index: this replica's genesis index.
    key: its node key (the genesis key of ``index``).
    chain_id: the network's chain id.
    peer_keys: the genesis public keys, by index.
    addresses: ``host:port`` of every replica, by index (this one's is where it listens; None for
        a peer whose address is unknown: it is never dialed, but may dial in).
    listen_host: bind here instead of the host of this replica's own address (e.g. 0.0.0.0).
    limits: the bounds (defaults from :mod:`gonka_ray.constants`).
    clock: wall-clock seconds (hello timestamps).
    seed: the redial jitter's seed.
    guests: accept guests, keys outside the directory (a joiner registering): a guest may send
        sync requests and the calls served with ``guests=True`` (:meth:`serve`), nothing else;
        at most ``max_guests`` at once.
    """

    def __init__(
        self,
        *,
        index: int,
        key: crypto.KeyPair,
        chain_id: str,
        peer_keys: Sequence[bytes],
        addresses: Sequence[str | None],
        listen_host: str | None = None,
        limits: PeerLimits | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        guests: bool = True,
    ) -> None:
        if len(addresses) != len(peer_keys) or not 0 <= index < len(peer_keys):
            raise ValueError("one address per genesis key, and index among them")
        if peer_keys[index] != key.public_key:
            raise ValueError(f"key is not the genesis key of index {index}")
        self.index = index
        self.key = key
        self.chain_id = chain_id
        self.peer_keys = list(peer_keys)
        self.addresses = list(addresses)
        self.listen_host = listen_host
        self.limits = limits or PeerLimits()
        self._clock = clock
        self._rng = random.Random(seed)
        self.stats = TcpStats()
        self._local: LocalPeer | None = None
        self._server: asyncio.AbstractServer | None = None
        self._dialers: list[asyncio.Task] = []
        self._dialing: set[int] = set()  # peers with a dial loop
        self._conns: dict[int, PeerConnection] = {}  # authenticated, by peer index
        self._inbound: set[PeerConnection] = set()
        self._by_source: Counter[str] = Counter()
        self._outbox: dict[int, _Outbox] = {}
        self._flush_scheduled = False
        self._inbox: deque[tuple[int, list[bytes]]] = deque()
        self._drainer: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()  # request handlers
        self._ids = itertools.count(1)
        self._banned: dict[int, float] = {}  # peer index -> loop time its ban ends
        self._closing = False
        self._start_lock = asyncio.Lock()
        self.calls = CallService(self.limits, FRAME_OVERHEAD)
        self.guests = guests
        self._guests: set[PeerConnection] = set()  # guest sessions (not in the directory)

    @classmethod
    def for_genesis(
        cls,
        genesis: LedgerGenesis | bytes,
        *,
        index: int,
        key: crypto.KeyPair,
        addresses: Sequence[str | None],
        **options: Any,
    ) -> TcpPeerTransport:
        """The transport of replica ``index`` of ``genesis`` (chain id and keys from it)."""
        if isinstance(genesis, bytes):
            genesis = wire.decode(genesis, LedgerGenesis)
        keys = [p.public_key for p in genesis.participants]
        return cls(
            index=index,
            key=key,
            chain_id=genesis.chain_id,
            peer_keys=keys,
            addresses=addresses,
            **options,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, local: LocalPeer) -> None:
        """Listen on this replica's address and dial the peers above it; ``local`` gets what
        they send and answers their sync requests.

        Raises:
            OSError: the address cannot be bound.
        """
        # NOTE: one start at a time: a replica's own autostart and an explicit start() may
        # race; the second waits for the first's bind instead of binding the port again.
        async with self._start_lock:
            if self._local is None:
                await self._start(local)

    async def _start(self, local: LocalPeer) -> None:
        loop = asyncio.get_running_loop()
        own = self.addresses[self.index]
        if own is not None:
            host, port = parse_address(own)
            self._server = await loop.create_server(
                lambda: PeerConnection(self), self.listen_host or host, port, reuse_address=True
            )
        self._local = local
        self._dial_new()

    def _dial_new(self) -> None:
        # NOTE: the lower index dials the higher; one dial loop per peer, for good (it reads
        # the peer's address afresh before each attempt, so a moved peer is found again).
        if self._local is None or self._closing:
            return
        loop = asyncio.get_running_loop()
        for j in range(self.index + 1, len(self.peer_keys)):
            if self.addresses[j] is not None and j not in self._dialing:
                self._dialing.add(j)
                self._dialers.append(loop.create_task(self._dial_loop(j)))

    def set_directory(self, entries: Sequence[PeerEntry]) -> None:
        """Take the peer directory from committed state: new participants are appended (and
        dialed when above this one), an announced endpoint replaces the configured address of
        any peer but this one. A key never changes its place: an entry that disagrees with a
        known key is ignored (and logged)."""
        for i, e in enumerate(entries):
            if i < len(self.peer_keys):
                if self.peer_keys[i] != e.public_key:
                    log.warning("peer directory: place %d names another key; ignored", i)
                elif e.endpoint and i != self.index:
                    self.addresses[i] = e.endpoint
            elif i == len(self.peer_keys):
                self.peer_keys.append(e.public_key)
                self.addresses.append(e.endpoint)
        try:
            self._dial_new()
        except RuntimeError:  # no running loop (built before serving): start() dials
            pass

    @property
    def port(self) -> int | None:
        """The port listened on (useful when the address named port 0)."""
        if self._server is None or not self._server.sockets:
            return None
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and dialing, drop every connection, fail pending requests."""
        self._closing = True
        for t in self._dialers:
            t.cancel()
        await asyncio.gather(*self._dialers, return_exceptions=True)
        self._dialers.clear()
        if self._server is not None:
            self._server.close()
        for conn in [*self._inbound, *self._conns.values()]:
            conn.shutdown()
        for t in [*self._tasks, *([self._drainer] if self._drainer else [])]:
            t.cancel()
        await asyncio.sleep(0)  # let connection_lost run

    def connected(self) -> list[int]:
        """Indexes with an authenticated connection now."""
        return sorted(i for i, c in self._conns.items() if not c.closed)

    async def wait_connected(self, peers: Sequence[int], timeout_s: float) -> None:
        """Wait until each of ``peers`` has an authenticated connection.

        Raises:
            TimeoutError: not within ``timeout_s``.
        """
        async with asyncio.timeout(timeout_s):
            while not set(peers) <= set(self.connected()):
                await asyncio.sleep(0.01)

    async def _dial_loop(self, dest: int) -> None:
        loop = asyncio.get_running_loop()
        lim = self.limits
        delay = lim.reconnect_min_s
        while not self._closing:
            ban_left_s = self._banned.get(dest, 0.0) - loop.time()
            if ban_left_s > 0:  # it broke the protocol: no redial until its ban ends
                await asyncio.sleep(ban_left_s)
            conn: PeerConnection | None = None
            try:
                host, port = parse_address(self.addresses[dest] or "")
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: PeerConnection(self, dial=dest), host, port),
                    lim.connect_timeout_s,
                )
            except (OSError, TimeoutError, ValueError):
                self.stats.dial_failures += 1
            if conn is not None:
                await conn.done
                if conn.session is not None:
                    delay = lim.reconnect_min_s  # it worked: the next try comes soon
            if self._closing:
                return
            await asyncio.sleep(delay * (0.5 + self._rng.random()))
            delay = min(lim.reconnect_max_s, delay * 2)

    # --- PeerTransport -----------------------------------------------------------------------

    def send(self, dest: int, data: bytes) -> None:
        lim = self.limits
        box = self._outbox.get(dest)
        if box is None:
            if dest == self.index or not 0 <= dest < len(self.peer_keys):
                return
            box = self._outbox[dest] = _Outbox()
        too_big = batch_bytes(data) + FRAME_OVERHEAD > lim.max_frame_bytes
        full = (
            len(box.messages) >= lim.outbound_queue_msgs
            or box.size + len(data) > lim.outbound_queue_bytes
        )
        if too_big or full or self._closing:
            self.stats.dropped[dest] += 1
            return
        box.messages.append(data)
        box.size += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for dest, box in self._outbox.items():
            if box.messages:
                self._flush_peer(dest)

    def _flush_peer(self, dest: int) -> None:
        conn = self._conns.get(dest)
        box = self._outbox.get(dest)
        if conn is None or conn.closed or conn.paused or box is None or not box.messages:
            return  # they wait (bounded) for the connection or the socket
        messages = list(box.messages)
        box.messages.clear()
        box.size = 0
        lim = self.limits
        bodies = [pack_batch(g) for g in batches(messages, lim.batch_max_bytes, lim.batch_max_msgs)]
        conn.send_many(Kind.BATCH, bodies)
        self.stats.sent_msgs += len(messages)
        self.stats.sent_frames += len(bodies)

    def sync_peers(self) -> list[SyncPeer]:
        return [TcpSyncPeer(self, i) for i in self.connected()]

    async def request(self, dest: int, method: str, height: int = 0) -> PeerResponse:
        """Ask peer ``dest`` for ``method`` and wait for its answer.

        Raises:
            PeerUnavailable: not connected, too many requests outstanding, the connection
                dropped, or no answer within ``request_timeout_s``.
        """
        return await send_request(
            self._conns.get(dest), next(self._ids), method, height, self.limits, f"peer {dest}"
        )

    def serve(self, method: str, handler: Handler, *, guests: bool = False) -> None:
        """Answer peers' calls of ``method`` with ``handler`` (see :mod:`~gonka_ray.peer.calls`);
        with ``guests`` guests may call it too (their caller index is ``PEER_GUEST_INDEX``)."""
        self.calls.serve(method, handler, guests=guests)

    def call_stream(self, dest: int, method: str, body: bytes):
        """The reply bodies of peer ``dest``'s ``method(body)``; closing the iterator early
        cancels the call there.

        Raises:
            PeerUnavailable: not connected, or the connection dropped or stalled.
            PeerCallFailed: the peer answered with an error.
        """
        return self.calls.stream(self._conns.get(dest), method, body)

    # --- ConnectionOwner ---------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def admit(self, conn: PeerConnection) -> bool:
        lim = self.limits
        if self._closing or len(self._inbound) >= lim.max_connections:
            return False
        if self._by_source[conn.source] >= lim.max_connections_per_source:
            return False
        self._inbound.add(conn)
        self._by_source[conn.source] += 1
        return True

    def on_session(self, conn: PeerConnection) -> None:
        assert conn.peer is not None
        if conn.peer == PEER_GUEST_INDEX:
            if len(self._guests) >= self.limits.max_guests:
                conn.cut("too_many_guests")
                return
            self._guests.add(conn)
            self.stats.guest_sessions += 1
            return
        if self._banned.get(conn.peer, 0.0) > asyncio.get_running_loop().time():
            conn.cut("banned")
            return
        old = self._conns.get(conn.peer)
        self._conns[conn.peer] = conn
        self.stats.sessions += 1
        if old is not None and old is not conn:
            old.cut("replaced")
        self._flush_peer(conn.peer)

    def on_lost(self, conn: PeerConnection) -> None:
        if conn in self._inbound:
            self._inbound.discard(conn)
            self._by_source[conn.source] -= 1
            if self._by_source[conn.source] <= 0:
                del self._by_source[conn.source]
        if conn.peer is not None and self._conns.get(conn.peer) is conn:
            del self._conns[conn.peer]
        self._guests.discard(conn)
        for fut in conn.pending.values():
            if not fut.done():
                fut.set_exception(PeerUnavailable(f"connection to peer {conn.peer} dropped"))
        self.calls.on_lost(conn)

    def on_cut(self, conn: PeerConnection, reason: str) -> None:
        self.stats.cuts[reason] += 1
        if conn.peer not in (None, PEER_GUEST_INDEX) and reason in VIOLATIONS:
            self._banned[conn.peer] = asyncio.get_running_loop().time() + self.limits.ban_s

    def on_writable(self, conn: PeerConnection) -> None:
        if conn.peer is not None and self._conns.get(conn.peer) is conn:
            self._flush_peer(conn.peer)

    def on_batch(self, conn: PeerConnection, messages: list[bytes]) -> None:
        assert conn.peer is not None
        if conn.peer == PEER_GUEST_INDEX:  # consensus is for the directory's members
            raise PeerProtocolError("a guest sent consensus messages", reason="guest_batch")
        self.stats.received_msgs += len(messages)
        self._inbox.append((conn.peer, messages))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        # NOTE: one task hands inbound batches to the replica in arrival order, so the order
        # of one peer's messages survives even if the replica's deliver awaits.
        local = self._local
        try:
            while self._inbox and local is not None:
                sender, messages = self._inbox.popleft()
                try:
                    if len(messages) == 1:
                        await local.deliver(messages[0], sender)
                    else:
                        await local.deliver_many(messages, sender)
                except Exception:
                    log.exception("replica %d: delivering from peer %d failed", self.index, sender)
        finally:
            self._drainer = None

    def on_request(self, conn: PeerConnection, body: bytes) -> None:
        try:
            req = wire.decode(body, PeerRequest)
        except WireError as exc:
            raise PeerProtocolError(f"bad request: {exc}", reason="bad_request") from None
        if conn.inflight >= self.limits.max_inflight_requests:
            raise PeerProtocolError("too many requests outstanding", reason="too_many_requests")
        conn.inflight += 1
        task = asyncio.get_running_loop().create_task(self._answer(conn, req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, conn: PeerConnection, req: PeerRequest) -> None:
        # NOTE: an answer the peer could not decode (over the wire's message cap) or receive
        # (over the frame cap) would get *this* side cut as a violator: say "too_large" instead.
        cap = min(self.limits.max_frame_bytes - FRAME_OVERHEAD, WIRE_MAX_MESSAGE_BYTES)
        try:
            data = wire.encode(await self._response_to(req))
        except WireError:  # the answer does not fit its declaration (e.g. a huge snapshot)
            data = b""
        finally:
            conn.inflight -= 1
        if not data or len(data) > cap:
            data = wire.encode(PeerResponse(req.request_id, None, None, "too_large"))
        if not conn.closed:
            conn.send(Kind.RESPONSE, data)

    async def _response_to(self, req: PeerRequest) -> PeerResponse:
        rid = req.request_id
        local = self._local
        try:
            if local is None:
                return PeerResponse(rid, None, None, "failed")
            if req.method == SNAPSHOT_OFFER:
                offer = await local.snapshot_offer()
                return PeerResponse(rid, None if offer is None else SnapshotOffer(**offer), None)
            if req.method == ATTEST_STATE:
                att = await local.attest_state(req.height)
                return PeerResponse(rid, None, None if att is None else StateAttestation(*att))
        except Exception:
            log.exception("replica %d: answering %s failed", self.index, req.method)
            return PeerResponse(rid, None, None, "failed")
        return PeerResponse(rid, None, None, "unknown_method")

    def on_response(self, conn: PeerConnection, body: bytes) -> None:
        resolve_response(conn, body)

    def on_call(self, conn: PeerConnection, body: bytes) -> None:
        self.calls.on_call(conn, body, self._tasks)

    def on_reply(self, conn: PeerConnection, body: bytes) -> None:
        self.calls.on_reply(conn, body)

    def on_cancel(self, conn: PeerConnection, body: bytes) -> None:
        self.calls.on_cancel(conn, body)


async def send_request(
    conn: PeerConnection | None,
    rid: int,
    method: str,
    height: int,
    limits: PeerLimits,
    who: str,
) -> PeerResponse:
    """Send sync request ``rid`` on ``conn`` and wait for its answer.

    Raises:
        PeerUnavailable: not connected, too many requests outstanding, the connection dropped,
            or no answer within ``request_timeout_s``.
    """
    if conn is None or conn.closed or conn.session is None:
        raise PeerUnavailable(f"no connection to {who}")
    if len(conn.pending) >= limits.max_inflight_requests:
        raise PeerUnavailable(f"too many requests outstanding at {who}")
    fut: asyncio.Future[PeerResponse] = asyncio.get_running_loop().create_future()
    conn.pending[rid] = fut
    try:
        conn.send(Kind.REQUEST, wire.encode(PeerRequest(rid, method, height)))
        return await asyncio.wait_for(fut, limits.request_timeout_s)
    except TimeoutError:
        raise PeerUnavailable(f"{who} did not answer {method} in time") from None
    finally:
        conn.pending.pop(rid, None)


def resolve_response(conn: PeerConnection, body: bytes) -> None:
    """Hand a RESPONSE frame's body to the request waiting for it on ``conn``.

    Raises:
        PeerProtocolError: it does not decode (``bad_response``).
    """
    try:
        resp = wire.decode(body, PeerResponse)
    except WireError as exc:
        raise PeerProtocolError(f"bad response: {exc}", reason="bad_response") from None
    fut = conn.pending.get(resp.request_id)
    if fut is not None and not fut.done():
        fut.set_result(resp)
    # else: a late answer to a request that timed out; nothing waits for it


def sync_answer(method: str, resp: PeerResponse) -> Any:
    """What a sync request's response says, as :class:`~gonka_ray.ledger.transport.SyncPeer`
    returns it: the snapshot offer as a dict, the attestation as a tuple, or None.

    Raises:
        PeerUnavailable: the peer could not answer.
    """
    if resp.error:
        raise PeerUnavailable(f"the peer could not answer {method}: {resp.error}")
    if method == SNAPSHOT_OFFER:
        o = resp.offer
        if o is None:
            return None
        return {
            "height": o.height,
            "block": o.block,
            "certificate": o.certificate,
            "state_hash": o.state_hash,
            "snapshot": o.snapshot,
        }
    a = resp.attestation
    return None if a is None else (a.block_hash, a.state_hash, a.chain, a.public_key, a.signature)


class TcpSyncPeer:
    """A :class:`~gonka_ray.ledger.transport.SyncPeer` over a transport's connection."""

    def __init__(self, transport: TcpPeerTransport, index: int) -> None:
        self.transport = transport
        self.index = index

    async def snapshot_offer(self) -> dict[str, Any] | None:
        return sync_answer(SNAPSHOT_OFFER, await self.transport.request(self.index, SNAPSHOT_OFFER))

    async def attest_state(self, height: int) -> tuple[bytes, bytes, bytes, bytes, bytes] | None:
        resp = await self.transport.request(self.index, ATTEST_STATE, height)
        return sync_answer(ATTEST_STATE, resp)
