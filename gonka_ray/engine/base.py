"""The one engine interface (DESIGN §1, §3): generate with top-k artifacts, score by prefill.

Every engine (:class:`~gonka_ray.engine.transformers_engine.TransformersEngine`,
:class:`~gonka_ray.engine.vllm_engine.VLLMEngine`, :class:`~gonka_ray.engine.fake.FakeEngine`)
implements :class:`InferenceEngine`:

- :meth:`InferenceEngine.generate` streams one :class:`TokenChunk` per output position: the
  token id, its text delta, its raw logprob and the top-k raw logprobs; the last chunk carries
  the finish reason (``"stop"``: EOS or a stop string; ``"length"``: ``max_tokens``).
- :meth:`InferenceEngine.score` runs **one prefill pass** over ``prompt + output`` and returns,
  per output position, the verifier's top-k, the logprob of the executor's token, and what the
  deterministic sampler (:mod:`gonka_ray.engine.sampler`) picks there with its margin.

Invariants: logprobs are always the *raw* model log-softmax (before temperature or masks);
tokens come only from the shared sampler keyed by ``(seed, output position)``, so the same
model + prompt + seed + params give the same tokens whatever else is in the batch. The EOS
token, when sampled, is part of ``output_ids`` (it was sampled and is verifiable) but adds no
text. A stop string ends the output at the token that completes it; the text stops before it.

Bad input raises :class:`~gonka_ray.exceptions.InvalidRequest` naming the field (``prompt``,
``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``logprobs``, ``seed``, ``stop``,
``output``) or :class:`~gonka_ray.exceptions.ModelNotFound` (``model``). No Ray in here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gonka_ray.constants import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_TOP_K_LOGPROBS,
    ENGINE_MAX_TOP_K_LOGPROBS,
)
from gonka_ray.exceptions import InvalidRequest, ModelNotFound

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters of one request (the engine-side twin of ``wire.SamplingSpec``).

    ``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1.0 are off; ``logprobs`` is the k of
    the top-k artifact (0..20); ``ignore_eos`` keeps generating past EOS (benchmarks).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = 0
    logprobs: int = DEFAULT_TOP_K_LOGPROBS
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    replay_tolerance: float = 0.0  # score() only: see :meth:`InferenceEngine.score`

    @classmethod
    def from_spec(cls, spec: Any) -> SamplingParams:
        """Build from a ``wire.SamplingSpec`` (or anything with the same attributes)."""
        return cls(
            temperature=float(spec.temperature),
            top_p=float(spec.top_p),
            top_k=int(spec.top_k),
            max_tokens=int(spec.max_tokens),
            seed=int(spec.seed),
            logprobs=int(spec.logprobs),
            stop=tuple(spec.stop),
        )


@dataclass(frozen=True)
class EngineRequest:
    """One generation request. ``model`` None means "whatever this engine serves"."""

    request_id: str
    prompt_ids: tuple[int, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    model: str | None = None


@dataclass(frozen=True)
class TokenChunk:
    """One output position of a streamed generation.

    Attributes:
        index: output position (0 for the first generated token).
        token_id: the sampled token.
        text: text delta this token adds (may be empty: EOS, stop strings, partial UTF-8).
        logprob: raw log-softmax of ``token_id``.
        top_ids / top_logprobs: the ``logprobs`` most likely tokens, best first (raw).
        finish_reason: ``"stop"`` or ``"length"`` on the last chunk, else None.
    """

    index: int
    token_id: int
    text: str
    logprob: float
    top_ids: tuple[int, ...]
    top_logprobs: tuple[float, ...]
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class GenerationResult:
    """All chunks of one generation gathered (see :func:`collect`)."""

    request_id: str
    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    text: str
    logprobs: tuple[float, ...]
    top_ids: tuple[tuple[int, ...], ...]
    top_logprobs: tuple[tuple[float, ...], ...]
    finish_reason: FinishReason


@dataclass(frozen=True)
class ScoreResult:
    """The verifier's view of ``output_ids`` after ``prompt_ids``, one entry per output position.

    Attributes:
        top_ids / top_logprobs: the verifier's top-k (k = ``sampling.logprobs``, at least 1).
        token_logprobs: the verifier's raw logprob of the executor's token.
        sampled_ids: the token the deterministic sampler picks from the verifier's logits.
        margins: that choice's best-minus-runner-up score (float; ``inf`` if only one token
            survives the masks; 0.0 where the engine cannot decide the choice exactly).
    """

    top_ids: tuple[tuple[int, ...], ...]
    top_logprobs: tuple[tuple[float, ...], ...]
    token_logprobs: tuple[float, ...]
    sampled_ids: tuple[int, ...]
    margins: tuple[float, ...]

    @classmethod
    def of(
        cls,
        top_ids: Sequence[Sequence[int]],
        top_logprobs: Sequence[Sequence[float]],
        token_logprobs: Sequence[float],
        sampled_ids: Sequence[int],
        margins: Sequence[float],
    ) -> ScoreResult:
        """A result from per-position lists (as engines build them), frozen into tuples."""
        return cls(
            tuple(tuple(t) for t in top_ids),
            tuple(tuple(t) for t in top_logprobs),
            tuple(token_logprobs),
            tuple(sampled_ids),
            tuple(margins),
        )


@dataclass(frozen=True)
class ModelInfo:
    """What an engine serves."""

    name: str
    engine: str
    vocab_size: int
    max_model_len: int
    eos_token_ids: tuple[int, ...]
    dtype: str
    device: str


class Tokenizer(Protocol):
    """The slice of a Hugging Face tokenizer the engines use."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


