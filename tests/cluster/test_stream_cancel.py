"""An abandoned stream stops the whole chain of streaming actor calls behind it.

Two actors stand in for TA → executor → MLNode: ``Relay.stream`` relays ``Source.stream``
through :func:`gonka_ray.actors.clients.stream_call`, as the TA relays its executor. A consumer
that stops after two items (a client that went away) must end the source's generation too,
instead of leaving it producing to the end.
"""

from __future__ import annotations

import asyncio

from gonka_ray.actors.clients import stream_call

ITEMS = 200
ITEM_S = 0.05  # the source's pace: the whole stream would take 10 s


def test_stopping_early_cancels_every_stream_behind_it(ray_session) -> None:
    ray = ray_session

    @ray.remote(num_cpus=0)
    class Source:
        def __init__(self) -> None:
            self.sent = 0
            self.cancelled = False

        async def stream(self, n: int):
            try:
                for i in range(n):
                    self.sent += 1
                    yield i
                    await asyncio.sleep(ITEM_S)
            except (asyncio.CancelledError, GeneratorExit):
                self.cancelled = True
                raise

        def state(self) -> tuple[int, bool]:
            return self.sent, self.cancelled

    @ray.remote(num_cpus=0)
    class Relay:
        def __init__(self, source) -> None:
            self.source = source

        async def stream(self, n: int):
            async for item in stream_call(self.source.stream, n):
                yield item

    source = Source.remote()
    relay = Relay.remote(source)

    async def consume_two() -> list[int]:
        got = []
        async for item in stream_call(relay.stream, ITEMS):
            got.append(item)
            if len(got) == 2:
                break
        return got

    async def scenario() -> tuple[list[int], tuple[int, bool]]:
        got = await consume_two()
        for _ in range(100):  # the cancellation travels down the chain
            state = await source.state.remote()
            if state[1]:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        return got, await source.state.remote()

    got, (sent, cancelled) = asyncio.run(scenario())
    assert got == [0, 1]
    assert cancelled, "the source kept generating after its consumer left"
    assert sent < ITEMS / 2, sent  # stopped long before the end (pace: 20 items per second)
    ray.kill(relay)
    ray.kill(source)
