"""The network's front door: an OpenAI-compatible Ray Serve application (DESIGN §1–§2).

Endpoints (under the route prefix):

- ``POST /v1/chat/completions`` and ``POST /v1/completions``: ``stream`` (SSE ``data: {...}``
  chunks, then ``data: [DONE]``), ``logprobs``/``top_logprobs`` (≤ 20), ``seed``,
  ``temperature``, ``top_p``, ``max_tokens``, ``stop``; ``n`` must be 1.
- ``GET /v1/models``, ``GET /v1/inferences/{id}`` (ledger status, validations, refund),
  ``GET /health``.
- ``GET /``: the explorer page (``static/explorer.html``, self-contained: no CDN), which polls
  ``GET /v1/explorer``: participants (weight, reputation, status, counters), ledger height,
  epoch and phase (from the committed height and the network's epoch config,
  :func:`gonka_ray.protocol.epochs.position`), recent inferences, verification totals.

**Routing.** Each request goes to one transport agent: the participant named by header
``X-Gonka-TA``, otherwise a random participant that the ledger does not list as INVALID.

**Auth**, one of:

1. ``Authorization: Bearer <api key>``: the key is bound to a custodial client account whose
   signing key the ingress holds; the ingress builds the ``InferenceRequest`` from the body and
   signs it (:func:`gonka_ray.client_request.sign_chat`).
2. ``X-Gonka-Signed-Request: <base64 envelope>``: a request signed by the client's own key
   (``sdk.sign_chat``). The envelope is authoritative: model, messages/prompt and every
   sampling field come from it and the body's copies are **ignored** (listed in
   ``X-Gonka-Ignored-Fields``). Only presentation is read from the body: ``stream``, and
   ``logprobs``/``top_logprobs`` (how many alternatives to show, at most what the envelope asked
   for). A replayed envelope is refused with 409 here and at the transport agent.

**Responses** carry ``inference_id`` (top-level field and header ``X-Gonka-Inference-Id``) and
``usage`` ``{prompt_tokens, completion_tokens, total_tokens, cost}``; streamed responses put
``usage`` on the chunk that carries the finish reason. Request bodies are pydantic models that
accept unknown fields; the names of fields that were not used are returned in the header
``X-Gonka-Ignored-Fields`` (comma-separated).

**Errors** are OpenAI-shaped ``{"error": {"message", "type", "code", "param"}}`` with the
status of the :class:`~gonka_ray.exceptions.GonkaError` that caused them (Ray wraps exceptions
raised in actors; :func:`unwrap_error` finds the cause): 400 bad request or validation,
401 auth, 402 balance, 404 unknown model or inference, 409 replay, 429 back-pressure (with
``Retry-After``), 503 no executor. An error after the first streamed token ends the SSE stream
with one ``data: {"error": ...}`` event.

Token strings of logprob tables come from the TA participant's MLNode (``token_strings``, one
batched call per response or per streamed chunk, cached in the ingress).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from enum import Enum
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gonka_ray import constants as C
from gonka_ray import crypto, wire
from gonka_ray import metrics as M
from gonka_ray.actors.clients import stream_call
from gonka_ray.client_request import sign_chat
from gonka_ray.exceptions import (
    AuthenticationError,
    GonkaError,
    InvalidRequest,
    ModelNotFound,
    NoExecutorAvailable,
    NotFound,
    Overloaded,
    WireError,
)
from gonka_ray.protocol.admission import RateLimiter, ReplayGuard

log = logging.getLogger(__name__)

SERVE_MAX_ONGOING_REQUESTS = 256  # per replica; Serve's default of 5 starves streaming
SERVE_MAX_INFLIGHT = 200  # requests in flight per replica before 429 (below the Serve cap)
SERVE_RETRY_AFTER_S = 1.0  # Retry-After on 429
SERVE_DEFAULT_PORT = 8000
PARTICIPANTS_TTL_S = 5.0  # how long the ingress caches the ledger's participant statuses
TOKEN_CACHE_MAX = 100_000  # token id -> string entries kept by the ingress
CONTEXT_SLACK_TOKENS = 64  # chat-template tokens a byte count may miss (see _check_context)
EXPLORER_TTL_S = 1.0  # how long the ingress reuses one explorer snapshot (many open pages)
EXPLORER_RECENT = 25  # recent inferences shown by the explorer

HEADER_TA = "x-gonka-ta"
HEADER_SIGNED = "x-gonka-signed-request"
HEADER_INFERENCE_ID = "X-Gonka-Inference-Id"
HEADER_IGNORED = "X-Gonka-Ignored-Fields"


# --- request models ---------------------------------------------------------------------------


class _OpenAIRequest(BaseModel):
    """Accepts unknown fields (OpenAI clients send many); :meth:`ignored_fields` names them."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=128, description="model id")
    max_tokens: int | None = Field(None, ge=1, le=1_000_000, description="completion tokens")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, le=1_000_000, description="extension: 0 = disabled")
    n: int = Field(1, description="only 1 is supported")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)

    def ignored_fields(self) -> list[str]:
        return sorted(self.model_extra or {})

    def stop_list(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 16 or any(not s or len(s) > 256 for s in stops):
            raise InvalidRequest(
                "stop takes at most 16 non-empty strings of ≤ 256 chars", field="stop"
            )
        return stops

    def check_common(self) -> None:
        if self.n != 1:
            raise InvalidRequest(f"n must be 1 (got {self.n}); ask again for more", field="n")


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest("only text content parts are supported", field="messages")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(_OpenAIRequest):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1024)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=C.MAX_TOP_K_LOGPROBS)

    def wire_messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]

    def completion_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or C.DEFAULT_MAX_TOKENS

    def top_k_shown(self) -> int | None:
        """Logprob alternatives to return: None = no logprobs at all."""
        if not self.logprobs:
            if self.top_logprobs:
                raise InvalidRequest("top_logprobs needs logprobs: true", field="top_logprobs")
            return None
        return self.top_logprobs or 0


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=C.MAX_TOP_K_LOGPROBS)
    echo: bool = False

    def prompt_text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise InvalidRequest(
                    "prompt must be one string (batches are not supported)", field="prompt"
                )
            return self.prompt[0]
        return self.prompt

    def completion_tokens(self) -> int:
        return self.max_tokens or C.DEFAULT_MAX_TOKENS

    def top_k_shown(self) -> int | None:
        return self.logprobs


