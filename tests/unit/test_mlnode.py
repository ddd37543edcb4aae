"""MLNode as a plain class (no Ray) over the FakeEngine, and its resource options."""

from __future__ import annotations

import pytest

from gonka_ray.actors.mlnode import MLNode, mlnode_options
from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.base import EngineRequest, SamplingParams
from gonka_ray.exceptions import InvalidRequest


@pytest.fixture
def node() -> MLNode:
    return MLNode(ModelConfig(name="m"), EngineConfig(kind="fake", max_model_len=128))


async def test_generate_streams_what_generate_full_returns(node: MLNode) -> None:
    req = EngineRequest("a", tuple(node.tokenize("hi")), SamplingParams(max_tokens=9, seed=1))
    chunks = [c async for c in node.generate(req)]
    full = await node.generate_full(req)
    assert tuple(c.token_id for c in chunks) == full.output_ids
    sc = await node.score(req.prompt_ids, full.output_ids, req.sampling)
    assert sc.sampled_ids == full.output_ids
    assert node.model_info().name == "m"


async def test_bad_request_raises_before_any_chunk(node: MLNode) -> None:
    with pytest.raises(InvalidRequest) as err:
        async for _ in node.generate(EngineRequest("b", (), SamplingParams(max_tokens=2))):
            pass
    assert err.value.field == "prompt"


def test_options_reserve_tp_times_pp_gpus_on_gpu_hosts() -> None:
    cfg = EngineConfig(kind="vllm", tensor_parallel_size=2, pipeline_parallel_size=2)
    opts = mlnode_options(cfg, name="p0-ml", resources={"participant:p0": 1}, gpu_host=True)
    assert opts.num_gpus == 4
    assert opts.ray_kwargs()["resources"] == {"participant:p0": 1}
    cpu = mlnode_options(EngineConfig(torch_threads=2), gpu_host=False)
    assert cpu.num_gpus is None and cpu.num_cpus == 2
