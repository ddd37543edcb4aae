"""Ray actor handles looked up by name when first needed, so actors can start in any order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class HandleCache:
    """Lazy, cached actor lookups by name."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._cache: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        handle = self._cache.get(name)
        if handle is None:
            import ray

            handle = ray.get_actor(name, namespace=self.namespace)
            self._cache[name] = handle
        return handle

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)


class LazyHandle:
    """Resolves an actor handle on first use (the MLNode may start after its callers)."""

    def __init__(self, resolve: Callable[[], Any]) -> None:
        self._resolve = resolve
        self._handle = None

    def __getattr__(self, name: str) -> Any:
        if self._handle is None:
            self._handle = self._resolve()
        return getattr(self._handle, name)
