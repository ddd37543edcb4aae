"""The one place classes become Ray actors (STYLE §3).

Actor classes are plain classes; :func:`remote` applies ``ray.remote`` with the options of one
pydantic model, so unit tests construct the classes directly and every actor's placement,
restart and concurrency policy is spelled the same way.

A neutral module below every Ray user (the actor shells, the peer transport, the network
launcher): it imports nothing of gonka_ray, and Ray only when one of its functions is called.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ActorOptions(BaseModel):
    """Ray actor options (the subset gonka_ray uses); ``None`` means Ray's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="actor name (named actors can be looked up)")
    namespace: str | None = Field(None, description="Ray namespace of a named actor")
    lifetime: str | None = Field(None, description="'detached' to outlive the driver")
    max_restarts: int = Field(0, ge=-1, description="restarts after a crash, -1 = forever")
    max_task_retries: int = Field(0, ge=-1, description="retries of a call on restart")
    max_concurrency: int | None = Field(None, ge=1, description="concurrent calls")
    num_cpus: float | None = Field(None, ge=0, description="CPUs reserved")
    num_gpus: float | None = Field(None, ge=0, description="GPUs reserved")
    resources: dict[str, float] = Field(default_factory=dict, description="custom resources")

    def ray_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``ActorClass.options``, defaults left out."""
        return {k: v for k, v in self.model_dump().items() if v not in (None, {})}


def remote(cls: type, options: ActorOptions | None = None) -> Any:
    """``ray.remote(cls).options(**options)``: an actor class ready for ``.remote(...)``."""
    import ray

    actor_cls = ray.remote(cls)
    return actor_cls.options(**(options or ActorOptions()).ray_kwargs())


def keep_ray_on_loopback() -> None:
    """Make this process's Ray bind and dial loopback, before ``ray.init``: sets (if unset) the
    variables ``make`` exports for a local network.

    NOTE: Ray maps ``127.0.0.1`` to the host's routable address unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and reads that variable once, at import: in a
    process that imported Ray before this call the module flag is flipped too. Without it a
    driver attaching to a loopback cluster dials the routable address and retries for ever.
    """
    import os

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback only: no token to hand out
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    from ray._private import ray_constants

    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        ray_constants.ENABLE_RAY_CLUSTER = False