def validation_error(exc: ValidationError) -> InvalidRequest:
    """The first pydantic error as an :class:`InvalidRequest` naming its top-level field."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    # NOTE: ``param`` is the top-level field (pydantic adds union member tags deeper down)
    param = str(err["loc"][0]) if err["loc"] else None
    return InvalidRequest(f"{loc}: {err['msg']}{more}", field=param)


def _header_list(names: list[str], max_chars: int = 1024) -> str:
    """Client-chosen names as one header value: JSON-escaped (a header is latin-1 on the wire and
    a control character would split or break it; an emoji field name used to make a 500), cut at
    ``max_chars``."""
    text = ",".join(json.dumps(n)[1:-1].replace("\x7f", "\\u007f") for n in names)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def _shown_count(value: Any, field: str) -> int | None:
    """A body's count of logprob alternatives to show next to a signed request: None when it is
    not an integer (as before), 400 when it is one outside ``[0, MAX_TOP_K_LOGPROBS]`` (a negative
    count used to slice the tables from the end)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if not 0 <= value <= C.MAX_TOP_K_LOGPROBS:
        raise InvalidRequest(f"{field} must be in [0, {C.MAX_TOP_K_LOGPROBS}]", field=field)
    return value


# --- errors ------------------------------------------------------------------------------------


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


# --- JSON views of ledger records -----------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def record_view(record: Any, names: Mapping[str, str]) -> dict[str, Any]:
    """An InferenceRecord as JSON, addresses also shown as participant names."""
    # NOTE: the sampling seed stays off the public view: with it anyone could replay (and so
    # predict or imitate) the client's sampled answer; executors and verifiers read it from
    # the signed request.
    out = {f.name: _jsonable(getattr(record, f.name)) for f in fields(record) if f.name != "seed"}
    out["id"] = out.pop("inference_id")
    out["object"] = "inference"
    for role in ("transport_agent", "executor", "accuser"):
        if out.get(role):
            out[f"{role}_name"] = names.get(out[role])
    out["validations"] = [
        {"validator": a, "validator_name": names.get(a), "passed": ok}
        for a, ok in record.validations.items()
    ]
    out["votes"] = [
        {"voter": a, "voter_name": names.get(a), "valid": ok} for a, ok in record.votes.items()
    ]
    out["refund"] = record.refunded
    return out


