"""Helpers for the TCP peer transport's tests: loopback addresses, a recording replica, and a
raw peer that speaks the protocol by hand (so it can also break it)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from gonka_ray import crypto
from gonka_ray.peer.framing import FrameDecoder, Kind, frame
from gonka_ray.peer.handshake import Handshake, Session
from gonka_ray.peer.limits import PeerLimits
from gonka_ray.peer.tcp import TcpPeerTransport, loopback_addresses

HOST = "127.0.0.1"


def free_addresses(n: int) -> list[str]:
    """``n`` distinct free loopback ``host:port`` addresses."""
    return loopback_addresses(n, HOST)


def endpoint(
    keys: Sequence[crypto.KeyPair],
    index: int,
    addresses: Sequence[str | None],
    *,
    chain_id: str,
    limits: PeerLimits | None = None,
) -> TcpPeerTransport:
    """The transport of ``keys[index]`` in a group whose genesis keys are ``keys``."""
    return TcpPeerTransport(
        index=index,
        key=keys[index],
        chain_id=chain_id,
        peer_keys=[k.public_key for k in keys],
        addresses=addresses,
        limits=limits,
    )


class Recorder:
    """A stand-in replica: records what it is delivered, answers sync requests with fixed
    values."""

    def __init__(self) -> None:
        self.got: list[tuple[int, bytes]] = []

    async def deliver(self, data: bytes, sender: int) -> None:
        self.got.append((sender, data))

    async def deliver_many(self, batch: list[bytes], sender: int) -> None:
        self.got.extend((sender, d) for d in batch)

    async def snapshot_offer(self):
        return None

    async def attest_state(self, height: int):
        return (bytes(32), bytes([height % 256]) * 32, bytes(32), bytes(32), bytes(64))

    def count(self, sender: int) -> int:
        return sum(1 for s, _ in self.got if s == sender)


async def wait_for(condition, timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition()`` until true (tests wait on conditions, never on sleeps)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class RawPeer:
    """A hand-driven client connection to a transport's server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(1 << 30)
        self.sent_hellos: list[bytes] = []
        self.session: Session | None = None
        self.background: asyncio.Task | None = None  # a task writing on it, if any

    @classmethod
    async def connect(cls, address: str) -> RawPeer:
        host, port = address.rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_payload(self, timeout_s: float = 2.0) -> bytes:
        async with asyncio.timeout(timeout_s):
            while (p := self.decoder.next_payload()) is None:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed by the server")
                self.decoder.feed(data)
            return p

    async def handshake(
        self,
        *,
        key: crypto.KeyPair,
        index: int,
        chain_id: str,
        peer_keys: Sequence[bytes],
        server: int,
    ) -> Session:
        """Complete the handshake as ``index`` signing with ``key``; keeps the hellos sent."""
        hs = Handshake(
            key=key,
            index=index,
            chain_id=chain_id,
            peer_keys=peer_keys,
            dialer=True,
            expect=server,
            now_ms=int(time.time() * 1000),
            max_skew_ms=60_000,
        )
        self._send_hello(hs.hello())
        while hs.session is None:
            replies, _ = hs.receive(await self.read_payload(), int(time.time() * 1000))
            for reply in replies:
                self._send_hello(reply)
        self.session = hs.session
        return hs.session

    def _send_hello(self, payload: bytes) -> None:
        self.sent_hellos.append(payload)
        self.write(frame(payload))

    def send(self, kind: Kind, body: bytes = b"") -> None:
        assert self.session is not None
        self.write(frame(self.session.send.seal(kind, body)))

    async def cut_off(self, timeout_s: float = 3.0) -> bool:
        """True once the server has closed the connection (False: still open at the end)."""
        try:
            async with asyncio.timeout(timeout_s):
                while await self.reader.read(65536):
                    pass
            return True
        except TimeoutError:  # NOTE: before OSError, of which it is a subclass
            return False
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        if self.background is not None:
            self.background.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()
