"""Hypothesis strategies derived from wire declarations, so every declared message is covered."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any, Union, get_args, get_origin

from hypothesis import strategies as st

from gonka_ray import wire

# Keep generated values small: the point is shape coverage, not big payloads.
_SMALL = 24


def strategy_for(tp: Any, meta: tuple = ()) -> st.SearchStrategy[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extra = get_args(tp)
        return strategy_for(base, (*meta, *extra))
    max_len = next((m.n for m in meta if isinstance(m, wire.MaxLen)), None)
    exact = next((m.n for m in meta if isinstance(m, wire.Size)), None)
    rng = next((m for m in meta if isinstance(m, wire.Range)), None)
    cap = min(max_len or _SMALL, _SMALL)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return st.none() | strategy_for(inner, meta)
    if origin in (list, tuple):
        return st.lists(strategy_for(get_args(tp)[0]), max_size=min(cap, 4)).map(tuple)
    if tp is bool:
        return st.booleans()
    if tp is int:
        lo, hi = (rng.lo, rng.hi) if rng else (wire.codec.INT64_MIN, wire.codec.INT64_MAX)
        return st.integers(lo, hi)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if tp is str:
        return st.text(max_size=cap)
    if tp is bytes:
        return st.binary(min_size=exact or 0, max_size=exact or cap)
    if dataclasses.is_dataclass(tp):
        return message_strategy(tp)
    raise TypeError(tp)


def message_strategy(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


any_message = st.sampled_from(
    sorted(wire.REGISTRY.values(), key=lambda c: (c.TYPE, c.VERSION))
).flatmap(message_strategy)
