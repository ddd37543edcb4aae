"""Fuzz target ``peer``: hostile byte streams into a TCP peer connection's server side.

Each input is the byte stream a dialer sends after connecting: its hello 1, its hello 2 (answering
the server's real hellos) and sealed frames (batches, sync requests and responses, calls,
replies and cancels between participants, pings, random bodies), mutated in one place (hello 1, hello 2, the sealed frames, random bytes instead, or a
frame of an unknown kind) and cut into random chunks. It is fed to a real
:class:`~gonka_ray.peer.connection.PeerConnection` accepted by a real
:class:`~gonka_ray.peer.tcp.TcpPeerTransport` (no socket: a stand-in transport records writes
and aborts), so framing, handshake, frame authentication, limits and dispatch are all under test.

Outcomes: ``cut:<reason>`` (a typed refusal), ``authenticated``, ``handshaking`` (the stream
stopped early). Crashes: a cut for ``internal_error`` (an untyped exception escaped the parser),
a mutated hello 1 the server answers or a mutated hello 2 that authenticates, or a delivered
message that the dialer did not send in that order (a mutated or injected frame got through).

Kept apart from ``targets.py`` (already long); ``benchmarks/fuzz.py`` registers it as ``peer``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from gonka_ray import crypto, wire
from gonka_ray.exceptions import PeerProtocolError
from gonka_ray.peer.connection import PeerConnection
from gonka_ray.peer.framing import FrameDecoder, Kind, frame, pack_batch, unpack_batch
from gonka_ray.peer.handshake import Handshake
from gonka_ray.peer.limits import PeerLimits
from gonka_ray.peer.tcp import TcpPeerTransport
from gonka_ray.wire import (
    PeerCall,
    PeerCancel,
    PeerReply,
    PeerRequest,
    PeerResponse,
    StateAttestation,
)
from tests.fuzz.targets import Target, mutate_bytes, random_byte_mutations, seed_batch

PEER_CHAIN = "fuzz-peer"
_KEYS = [crypto.KeyPair.from_seed(f"fuzz-peer-{i}") for i in range(3)]
_NOW_S = 1_700_000_000.0
_DIALER_EPHEMERAL = crypto.kx_keypair()
# Small limits, so that floods and oversized frames are reachable by mutation.
_LIMITS = PeerLimits(
    max_frame_bytes=4096,
    inbound_msgs_per_s=50,
    inbound_msgs_burst=20,
    inbound_bytes_per_s=1 << 20,
    inbound_burst_bytes=16_384,
    max_inflight_requests=3,
    max_inflight_calls=3,
)
logging.getLogger("gonka_ray.peer").setLevel(logging.ERROR)  # every case cuts a connection
MODES = ("clean", "hello1", "hello2", "sealed", "sealed", "random_after", "random", "kind")
_LOOP: asyncio.AbstractEventLoop | None = None


class _Wire:
    """A stand-in for the socket transport under one connection."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.7", 40_000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


class _Server(TcpPeerTransport):
    """Replica 1's transport, recording what it would deliver."""

    def __init__(self) -> None:
        super().__init__(
            index=1,
            key=_KEYS[1],
            chain_id=PEER_CHAIN,
            peer_keys=[k.public_key for k in _KEYS],
            addresses=[None, None, None],
            limits=_LIMITS,
            clock=lambda: _NOW_S,
        )
        self.delivered: list[bytes] = []
        self.serve("echo", _echo)

    def on_batch(self, conn: PeerConnection, messages: list[bytes]) -> None:
        self.delivered.extend(messages)


async def _echo(body: bytes, caller: int):
    """A served method: one reply, the call's body."""
    yield body


def _bodies(rng: random.Random) -> list[tuple[Kind, bytes]]:
    """What an honest-looking dialer sends after the handshake."""
    out: list[tuple[Kind, bytes]] = []
    for k in range(rng.randint(1, 5)):
        pick = rng.randrange(8)
        if pick == 0:
            n = rng.randint(1, 12)
            out.append(
                (Kind.BATCH, pack_batch([rng.randbytes(rng.randint(1, 300)) for _ in range(n)]))
            )
        elif pick == 1:
            method = rng.choice(("attest_state", "snapshot_offer", "x"))
            out.append((Kind.REQUEST, wire.encode(PeerRequest(k, method, rng.getrandbits(8)))))
        elif pick == 2:
            att = StateAttestation(*(rng.randbytes(32) for _ in range(4)), rng.randbytes(64))
            out.append((Kind.RESPONSE, wire.encode(PeerResponse(k, None, att, ""))))
        elif pick == 3:
            out.append((Kind.PING, b""))
        elif pick == 4:
            method = rng.choice(("echo", "execute", "x"))
            out.append((Kind.CALL, wire.encode(PeerCall(k, method, rng.randbytes(40)))))
        elif pick == 5:
            reply = PeerReply(k, rng.randbytes(20), rng.random() < 0.5, rng.choice(("", "failed")))
            out.append((Kind.REPLY, wire.encode(reply)))
        elif pick == 6:
            out.append((Kind.CANCEL, wire.encode(PeerCancel(rng.randint(0, k)))))
        else:
            out.append((Kind(rng.randint(1, 8)), rng.randbytes(rng.randint(0, 64))))
    return out


