"""FakeEngine: a deterministic stand-in **for protocol tests only** (where the model does not
matter). Never use it to test anything about models, sampling quality or verification power.

Its "model" is a hash: the logits for the token after context ``(..., prev)`` at absolute
position ``n`` are a fixed pseudo-random function of ``(prev, n)`` over a byte vocabulary
(256 byte tokens + EOS), with printable ASCII favoured. It has the real shapes and semantics:
tokens come from the shared Gumbel-max sampler, logprobs are the raw log-softmax, top-k is
real, stop strings and ``max_tokens`` work, and :meth:`score` reproduces :meth:`generate`
exactly (so an honest fake executor passes verification). ``fake_token_delay_ms`` in the
engine config adds a per-token service time. No Ray, no model files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import torch

from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine import sampler, scoring
from gonka_ray.engine.base import (
    Detokenizer,
    EngineRequest,
    InferenceEngine,
    ModelInfo,
    SamplingParams,
    ScoreResult,
    TokenChunk,
)

FAKE_EOS = 256
FAKE_VOCAB = 257
_PRINTABLE = torch.zeros(FAKE_VOCAB, dtype=torch.float32)
_PRINTABLE[32:127] = 6.0  # printable ASCII is far likelier than other bytes
_PRINTABLE[FAKE_EOS] = 1.0  # EOS is possible but rare


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, EOS = 256. No chat template (base uses a plain one)."""

    chat_template = None
    eos_token_id = FAKE_EOS

    def __len__(self) -> int:
        return FAKE_VOCAB

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


def fake_logits(prev_tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
    """[B, FAKE_VOCAB] float32 logits after token ``prev_tokens[i]`` at absolute ``positions[i]``."""
    prev = torch.tensor(list(prev_tokens), dtype=torch.int64)[:, None]
    pos = torch.tensor(list(positions), dtype=torch.int64)[:, None]
    u = sampler.uniform(prev, pos, torch.arange(FAKE_VOCAB, dtype=torch.int64)[None, :])
    return (4.0 * u).to(torch.float32) + _PRINTABLE


class FakeEngine(InferenceEngine):
    """Deterministic fake engine for protocol tests only (see the module docstring)."""

    def __init__(self, model: ModelConfig | None = None, config: EngineConfig | None = None):
        model = model or ModelConfig(name="fake")
        self.config = config or EngineConfig(kind="fake")
        self.tokenizer = ByteTokenizer()
        self.info = ModelInfo(
            name=model.name,
            engine="fake",
            vocab_size=FAKE_VOCAB,
            max_model_len=self.config.max_model_len,
            eos_token_ids=(FAKE_EOS,),
            dtype="float32",
            device="cpu",
        )
        self._delay_s = self.config.fake_token_delay_ms / 1000.0

    async def _generate(self, request: EngineRequest) -> AsyncIterator[TokenChunk]:
        s = request.sampling
        ids = list(request.prompt_ids)
        detok = Detokenizer(self.tokenizer, s.stop, self.info.eos_token_ids)
        k = s.logprobs
        for i in range(s.max_tokens):
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            logits = fake_logits([ids[-1]], [len(ids)])
            choice = sampler.sample(logits, **scoring.sampling_tensors([(s, i)], logits.device))
            token = int(choice.tokens[0])
            art = scoring.artifacts(logits, choice.tokens, [k])
            ids.append(token)
            last = i + 1 == s.max_tokens
            eos = token == FAKE_EOS and not s.ignore_eos
            text = detok.add(token, final=last or eos)
            finish = "stop" if eos or detok.stopped else ("length" if last else None)
            yield TokenChunk(
                index=i,
                token_id=token,
                text=text,
                logprob=art.token_logprobs[0],
                top_ids=art.top_ids[0],
                top_logprobs=art.top_logprobs[0],
                finish_reason=finish,
            )
            if finish:
                return

    async def score(
        self, prompt_ids: Sequence[int], output_ids: Sequence[int], sampling: SamplingParams
    ) -> ScoreResult:
        self.validate_score(prompt_ids, output_ids, sampling)
        seq = list(prompt_ids) + list(output_ids)
        n_prompt = len(prompt_ids)
        prev = seq[n_prompt - 1 : len(seq) - 1]
        logits = fake_logits(prev, range(n_prompt, len(seq)))
        return scoring.score_logits(logits, output_ids, sampling)
