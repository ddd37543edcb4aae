"""Ray actor handles looked up by name when first needed, so actors can start in any order.

A participant's actors look up only their own participant's actors: :class:`HandleCache` refuses
any other name (``CrossParticipantCall``), so no Ray call crosses a participant boundary; what
another participant is asked goes over the peer transport (DESIGN §1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gonka_ray.exceptions import CrossParticipantCall


class HandleCache:
    """Lazy, cached actor lookups by name, limited to names starting with ``own_prefix``
    (``"<network>.<participant>."``; empty: any name)."""

    def __init__(self, namespace: str, own_prefix: str = "") -> None:
        self.namespace = namespace
        self.own_prefix = own_prefix
        self._cache: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        """The handle of actor ``name``.

        Raises:
            CrossParticipantCall: ``name`` is another participant's actor.
        """
        handle = self._cache.get(name)
        if handle is None:
            if not name.startswith(self.own_prefix):
                raise CrossParticipantCall(
                    f"{name} belongs to another participant: ask it over the peer transport"
                )
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