def _sent_messages(bodies: list[tuple[Kind, bytes]]) -> list[bytes]:
    out: list[bytes] = []
    for kind, body in bodies:
        if kind == Kind.BATCH:
            try:
                out.extend(unpack_batch(body, _LIMITS.batch_max_msgs))
            except PeerProtocolError:
                break  # the server cuts the connection here
    return out


async def _feed(mode: str, seed: int) -> str:
    server, sock = _Server(), _Wire()
    conn = PeerConnection(server)
    conn.connection_made(sock)  # an acceptor: it says nothing before the dialer's hello
    try:
        return _drive(conn, server, sock, mode, random.Random(seed))
    finally:
        conn.connection_lost(None)
        await server.close()


def _send(conn: PeerConnection, stream: bytes, rng: random.Random) -> None:
    """``stream`` into the connection in random chunks, until it is cut."""
    pos = 0
    while pos < len(stream) and not conn.closed:
        step = rng.choice((1, 7, 64, 1000, len(stream)))
        conn.data_received(stream[pos : pos + step])
        pos += step


def _drive(conn: PeerConnection, server: _Server, sock: _Wire, mode: str, rng) -> str:
    now_ms = int(_NOW_S * 1000)
    dialer = Handshake(
        key=_KEYS[0],
        index=0,
        chain_id=PEER_CHAIN,
        peer_keys=[k.public_key for k in _KEYS],
        dialer=True,
        expect=1,
        now_ms=now_ms,
        max_skew_ms=60_000,
        nonce=bytes(32),
        ephemeral=_DIALER_EPHEMERAL,
    )
    first = frame(dialer.hello())
    if mode in ("random", "hello1"):
        stream = _junk(rng) if mode == "random" else mutate_bytes(first, random_byte_mutations(rng))
        _send(conn, stream, rng)
        if sock.written and stream[: len(first)] != first:
            raise AssertionError("the acceptor answered a mutated or forged hello 1")
        return _outcome(server, conn, mode, False, [])
    _send(conn, first, rng)
    dec = FrameDecoder(1 << 20)
    dec.feed(bytes(sock.written))
    (second,), _ = dialer.receive(dec.next_payload(), now_ms)  # its hello 1: answer hello 2
    _, session = dialer.receive(dec.next_payload(), now_ms)  # its hello 2: our keys
    second = frame(second)
    bodies = _bodies(rng)
    if mode == "kind":  # a well-sealed first frame of a kind that does not exist, or a hello
        kind = rng.choice((0, 1, 9, 255))
        stream = second + frame(session.send.seal(kind, b"x"))  # type: ignore[arg-type]
        bodies = []
    else:
        sealed = b"".join(frame(session.send.seal(k, b)) for k, b in bodies)
        if mode == "hello2":
            stream = mutate_bytes(second, random_byte_mutations(rng)) + sealed
        elif mode == "sealed":
            stream = second + mutate_bytes(sealed, random_byte_mutations(rng))
        elif mode == "random_after":
            stream = second + _junk(rng)
        else:
            stream = second + sealed
    _send(conn, stream, rng)
    return _outcome(server, conn, mode, stream[: len(second)] == second, bodies)


def _junk(rng: random.Random) -> bytes:
    junk = rng.randbytes(rng.randint(1, 300))
    if rng.random() < 0.5:  # well framed, so the handshake or the cipher sees it
        junk = frame(bytes((rng.randint(1, 8),)) + junk)
    return junk


def _outcome(
    server: _Server, conn: PeerConnection, mode: str, hello_intact: bool, bodies: list
) -> str:
    cuts = server.stats.cuts
    if cuts.get("internal_error"):
        raise AssertionError("an untyped error escaped the connection's parser")
    if conn.session is not None and not hello_intact:
        raise AssertionError("a mutated hello authenticated")
    sent = _sent_messages(bodies)
    if server.delivered != sent[: len(server.delivered)]:
        raise AssertionError("a message the dialer did not send (in that order) was delivered")
    if mode == "clean" and not conn.closed and server.delivered != sent:
        raise AssertionError("an unmutated stream lost messages")
    if cuts:
        return "cut:" + next(iter(cuts))
    return "authenticated" if conn.session is not None else "handshaking"


def run_peer(case: tuple[str, int]) -> str:
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(_feed(*case))


def _peer_inputs(case: tuple[str, list[int]]) -> Iterator:
    mode, batch = case
    for seed in batch:
        yield functools.partial(run_peer, (mode, seed))


peer_cases = st.tuples(st.sampled_from(MODES), seed_batch())
PEER = Target("peer", peer_cases, _peer_inputs)
