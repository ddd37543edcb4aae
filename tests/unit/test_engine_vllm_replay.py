"""VLLMEngine's score replays: the in-worker hook's rows and wire layout (equal to
``scoring.score_logits``, chunk by chunk), and the fallback replay from top candidates (exact
where it claims to be). Pure torch except the chunk-bookkeeping test, which needs vllm."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gonka_ray.constants import VLLM_SCORE_CANDIDATES
from gonka_ray.engine import sampler, scoring, vllm_replay
from gonka_ray.engine.base import SamplingParams, ScoreResult
from gonka_ray.engine.vllm_engine import replay_from_candidates

VOCAB = 400


@dataclass
class FakeLogprob:
    logprob: float
    rank: int


def _entries(logits: torch.Tensor, tokens: list[int]) -> list[dict[int, FakeLogprob]]:
    """What vLLM's prompt_logprobs returns: the top VLLM_SCORE_CANDIDATES plus the actual token."""
    logp = torch.log_softmax(logits, -1)
    out = []
    for row, tok in zip(logp, tokens, strict=True):
        order = torch.argsort(row, descending=True, stable=True).tolist()
        rank = {t: r + 1 for r, t in enumerate(order)}
        keep = set(order[:VLLM_SCORE_CANDIDATES]) | {tok}
        out.append({t: FakeLogprob(float(row[t]), rank[t]) for t in keep})
    return out


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.0, seed=1),
        SamplingParams(temperature=1.0, seed=2),
        SamplingParams(temperature=0.7, top_k=20, seed=3),
        SamplingParams(temperature=1.2, top_k=50, top_p=0.8, seed=4),
        SamplingParams(temperature=1.0, top_p=0.9, seed=5),
        SamplingParams(temperature=0.8, top_p=0.95, seed=6),
    ],
)
def test_replay_never_claims_a_wrong_choice(params: SamplingParams) -> None:
    g = torch.Generator().manual_seed(params.seed)
    n = 60
    logits = torch.randn(n, VOCAB, generator=g) * 4  # peaked, like a real LM
    truth = sampler.sample(
        logits,
        temperature=torch.full((n,), params.temperature),
        seeds=torch.full((n,), params.seed, dtype=torch.int64),
        positions=torch.arange(n),
        top_k=torch.full((n,), params.top_k, dtype=torch.int64),
        top_p=torch.full((n,), params.top_p),
    )
    executor = truth.tokens.tolist()
    res = replay_from_candidates(_entries(logits, executor), executor, params, 5, VOCAB)
    decided = [m > 0 for m in res.margins]
    for i in range(n):
        if decided[i]:
            assert res.sampled_ids[i] == executor[i], i
    exact = params.temperature == 0 or 0 < params.top_k <= VLLM_SCORE_CANDIDATES
    if exact:
        assert list(res.sampled_ids) == executor
        assert res.margins == pytest.approx(truth.margins.tolist(), abs=1e-4)
    assert sum(decided) >= n // 4  # the bounds decide a useful share of positions
    logp = torch.log_softmax(logits, -1)
    assert res.token_logprobs == pytest.approx(
        [float(logp[i, t]) for i, t in enumerate(executor)], abs=1e-5
    )
    assert all(len(t) == 5 for t in res.top_ids)


# --- the in-worker replay hook (gonka_ray.engine.vllm_replay) ------------------------------

HOOK_PARAMS = [
    SamplingParams(temperature=1.0, top_p=0.9, top_k=40, seed=8, logprobs=5),
    SamplingParams(temperature=0.8, top_p=0.95, seed=9, logprobs=0, replay_tolerance=0.05),
    SamplingParams(temperature=0.0, seed=10, logprobs=3),
]


@dataclass
class FakeFlat:
    """The fields of vLLM's ``FlatLogprobs`` that :func:`vllm_replay.decode` reads."""

    start_indices: list[int] = field(default_factory=lambda: [0])
    end_indices: list[int] = field(default_factory=lambda: [0])
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)

    def add_rows(self, ids: torch.Tensor, values: torch.Tensor, ranks: torch.Tensor) -> None:
        """Append rows the way vLLM's output processor does (rank, then 1, 2, ...)."""
        for row_ids, row_vals, rank in zip(
            ids.tolist(), values.tolist(), ranks.tolist(), strict=True
        ):
            self.start_indices.append(len(self.token_ids))
            self.token_ids += row_ids
            self.logprobs += row_vals
            self.ranks += [rank, *range(1, len(row_ids))]
            self.end_indices.append(len(self.token_ids))


def _same(got: ScoreResult, want: ScoreResult) -> None:
    assert got.sampled_ids == want.sampled_ids
    assert got.top_ids == want.top_ids
    assert got.margins == pytest.approx(want.margins, abs=1e-6)
    assert got.token_logprobs == pytest.approx(want.token_logprobs, abs=1e-6)
    for a, b in zip(got.top_logprobs, want.top_logprobs, strict=True):
        assert a == pytest.approx(b, abs=1e-6)


def _lm_logits(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, VOCAB, generator=torch.Generator().manual_seed(seed)) * 4


