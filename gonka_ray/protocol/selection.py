"""Executor selection: a deterministic, weighted, verifiable draw (DESIGN §2.3).

``select_executor(inference_id, attempt, candidates, exclude)`` returns the same participant on
every machine, so the ledger can recompute the draw and reject a ``StartInference`` whose executor
is not its result: a transport agent cannot steer work to a friend. Randomness is
``sha256(inference_id ‖ attempt)``; ``attempt`` increments when the chosen executor fails before
its first token, giving a fresh, equally verifiable draw. Retries draw **without replacement**:
attempt ``a`` excludes the executors of attempts ``0 … a−1`` (until every candidate has had its
turn, then a new round starts), so under one participant set a dead or overloaded executor
cannot fail all of a request's attempts while another candidate is left. Drawing attempt ``a``
costs ``a + 1`` picks: callers bound ``attempt`` first (the ledger's ``INFERENCE_MAX_ATTEMPTS``).

Invariants: candidates are ordered by address before drawing (input order does not matter);
weight-0, excluded and INVALID participants are never chosen; the draw is exact integer
arithmetic (no floats), P(chosen = c) = weight_c / Σ weight ± 2^-64.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from gonka_ray.exceptions import NoExecutorAvailable


def draw_randomness(inference_id: bytes, attempt: int) -> int:
    """A 64-bit integer from ``sha256(inference_id ‖ attempt)``."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    digest = hashlib.sha256(bytes(inference_id) + attempt.to_bytes(4, "big")).digest()
    return int.from_bytes(digest[:8], "big")


def weighted_pick(weights: Mapping[str, int], randomness: int) -> str:
    """Pick a key with probability ∝ its weight, using a 64-bit ``randomness``.

    Raises:
        NoExecutorAvailable: no key has positive weight.
    """
    items = sorted((k, w) for k, w in weights.items() if w > 0)
    total = sum(w for _, w in items)
    if total <= 0:
        raise NoExecutorAvailable("no eligible executor with positive weight")
    point = (randomness * total) >> 64  # uniform in [0, total)
    for key, weight in items:
        if point < weight:
            return key
        point -= weight
    raise AssertionError("unreachable: point < total")  # pragma: no cover


def eligible_weights(
    participants: Mapping[str, Any], exclude: Iterable[str] = ()
) -> dict[str, int]:
    """address → weight of the participants that may be drawn or vote: weight > 0, not INVALID.

    ``participants`` maps addresses to anything with ``weight`` and ``status`` attributes
    (ledger records or the actors' participant infos).
    """
    banned = set(exclude)
    return {
        a: p.weight
        for a, p in participants.items()
        if a not in banned and p.weight > 0 and p.status != "INVALID"
    }


def select_executor(
    inference_id: bytes,
    attempt: int,
    weights: Mapping[str, int],
    exclude: Iterable[str] = (),
    *,
    without_replacement: bool = True,
) -> str:
    """The executor for ``inference_id`` at ``attempt``.

    Attempt ``a`` is drawn ∝ weight among the candidates that attempts ``0 … a−1`` did not pick
    (all of them again once each has been picked), so attempt 0 is ∝ weight and a retry goes to
    someone new while anyone new is left. ``without_replacement=False`` is protocol version 1's
    rule (every attempt drawn from everyone), kept so that old blocks replay
    (:mod:`gonka_ray.protocol.versions`).

    Args:
        inference_id: 32-byte id (sha256 of the client's signature).
        attempt: 0 for the first try, +1 per retry after a pre-first-token failure.
        weights: eligible participants (address → weight) of the current epoch; callers pass
            only non-INVALID participants.
        exclude: addresses never to choose (the transport agent's own participant).

    Raises:
        NoExecutorAvailable: nobody is eligible.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    banned = set(exclude)
    eligible = {k: w for k, w in weights.items() if k not in banned and w > 0}
    if not without_replacement:
        return weighted_pick(eligible, draw_randomness(inference_id, attempt))
    tried: set[str] = set()
    chosen = ""
    for a in range(attempt + 1):
        pool = {k: w for k, w in eligible.items() if k not in tried}
        if not pool:  # every candidate had its turn: a new round
            tried.clear()
            pool = eligible
        chosen = weighted_pick(pool, draw_randomness(inference_id, a))
        tried.add(chosen)
    return chosen