def explorer_view(
    *,
    network: str,
    model: str,
    height: int,
    infos: Mapping[str, Any],
    records: list[Any],
    epoch: Mapping[str, Any] | None,
    ledger_epoch: Any | None = None,
) -> dict[str, Any]:
    """The explorer's JSON from ledger answers (plain data; no Ray).

    Args:
        infos: address -> ``ParticipantInfo`` (the replica's ``participants()``).
        records: recent ``InferenceRecord``s, newest first.
        epoch: the network's epoch config as a dict, or None.
        ledger_epoch: the replica's ``EpochView`` when its ledger tracks epochs: epoch, phase
            and this epoch's weights come from it; otherwise epoch and phase are computed
            from ``height`` and ``epoch`` (:func:`gonka_ray.protocol.epochs.position`), and
            omitted when both are None.
    """
    names = {a: p.name for a, p in infos.items()}
    epoch_weights = dict(getattr(ledger_epoch, "weights", None) or {})
    parts = []
    for p in sorted(infos.values(), key=lambda p: p.name):
        r = p.record
        parts.append(
            {
                "name": p.name,
                "address": p.address,
                "weight": epoch_weights.get(p.address, p.weight),
                "reputation": p.reputation,
                "status": p.status,
                "served": r.served,
                "validations_done": r.validations_done,
                "checked": r.checked,
                "failed": r.failed,
                "invalidated_total": r.invalidated_total,
                "false_accusations": r.false_accusations,
                "pending_fees": r.pending_fees,
            }
        )
    recent = [
        {
            "id": rec.inference_id.hex(),
            "status": _jsonable(rec.status),
            "transport_agent": names.get(rec.transport_agent),
            "executor": names.get(rec.executor),
            "prompt_tokens": rec.prompt_tokens,
            "completion_tokens": rec.completion_tokens,
            "cost": rec.cost,
            "refund": rec.refunded,
            "validations": len(rec.validations),
            "validations_passed": sum(1 for ok in rec.validations.values() if ok),
            "votes": len(rec.votes),
            "start_height": rec.start_height,
        }
        for rec in records
    ]
    pos = None
    if epoch is not None:
        from gonka_ray.config import EpochConfig
        from gonka_ray.protocol.epochs import position

        cfg = EpochConfig(**epoch)
        at = position(height, cfg)
        pos = {
            "epoch": at.epoch,
            "phase": at.phase.value,
            "offset": at.offset,
            "epoch_blocks": cfg.epoch_blocks,
            "epoch_start": at.epoch_start,
            "epoch_end": at.epoch_end,
            "phase_end": at.phase_end,
            "source": "config",
        }
    if ledger_epoch is not None:
        # NOTE: the ledger's view describes height + 1 (where a transaction sent now lands).
        blocks = pos["epoch_blocks"] if pos else None
        start = ledger_epoch.epoch_end - blocks if blocks else None
        pos = {
            "epoch": ledger_epoch.epoch,
            "phase": str(ledger_epoch.phase),
            "offset": height + 1 - start if start is not None else 0,
            "epoch_blocks": blocks,
            "epoch_start": start,
            "epoch_end": ledger_epoch.epoch_end,
            "phase_end": ledger_epoch.phase_end,
            "source": "ledger",
        }
    by_status: dict[str, int] = {}
    for row in recent:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    return {
        "object": "explorer",
        "network": network,
        "model": model,
        "height": height,
        "epoch": pos,
        "participants": parts,
        "inferences": recent,
        "totals": {
            # NOTE: from the participants' counters, so they cover the whole ledger, not only
            # the recent rows: served = finished inferences, validations = checks recorded.
            "inferences": sum(p["served"] for p in parts),
            "validations": sum(p["validations_done"] for p in parts),
            "invalidated": sum(p["invalidated_total"] for p in parts),
            "recent_by_status": by_status,
        },
        "time_ms": int(time.time() * 1000),
    }


def explorer_html() -> str:
    """The explorer page (packaged with gonka_ray; no external assets)."""
    return resources.files("gonka_ray").joinpath("static/explorer.html").read_text("utf-8")


# --- the deployment -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One admitted request: what to send and how to shape the answer."""

    kind: Literal["chat", "completion"]
    envelope: bytes
    inference_id: bytes
    request: wire.InferenceRequest
    ta: str
    stream: bool
    top_k_shown: int | None
    ignored: list[str]


app = FastAPI(title="gonka_ray", description="OpenAI-compatible front door of a gonka_ray network")


