"""Map errors to OpenAI-shaped JSON error responses.

Errors are ``{"error": {"message", "type", "code", "param"}}`` with the status of the
:class:`~gonka_ray.exceptions.GonkaError` that caused them (Ray wraps exceptions raised in
actors; :func:`unwrap_error` finds the cause): 400 bad request or validation, 401 auth,
402 balance, 404 unknown model or inference, 409 replay, 429 back-pressure (with
``Retry-After``), 503 no executor. An error after the first streamed token ends the SSE stream
with one ``data: {"error": ...}`` event (see :mod:`gonka_ray.serve.ingress`).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from gonka_ray.exceptions import GonkaError, InvalidRequest, NoExecutorAvailable, Overloaded


def validation_error(exc: ValidationError) -> InvalidRequest:
    """The first pydantic error as an :class:`InvalidRequest` naming its top-level field."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    # NOTE: ``param`` is the top-level field (pydantic adds union member tags deeper down)
    param = str(err["loc"][0]) if err["loc"] else None
    return InvalidRequest(f"{loc}: {err['msg']}{more}", field=param)


def unwrap_error(exc: BaseException) -> GonkaError:
    """The :class:`GonkaError` behind ``exc`` (Ray wraps actor exceptions; follows ``cause``),
    or a 503 :class:`NoExecutorAvailable` for a dead/unreachable actor, else a 500."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        if isinstance(cur, GonkaError):
            if type(cur).__module__.startswith("ray."):  # Ray's dual class: rebuild the cause
                inner = getattr(cur, "cause", None)
                if isinstance(inner, GonkaError):
                    return inner
            return cur
        cur = getattr(cur, "cause", None) or cur.__cause__
        seen += 1
    try:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        if isinstance(exc, RayActorError | ActorDiedError | ActorUnavailableError):
            return NoExecutorAvailable(f"transport agent unavailable: {type(exc).__name__}")
    except ImportError:  # pragma: no cover - ray is a dependency
        pass
    return GonkaError(f"internal error: {type(exc).__name__}")


def error_response(err: GonkaError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """OpenAI-shaped JSON error with the error's HTTP status (and Retry-After on 429)."""
    hdrs = dict(headers or {})
    if isinstance(err, Overloaded):
        hdrs["Retry-After"] = str(max(1, round(err.retry_after_s)))
    return JSONResponse({"error": err.to_dict()}, status_code=err.http_status, headers=hdrs)
