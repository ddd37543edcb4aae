"""The shared Gumbel-max sampler: hash, noise, masks, greedy, margins, batch independence."""

from __future__ import annotations

import random

import pytest
import torch

from gonka_ray.engine import sampler
from gonka_ray.hashing import seed_to_int64, splitmix64_reference


def test_hash_matches_pure_python_splitmix64() -> None:
    rng = random.Random(7)
    cases = [(0, 0, 0), (2**64 - 1, 2**40, 49151)] + [
        (rng.getrandbits(64), rng.randrange(10**6), rng.randrange(10**5)) for _ in range(300)
    ]
    seeds = torch.tensor([seed_to_int64(s) for s, _, _ in cases])
    pos = torch.tensor([p for _, p, _ in cases])
    tok = torch.tensor([t for _, _, t in cases])
    got = sampler.hash_u64(seeds, pos, tok).tolist()
    for (s, p, t), h in zip(cases, got, strict=True):
        assert h & (2**64 - 1) == splitmix64_reference(s, p, t)


def test_uniform_is_strictly_inside_unit_interval() -> None:
    u = sampler.uniform(torch.tensor([3]), torch.tensor([1]), torch.arange(200_000))
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    # roughly uniform: mean close to 1/2
    assert abs(float(u.mean()) - 0.5) < 0.01


def test_noise_depends_on_seed_position_and_token() -> None:
    a = sampler.gumbel_noise(torch.tensor([1, 1, 2]), torch.tensor([0, 1, 0]), 1000)
    assert a.shape == (3, 1000) and a.dtype == torch.float32
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], a[2])
    assert not torch.equal(a[0, :500], a[0, 500:])
    b = sampler.gumbel_noise(torch.tensor([1]), torch.tensor([0]), 1000)
    assert torch.equal(a[0], b[0])


def test_seed_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        seed_to_int64(2**64)
    with pytest.raises(ValueError):
        seed_to_int64(-1)


def _logits(rows: int = 6, vocab: int = 500) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(rows, vocab, generator=g) * 3


def test_row_result_does_not_depend_on_batch_neighbours() -> None:
    logits = _logits()
    rows = [
        sampler.RowParams(1.0, 11, 0),
        sampler.RowParams(0.0, 11, 0),
        sampler.RowParams(0.7, 12, 5, top_k=10),
        sampler.RowParams(1.3, 13, 2, top_p=0.6),
        sampler.RowParams(1.0, 2**64 - 1, 9, top_k=3, top_p=0.5),
        sampler.RowParams(0.5, 0, 1),
    ]
    batch = sampler.sample_rows(logits, rows)
    for i, r in enumerate(rows):
        alone = sampler.sample_rows(logits[i : i + 1], [r])
        assert int(alone.tokens[0]) == int(batch.tokens[i])
        assert float(alone.margins[0]) == float(batch.margins[i])


def test_greedy_is_argmax_of_raw_logits_with_raw_margin() -> None:
    logits = _logits()
    out = sampler.sample_rows(logits, [sampler.RowParams(0.0, i, i) for i in range(len(logits))])
    assert torch.equal(out.tokens, logits.argmax(-1))
    top2 = logits.topk(2).values
    assert torch.allclose(out.margins, top2[:, 0] - top2[:, 1])


def test_top_k_one_equals_greedy_and_top_k_restricts_choice() -> None:
    logits = _logits(1, 200)
    for seed in range(50):
        one = sampler.sample_rows(logits, [sampler.RowParams(2.0, seed, 0, top_k=1)])
        assert int(one.tokens[0]) == int(logits.argmax())
        assert float(one.margins[0]) == float("inf")
        three = sampler.sample_rows(logits, [sampler.RowParams(5.0, seed, 0, top_k=3)])
        assert int(three.tokens[0]) in logits[0].topk(3).indices.tolist()


def test_top_p_keeps_the_smallest_prefix_reaching_p() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, -5.0, -6.0]])
    probs = torch.softmax(logits, -1)[0]
    assert float(probs[0]) < 0.9 < float(probs[:2].sum())  # p=0.9 keeps exactly tokens 0 and 1
    seen = {
        int(sampler.sample_rows(logits, [sampler.RowParams(1.0, s, 0, top_p=0.9)]).tokens[0])
        for s in range(200)
    }
    assert seen == {0, 1}


def test_sampling_follows_the_softmax_distribution() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    temperature = 1.5
    n = 4000
    rows = [sampler.RowParams(temperature, 5, pos) for pos in range(n)]
    out = sampler.sample_rows(logits.expand(n, 3), rows)
    freq = torch.bincount(out.tokens, minlength=3).float() / n
    expected = torch.softmax(logits[0] / temperature, -1)
    assert torch.allclose(freq, expected, atol=0.03)


def test_changing_seed_or_position_changes_samples() -> None:
    logits = torch.zeros(1, 1000)
    base = sampler.sample_rows(logits, [sampler.RowParams(1.0, 1, 0)])
    other_seed = sampler.sample_rows(logits, [sampler.RowParams(1.0, 2, 0)])
    other_pos = sampler.sample_rows(logits, [sampler.RowParams(1.0, 1, 1)])
    assert int(base.tokens[0]) != int(other_seed.tokens[0])
    assert int(base.tokens[0]) != int(other_pos.tokens[0])