class GonkaIngress:
    """The FastAPI ingress (a plain class; :func:`build_app` makes it a Serve deployment).

    Args:
        network: the network's name (actor names are ``<network>.<participant>.<role>``).
        chain: the network's chain id (its genesis ``chain_id``): signed requests must be
            signed for it (``GET /health`` tells clients).
        namespace: the Ray namespace of the network's actors.
        participants: participant name -> address.
        model: the model id the network serves.
        api_keys: API key -> 32-byte seed of the custodial client key it signs with.
        max_inflight: requests in flight before 429.
        epoch: the network's :class:`~gonka_ray.config.EpochConfig` as a dict (explorer's
            epoch and phase); None hides them.
        price_per_token: the network's price: API-key requests let the network lock at most
            what they can cost at it (their ``max_escrow``).
    """

    def __init__(
        self,
        *,
        network: str,
        chain: str,
        namespace: str,
        participants: dict[str, str],
        model: str,
        api_keys: dict[str, bytes],
        max_inflight: int = SERVE_MAX_INFLIGHT,
        epoch: dict[str, Any] | None = None,
        price_per_token: int = C.DEFAULT_PRICE_PER_TOKEN,
    ) -> None:
        self.network = network
        self.chain = chain
        self.price_per_token = price_per_token
        self.epoch = epoch
        self.namespace = namespace
        self.participants = dict(participants)
        self.names = {a: n for n, a in self.participants.items()}
        self.model = model
        self.api_keys = {k: crypto.KeyPair(seed) for k, seed in api_keys.items()}
        self.max_inflight = max_inflight
        self.inflight = 0
        self.replay = ReplayGuard(max_age_s=C.REQUEST_MAX_AGE_S)
        self.lookups = RateLimiter(C.LOOKUP_RATE_PER_S, C.LOOKUP_BURST)
        self._handles: dict[str, Any] = {}
        self._statuses: dict[str, str] = {}
        self._statuses_at = 0.0
        self._tokens: dict[tuple[str, int], str] = {}
        self._max_model_len: int | None = None
        self.rng = random.Random(secrets.randbits(64))
        self._explorer: tuple[float, dict[str, Any]] | None = None

    # --- actor handles ------------------------------------------------------------------

    def _handle(self, participant: str, role: str) -> Any:
        name = f"{self.network}.{participant}.{role}"
        handle = self._handles.get(name)
        if handle is None:
            import ray

            handle = ray.get_actor(name, namespace=self.namespace)
            self._handles[name] = handle
        return handle

    async def _healthy(self) -> list[str]:
        """Participants not INVALID on the ledger (cached for PARTICIPANTS_TTL_S)."""
        now = time.monotonic()
        if now - self._statuses_at > PARTICIPANTS_TTL_S:
            try:
                infos = await self._handle(
                    next(iter(self.participants)), "ledger"
                ).participants.remote()
                self._statuses = {self.names.get(a, a): p.status for a, p in infos.items()}
                self._statuses_at = now
            except Exception as exc:  # keep the old view; routing must not fail on a query
                log.warning("participant query failed: %s", exc)
        ok = [n for n in self.participants if self._statuses.get(n) != "INVALID"]
        return ok or list(self.participants)

    async def _pick_ta(self, request: Request) -> str:
        named = request.headers.get(HEADER_TA)
        if named:
            if named not in self.participants:
                raise InvalidRequest(f"no participant named {named!r}", field="X-Gonka-TA")
            return named
        return self.rng.choice(await self._healthy())

    async def _token_strings(self, participant: str, ids: list[int]) -> dict[int, str]:
        missing = sorted({i for i in ids if (participant, i) not in self._tokens})
        if missing:
            strings = await self._handle(participant, "mlnode").token_strings.remote(missing)
            if len(self._tokens) > TOKEN_CACHE_MAX:
                self._tokens.clear()
            for i, s in zip(missing, strings, strict=True):
                self._tokens[(participant, i)] = s
        return {i: self._tokens[(participant, i)] for i in ids}

    async def _check_context(self, ta: str, req: wire.InferenceRequest) -> None:
        """400 when prompt + max_tokens cannot fit the model's context.

        NOTE: a byte-level tokenizer never makes more tokens than UTF-8 bytes, so the MLNode is
        asked for an exact count only when the byte count (plus template slack) might not fit.
        """
        if self._max_model_len is None:
            info = await self._handle(ta, "mlnode").model_info.remote()
            self._max_model_len = int(info.max_model_len)
        limit = self._max_model_len
        max_tokens = req.sampling.max_tokens
        if max_tokens >= limit:
            raise InvalidRequest(
                f"max_tokens {max_tokens} must be below the context length {limit}",
                field="max_tokens",
            )
        text = req.prompt if req.prompt is not None else "".join(m.content for m in req.messages)
        field = "prompt" if req.prompt is not None else "messages"
        approx = len(text.encode()) + CONTEXT_SLACK_TOKENS * (1 + len(req.messages))
        if approx + max_tokens <= limit:
            return
        node = self._handle(ta, "mlnode")
        if req.prompt is not None:
            n = len(await node.tokenize.remote(req.prompt))
        else:
            msgs = [{"role": m.role, "content": m.content} for m in req.messages]
            n = len(await node.apply_chat_template.remote(msgs))
        if n + max_tokens > limit:
            err = InvalidRequest(
                f"prompt has {n} tokens; with max_tokens {max_tokens} it exceeds the context "
                f"length {limit}",
                field=field,
            )
            err.code = "context_length_exceeded"
            raise err

    # --- admission ----------------------------------------------------------------------

    async def _admit(self, request: Request, kind: Literal["chat", "completion"]) -> _Call:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            # NOTE: RecursionError: "[[[[..." nested deeper than the parser's stack (was a 500)
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object")
        ta = await self._pick_ta(request)
        signed_b64 = request.headers.get(HEADER_SIGNED)
        if signed_b64:
            call = self._admit_signed(signed_b64, body, kind, ta)
        else:
            call = self._admit_custodial(request, body, kind, ta)
        if call.request.model != self.model:
            raise ModelNotFound(
                f"model {call.request.model!r} does not exist; this network serves {self.model!r}",
                field="model",
            )
        await self._check_context(ta, call.request)
        return call

    def _admit_custodial(
        self, request: Request, body: dict, kind: Literal["chat", "completion"], ta: str
    ) -> _Call:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                "missing API key: send 'Authorization: Bearer <key>' or a signed request"
            )
        key = self.api_keys.get(token.strip())
        if key is None:
            raise AuthenticationError("invalid API key")
        model_cls = ChatCompletionRequest if kind == "chat" else CompletionRequest
        try:
            req = model_cls.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc) from None
        req.check_common()
        shown = req.top_k_shown()
        common = dict(
            model=req.model,
            max_tokens=req.completion_tokens(),
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            seed=req.seed,
            logprobs=shown or 0,
            stop=req.stop_list(),
            price_per_token=self.price_per_token,
            chain=self.chain,
        )
        if isinstance(req, ChatCompletionRequest):
            envelope = sign_chat(key, messages=req.wire_messages(), **common)
        else:
            if req.echo:
                raise InvalidRequest("echo is not supported", field="echo")
            envelope = sign_chat(key, prompt=req.prompt_text(), **common)
        signed = wire.open_envelope(envelope, expect=wire.InferenceRequest, chain=self.chain)
        return _Call(
            kind, envelope, signed.id, signed.message, ta, req.stream, shown, req.ignored_fields()
        )

    def _admit_signed(
        self, signed_b64: str, body: dict, kind: Literal["chat", "completion"], ta: str
    ) -> _Call:
        try:
            envelope = base64.b64decode(signed_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(
                "X-Gonka-Signed-Request is not base64", field="X-Gonka-Signed-Request"
            ) from None
        try:
            signed = wire.open_envelope(envelope, expect=wire.InferenceRequest, chain=self.chain)
        except WireError as exc:
            exc.fields.setdefault("field", "X-Gonka-Signed-Request")
            raise
        req: wire.InferenceRequest = signed.message
        if kind == "chat" and not req.messages:
            raise InvalidRequest(
                "this signed request has a prompt: send it to /v1/completions",
                field="X-Gonka-Signed-Request",
            )
        if kind == "completion" and req.prompt is None:
            raise InvalidRequest(
                "this signed request has messages: send it to /v1/chat/completions",
                field="X-Gonka-Signed-Request",
            )
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise InvalidRequest("stream must be a boolean", field="stream")
        k = req.sampling.logprobs
        if kind == "chat":
            lp = body.get("logprobs", False)
            top = _shown_count(body.get("top_logprobs"), "top_logprobs")
            shown = None if not lp else min(k, top if top is not None else 0)
            used = {"stream", "logprobs", "top_logprobs"}
        else:
            lp = _shown_count(body.get("logprobs"), "logprobs")
            shown = None if lp is None else min(k, lp)
            used = {"stream", "logprobs"}
        ignored = sorted(set(body) - used)
        self.replay.admit(signed.id, req.timestamp_ms, int(time.time() * 1000))
        return _Call(kind, envelope, signed.id, req, ta, stream, shown, ignored)

    # --- the stream from the transport agent ----------------------------------------------

    async def _items(self, call: _Call) -> AsyncIterator[Any]:
        async for item in stream_call(self._handle(call.ta, "ta").submit, call.envelope):
            yield wire.decode(item, expect=(wire.StreamChunk, wire.InferenceDone))

    def _headers(self, call: _Call) -> dict[str, str]:
        h = {HEADER_INFERENCE_ID: call.inference_id.hex(), "X-Gonka-TA": call.ta}
        if call.ignored:
            h[HEADER_IGNORED] = _header_list(call.ignored)
        return h

    @staticmethod
    def _usage(done: wire.InferenceDone) -> dict[str, int]:
        return {
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
            "cost": done.cost,
        }

    async def _logprobs(self, call: _Call, chunks: list[wire.StreamChunk]) -> Any:
        """The choice's ``logprobs`` object in the endpoint's format (None when not asked)."""
        k = call.top_k_shown
        if k is None or not chunks:
            return None
        ids = [c.token_id for c in chunks] + [t for c in chunks for t in c.top_ids[:k]]
        strings = await self._token_strings(call.ta, ids)
        if call.kind == "chat":
            return {
                "content": [
                    {
                        "token": strings[c.token_id],
                        "logprob": c.logprob,
                        "bytes": list(strings[c.token_id].encode()),
                        "top_logprobs": [
                            {"token": strings[t], "logprob": lp, "bytes": list(strings[t].encode())}
                            for t, lp in zip(c.top_ids[:k], c.top_logprobs[:k], strict=True)
                        ],
                    }
                    for c in chunks
                ],
                "refusal": None,
            }
        offsets, pos = [], 0
        for c in chunks:
            offsets.append(pos)
            pos += len(strings[c.token_id])
        return {
            "tokens": [strings[c.token_id] for c in chunks],
            "token_logprobs": [c.logprob for c in chunks],
            "top_logprobs": [
                {strings[t]: lp for t, lp in zip(c.top_ids[:k], c.top_logprobs[:k], strict=True)}
                for c in chunks
            ],
            "text_offset": offsets,
        }

    def _choice(self, call: _Call, text: str, finish: str | None, logprobs: Any, delta: bool):
        if call.kind == "chat":
            body: dict[str, Any] = {"index": 0, "logprobs": logprobs, "finish_reason": finish}
            if delta:
                body["delta"] = {"role": "assistant", "content": text} if text else {}
            else:
                body["message"] = {"role": "assistant", "content": text, "refusal": None}
            return body
        return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}

    def _envelope(self, call: _Call, created: int, stream: bool) -> dict[str, Any]:
        obj = {
            "chat": "chat.completion.chunk" if stream else "chat.completion",
            "completion": "text_completion",
        }[call.kind]
        return {
            "id": ("chatcmpl-" if call.kind == "chat" else "cmpl-") + call.inference_id.hex(),
            "object": obj,
            "created": created,
            "model": call.request.model,
            "system_fingerprint": None,
            "inference_id": call.inference_id.hex(),
        }

    @staticmethod
    def _record(
        kind: str, code: int, t0: float, stream: bool, done: wire.InferenceDone | None = None
    ) -> None:
        """Request metrics (:mod:`gonka_ray.metrics`): count, latency, tokens."""
        M.inc("gonka_requests", endpoint=kind, code=code)
        M.observe("gonka_request_latency_s", time.perf_counter() - t0, endpoint=kind, stream=stream)
        if done is not None:
            M.inc("gonka_tokens", done.prompt_tokens, kind="prompt")
            M.inc("gonka_tokens", done.completion_tokens, kind="completion")

    async def _complete(self, request: Request, kind: Literal["chat", "completion"]):
        t0 = time.perf_counter()
        if self.inflight >= self.max_inflight:
            self._record(kind, 429, t0, False)
            return error_response(
                Overloaded(
                    f"{self.inflight} requests in flight; retry shortly",
                    retry_after_s=SERVE_RETRY_AFTER_S,
                )
            )
        self.inflight += 1
        release = True
        started = False  # the TA sent its first item (it escrowed and ran the request)
        call: _Call | None = None
        try:
            call = await self._admit(request, kind)
            items = self._items(call)
            try:
                first = await items.__anext__()
            except StopAsyncIteration:
                raise NoExecutorAvailable("the transport agent sent nothing") from None
            started = True
            if call.stream:
                release = False
                return StreamingResponse(
                    self._sse(call, first, items, t0),
                    media_type="text/event-stream",
                    headers={**self._headers(call), "Cache-Control": "no-cache"},
                )
            chunks: list[wire.StreamChunk] = []
            done: wire.InferenceDone | None = None
            item = first
            while True:
                if isinstance(item, wire.StreamChunk):
                    chunks.append(item)
                else:
                    done = item
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    break
            if done is None:
                raise NoExecutorAvailable("the stream ended without InferenceDone")
            text = "".join(c.text for c in chunks)
            body = self._envelope(call, int(time.time()), stream=False)
            body["choices"] = [
                self._choice(
                    call, text, done.finish_reason, await self._logprobs(call, chunks), False
                )
            ]
            body["usage"] = self._usage(done)
            self._record(kind, 200, t0, False, done)
            return JSONResponse(body, headers=self._headers(call))
        except Exception as exc:
            err = unwrap_error(exc)
            self._record(kind, err.http_status, t0, bool(call and call.stream))
            if call is not None and not started and err.http_status != 409:
                self.replay.forget(call.inference_id)  # refused before escrow: may be resent
            if err.http_status >= 500:
                log.warning("request failed: %r", exc)
            return error_response(err, self._headers(call) if call else None)
        finally:
            if release:
                self.inflight -= 1

    async def _sse(
        self, call: _Call, first: Any, items: AsyncIterator[Any], t0: float | None = None
    ) -> AsyncIterator[str]:
        created = int(time.time())
        code, done = 500, None
        try:
            if call.kind == "chat":  # OpenAI's first chunk announces the role
                head = self._envelope(call, created, stream=True)
                head["choices"] = [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
                yield f"data: {json.dumps(head)}\n\n"
            item: Any = first
            while True:
                # NOTE: each token leaves as soon as it arrives (holding one back so that the
                # last token could carry the finish reason cost a token interval of latency);
                # as in OpenAI's streams, a last chunk with an empty delta carries the finish
                # reason, and the usage.
                if isinstance(item, wire.StreamChunk):
                    yield await self._sse_chunk(call, created, item, None)
                else:  # InferenceDone
                    done = item
                    yield await self._sse_chunk(call, created, None, item)
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    break
            yield "data: [DONE]\n\n"
            code = 200
        except Exception as exc:
            err = unwrap_error(exc)
            code = err.http_status
            log.warning("stream %s failed: %r", call.inference_id.hex()[:12], exc)
            yield f"data: {json.dumps({'error': err.to_dict()})}\n\n"
        finally:
            self.inflight -= 1
            self._record(call.kind, code, t0 if t0 is not None else time.perf_counter(), True, done)

    async def _sse_chunk(
        self,
        call: _Call,
        created: int,
        chunk: wire.StreamChunk | None,
        done: wire.InferenceDone | None,
    ) -> str:
        body = self._envelope(call, created, stream=True)
        text = chunk.text if chunk else ""
        lp = await self._logprobs(call, [chunk]) if chunk else None
        finish = done.finish_reason if done else None
        body["choices"] = [self._choice(call, text, finish, lp, delta=True)]
        if done is not None:
            body["usage"] = self._usage(done)
        return f"data: {json.dumps(body)}\n\n"

    # --- other endpoints ------------------------------------------------------------------

    def _lookup_limited(self, request: Request) -> JSONResponse | None:
        """A 429 when this client exceeds its share of public lookups, else None."""
        host = request.client.host if request.client else "?"
        wait = self.lookups.wait_s(host)
        if wait <= 0:
            return None
        return error_response(
            Overloaded(f"too many lookups from {host}; retry later", retry_after_s=wait)
        )

    async def _inference(self, request: Request, inference_id: str):
        if (limited := self._lookup_limited(request)) is not None:
            return limited
        try:
            try:
                iid = bytes.fromhex(inference_id)
            except ValueError:
                iid = b""
            if len(iid) != 32:
                raise InvalidRequest("an inference id is 64 hex characters", field="id")
            participant = request.headers.get(HEADER_TA) or next(iter(self.participants))
            if participant not in self.participants:
                raise InvalidRequest(f"no participant named {participant!r}", field="X-Gonka-TA")
            record = await self._handle(participant, "ledger").inference.remote(iid)
            if record is None:
                raise NotFound(f"no inference {inference_id} on the ledger", field="id")
            return JSONResponse(record_view(record, self.names))
        except Exception as exc:
            return error_response(unwrap_error(exc))

    async def _health(self):
        async def ping(name: str) -> bool:
            try:
                await asyncio.wait_for(self._handle(name, "ta").ping.remote(), 5.0)
                return True
            except Exception:
                return False

        names = list(self.participants)
        up = await asyncio.gather(*[ping(n) for n in names])
        tas = dict(zip(names, up, strict=True))
        ok = any(up)
        return JSONResponse(
            {
                "status": "ok" if ok else "unavailable",
                "network": self.network,
                "chain_id": self.chain,
                "model": self.model,
                "transport_agents": tas,
                "inflight": self.inflight,
            },
            status_code=200 if ok else 503,
        )

    async def _ledger_call(self, method: str, *args: Any) -> Any:
        """``method`` on the first participant's ledger replica that answers."""
        last: Exception | None = None
        for name in self.participants:
            try:
                return await getattr(self._handle(name, "ledger"), method).remote(*args)
            except Exception as exc:  # a dead replica: ask the next one
                last = exc
                self._handles.pop(f"{self.network}.{name}.ledger", None)
        raise NoExecutorAvailable(f"no ledger replica answers: {last!r}")

    async def explorer_snapshot(self) -> dict[str, Any]:
        """The explorer's JSON (cached for EXPLORER_TTL_S): see :func:`explorer_view`."""
        now = time.monotonic()
        if self._explorer is not None and now - self._explorer[0] < EXPLORER_TTL_S:
            return self._explorer[1]
        infos = await self._ledger_call("participants")
        height = await self._ledger_call("height")
        records = await self._ledger_call("inferences", EXPLORER_RECENT)
        try:
            ledger_epoch = await self._ledger_call("epoch_view")
        except Exception:  # a ledger without epochs: computed from the height and config
            ledger_epoch = None
        view = explorer_view(
            network=self.network,
            model=self.model,
            height=int(height),
            infos=infos,
            records=records,
            epoch=self.epoch,
            ledger_epoch=ledger_epoch,
        )
        self._explorer = (now, view)
        return view

    async def _explorer_json(self, request: Request):
        if (limited := self._lookup_limited(request)) is not None:
            return limited
        try:
            return JSONResponse(await self.explorer_snapshot())
        except Exception as exc:
            return error_response(unwrap_error(exc))

    def _models(self):
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": self.model, "object": "model", "created": 0, "owned_by": self.network}
                ],
            }
        )


