"""Back-pressure and typed failures of the request flow, in one process (FakeEngine).

A saturated transport agent answers ``Overloaded`` (429 + Retry-After) before escrowing
anything; a saturated executor refuses at once so the TA tries the next draw; a stream cut after
its first token ends with ``StreamInterrupted`` naming the inference.
"""

from __future__ import annotations

import pytest

from gonka_ray import wire
from gonka_ray.constants import TA_TIMINGS_KEPT
from gonka_ray.exceptions import EngineError, Overloaded, StreamInterrupted
from gonka_ray.protocol.selection import eligible_weights, select_executor
from gonka_ray.serve.errors import error_response
from tests.sim.participants import CHAIN, BadExecutor, Net


async def test_saturated_ta_answers_429_before_escrow_and_the_request_can_be_resent(
    tmp_path,
) -> None:
    net = Net(tmp_path)
    ta = net.tas["p0"]
    ta.max_inflight = 1
    held = ta.submit(net.request())
    await held.__anext__()  # one request in flight, paused after its first token
    balance = await net.ledger.balance(net.client.address)
    env = net.request()
    with pytest.raises(Overloaded) as err:
        await net.ask("p0", env)
    assert ta.stats()["refused"] == 1
    response = error_response(err.value)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    iid = wire.open_envelope(env, chain=CHAIN).id
    assert await net.ledger.inference(iid) is None  # nothing started, nothing escrowed
    assert await net.ledger.balance(net.client.address) == balance
    await held.aclose()
    assert ta.inflight == 0
    items = await net.ask("p0", env)  # the same signed request, once there is room
    assert isinstance(items[-1], wire.InferenceDone)


async def test_saturated_executor_is_skipped_for_the_next_draw(tmp_path) -> None:
    net = Net(tmp_path)
    busy = net.executors["p1"]
    busy.max_inflight = 0
    weights = eligible_weights(await net.ledger.participants())
    ta = net.keys["p0"].address

    def draw(env: bytes, attempt: int) -> str:
        return select_executor(
            wire.open_envelope(env, chain=CHAIN).id, attempt, weights, exclude={ta}
        )

    env = net.request()
    while draw(env, 0) != busy.address or draw(env, 1) == busy.address:
        env = net.request()
    done = (await net.ask("p0", env))[-1]
    assert busy.refused == 1  # refused at once, nothing run
    assert isinstance(done, wire.InferenceDone) and done.attempt == 1
    assert done.executor == draw(env, 1) != busy.address
    assert net.tas["p0"].retries == 1


async def test_every_executor_saturated_answers_overloaded(tmp_path) -> None:
    net = Net(tmp_path)
    for ex in net.executors.values():
        ex.max_inflight = 0
    with pytest.raises(Overloaded):
        await net.ask("p0", net.request())
    assert net.tas["p0"].stats()["refused"] == 1 and net.tas["p0"].inflight == 0


async def test_stream_cut_mid_way_is_a_typed_error_naming_the_inference(tmp_path) -> None:
    net = Net(tmp_path)
    net.tas["p0"].executors = lambda a: BadExecutor("cut")
    env = net.request()
    with pytest.raises(StreamInterrupted) as err:
        await net.ask("p0", env)
    assert isinstance(err.value, EngineError) and err.value.recoverable
    assert err.value.fields["inference_id"] == wire.open_envelope(env, chain=CHAIN).id.hex()
    assert err.value.fields["tokens_sent"] == 1
    assert err.value.to_dict()["code"] == "stream_interrupted"


async def test_ta_keeps_a_bounded_number_of_timings(tmp_path) -> None:
    net = Net(tmp_path)
    ta = net.tas["p0"]
    for _ in range(TA_TIMINGS_KEPT + 5):
        ta.timings.append({"first_token_s": 0.0})
    assert len(ta.stats()["timings"]) == TA_TIMINGS_KEPT