async def collect(chunks: AsyncIterator[TokenChunk], request: EngineRequest) -> GenerationResult:
    """Drain a :meth:`InferenceEngine.generate` stream into one :class:`GenerationResult`."""
    got = [c async for c in chunks]
    if not got or got[-1].finish_reason is None:
        raise RuntimeError("generation stream ended without a finish reason")
    return GenerationResult(
        request_id=request.request_id,
        prompt_ids=tuple(request.prompt_ids),
        output_ids=tuple(c.token_id for c in got),
        text="".join(c.text for c in got),
        logprobs=tuple(c.logprob for c in got),
        top_ids=tuple(c.top_ids for c in got),
        top_logprobs=tuple(c.top_logprobs for c in got),
        finish_reason=got[-1].finish_reason,
    )


class Detokenizer:
    """Incremental text for one output: UTF-8-safe deltas and stop-string handling.

    Text that could still be the start of a stop string, or ends in an incomplete UTF-8
    sequence (decoded as U+FFFD), is held back until the next token settles it.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str], eos_ids: Sequence[int]) -> None:
        self._tok = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._eos = frozenset(eos_ids)
        self._ids: list[int] = []
        self._emitted = 0  # characters of the final text already handed out
        self.stopped = False

    def add(self, token_id: int, *, final: bool) -> str:
        """Add one token; return the text delta. Sets :attr:`stopped` when a stop string hit."""
        if token_id not in self._eos:
            self._ids.append(token_id)
        text = self._tok.decode(self._ids, skip_special_tokens=True)
        for s in self._stop:
            at = text.find(s, max(0, self._emitted - len(s) + 1))
            if at >= 0:
                self.stopped = True
                delta = text[self._emitted : at]
                self._emitted = max(self._emitted, at)
                return delta
        settled = len(text)
        if not final:
            if text.endswith("\ufffd"):
                settled = len(text.rstrip("\ufffd"))
            for s in self._stop:  # hold back a suffix that is a prefix of a stop string
                for n in range(min(len(s) - 1, len(text)), 0, -1):
                    if text.endswith(s[:n]):
                        settled = min(settled, len(text) - n)
                        break
        delta = text[self._emitted : max(settled, self._emitted)]
        self._emitted = max(settled, self._emitted)
        return delta


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


class InferenceEngine(ABC):
    """An engine serving one model. Subclasses implement ``_generate``, ``score``, ``start``
    and ``close``; validation, tokenization and chat templating live here.

    Attributes set by subclasses: ``tokenizer`` (a :class:`Tokenizer`), ``info``
    (:class:`ModelInfo`).
    """

    tokenizer: Any
    info: ModelInfo

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start background work (step loop, vLLM engine). Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background work and release the model. Idempotent."""

    # --- model info, tokenization, templating --------------------------------------------

    def model_info(self) -> ModelInfo:
        """Name, vocabulary, context length, EOS ids, dtype and device of the served model."""
        return self.info

    def tokenize(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``."""
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def detokenize(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Prompt ids for chat ``messages`` (``[{"role", "content"}]``), with the generation
        prompt appended.

        Raises:
            InvalidRequest: (``messages``) empty, or a message without role/content.
        """
        if not messages:
            raise InvalidRequest("messages must not be empty", field="messages")
        for i, m in enumerate(messages):
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise InvalidRequest(
                    f"messages[{i}] needs string 'role' and 'content'", field="messages"
                )
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            out = self.tokenizer.apply_chat_template(
                plain, add_generation_prompt=True, tokenize=True
            )
            ids = out["input_ids"] if isinstance(out, Mapping) else out
            return [int(t) for t in ids]
        text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in plain) + "<|assistant|>\n"
        return self.tokenize(text)

    # --- validation ------------------------------------------------------------------------

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.info.name:
            raise ModelNotFound(
                f"this engine serves {self.info.name!r}, not {model!r}", field="model"
            )

    def _check_ids(self, ids: Sequence[int], name: str) -> None:
        vocab = self.info.vocab_size
        for t in ids:
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab:
                raise InvalidRequest(f"{name} has token id {t!r} outside [0, {vocab})", field=name)

    def validate_sampling(self, s: SamplingParams) -> None:
        """Raise :class:`InvalidRequest` naming the first bad sampling field."""
        if not _finite(s.temperature) or s.temperature < 0:
            raise InvalidRequest(
                f"temperature must be a finite number >= 0, got {s.temperature}",
                field="temperature",
            )
        if not _finite(s.top_p) or not 0 < s.top_p <= 1:
            raise InvalidRequest(f"top_p must be in (0, 1], got {s.top_p}", field="top_p")
        if not isinstance(s.top_k, int) or s.top_k < 0:
            raise InvalidRequest(f"top_k must be an integer >= 0, got {s.top_k}", field="top_k")
        if not isinstance(s.logprobs, int) or not 0 <= s.logprobs <= ENGINE_MAX_TOP_K_LOGPROBS:
            raise InvalidRequest(
                f"logprobs (top-k) must be in [0, {ENGINE_MAX_TOP_K_LOGPROBS}], got {s.logprobs}",
                field="logprobs",
            )
        if not isinstance(s.seed, int) or not 0 <= s.seed < 2**64:
            raise InvalidRequest(f"seed must be in [0, 2**64), got {s.seed}", field="seed")
        if len(s.stop) > 16 or any(not isinstance(x, str) or not x for x in s.stop):
            raise InvalidRequest("stop takes at most 16 non-empty strings", field="stop")
        if not _finite(s.replay_tolerance) or not 0 <= s.replay_tolerance <= 100:
            raise InvalidRequest(
                f"replay_tolerance must be in [0, 100] logits, got {s.replay_tolerance}",
                field="replay_tolerance",
            )

    def validate(self, request: EngineRequest) -> None:
        """Check a generation request against this engine.

        Raises:
            ModelNotFound: (``model``) the request names another model.
            InvalidRequest: naming ``prompt`` (empty, bad ids, over the context length),
                ``max_tokens`` (<= 0, or prompt + max_tokens over the context length) or a
                sampling field.
        """
        self._check_model(request.model)
        prompt = request.prompt_ids
        if len(prompt) == 0:
            raise InvalidRequest("prompt is empty", field="prompt")
        self._check_ids(prompt, "prompt")
        limit = self.info.max_model_len
        if len(prompt) >= limit:
            raise InvalidRequest(
                f"prompt has {len(prompt)} tokens; the context length is {limit}", field="prompt"
            )
        s = request.sampling
        if not isinstance(s.max_tokens, int) or s.max_tokens <= 0:
            raise InvalidRequest(f"max_tokens must be >= 1, got {s.max_tokens}", field="max_tokens")
        if len(prompt) + s.max_tokens > limit:
            raise InvalidRequest(
                f"prompt ({len(prompt)}) + max_tokens ({s.max_tokens}) exceeds the context "
                f"length {limit}",
                field="max_tokens",
            )
        self.validate_sampling(s)

    def validate_score(
        self, prompt_ids: Sequence[int], output_ids: Sequence[int], sampling: SamplingParams
    ) -> None:
        """Check a score call. Raises :class:`InvalidRequest` (``prompt``, ``output`` or a
        sampling field)."""
        if len(prompt_ids) == 0:
            raise InvalidRequest("prompt is empty", field="prompt")
        if len(output_ids) == 0:
            raise InvalidRequest("output is empty: nothing to score", field="output")
        self._check_ids(prompt_ids, "prompt")
        self._check_ids(output_ids, "output")
        total = len(prompt_ids) + len(output_ids)
        if total > self.info.max_model_len:
            raise InvalidRequest(
                f"prompt + output has {total} tokens; the context length is "
                f"{self.info.max_model_len}",
                field="output",
            )
        self.validate_sampling(sampling)

    # --- the two operations ----------------------------------------------------------------

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenChunk]:
        """Stream the output of ``request``, one :class:`TokenChunk` per output position.

        Validation happens here, before anything is queued, so bad input raises at the call.

        Raises:
            InvalidRequest / ModelNotFound: see :meth:`validate`.
            EngineError: the engine failed while running (recoverable).
        """
        self.validate(request)
        return self._generate(request)

    @abstractmethod
    def _generate(self, request: EngineRequest) -> AsyncIterator[TokenChunk]:
        """Engine-specific generation of an already validated request."""

    @abstractmethod
    async def score(
        self, prompt_ids: Sequence[int], output_ids: Sequence[int], sampling: SamplingParams
    ) -> ScoreResult:
        """One prefill pass over ``prompt_ids + output_ids``; see :class:`ScoreResult`.

        The sampler is replayed at output position ``i`` with ``sampling.seed``,
        ``sampling.temperature``, ``top_k`` and ``top_p``; ``sampling.replay_tolerance`` (raw
        logit units, the verifier's noise bound) lowers a margin where top-k/top-p membership
        could flip under that much noise (see :func:`gonka_ray.engine.sampler.sample`). Top-k
        size is ``max(1, sampling.logprobs)``.

        Raises:
            InvalidRequest: see :meth:`validate_score`.
        """

    async def generate_full(self, request: EngineRequest) -> GenerationResult:
        """Non-streaming convenience: :meth:`generate` drained by :func:`collect`."""
        return await collect(self.generate(request), request)