def test_margin_is_best_minus_runner_up_score() -> None:
    logits = _logits(1, 300)
    r = sampler.RowParams(0.8, 99, 4)
    out = sampler.sample_rows(logits, [r])
    scores = logits[0] / 0.8 + sampler.gumbel_noise(torch.tensor([99]), torch.tensor([4]), 300)[0]
    top2 = scores.topk(2).values
    assert int(out.tokens[0]) == int(scores.argmax())
    assert float(out.margins[0]) == pytest.approx(float(top2[0] - top2[1]), abs=1e-5)


def test_claimed_margin_is_how_far_the_claim_falls_below_the_choice() -> None:
    logits = _logits(1, 300)
    seeds, pos = torch.tensor([99]), torch.tensor([4])
    scores = logits[0] / 0.8 + sampler.gumbel_noise(seeds, pos, 300)[0]
    order = scores.argsort(descending=True)
    kw = {"temperature": torch.tensor([0.8]), "seeds": seeds, "positions": pos}
    plain = sampler.sample(logits, **kw)
    for rank in (0, 1, 7):  # the choice, the runner-up, a token far down
        out = sampler.sample(logits, **kw, claimed=order[rank : rank + 1])
        assert torch.equal(out.tokens, plain.tokens) and torch.equal(out.margins, plain.margins)
        want = float(scores[order[0]] - scores[order[rank]])
        assert float(out.claimed_margins[0]) == pytest.approx(want, abs=1e-5)
        if rank == 1:
            assert float(out.claimed_margins[0]) == pytest.approx(float(out.margins[0]), abs=1e-5)
        if rank == 7:
            assert float(out.claimed_margins[0]) > float(out.margins[0])
    # a claim the top-k mask surely drops could never be the choice
    masked = sampler.sample(logits, **kw, top_k=torch.tensor([2]), claimed=order[250:251])
    assert float(masked.claimed_margins[0]) == float("inf")


@pytest.mark.parametrize("tolerance", [0.0, 0.05, 1.0])
def test_claimed_margin_never_undercuts_the_margin_under_mask_tolerance(tolerance) -> None:
    """Whatever the masks and the tolerance: a claim that is not the choice falls at least the
    plain margin below it (the runner-up is the closest any other token comes), and the choice's
    own claim is 0."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 300, generator=g) * 3
    claimed = torch.randint(0, 300, (64,), generator=g)
    kw = {
        "temperature": torch.full((64,), 0.7),
        "seeds": torch.full((64,), 5, dtype=torch.int64),
        "positions": torch.arange(64),
        "top_k": torch.full((64,), 40),
        "top_p": torch.full((64,), 0.9),
        "mask_tolerance": tolerance,
    }
    first = sampler.sample(logits, **kw)
    claimed[::2] = first.tokens[::2]  # half the rows claim the choice
    out = sampler.sample(logits, **kw, claimed=claimed)
    assert torch.equal(out.tokens, first.tokens) and torch.equal(out.margins, first.margins)
    same = claimed == out.tokens
    assert bool((out.claimed_margins[same] == 0).all())
    assert bool((out.claimed_margins[~same] >= out.margins[~same] - 1e-5).all())
    # and it is sharper: most claims sit further below the choice than the runner-up does
    assert bool((out.claimed_margins[~same] > out.margins[~same] + 1e-3).any())
    if tolerance == 1.0:
        assert bool((out.margins == 0).any())  # masks that noise could decide did occur


def _reference_mask(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor):
    """The full-sort top-k/top-p mask (value thresholds, ties kept together), row by row."""
    out = scaled.clone()
    vocab = scaled.shape[-1]
    for r in range(scaled.shape[0]):
        vals, _ = torch.sort(scaled[r], descending=True)
        k = vocab if top_k[r] <= 0 or top_k[r] > vocab else int(top_k[r])
        vals = vals.masked_fill(vals < vals[k - 1], float("-inf"))
        probs = torch.softmax(vals, -1)
        before = torch.cumsum(probs, -1) - probs
        keep = (before < top_p[r]) | (top_p[r] >= 1.0)
        keep[0] = True
        n_keep = int(min(int(keep.sum()), int(torch.isfinite(vals).sum())))
        out[r] = scaled[r].masked_fill(scaled[r] < vals[n_keep - 1], float("-inf"))
    return out


@pytest.mark.parametrize("vocab", [6, 300, 5000])
def test_prefix_masks_equal_the_full_sort_with_ties_peaks_and_flat_rows(vocab) -> None:
    g = torch.Generator().manual_seed(vocab)
    rows = [
        torch.randn(vocab, generator=g) * 8,  # peaked
        torch.randn(vocab, generator=g) * 0.05,  # flat: the nucleus passes the prefix
        (torch.randn(vocab, generator=g) * 4).to(torch.bfloat16).float(),  # bf16 ties
        torch.round(torch.randn(vocab, generator=g) * 2),  # many exact ties
    ]
    logits = torch.stack(rows * 6)
    n = logits.shape[0]
    top_k = torch.tensor([0, 2, 40, 1, vocab, vocab + 7] * 4)[:n]
    top_p = torch.tensor([1.0, 0.9, 0.5, 0.05, 0.999, 1.0, 0.75, 0.3] * 3)[:n]
    got = sampler._mask_top_k_top_p(logits, top_k, top_p)
    want = _reference_mask(logits, top_k, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(want))


def test_top_k_keeps_every_value_tied_with_the_kth() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    got = sampler._mask_top_k_top_p(logits, torch.tensor([2]), torch.tensor([0.75]))
    assert torch.isfinite(got).all()  # the k-th value 0.0 is shared by three tokens
