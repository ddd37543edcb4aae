"""RayPeerTransport without Ray: actor lookups and handles are fakes that record the calls."""

from __future__ import annotations

import asyncio
import pickle
from types import SimpleNamespace

from benchmarks.ray_transport import RayPeerTransport

NAMES = ["r0", "r1", "r2", "r3"]


class FakeActors:
    """Named fake replica actors; ``up`` says which exist (``lookup`` raises for the others,
    as ``ray.get_actor`` does)."""

    def __init__(self, up: set[str]) -> None:
        self.up = set(up)
        self.lookups: list[str] = []
        self.calls: list[tuple[str, str, tuple]] = []  # (actor, method, args)

    def lookup(self, name: str) -> SimpleNamespace:
        self.lookups.append(name)
        if name not in self.up:
            raise ValueError(f"Failed to look up actor {name}")

        def method(m: str, result=None):
            def remote(*args):
                self.calls.append((name, m, args))
                if result is None:
                    return None  # fire-and-forget: nobody awaits it

                async def reply():
                    return result(*args)

                return reply()

            return SimpleNamespace(remote=remote)

        return SimpleNamespace(
            deliver=method("deliver"),
            deliver_many=method("deliver_many"),
            snapshot_offer=method("snapshot_offer", lambda: {"height": 3, "from": name}),
            attest_state=method("attest_state", lambda h: (name, h)),
        )


async def test_one_turns_messages_to_a_peer_leave_as_one_call_in_order() -> None:
    actors = FakeActors(set(NAMES))
    t = RayPeerTransport(NAMES, index=1, lookup=actors.lookup)
    t.send(2, b"a")
    t.send(0, b"x")
    t.send(2, b"b")
    t.send(2, b"c")
    assert actors.calls == []  # nothing leaves before the next turn of the loop
    await asyncio.sleep(0)
    assert sorted(actors.calls) == [
        ("r0", "deliver", (b"x", 1)),
        ("r2", "deliver_many", ([b"a", b"b", b"c"], 1)),
    ]
    t.send(2, b"d")
    await asyncio.sleep(0)
    assert actors.calls[-1] == ("r2", "deliver", (b"d", 1))
    assert actors.lookups.count("r2") == 1  # the handle is kept


async def test_a_peer_not_up_yet_is_skipped_and_looked_up_again_later() -> None:
    actors = FakeActors({"r0"})
    t = RayPeerTransport(NAMES, index=0, lookup=actors.lookup)
    t.send(3, b"lost")
    await asyncio.sleep(0)
    assert actors.calls == []  # dropped: consensus recovers by timeouts and fetches
    actors.up.add("r3")
    t.send(3, b"later")
    await asyncio.sleep(0)
    assert actors.calls == [("r3", "deliver", (b"later", 0))]


async def test_sync_peers_are_the_other_replicas_that_are_up() -> None:
    actors = FakeActors({"r0", "r1", "r3"})
    t = RayPeerTransport(NAMES, index=1, lookup=actors.lookup)
    peers = t.sync_peers()
    assert [await p.snapshot_offer() for p in peers] == [
        {"height": 3, "from": "r0"},
        {"height": 3, "from": "r3"},
    ]
    assert [await p.attest_state(7) for p in peers] == [("r0", 7), ("r3", 7)]


def test_an_unused_transport_pickles_into_actor_arguments() -> None:
    t = RayPeerTransport(NAMES, index=2, namespace="ns")
    back = pickle.loads(pickle.dumps(t))
    assert (back.peer_names, back.index, back.namespace) == (NAMES, 2, "ns")
