"""The sampler's noise and choices are bit-identical on CPU and CUDA (skipped without CUDA)."""

from __future__ import annotations

import torch

from gonka_ray.engine import sampler
from gonka_ray.hashing import seed_to_int64


def test_noise_is_bit_identical_on_cpu_and_cuda() -> None:
    seeds = torch.tensor([seed_to_int64(s) for s in (0, 1, 2**63, 2**64 - 1)])
    pos = torch.tensor([0, 7, 123, 4096])
    cpu = sampler.gumbel_noise(seeds, pos, 49152)
    gpu = sampler.gumbel_noise(seeds.cuda(), pos.cuda(), 49152).cpu()
    assert torch.equal(
        sampler.hash_u64(seeds, pos, torch.arange(3)[:, None]),
        sampler.hash_u64(seeds.cuda(), pos.cuda(), torch.arange(3).cuda()[:, None]).cpu(),
    )
    assert torch.equal(cpu, gpu)


def test_choices_and_margins_agree_for_identical_logits() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 49152, generator=g) * 4
    rows = [
        sampler.RowParams(t, 1000 + i, i, top_k=k, top_p=p)
        for i, (t, k, p) in enumerate(
            [(1.0, 0, 1.0), (0.7, 40, 1.0), (1.2, 0, 0.9), (0.0, 0, 1.0)] * 16
        )
    ]
    cpu = sampler.sample_rows(logits, rows)
    gpu = sampler.sample_rows(logits.cuda(), rows)
    assert torch.equal(cpu.tokens, gpu.tokens.cpu())
    assert torch.allclose(cpu.margins, gpu.margins.cpu(), rtol=0, atol=1e-5)
