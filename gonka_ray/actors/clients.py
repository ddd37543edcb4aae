"""Call another actor the same way whether it is a Ray actor handle or a plain object.

Actor classes are plain classes (STYLE §3): tests wire them together directly, a network wires
Ray handles. These adapters give both one async interface:

- :class:`EngineClient` — an :class:`~gonka_ray.actors.mlnode.MLNode` (generate stream, score,
  chat template); the Executor and Verifier of the same participant use it.
- :class:`PeerExecutor` — another participant's executor: ``execute`` streams *bytes* (encoded
  ``StreamChunk`` / ``ExecutionError``) and ``payload`` returns bytes. Only bytes cross a
  participant boundary (DESIGN §1).
- :class:`RemoteExecutor` — what a launched participant's roles get for another participant's
  executor: its calls go to the participant's own replica actor, which carries them over the
  peer transport (:mod:`gonka_ray.peer.calls`) to the other participant's peer endpoint.

A Ray handle is recognised by its ``.remote`` methods; streaming calls use Ray's streaming
generators (``num_returns="streaming"``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from gonka_ray.engine.base import EngineRequest, ModelInfo, SamplingParams, ScoreResult, TokenChunk
from gonka_ray.exceptions import InvalidRequest

log = logging.getLogger(__name__)


async def stream_call(method: Any, *args: Any) -> AsyncIterator[Any]:
    """The items of a Ray streaming actor call ``method.remote(*args)``.

    A consumer that stops early (a client went away, an error upstream, a cancelled task)
    cancels the remote task: an abandoned stream must not keep an executor and its engine
    generating to ``max_tokens``. The cancellation travels down the chain through each
    stream's own ``stream_call`` (TA → executor → MLNode), not through ``ray.cancel``'s
    recursion, which would also cancel the ledger submissions those tasks started.
    """
    gen = method.options(num_returns="streaming").remote(*args)
    finished = False
    try:
        async for ref in gen:
            yield await ref
        finished = True
    finally:
        if not finished:
            import ray

            try:
                ray.cancel(gen, recursive=False)
            except Exception as exc:  # the task already ended, or Ray is shutting down
                log.debug("cancelling an abandoned stream failed: %r", exc)


class EngineClient:
    """Async access to an MLNode (handle or object)."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.remote = hasattr(getattr(target, "score", None), "remote")

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenChunk]:
        if self.remote:
            async for chunk in stream_call(self.target.generate, request):
                yield chunk
        else:
            async for chunk in self.target.generate(request):
                yield chunk

    async def score(
        self, prompt_ids: Sequence[int], output_ids: Sequence[int], sampling: SamplingParams
    ) -> ScoreResult:
        if self.remote:
            return await self.target.score.remote(list(prompt_ids), list(output_ids), sampling)
        return await self.target.score(prompt_ids, output_ids, sampling)

    async def apply_chat_template(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        if self.remote:
            return await self.target.apply_chat_template.remote(list(messages))
        return self.target.apply_chat_template(messages)

    async def tokenize(self, text: str) -> list[int]:
        if self.remote:
            return await self.target.tokenize.remote(text)
        return self.target.tokenize(text)

    async def detokenize(self, ids: Sequence[int]) -> str:
        if self.remote:
            return await self.target.detokenize.remote(list(ids))
        return self.target.detokenize(list(ids))

    async def request_prompt_ids(self, req: Any) -> list[int]:
        """The prompt token ids of a client's ``wire.InferenceRequest``: its chat messages under
        the model's chat template, or its completion prompt. The transport agent commits to
        these and verifiers re-derive them, so both must call this one function.

        Raises:
            InvalidRequest: both or neither of messages and prompt given.
        """
        if req.messages and req.prompt is not None:
            raise InvalidRequest("give either messages or prompt, not both", field="messages")
        if req.messages:
            msgs = [{"role": m.role, "content": m.content} for m in req.messages]
            return await self.apply_chat_template(msgs)
        if not req.prompt:
            raise InvalidRequest("prompt is empty", field="prompt")
        return await self.tokenize(req.prompt)

    async def poc_prepare(self, seed: bytes, **kw: Any) -> float:
        """Build the epoch's PoC model on the MLNode ahead of the sprint (``MLNode.poc_prepare``)."""
        if self.remote:
            return await self.target.poc_prepare.remote(seed, **kw)
        return await self.target.poc_prepare(seed, **kw)

    async def poc_sprint(self, seed: bytes, participant: str, **kw: Any) -> Any:
        """Proof-of-Compute sprint on the MLNode (``MLNode.poc_sprint``)."""
        if self.remote:
            return await self.target.poc_sprint.remote(seed, participant, **kw)
        return await self.target.poc_sprint(seed, participant, **kw)

    async def poc_verify(
        self, seed: bytes, participant: str, nonces: Sequence[int], validator_seed: bytes, **kw: Any
    ) -> Any:
        """Recompute a sample of a PoC claim on the MLNode (``MLNode.poc_verify``)."""
        if self.remote:
            return await self.target.poc_verify.remote(
                seed, participant, list(nonces), validator_seed, **kw
            )
        return await self.target.poc_verify(seed, participant, nonces, validator_seed, **kw)

    async def model_info(self) -> ModelInfo:
        if self.remote:
            return await self.target.model_info.remote()
        return self.target.model_info()


class PeerExecutor:
    """Another participant's executor (handle or object); bytes in, bytes out."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.remote = hasattr(getattr(target, "execute", None), "remote")

    async def execute(self, envelope: bytes) -> AsyncIterator[bytes]:
        if self.remote:
            async for item in stream_call(self.target.execute, envelope):
                yield item
        else:
            async for item in self.target.execute(envelope):
                yield item

    async def payload(self, envelope: bytes) -> bytes:
        if self.remote:
            return await self.target.payload.remote(envelope)
        return await self.target.payload(envelope)


# The calls a participant's peer endpoint answers (see ParticipantReplica and peer/calls.py).
EXECUTE = "execute"
PAYLOAD = "payload"


class RemoteExecutor:
    """The executor of the participant with account ``dest``, reached through ``replica``
    (this participant's own replica actor, whose peer endpoint carries the call to the place
    the peer directory gives that account).

    Errors: whatever the replica raises (``PeerUnavailable``, ``PeerCallFailed`` wrapped by Ray)
    reaches the caller as for a dead executor: the transport agent tries another one."""

    def __init__(self, replica: Any, dest: str) -> None:
        self.replica = replica
        self.dest = dest

    async def execute(self, envelope: bytes) -> AsyncIterator[bytes]:
        async for item in stream_call(self.replica.peer_stream, self.dest, EXECUTE, envelope):
            yield item

    async def payload(self, envelope: bytes) -> bytes:
        return await self.replica.peer_call.remote(self.dest, PAYLOAD, envelope)
