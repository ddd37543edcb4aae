"""MLNode as a Ray actor: chunks stream across the actor boundary; errors keep their type."""

from __future__ import annotations

import pytest

from gonka_ray.actors.mlnode import MLNode, mlnode_options
from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.base import EngineRequest, SamplingParams
from gonka_ray.exceptions import InvalidRequest
from gonka_ray.raykit import remote
from tests.tiny_model import diverse_tiny_dir


async def test_fake_node_streams_chunks_as_they_are_made(ray_session) -> None:
    cfg = EngineConfig(kind="fake", fake_token_delay_ms=20)
    node = remote(MLNode, mlnode_options(cfg, gpu_host=False)).remote(ModelConfig(name="m"), cfg)
    req = EngineRequest("s", (104, 105), SamplingParams(max_tokens=12, seed=3))
    chunks = []
    async for ref in node.generate.options(num_returns="streaming").remote(req):
        chunks.append(await ref)
    full = await node.generate_full.remote(req)
    assert tuple(c.token_id for c in chunks) == full.output_ids
    assert chunks[-1].finish_reason == "length" and len(chunks) == 12
    with pytest.raises(InvalidRequest) as err:
        await node.generate_full.remote(EngineRequest("bad", (1,), SamplingParams(max_tokens=0)))
    assert err.value.field == "max_tokens"
    ray_session.kill(node)


async def test_transformers_node_matches_a_local_engine(ray_session) -> None:
    from gonka_ray.engine.transformers_engine import TransformersEngine

    model = ModelConfig(name="tiny-llama", path=str(diverse_tiny_dir()))
    cfg = EngineConfig(max_model_len=256, torch_threads=1)
    node = remote(MLNode, mlnode_options(cfg, gpu_host=False)).remote(model, cfg)
    local = TransformersEngine(model, cfg)
    try:
        req = EngineRequest(
            "t", tuple(local.tokenize("Once upon a time")), SamplingParams(max_tokens=10, seed=9)
        )
        streamed = [
            await r async for r in node.generate.options(num_returns="streaming").remote(req)
        ]
        want = await local.generate_full(req)
        assert tuple(c.token_id for c in streamed) == want.output_ids
        sc = await node.score.remote(req.prompt_ids, want.output_ids, req.sampling)
        assert sc.sampled_ids == want.output_ids
    finally:
        await local.close()
        ray_session.kill(node)
