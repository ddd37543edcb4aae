"""Python SDK: sign requests with your own key and talk to a network's transport agents.

:func:`sign_chat` builds and signs an ``InferenceRequest`` (the inference id is
``sha256(signature)``). :class:`Client` sends it to a transport agent's actor handle and streams
the reply, in notebooks too (``await client.chat(...)`` or ``client.chat_sync(...)``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gonka_ray import crypto, wire
from gonka_ray.constants import DEFAULT_MAX_TOKENS, DEFAULT_TOP_K_LOGPROBS


def sign_chat(
    key: crypto.KeyPair,
    *,
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
    max_escrow: int = 10**12,
    clock: Callable[[], float] = time.time,
    nonce: int | None = None,
) -> bytes:
    """A signed ``InferenceRequest`` envelope. ``seed`` defaults to a random one."""
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
    return wire.seal(request, key)


@dataclass(frozen=True)
class ChatResult:
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    done: wire.InferenceDone

    @property
    def inference_id(self) -> str:
        return self.done.inference_id.hex()


async def stream_items(ta: Any, envelope: bytes) -> AsyncIterator[Any]:
    """Decoded stream items (``StreamChunk``…, ``InferenceDone``) from a TA handle or object."""
    if hasattr(getattr(ta, "submit", None), "remote"):
        gen = ta.submit.options(num_returns="streaming").remote(envelope)
        async for ref in gen:
            yield wire.decode(await ref)
    else:
        async for item in ta.submit(envelope):
            yield wire.decode(item)


async def collect(
    ta: Any, envelope: bytes, on_text: Callable[[str], None] | None = None
) -> ChatResult:
    """Send ``envelope`` to ``ta`` and gather the reply; ``on_text`` sees each text delta."""
    text, ids, lps, done = [], [], [], None
    async for item in stream_items(ta, envelope):
        if isinstance(item, wire.StreamChunk):
            text.append(item.text)
            ids.append(item.token_id)
            lps.append(item.logprob)
            if on_text and item.text:
                on_text(item.text)
        elif isinstance(item, wire.InferenceDone):
            done = item
    if done is None:
        raise RuntimeError("stream ended without InferenceDone")
    return ChatResult("".join(text), tuple(ids), tuple(lps), done)


class Client:
    """A client with its own key, bound to transport agents (handles or objects).

    Args:
        key: the client's key (its address must hold a balance on the ledger).
        tas: transport agents; each request goes to a random one unless ``ta`` is named.
        model: the network's model id.
    """

    def __init__(self, key: crypto.KeyPair, tas: dict[str, Any], model: str) -> None:
        self.key = key
        self.tas = tas
        self.model = model

    def _pick(self, ta: str | None) -> Any:
        if ta is not None:
            return self.tas[ta]
        return self.tas[secrets.choice(sorted(self.tas))]

    async def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        ta: str | None = None,
        on_text: Callable[[str], None] | None = None,
        **sampling: Any,
    ) -> ChatResult:
        envelope = sign_chat(self.key, model=self.model, messages=messages, **sampling)
        return await collect(self._pick(ta), envelope, on_text)

    def chat_sync(self, messages: Sequence[dict[str, str]], **kw: Any) -> ChatResult:
        """Blocking :meth:`chat` (for scripts; in a notebook prefer ``await client.chat``)."""
        return asyncio.run(self.chat(messages, **kw))
