"""The network's front door: the OpenAI-compatible FastAPI ingress (DESIGN §1–§2).

Endpoints (under the route prefix; the one route table is :data:`ROUTES`):

- ``POST /v1/chat/completions`` and ``POST /v1/completions``: ``stream`` (SSE ``data: {...}``
  chunks, then ``data: [DONE]``), ``logprobs``/``top_logprobs`` (≤ 20), ``seed``,
  ``temperature``, ``top_p``, ``max_tokens``, ``stop``; ``n`` must be 1.
- ``GET /v1/models``, ``GET /v1/inferences/{id}`` (ledger status, validations, refund),
  ``GET /health``.
- ``GET /``: the explorer page (``static/explorer.html``, self-contained: no CDN), which polls
  ``GET /v1/explorer``: participants (weight, reputation, status, counters), ledger height,
  epoch and phase (from the committed height and the network's epoch config,
  :func:`gonka_ray.protocol.epochs.position`), recent inferences, verification totals
  (:func:`gonka_ray.serve.views.explorer_view`).

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
``usage`` on the chunk that carries the finish reason. Request bodies are pydantic models
(:mod:`gonka_ray.serve.openai_models`) that accept unknown fields; the names of fields that were
not used are returned in the header ``X-Gonka-Ignored-Fields`` (comma-separated).

**Errors** are OpenAI-shaped JSON with the status of the error that caused them
(:mod:`gonka_ray.serve.errors`).

Token strings of logprob tables come from the TA participant's MLNode (``token_strings``, one
batched call per response or per streamed chunk, cached in the ingress).

:class:`GonkaIngress` is a plain class (unit tests construct it directly);
:mod:`gonka_ray.serve.deployment` makes it a Serve deployment.
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
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError

from gonka_ray import crypto, metrics, wire
from gonka_ray.actors.clients import stream_call
from gonka_ray.client_request import sign_chat
from gonka_ray.constants import (
    CONTEXT_SLACK_TOKENS,
    DEFAULT_PRICE_PER_TOKEN,
    EXPLORER_RECENT_INFERENCES,
    EXPLORER_TTL_S,
    INGRESS_PARTICIPANTS_TTL_S,
    INGRESS_TOKEN_CACHE_ENTRIES,
    LOOKUP_BURST,
    LOOKUP_RATE_PER_S,
    MAX_TOP_K_LOGPROBS,
    REQUEST_MAX_AGE_S,
    SERVE_MAX_BODY_BYTES,
    SERVE_MAX_INFLIGHT,
    SERVE_MAX_INFLIGHT_PER_CLIENT,
    SERVE_RETRY_AFTER_S,
)
from gonka_ray.exceptions import (
    AuthenticationError,
    InvalidRequest,
    ModelNotFound,
    NoExecutorAvailable,
    NotFound,
    Overloaded,
    RequestTooLarge,
    WireError,
)
from gonka_ray.protocol.admission import RateLimiter, ReplayGuard
from gonka_ray.serve.body_limit import length_refusal, missing_credentials
from gonka_ray.serve.errors import error_response, unwrap_error, validation_error
from gonka_ray.serve.openai_models import ChatCompletionRequest, CompletionRequest
from gonka_ray.serve.views import explorer_html, explorer_view, record_view

log = logging.getLogger(__name__)


HEADER_TA = "x-gonka-ta"
HEADER_SIGNED = "x-gonka-signed-request"
HEADER_INFERENCE_ID = "X-Gonka-Inference-Id"
HEADER_IGNORED = "X-Gonka-Ignored-Fields"


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
    if not 0 <= value <= MAX_TOP_K_LOGPROBS:
        raise InvalidRequest(f"{field} must be in [0, {MAX_TOP_K_LOGPROBS}]", field=field)
    return value


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


@dataclass(frozen=True)
class _Auth:
    """Who sends a request, established from its headers before the body is read: an API key's
    custodial client key, or the client's own signed request (its envelope, signature checked)."""

    client: str  # the paying address: per-client limits count by it
    key: crypto.KeyPair | None = None
    envelope: bytes = b""
    signed: wire.Signed | None = None


app = FastAPI(title="gonka_ray", description="OpenAI-compatible front door of a gonka_ray network")


