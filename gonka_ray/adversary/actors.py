"""ADVERSARIAL: cheating MLNodes, executors, transport agents and verifiers (demos, tests and the
detection benchmark)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from gonka_ray import wire
from gonka_ray.actors.clients import EngineClient
from gonka_ray.actors.executor import Executor
from gonka_ray.actors.mlnode import MLNode
from gonka_ray.actors.role import RoleContext
from gonka_ray.actors.transport import TransportAgent
from gonka_ray.actors.verifier import Verifier
from gonka_ray.adversary.cheats import SAMPLING_CHEATS, adversarial_engine, sampling_hook
from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.base import EngineRequest, SamplingParams, TokenChunk
from gonka_ray.exceptions import PayloadUnavailable
from gonka_ray.protocol import receipts
from gonka_ray.protocol.lifecycle import InferenceRecord
from gonka_ray.verification.artifact import Artifact


class CheatingMLNode(MLNode):
    """An MLNode whose engine runs ``cheat_model(model, kind)`` (int4, truncated, ...)."""

    def __init__(self, model: ModelConfig, config: EngineConfig, kind: str) -> None:
        super().__init__(engine=adversarial_engine(model, config, kind))


class CheatingExecutor(Executor):
    """ADVERSARIAL executor for the cheats that rewrite what an honest engine produced.

    ``kind``:
    - ``launder``: tokens from ``cheap_engine`` (a truncated/quantised model), logprobs and top-k
      filled in from one honest prefill of those tokens on the real engine;
    - ``replace_1_in_64``: every 64th token swapped for the runner-up (text and artifact agree);
    - ``drop_system``: runs the prompt without its system message (a shorter, cheaper prompt);
    - ``truncate_output``: stops after half of the tokens and reports a natural "stop";
    - ``inflate_evidence_weight``: honest output, but commits 4× its epoch-evidence weight
      (which would dilute its pooled evidence in a half-precision network);
    - ``withhold_payload``: honest output, but refuses every verifier's payload request;
    - the sampling cheats (``wrong_temperature``, ``greedy``, ``ignore_seed``): runs the engine
      with rewritten sampling parameters while the artifact claims the client's.
    """

    KINDS = (
        "launder",
        "replace_1_in_64",
        "drop_system",
        "truncate_output",
        "inflate_evidence_weight",
        "withhold_payload",
        *SAMPLING_CHEATS,
    )

    def __init__(
        self,
        ctx: RoleContext,
        *,
        kind: str,
        cheap_engine: Any = None,
        system_tokens: int = 0,
        **kw: Any,
    ) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown executor cheat {kind!r}")
        super().__init__(ctx, **kw)
        self.kind = kind
        self.cheap = EngineClient(cheap_engine) if cheap_engine is not None else None
        self.system_tokens = system_tokens
        self._rewrite = sampling_hook(kind) if kind in SAMPLING_CHEATS else None

    def _sampling(self, sampling: SamplingParams) -> SamplingParams:
        return self._rewrite(sampling) if self._rewrite is not None else sampling

    async def payload(self, envelope: bytes) -> bytes:
        body = await super().payload(envelope)  # authenticates the verifier like an honest one
        if self.kind == "withhold_payload":
            raise PayloadUnavailable("payload withheld")
        return body

    def _evidence_weight(self, artifact: Artifact) -> int:
        honest = super()._evidence_weight(artifact)
        if self.kind == "inflate_evidence_weight":
            return min(artifact.num_output_tokens * 1_000_000, 4 * honest)
        return honest

    def _prompt(self, prompt_ids: list[int]) -> list[int]:
        if self.kind == "drop_system" and self.system_tokens:
            return prompt_ids[self.system_tokens :]
        return prompt_ids

    async def _generate(self, iid, prompt_ids, sampling) -> AsyncIterator[TokenChunk]:
        engine = self.cheap if self.kind == "launder" else self.engine
        request = EngineRequest(
            request_id=iid.hex(), prompt_ids=tuple(prompt_ids), sampling=sampling
        )
        chunks = [c async for c in engine.generate(request)]
        if self.kind == "launder":
            score = await self.engine.score(prompt_ids, [c.token_id for c in chunks], sampling)
            chunks = [
                replace(c, logprob=lp, top_ids=tuple(ids), top_logprobs=tuple(lps))
                for c, lp, ids, lps in zip(
                    chunks, score.token_logprobs, score.top_ids, score.top_logprobs, strict=True
                )
            ]
        elif self.kind == "replace_1_in_64":
            for i in range(0, len(chunks), 64):
                c = chunks[i]
                if len(c.top_ids) > 1:
                    alt = c.top_ids[1] if c.top_ids[0] == c.token_id else c.top_ids[0]
                    chunks[i] = replace(c, token_id=alt, text="")
        elif self.kind == "truncate_output":
            keep = max(1, len(chunks) // 2)
            chunks = [*chunks[: keep - 1], replace(chunks[keep - 1], finish_reason="stop")]
        for c in chunks:
            yield c


class InflatingTransportAgent(TransportAgent):
    """ADVERSARIAL transport agent whose Starts claim ``factor`` × the prompt's token count (it
    commits the real prompt's hash, as it must for the executor to run it)."""

    def __init__(self, ctx: RoleContext, *, factor: int = 10, **kw: Any) -> None:
        super().__init__(ctx, **kw)
        self.factor = factor

    def _claimed_prompt_tokens(self, prompt_ids: list[int]) -> int:
        return self.factor * len(prompt_ids)


