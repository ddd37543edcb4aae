"""The ingress bounds what it reads before and after authentication (issue 19 item 4).

Authentication comes from the headers alone, so an unauthenticated request is answered 401 without
reading its body; an authenticated one is refused 413 from its Content-Length, or while streaming
a body that declares none, once it passes ``max_body_bytes``; one client (API key or signer) has
at most ``max_inflight_per_client`` requests in flight. The ingress runs in process over fakes
(``tests/fuzz/targets.py``), driven through the ASGI ``receive`` channel so the tests can count
how much of a body was pulled.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gonka_ray import crypto
from tests.fuzz.targets import API_KEY, _scope, make_ingress

CHAT = "/v1/chat/completions"
BODY = json.dumps(
    {"model": "fake", "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]}
).encode()


class Body:
    """An ASGI ``receive`` that hands out ``chunks`` one message at a time and counts them."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.pulled = 0  # bytes handed to the app

    async def __call__(self) -> dict[str, Any]:
        if not self.chunks:
            return {"type": "http.request", "body": b"", "more_body": False}
        chunk = self.chunks.pop(0)
        self.pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}


def headers(*, key: str | None = API_KEY, length: int | None = None) -> list:
    out = [(b"content-type", b"application/json")]
    if key is not None:
        out.append((b"authorization", f"Bearer {key}".encode()))
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    return out


async def post(ingress: Any, hdrs: list, body: Body) -> tuple[int, dict]:
    from starlette.requests import Request

    response = await ingress._complete(Request(_scope("POST", CHAT, hdrs), body), "chat")
    return response.status_code, json.loads(response.body)


def test_unauthenticated_oversized_body_is_refused_unread() -> None:
    ingress = make_ingress()
    huge = 32 * 1024 * 1024
    for hdrs in (headers(key=None, length=huge), headers(key="sk-wrong", length=huge)):
        body = Body([b"x" * 65536] * 4)
        status, err = asyncio.run(post(ingress, hdrs, body))
        assert status == 401 and err["error"]["code"] == "invalid_api_key"
        assert body.pulled == 0  # answered from the headers alone
    assert ingress.inflight == 0 and not ingress.client_inflight


def test_declared_length_over_the_cap_is_refused_before_reading() -> None:
    ingress = make_ingress()
    ingress.max_body_bytes = 1024
    body = Body([BODY, b" " * 2048])
    status, err = asyncio.run(post(ingress, headers(length=len(BODY) + 2048), body))
    assert status == 413 and err["error"]["code"] == "request_too_large"
    assert body.pulled == 0
    assert ingress.inflight == 0 and not ingress.client_inflight


def test_streamed_body_without_length_stops_at_the_cap() -> None:
    ingress = make_ingress()
    ingress.max_body_bytes = 10_000
    body = Body([b" " * 4096] * 100)  # 400 KiB, no Content-Length
    status, err = asyncio.run(post(ingress, headers(), body))
    assert status == 413 and err["error"]["type"] == "RequestTooLarge"
    assert body.pulled <= 10_000 + 4096  # stopped within one chunk of the cap
    assert ingress.inflight == 0 and not ingress.client_inflight


def test_body_under_the_cap_is_served() -> None:
    ingress = make_ingress()
    ingress.max_body_bytes = len(BODY)
    status, out = asyncio.run(post(ingress, headers(length=len(BODY)), Body([BODY])))
    assert status == 200 and out["choices"][0]["message"]["content"]


def test_one_client_cannot_hold_more_than_its_share() -> None:
    ingress = make_ingress()
    ingress.max_inflight_per_client = 2
    other = crypto.KeyPair.from_seed("another-api-client")
    ingress.api_keys["sk-other"] = other
    gate = asyncio.Event()
    items = ingress._items

    async def slow_items(call: Any):
        await gate.wait()
        async for item in items(call):
            yield item

    ingress._items = slow_items

    async def scenario() -> list[int]:
        held = [asyncio.create_task(post(ingress, headers(), Body([BODY]))) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert ingress.client_inflight == {ingress.api_keys[API_KEY].address: 2}
        refused = await post(ingress, headers(), Body([BODY]))
        assert refused[1]["error"]["code"] == "overloaded"
        other_task = asyncio.create_task(post(ingress, headers(key="sk-other"), Body([BODY])))
        await asyncio.sleep(0.05)
        gate.set()
        done = [await t for t in held] + [await other_task]
        return [refused[0]] + [status for status, _ in done]

    statuses = asyncio.run(scenario())
    assert statuses == [429, 200, 200, 200]
    assert ingress.inflight == 0 and not ingress.client_inflight


# --- the proxy-level middleware (gonka_ray.serve.body_limit) -------------------------------------


def _asgi(limit: int, hdrs: list, chunks: list[bytes], path: str = CHAT):
    """Run BodyLimit over an app that reads the whole body; returns (status, app_saw, pulled)."""
    from gonka_ray.serve.body_limit import BodyLimit

    seen: dict[str, Any] = {"called": False, "body": b"", "disconnect": False}

    async def app(scope, receive, send) -> None:
        seen["called"] = True
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                seen["disconnect"] = True
                return
            seen["body"] += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[dict] = []

    async def send(msg: dict) -> None:
        sent.append(msg)

    body = Body(chunks)
    scope = {**_scope("POST", path, hdrs)}
    asyncio.run(BodyLimit(app, max_body_bytes=limit)(scope, body, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return status, seen, body.pulled, sent


def test_proxy_middleware_refuses_unauthenticated_and_oversized_without_reading() -> None:
    status, seen, pulled, sent = _asgi(1024, headers(key=None, length=10**9), [b"x" * 4096])
    assert status == 401 and not seen["called"] and pulled == 0
    assert json.loads(sent[-1]["body"])["error"]["code"] == "invalid_api_key"
    status, seen, pulled, sent = _asgi(1024, headers(length=10**9), [b"x" * 4096])
    assert status == 413 and not seen["called"] and pulled == 0
    assert json.loads(sent[-1]["body"])["error"]["code"] == "request_too_large"


def test_proxy_middleware_cuts_a_streamed_body_at_the_limit() -> None:
    status, seen, pulled, _ = _asgi(10_000, headers(), [b" " * 4096] * 50)
    assert seen["disconnect"] and status is None  # the app was told the client left
    assert pulled <= 10_000 + 4096


def test_proxy_middleware_passes_a_body_under_the_limit() -> None:
    status, seen, _, _ = _asgi(len(BODY), headers(length=len(BODY)), [BODY])
    assert status == 200 and seen["body"] == BODY
