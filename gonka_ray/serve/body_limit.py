"""Bounded request bodies at Serve's HTTP proxy, before anything buffers them.

Ray Serve's proxy reads each request body from the client into an unbounded queue as fast as the
client sends it, whatever the replica does with it: a replica that answers 401 or 413 from the
headers (as :class:`~gonka_ray.serve.ingress.GonkaIngress` does) still leaves the proxy holding
the whole body. :class:`BodyLimit` is an ASGI middleware installed in the proxy itself, in front
of that queue. Serve takes proxy middlewares only from the environment of the proxy's process:
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` names :func:`proxy_middlewares`
(:data:`PROXY_CALLBACK_ENV`, :data:`PROXY_CALLBACK`). ``init_local_ray`` and the tests' Ray set
it before Ray starts, so the proxy inherits it; a ``ray up`` cluster sets it in its ``ray start``
commands (``clusters/*.yaml``).

- a POST to a completion route without credentials (``Authorization`` or
  ``X-Gonka-Signed-Request``) is answered 401 without reading its body (the key itself is
  checked by the ingress, also from the headers);
- a ``Content-Length`` over ``max_body_bytes`` is answered 413 without reading the body;
- a body without ``Content-Length`` is counted as it streams in; past ``max_body_bytes`` the
  proxy is told the client disconnected, so it stops reading and drops the request.

Errors are OpenAI-shaped JSON, as the ingress's. No Ray import: the proxy process unpickles it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gonka_ray.constants import SERVE_MAX_BODY_BYTES
from gonka_ray.exceptions import AuthenticationError, GonkaError, InvalidRequest, RequestTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "gonka_ray.serve.body_limit.proxy_middlewares"
CREDENTIAL_HEADERS = (b"authorization", b"x-gonka-signed-request")
COMPLETION_PATHS = ("/chat/completions", "/completions")


class BodyLimit:
    """ASGI middleware: see the module docstring.

    Args:
        app: the ASGI app it wraps (Serve's proxy).
        max_body_bytes: the largest body passed on.
    """

    def __init__(
        self, app: Callable[..., Awaitable[None]], max_body_bytes: int = SERVE_MAX_BODY_BYTES
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.refused = 0  # requests answered here (counted for tests)
        self.cut = 0  # bodies cut off while streaming

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            self.refused += 1
            await _respond(send, refusal)
            return
        limit, seen = self.max_body_bytes, 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    self.cut += 1
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, capped, send)

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> GonkaError | None:
        path = str(scope.get("path", ""))
        if path.endswith(COMPLETION_PATHS) and not any(h in headers for h in CREDENTIAL_HEADERS):
            return missing_credentials()
        return length_refusal(headers.get(b"content-length"), self.max_body_bytes)


def missing_credentials() -> AuthenticationError:
    """The 401 for a completion request with neither an API key nor a signed request."""
    return AuthenticationError(
        "missing API key: send 'Authorization: Bearer <key>' or a signed request"
    )


def length_refusal(declared: str | bytes | None, limit: int) -> GonkaError | None:
    """What a ``Content-Length`` header earns against ``limit`` bytes before anything is read:
    None (read it), a 400 when it is not a number, a 413 when it is over the limit."""
    if declared is None:
        return None
    if not declared.strip().isdigit():
        return InvalidRequest("Content-Length is not a number", field="Content-Length")
    if int(declared) > limit:
        return RequestTooLarge(
            f"request body of {int(declared)} bytes is over the {limit}-byte limit",
            limit_bytes=limit,
        )
    return None


async def _respond(send: Send, err: GonkaError) -> None:
    body = json.dumps({"error": err.to_dict()}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": err.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),  # the unread body is not ours to drain
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def proxy_middlewares() -> list[Any]:
    """What Serve's proxy calls through :data:`PROXY_CALLBACK_ENV`: its middlewares."""
    from starlette.middleware import Middleware

    return [Middleware(BodyLimit)]
