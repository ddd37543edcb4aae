"""A TCP peer transport's server under attack: each misbehaving connection is cut off (and the
reason counted) while a well-behaved peer on the same server keeps getting its messages
through."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from gonka_ray import crypto, wire
from gonka_ray.constants import PEER_GUEST_INDEX
from gonka_ray.exceptions import PeerCallFailed
from gonka_ray.peer.framing import HEADER, Kind, frame, pack_batch, plain
from gonka_ray.peer.guest import GuestLink
from gonka_ray.peer.limits import PeerLimits
from gonka_ray.peer.tcp import TcpPeerTransport
from gonka_ray.wire import PeerRequest
from tests.peer_harness import RawPeer, Recorder, endpoint, free_addresses, wait_for

CHAIN = "tcp-security"
KEYS = [crypto.KeyPair.from_seed(f"tcp-security-{i}") for i in range(4)]
PEER_KEYS = [k.public_key for k in KEYS]
SERVER, GOOD, ATTACKER = 3, 1, 2  # the good peer dials the server (the lower index dials)
LIMITS = PeerLimits(
    handshake_timeout_s=0.5,
    frame_timeout_s=0.4,
    min_frame_bytes_per_s=1e9,
    check_interval_s=0.05,
    inbound_msgs_per_s=200,
    inbound_msgs_burst=400,
    max_connections_per_source=4,
    reconnect_min_s=0.02,
)


@dataclass
class Scene:
    server: TcpPeerTransport
    heard: Recorder  # the server's replica
    good: TcpPeerTransport
    address: str

    async def raw(self) -> RawPeer:
        return await RawPeer.connect(self.address)

    async def attacker(self, *, index: int = ATTACKER, key: crypto.KeyPair | None = None):
        raw = await self.raw()
        await raw.handshake(
            key=key or KEYS[index], index=index, chain_id=CHAIN, peer_keys=PEER_KEYS, server=SERVER
        )
        return raw

    async def good_still_heard(self) -> None:
        """New messages of the good peer keep arriving, on its original connection."""
        before = self.heard.count(GOOD)
        await wait_for(lambda: self.heard.count(GOOD) >= before + 5, 3.0, "the good peer")
        assert self.server.connected() == [GOOD]
        assert self.server.stats.cuts["replaced"] == 0


@contextlib.asynccontextmanager
async def scene(limits: PeerLimits = LIMITS) -> AsyncIterator[Scene]:
    addresses = free_addresses(4)
    heard = Recorder()
    server = endpoint(KEYS, SERVER, addresses, chain_id=CHAIN, limits=limits)
    only_server = [None, addresses[GOOD], None, addresses[SERVER]]
    good = endpoint(KEYS, GOOD, only_server, chain_id=CHAIN, limits=LIMITS)
    await server.start(heard)
    await good.start(Recorder())
    await good.wait_connected([SERVER], 5.0)

    async def chatter() -> None:
        for k in range(10**9):
            good.send(SERVER, b"good-%d" % k)
            await asyncio.sleep(0.01)

    task = asyncio.get_running_loop().create_task(chatter())
    try:
        yield Scene(server, heard, good, addresses[SERVER])
    finally:
        task.cancel()
        await good.close()
        await server.close()


async def garbage(s: Scene) -> RawPeer:
    raw = await s.raw()
    raw.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # its "length" is ~1.2 GB
    return raw


async def garbage_hello(s: Scene) -> RawPeer:
    raw = await s.raw()
    raw.write(frame(plain(Kind.HELLO, b"\x93not an envelope")))
    return raw


async def garbage_after_handshake(s: Scene) -> RawPeer:
    raw = await s.attacker()
    raw.write(frame(b"\x02" + bytes(range(64))))  # not sealed with the session key
    return raw


async def oversized_frame_header(s: Scene) -> RawPeer:
    raw = await s.attacker()
    raw.write(HEADER.pack(LIMITS.max_frame_bytes + 1))  # no body follows: refused on the header
    return raw


async def flood(s: Scene) -> RawPeer:
    raw = await s.attacker()
    for k in range(10):  # 1,000 messages at once: over the burst of 400
        raw.send(Kind.BATCH, pack_batch([b"flood-%d-%d" % (k, i) for i in range(100)]))
    return raw


async def request_flood(s: Scene) -> RawPeer:
    raw = await s.attacker()
    for rid in range(LIMITS.max_inflight_requests + 20):
        raw.send(Kind.REQUEST, wire.encode(PeerRequest(rid, "attest_state", 1)))
    return raw


async def slow_drip(s: Scene) -> RawPeer:
    raw = await s.attacker()
    sealed = raw.session.send.seal(Kind.BATCH, pack_batch([b"x" * 200]))
    data = frame(sealed)

    async def drip() -> None:
        for i in range(len(data)):
            if raw.writer.is_closing():
                return
            raw.write(data[i : i + 1])
            await asyncio.sleep(0.05)  # the whole frame would take ~11 s

    raw.background = asyncio.get_running_loop().create_task(drip())
    return raw


async def silent(s: Scene) -> RawPeer:
    return await s.raw()  # connects and never says hello


async def wrong_key(s: Scene) -> RawPeer:
    raw = await s.raw()
    with pytest.raises(ConnectionError):
        await _hello(raw, crypto.KeyPair.from_seed("not-in-genesis"), ATTACKER)
    return raw


async def _hello(raw: RawPeer, key: crypto.KeyPair, index: int) -> None:
    await raw.handshake(key=key, index=index, chain_id=CHAIN, peer_keys=PEER_KEYS, server=SERVER)


async def claims_another_index(s: Scene) -> RawPeer:
    raw = await s.raw()
    with pytest.raises(ConnectionError):  # a genesis key, but the good peer's index
        await _hello(raw, KEYS[ATTACKER], GOOD)
    return raw


async def replayed_hello(s: Scene) -> RawPeer:
    first = await s.attacker()  # a genuine session: record its hellos
    first.close()
    raw = await s.raw()
    for hello in first.sent_hellos:
        raw.write(frame(hello))  # hello 2 echoes the nonce of the *old* connection
    return raw


async def guest(s: Scene, name: str = "a-guest") -> RawPeer:
    raw = await s.raw()
    # any key may come as a guest (a joiner registering)
    await _hello(raw, crypto.KeyPair.from_seed(name), PEER_GUEST_INDEX)
    return raw


async def guest_sends_consensus(s: Scene) -> RawPeer:
    raw = await guest(s)
    await wait_for(lambda: s.server.stats.guest_sessions == 1, 2.0, "the guest session")
    raw.send(Kind.BATCH, pack_batch([b"a vote from nowhere"]))
    return raw


ATTACKS: dict[str, tuple[Callable[[Scene], Awaitable[RawPeer]], str]] = {
    "garbage": (garbage, "frame_too_large"),
    "garbage_hello": (garbage_hello, "bad_hello"),
    "garbage_after_handshake": (garbage_after_handshake, "bad_frame_auth"),
    "oversized_frame_header": (oversized_frame_header, "frame_too_large"),
    "flood": (flood, "flood"),
    "request_flood": (request_flood, "too_many_requests"),
    "slow_drip": (slow_drip, "slow_frame"),
    "silent": (silent, "handshake_timeout"),
    "wrong_key": (wrong_key, "wrong_key"),
    "claims_another_index": (claims_another_index, "wrong_key"),
    "replayed_hello": (replayed_hello, "stale_echo"),
    "guest_sends_consensus": (guest_sends_consensus, "guest_batch"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_a_misbehaving_peer_is_cut_off_and_the_good_peer_keeps_talking(name: str) -> None:
    attack, reason = ATTACKS[name]
    async with scene() as s:
        raw = await attack(s)
        assert await raw.cut_off(), f"{name}: the server kept the connection"
        raw.close()
        assert s.server.stats.cuts[reason] >= 1, s.server.stats.cuts
        await s.good_still_heard()


async def test_connections_from_one_source_are_capped() -> None:
    patient = dataclasses.replace(LIMITS, handshake_timeout_s=10.0)  # the idle ones stay
    async with scene(patient) as s:  # the good peer holds one of the 4 loopback slots
        idle = [await s.raw() for _ in range(3)]
        extra = await s.raw()
        assert await extra.cut_off(1.0)
        assert s.server.stats.cuts["too_many_connections"] == 1
        assert not await idle[0].cut_off(0.1)  # the first ones are not cut for it
        for r in [*idle, extra]:
            r.close()
        await s.good_still_heard()


async def test_an_authenticated_peer_reconnecting_replaces_its_old_connection() -> None:
    async with scene() as s:
        first = await s.attacker()
        await wait_for(lambda: ATTACKER in s.server.connected(), 2.0, "the first session")
        second = await s.attacker()
        assert await first.cut_off()
        second.send(Kind.BATCH, pack_batch([b"from the new connection"]))
        await wait_for(lambda: s.heard.count(ATTACKER) == 1, 2.0, "the new connection's message")
        assert s.server.stats.cuts["replaced"] == 1
        second.close()


async def test_a_peer_cut_for_a_violation_cannot_simply_redial() -> None:
    async with scene() as s:
        raw = await flood(s)
        assert await raw.cut_off()
        again = await s.raw()
        await again.handshake(  # its handshake is genuine, but its index is banned for a while
            key=KEYS[ATTACKER], index=ATTACKER, chain_id=CHAIN, peer_keys=PEER_KEYS, server=SERVER
        )
        assert await again.cut_off()
        assert s.server.stats.cuts["banned"] == 1 and ATTACKER not in s.server.connected()
        for r in (raw, again):
            r.close()
        await s.good_still_heard()


async def test_a_guest_calls_only_what_is_served_to_guests_and_a_bad_one_bans_no_other() -> None:
    async def hello(body: bytes, caller: int) -> AsyncIterator[bytes]:
        yield b"hi " + str(caller).encode()

    async with scene() as s:
        s.server.serve("members_only", hello)
        s.server.serve("open", hello, guests=True)
        async with GuestLink(key=KEYS[0], chain_id=CHAIN, address=s.address) as link:
            assert await link.call("open", b"") == f"hi {PEER_GUEST_INDEX}".encode()
            with pytest.raises(PeerCallFailed) as refused:
                await link.call("members_only", b"")
            assert refused.value.reason == "not_for_guests"
        bad = await guest_sends_consensus(s)
        assert await bad.cut_off()
        bad.close()
        async with GuestLink(key=KEYS[0], chain_id=CHAIN, address=s.address) as again:
            assert await again.call("open", b"")  # guests share no ban
        assert s.heard.count(PEER_GUEST_INDEX) == 0
        await s.good_still_heard()
