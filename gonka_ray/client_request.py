"""Build and sign an ``InferenceRequest`` envelope: what a client sends to a network.

:func:`sign_chat` is shared by the SDK (a client signing with its own key) and the HTTP ingress
(signing for an API key's custodial account). It lives here, with no Ray and no web framework,
so that neither of those two layers has to import the other.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence

from gonka_ray import crypto, wire
from gonka_ray.constants import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_PRICE_PER_TOKEN,
    DEFAULT_TOP_K_LOGPROBS,
)
from gonka_ray.protocol import payments


def sign_chat(
    key: crypto.KeyPair,
    *,
    chain: str,
    model: str,
    messages: Sequence[dict[str, str]] | None = None,
    prompt: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = 0.7,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    logprobs: int = DEFAULT_TOP_K_LOGPROBS,
    stop: Sequence[str] = (),
    max_escrow: int | None = None,
    price_per_token: int = DEFAULT_PRICE_PER_TOKEN,
    clock: Callable[[], float] = time.time,
    nonce: int | None = None,
) -> bytes:
    """A signed ``InferenceRequest`` envelope for the network ``chain`` (its chain id: a request
    signed for one network does not verify on another). ``seed`` defaults to a random one.

    ``max_escrow`` (the most the client lets the network lock and charge) defaults to what this
    request can honestly cost at ``price_per_token``
    (:func:`~gonka_ray.protocol.payments.request_escrow_bound`), never the whole balance."""
    if max_escrow is None:
        texts = [m["content"] for m in (messages or ())] if prompt is None else [prompt]
        max_escrow = payments.request_escrow_bound(texts, int(max_tokens), int(price_per_token))
    request = wire.InferenceRequest(
        model=model,
        messages=tuple(wire.ChatMessage(m["role"], m["content"]) for m in (messages or ())),
        prompt=prompt,
        sampling=wire.SamplingSpec(
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
            max_tokens=int(max_tokens),
            seed=secrets.randbits(63) if seed is None else int(seed),
            logprobs=int(logprobs),
            stop=tuple(stop),
        ),
        timestamp_ms=int(clock() * 1000),
        nonce=secrets.randbits(63) if nonce is None else nonce,
        max_escrow=int(max_escrow),
    )
    return wire.seal(request, key, chain)
