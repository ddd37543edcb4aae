"""A participant's actors look up only their own participant's actors (no Ray needed: the
refusal comes before any lookup)."""

from __future__ import annotations

import pytest

from gonka_ray.actors.handles import HandleCache
from gonka_ray.exceptions import CrossParticipantCall


def test_another_participants_actor_is_refused_before_any_lookup() -> None:
    cache = HandleCache("ns", "net.p0.")
    with pytest.raises(CrossParticipantCall):
        cache.get("net.p1.executor")
    with pytest.raises(CrossParticipantCall):
        cache.get("net.p01.executor")  # a name that only starts like ours
    cache._cache["net.p0.executor"] = sentinel = object()
    assert cache.get("net.p0.executor") is sentinel