# NOTE: the routes are methods (Serve's class-based ingress passes the replica as ``self``);
# the deployment is defined at module level so Ray pickles it by reference.
_ROUTES = (
    ("post", "/v1/chat/completions", "chat_completions"),
    ("post", "/v1/completions", "completions"),
    ("get", "/v1/models", "models"),
    ("get", "/v1/inferences/{inference_id}", "inference"),
    ("get", "/health", "health"),
    ("get", "/v1/explorer", "explorer_json"),
    ("get", "/", "explorer_page"),
)


class _Routes(GonkaIngress):
    async def chat_completions(self, request: Request):
        return await self._complete(request, "chat")

    async def completions(self, request: Request):
        return await self._complete(request, "completion")

    async def models(self):
        return self._models()

    async def inference(self, request: Request, inference_id: str):
        return await self._inference(request, inference_id)

    async def health(self):
        return await self._health()

    async def explorer_json(self, request: Request):
        return await self._explorer_json(request)

    async def explorer_page(self):
        return HTMLResponse(explorer_html(), headers={"Cache-Control": "no-cache"})


for _method, _path, _name in _ROUTES:
    getattr(app, _method)(_path)(getattr(_Routes, _name))


def _deployment():
    from ray import serve

    return serve.deployment(
        name="gonka_ingress",
        num_replicas=1,
        max_ongoing_requests=SERVE_MAX_ONGOING_REQUESTS,
        ray_actor_options={"num_cpus": 0},
    )(serve.ingress(app)(_Routes))


