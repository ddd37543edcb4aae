"""The OpenAI request bodies the ingress accepts (pydantic models at the HTTP edge).

Bodies accept unknown fields (OpenAI clients send many); :meth:`_OpenAIRequest.ignored_fields`
names them so the ingress can return them in ``X-Gonka-Ignored-Fields``. Limits (``n`` = 1, at
most 16 stop strings, ``top_logprobs`` ≤ ``MAX_TOP_K_LOGPROBS``) raise
:class:`~gonka_ray.exceptions.InvalidRequest` naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gonka_ray.constants import DEFAULT_MAX_TOKENS, MAX_TOP_K_LOGPROBS
from gonka_ray.exceptions import InvalidRequest


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
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_K_LOGPROBS)

    def wire_messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]

    def completion_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    def top_k_shown(self) -> int | None:
        """Logprob alternatives to return: None = no logprobs at all."""
        if not self.logprobs:
            if self.top_logprobs:
                raise InvalidRequest("top_logprobs needs logprobs: true", field="top_logprobs")
            return None
        return self.top_logprobs or 0


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_K_LOGPROBS)
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
        return self.max_tokens or DEFAULT_MAX_TOKENS

    def top_k_shown(self) -> int | None:
        return self.logprobs