@pytest.mark.parametrize("params", HOOK_PARAMS)
def test_hook_rows_in_slices_decode_to_score_logits(params: SamplingParams) -> None:
    n = 40
    logits = _lm_logits(n, params.seed)
    output = torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(1)).tolist()
    k = max(1, params.logprobs)
    flat = FakeFlat()
    for lo, hi in [(0, 7), (7, 8), (8, 40)]:  # any split into slices gives the same rows
        ids, values = vllm_replay.replay_rows(logits[lo:hi], output[lo:hi], params, lo)
        assert ids.shape == values.shape == (hi - lo, k + 2)
        flat.add_rows(ids, values, torch.full((hi - lo,), vllm_replay.RANK_MARK))
    got = vllm_replay.decode(flat, output, k)
    assert got is not None
    _same(got, scoring.score_logits(logits, output, params))


def test_decode_refuses_rows_it_did_not_write() -> None:
    params = HOOK_PARAMS[0]
    logits = _lm_logits(6, 0)
    output = [1, 2, 3, 4, 5, 6]
    ids, values = vllm_replay.replay_rows(logits, output, params, 0)
    good = FakeFlat()
    good.add_rows(ids, values, torch.full((6,), vllm_replay.RANK_MARK))
    assert vllm_replay.decode(good, output, params.logprobs) is not None
    no_mark = FakeFlat()
    no_mark.add_rows(ids, values, torch.ones(6, dtype=torch.int64))  # vLLM's own prompt logprobs
    assert vllm_replay.decode(no_mark, output, params.logprobs) is None
    assert vllm_replay.decode(good, output, params.logprobs + 1) is None  # wrong width
    assert vllm_replay.decode(good, output[:-1], params.logprobs) is None  # wrong length
    assert vllm_replay.decode(good, [9, *output[1:]], params.logprobs) is None  # other tokens
    assert vllm_replay.decode([{1: 0.0}], output, params.logprobs) is None  # dict entries
    assert vllm_replay.decode(None, output, params.logprobs) is None


def _hooked_runner(seq: list[int], spec: dict, compute_logits) -> tuple[object, object]:
    """A V1 runner with just the state the hook reads (the original method only runs its
    empty-dict early return, since the hook takes our request out first), hook installed."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    class StandIn(GPUModelRunner):
        def __init__(self) -> None:  # skip vLLM's setup: no model, no device
            pass

    state = SimpleNamespace(
        prompt_token_ids=seq,
        num_computed_tokens=0,
        in_progress_prompt_logprobs_cpu=None,
        sampling_params=SimpleNamespace(extra_args={vllm_replay.SCORE_KEY: spec}),
    )
    runner = StandIn()
    runner.requests = {"r": state}
    runner.num_prompt_logprobs = {"r": spec["logprobs"] + 1}
    runner.input_batch = SimpleNamespace(req_id_to_index={"r": 1}, vocab_size=VOCAB)
    runner.query_start_loc = SimpleNamespace(np=np.array([0, 3, 0]))  # 3 rows of another req
    runner.model = SimpleNamespace(compute_logits=compute_logits)
    assert vllm_replay.install(runner) and vllm_replay.install(runner)  # idempotent
    return runner, state


def _prefill(runner: object, state: object, hidden: torch.Tensor, chunks: list[int]) -> dict:
    """Drive the hooked ``_get_prompt_logprobs_dict`` through a chunked prefill."""
    out: dict = {}
    for size in chunks:
        assert "r" not in out  # returned only with the last chunk, like vLLM's own
        start = state.num_computed_tokens
        step_hidden = torch.cat([torch.zeros(3, VOCAB), hidden[start : start + size]])
        out = runner._get_prompt_logprobs_dict(step_hidden, {"r": size})
        state.num_computed_tokens += size
    assert "r" not in runner.num_prompt_logprobs and state.in_progress_prompt_logprobs_cpu is None
    return out


@pytest.mark.parametrize("chunks", [[30], [4, 8, 9, 9], [4, 8, 17, 1], [9, 1, 20]])
def test_hook_over_chunked_prefills(chunks: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed hook on a stand-in runner: chunks (including vLLM's deferred last one),
    another request's rows before ours, replay passes of 3 rows."""
    pytest.importorskip("vllm")
    monkeypatch.setattr(vllm_replay, "VLLM_REPLAY_PASS_ELEMENTS", 3 * VOCAB)
    params = HOOK_PARAMS[1]
    n_prompt, n_out = 10, 20
    seq = torch.randint(0, VOCAB, (n_prompt + n_out,), generator=torch.Generator().manual_seed(2))
    seq = seq.tolist()
    hidden = _lm_logits(len(seq), 3)  # compute_logits is the identity: row q predicts seq[q+1]
    spec = vllm_replay.score_args(params, n_prompt)[vllm_replay.SCORE_KEY]
    runner, state = _hooked_runner(seq, spec, lambda h: h)
    assert sum(chunks) == len(seq)
    tensors = _prefill(runner, state, hidden, chunks)["r"]
    flat = FakeFlat()
    flat.add_rows(tensors.logprob_token_ids, tensors.logprobs, tensors.selected_token_ranks)
    got = vllm_replay.decode(flat, seq[n_prompt:], spec["logprobs"])
    assert got is not None
    _same(got, scoring.score_logits(hidden[n_prompt - 1 : -1], seq[n_prompt:], params))


def test_hook_failure_drops_the_request_instead_of_the_engine() -> None:
    pytest.importorskip("vllm")
    seq = list(range(30))
    spec = vllm_replay.score_args(HOOK_PARAMS[0], 10)[vllm_replay.SCORE_KEY]

    def broken(hidden: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    runner, state = _hooked_runner(seq, spec, broken)
    assert "r" not in _prefill(runner, state, _lm_logits(30, 0), [12, 18])  # engine falls back