GonkaDeployment = _deployment()


def build_app(
    *,
    network: str,
    chain: str,
    namespace: str,
    participants: dict[str, str],
    model: str,
    api_keys: dict[str, bytes],
    max_inflight: int = SERVE_MAX_INFLIGHT,
    epoch: dict[str, Any] | None = None,
    price_per_token: int = C.DEFAULT_PRICE_PER_TOKEN,
):
    """The Serve application: one replica of :class:`GonkaIngress` behind FastAPI."""
    return GonkaDeployment.bind(
        network=network,
        chain=chain,
        namespace=namespace,
        participants=participants,
        model=model,
        api_keys=api_keys,
        max_inflight=max_inflight,
        epoch=epoch,
        price_per_token=price_per_token,
    )


def serve_network(
    net: Any,
    *,
    api_keys: Mapping[str, crypto.KeyPair | int],
    port: int = SERVE_DEFAULT_PORT,
    route_prefix: str = "/",
    max_inflight: int = SERVE_MAX_INFLIGHT,
    name: str | None = None,
    host: str = "127.0.0.1",
) -> str:
    """Deploy the OpenAI-compatible app for a launched :class:`~gonka_ray.network.Network` on
    loopback and return its base URL (``http://127.0.0.1:<port><prefix>``; the ``openai``
    client's ``base_url`` is that plus ``v1``).

    Args:
        net: the launched network.
        api_keys: API key -> the custodial client key it signs with (a KeyPair, or an index
            ``i`` meaning ``net.client_key(i)``, funded by the demo genesis for ``i <`` clients).
        port: the HTTP port Serve binds.
        route_prefix: where the app is mounted.
        max_inflight: requests in flight before the ingress answers 429.
        name: the Serve application's name (default ``gonka-<network>``).
        host: the address Serve's proxy binds (``0.0.0.0`` to serve other hosts).

    If Serve already runs on this Ray with other HTTP options, it keeps them; the returned URL
    is where its proxy really listens.
    """
    from ray import serve

    seeds = {
        k: (v if isinstance(v, crypto.KeyPair) else net.client_key(int(v))).seed
        for k, v in api_keys.items()
    }
    serve.start(http_options={"host": host, "port": port})
    application = build_app(
        network=net.config.name,
        chain=net.chain_id,
        namespace=net.namespace,
        participants={p.name: net.address_of(p.name) for p in net.config.participants},
        model=net.config.model.name,
        api_keys=seeds,
        max_inflight=max_inflight,
        epoch=net.config.epoch.model_dump(),
        price_per_token=net.config.pricing.price_per_token,
    )
    serve.run(application, name=name or app_name(net), route_prefix=route_prefix)
    prefix = route_prefix if route_prefix.endswith("/") else route_prefix + "/"
    host, port = _bound(port)
    return f"http://{host}:{port}{prefix}"


def _bound(port: int) -> tuple[str, int]:
    """Where Serve's proxy really listens: when Serve was already running, ``serve.start`` keeps
    its old HTTP options, so the URL must come from the controller, not from the arguments."""
    try:
        from ray.serve.context import _get_global_client

        cfg = _get_global_client().http_config
        return ("127.0.0.1" if cfg.host in ("127.0.0.1", "localhost") else cfg.host), cfg.port
    except Exception:  # private API moved: trust the arguments
        return "127.0.0.1", port


def app_name(net: Any) -> str:
    return f"gonka-{net.config.name}"


def shutdown(net: Any | None = None) -> None:
    """Remove the network's app (``net`` given) or stop Serve entirely."""
    from ray import serve

    if net is None:
        serve.shutdown()
    else:
        serve.delete(app_name(net))