class RubberStampVerifier(Verifier):
    """ADVERSARIAL verifier that passes every inference it must check without running it. Its
    receipt is the best it can do without the model: at its positions, a token it did not
    score (a small id) at a plausible logprob, sealed to the executor like an honest one."""

    def _receipt(self, iid: bytes, n_out: int, executor_key: bytes) -> receipts.Sealed:
        entries = [
            receipts.Entry(p, p % 7, -5_000_000)
            for p in receipts.positions(iid, self.address, n_out)
        ]
        return receipts.seal(self.key, executor_key, iid, entries)

    async def _validate(self, record: InferenceRecord) -> int:
        iid = record.inference_id
        executor_key = await self._public_key(record.executor)
        sealed = self._receipt(iid, record.completion_tokens, executor_key)
        await self._submit(
            wire.Validation(
                inference_id=iid,
                passed=True,
                replay_mismatches=0,
                similarity=1.0,
                logprob_deviation=0.0,
                nonce=self.rng.getrandbits(64),
                receipt_commitment=sealed.commitment,
                receipt_key=sealed.ephemeral_public,
                receipt_box=sealed.ciphertext,
            )
        )
        self.checked += 1
        return 1


class GarbageBoxVerifier(RubberStampVerifier):
    """ADVERSARIAL rubber stamp that seals something other than the receipt it commits to, so
    that its executor cannot audit it (it must then reveal its key: the box is not the receipt)."""

    def _receipt(self, iid: bytes, n_out: int, executor_key: bytes) -> receipts.Sealed:
        committed = [receipts.Entry(p, 1, -1) for p in receipts.positions(iid, self.address, n_out)]
        boxed = receipts.seal(self.key, executor_key, iid, [])
        commitment = receipts.commitment(iid, self.address, receipts.encode(committed))
        return receipts.Sealed(commitment, boxed.ephemeral_public, boxed.ciphertext)


class LyingAuditor(Verifier):
    """ADVERSARIAL: as an executor, challenges every pass on its inferences, claiming the
    receipt did not open (to make honest validators reveal, or to frame them)."""

    async def _audit(self, iid: bytes, validator: str) -> None:
        if validator == self.address:
            return
        self.challenges += 1
        await self._submit(
            wire.ReceiptChallenge(
                inference_id=iid, validator=validator, nonce=self.rng.getrandbits(64)
            )
        )