class GonkaIngress:
    """The FastAPI ingress (a plain class; :func:`~gonka_ray.serve.deployment.build_app` makes
    it a Serve deployment).

    Args:
        network: the network's name (actor names are ``<network>.<participant>.<role>``).
        chain: the network's chain id (its genesis ``chain_id``): signed requests must be
            signed for it (``GET /health`` tells clients).
        namespace: the Ray namespace of the network's actors.
        participants: participant name -> address, of the participants whose transport agents
            and ledger replicas it uses (a federation node: its own only).
        model: the model id the network serves.
        api_keys: API key -> 32-byte seed of the custodial client key it signs with.
        max_inflight: requests in flight before 429.
        max_inflight_per_client: requests one client (API key or signer) has in flight before 429.
        max_body_bytes: the largest request body read (413 above it, before reading it all).
        epoch: the network's :class:`~gonka_ray.config.EpochConfig` as a dict (explorer's
            epoch and phase); None hides them.
        price_per_token: the network's price: API-key requests let the network lock at most
            what they can cost at it (their ``max_escrow``).
        names: address -> name of other participants, to show in records and the explorer.
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
        max_inflight_per_client: int = SERVE_MAX_INFLIGHT_PER_CLIENT,
        max_body_bytes: int = SERVE_MAX_BODY_BYTES,
        epoch: dict[str, Any] | None = None,
        price_per_token: int = DEFAULT_PRICE_PER_TOKEN,
        names: dict[str, str] | None = None,
    ) -> None:
        self.network = network
        self.chain = chain
        self.price_per_token = price_per_token
        self.epoch = epoch
        self.namespace = namespace
        self.participants = dict(participants)
        # address -> name of every participant it may show (a node serves only its own)
        self.names = {**{a: n for n, a in self.participants.items()}, **(names or {})}
        self.model = model
        self.api_keys = {k: crypto.KeyPair(seed) for k, seed in api_keys.items()}
        self.max_inflight = max_inflight
        self.inflight = 0
        self.max_inflight_per_client = max_inflight_per_client
        self.client_inflight: Counter[str] = Counter()
        self.max_body_bytes = max_body_bytes
        self.replay = ReplayGuard(max_age_s=REQUEST_MAX_AGE_S)
        self.lookups = RateLimiter(LOOKUP_RATE_PER_S, LOOKUP_BURST)
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
        """Participants not INVALID on the ledger (cached for INGRESS_PARTICIPANTS_TTL_S)."""
        now = time.monotonic()
        if now - self._statuses_at > INGRESS_PARTICIPANTS_TTL_S:
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
            if len(self._tokens) > INGRESS_TOKEN_CACHE_ENTRIES:
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

    def _authenticate(self, request: Request) -> _Auth:
        """Who pays for ``request``, from its headers alone (the body is not read yet).

        Raises:
            AuthenticationError: no API key or signed request, or an unknown API key.
            WireError, InvalidRequest: a signed-request header that is not a valid envelope.
        """
        signed_b64 = request.headers.get(HEADER_SIGNED)
        if signed_b64:
            try:
                envelope = base64.b64decode(signed_b64.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidRequest(
                    "X-Gonka-Signed-Request is not base64", field="X-Gonka-Signed-Request"
                ) from None
            try:
                signed = wire.open_envelope(
                    envelope, expect=wire.InferenceRequest, chain=self.chain
                )
            except WireError as exc:
                exc.fields.setdefault("field", "X-Gonka-Signed-Request")
                raise
            return _Auth(signed.signer_address, envelope=envelope, signed=signed)
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise missing_credentials()
        key = self.api_keys.get(token.strip())
        if key is None:
            raise AuthenticationError("invalid API key")
        return _Auth(key.address, key=key)

    async def _read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it is known to exceed ``max_body_bytes``: from
        ``Content-Length`` before reading anything, else while streaming it in."""
        limit = self.max_body_bytes
        refusal = length_refusal(request.headers.get("content-length"), limit)
        if refusal is not None:
            raise refusal
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise RequestTooLarge(
                    f"request body is over the {limit}-byte limit", limit_bytes=limit
                )
            parts.append(part)
        return b"".join(parts)

    async def _admit(
        self, request: Request, kind: Literal["chat", "completion"], auth: _Auth
    ) -> _Call:
        ta = await self._pick_ta(request)
        raw = await self._read_body(request)
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            # NOTE: RecursionError: "[[[[..." nested deeper than the parser's stack (was a 500)
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object")
        if auth.signed is not None:
            call = self._admit_signed(auth, body, kind, ta)
        else:
            assert auth.key is not None
            call = self._admit_custodial(auth.key, body, kind, ta)
        if call.request.model != self.model:
            raise ModelNotFound(
                f"model {call.request.model!r} does not exist; this network serves {self.model!r}",
                field="model",
            )
        await self._check_context(ta, call.request)
        return call

    def _admit_custodial(
        self, key: crypto.KeyPair, body: dict, kind: Literal["chat", "completion"], ta: str
    ) -> _Call:
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
        self, auth: _Auth, body: dict, kind: Literal["chat", "completion"], ta: str
    ) -> _Call:
        signed, envelope = auth.signed, auth.envelope
        assert signed is not None
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
        metrics.inc("gonka_requests", endpoint=kind, code=code)
        metrics.observe(
            "gonka_request_latency_s", time.perf_counter() - t0, endpoint=kind, stream=stream
        )
        if done is not None:
            metrics.inc("gonka_tokens", done.prompt_tokens, kind="prompt")
            metrics.inc("gonka_tokens", done.completion_tokens, kind="completion")

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
        client: str | None = None  # counted in client_inflight
        try:
            auth = self._authenticate(request)  # headers only: nothing read before this
            held = self.client_inflight[auth.client]
            if held >= self.max_inflight_per_client:
                raise Overloaded(
                    f"this client has {held} requests in flight; retry shortly",
                    retry_after_s=SERVE_RETRY_AFTER_S,
                )
            client = auth.client
            self.client_inflight[client] += 1
            call = await self._admit(request, kind, auth)
            items = self._items(call)
            try:
                first = await items.__anext__()
            except StopAsyncIteration:
                raise NoExecutorAvailable("the transport agent sent nothing") from None
            started = True
            if call.stream:
                release = False
                return StreamingResponse(
                    self._sse(call, client, first, items, t0),
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
                self._release(client)

    def _release(self, client: str | None) -> None:
        """A request ended: free its place in the ingress and in its client's count."""
        self.inflight -= 1
        if client is not None:
            self.client_inflight[client] -= 1
            if self.client_inflight[client] <= 0:
                del self.client_inflight[client]

    async def _sse(
        self,
        call: _Call,
        client: str | None,
        first: Any,
        items: AsyncIterator[Any],
        t0: float | None = None,
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
            self._release(client)
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

    # --- routes: each handler is bound to its path in ROUTES (below) -------------------------

    async def chat_completions(self, request: Request):
        return await self._complete(request, "chat")

    async def completions(self, request: Request):
        return await self._complete(request, "completion")

    # --- more routes (lookups, health, explorer, models) and their helpers -----------------

    def _lookup_limited(self, request: Request) -> JSONResponse | None:
        """A 429 when this client exceeds its share of public lookups, else None."""
        host = request.client.host if request.client else "?"
        wait = self.lookups.wait_s(host)
        if wait <= 0:
            return None
        return error_response(
            Overloaded(f"too many lookups from {host}; retry later", retry_after_s=wait)
        )

    async def inference(self, request: Request, inference_id: str):
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

    async def health(self):
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
        records = await self._ledger_call("inferences", EXPLORER_RECENT_INFERENCES)
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

    async def explorer_json(self, request: Request):
        if (limited := self._lookup_limited(request)) is not None:
            return limited
        try:
            return JSONResponse(await self.explorer_snapshot())
        except Exception as exc:
            return error_response(unwrap_error(exc))

    async def models(self):
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": self.model, "object": "model", "created": 0, "owned_by": self.network}
                ],
            }
        )

    async def explorer_page(self):
        return HTMLResponse(explorer_html(), headers={"Cache-Control": "no-cache"})


# NOTE: the routes are methods (Serve's class-based ingress passes the replica as ``self``);
# this is the one place a path is bound to its handler.
ROUTES = (
    ("post", "/v1/chat/completions", GonkaIngress.chat_completions),
    ("post", "/v1/completions", GonkaIngress.completions),
    ("get", "/v1/models", GonkaIngress.models),
    ("get", "/v1/inferences/{inference_id}", GonkaIngress.inference),
    ("get", "/health", GonkaIngress.health),
    ("get", "/v1/explorer", GonkaIngress.explorer_json),
    ("get", "/", GonkaIngress.explorer_page),
)
for _method, _path, _endpoint in ROUTES:
    getattr(app, _method)(_path)(_endpoint)
