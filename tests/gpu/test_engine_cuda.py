"""TransformersEngine on CUDA: same tokens as on CPU where the sampler's margin is clear."""

from __future__ import annotations

from gonka_ray.config import EngineConfig, ModelConfig
from gonka_ray.engine.base import EngineRequest, SamplingParams
from gonka_ray.engine.transformers_engine import TransformersEngine
from tests.tiny_model import diverse_tiny_dir

# CPU and GPU kernels round differently; a choice whose margin exceeds this must not flip.
MARGIN_GATE = 1e-3


async def test_cuda_engine_agrees_with_cpu_engine() -> None:
    model = ModelConfig(name="tiny-llama", path=str(diverse_tiny_dir()))
    cpu = TransformersEngine(model, EngineConfig(device="cpu", dtype="float32", torch_threads=1))
    gpu = TransformersEngine(model, EngineConfig(device="cuda", dtype="float32"))
    try:
        prompt = tuple(cpu.tokenize("The history of the printing press"))
        for seed in range(4):
            req = EngineRequest(f"g{seed}", prompt, SamplingParams(max_tokens=24, seed=seed))
            on_gpu = await gpu.generate_full(req)
            replay = await cpu.score(prompt, on_gpu.output_ids, req.sampling)
            # the CPU replays the GPU's own sequence, so each position is checked on its own
            for i, (want, got, margin) in enumerate(
                zip(on_gpu.output_ids, replay.sampled_ids, replay.margins, strict=True)
            ):
                if margin > MARGIN_GATE:
                    assert want == got, (seed, i)
            diffs = [
                abs(a - b) for a, b in zip(on_gpu.logprobs, replay.token_logprobs, strict=True)
            ]
            assert max(diffs) < 1e-3
    finally:
        await cpu.close()
        await gpu.close()
