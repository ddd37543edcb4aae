"""The network's Ray metrics (``ray.util.metrics``), exported by Ray's Prometheus endpoint.

Every metric is declared once in :data:`METRICS` and created lazily on first use in each
process (Ray metric objects must be made inside a connected worker or driver). Outside Ray
(unit tests, simulations, plain scripts) every call is a no-op, and a failure to record never
reaches the caller: metrics must not break or slow the request path (one dict lookup and a
native call per record). Ray exports them with the prefix ``ray_``.

Where they are recorded (the shells, never the pure cores):

- Serve ingress (:mod:`gonka_ray.serve.ingress`): ``gonka_requests`` (endpoint, code),
  ``gonka_request_latency_s`` (endpoint, stream), ``gonka_tokens`` (kind = prompt|completion).
- Transport agent actor: ``gonka_ta_requests`` (participant, outcome).
- Verifier actor: ``gonka_validations`` (participant, passed), ``gonka_votes`` (participant).
- Every role's ledger port: ``gonka_ledger_commit_latency_s`` (participant), submit to receipt.
- Ledger replica actor: ``gonka_ledger_height`` and ``gonka_ledger_txs`` (participant),
  ``gonka_invalidations`` (participant): inferences the ledger invalidated, total.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from gonka_ray.constants import LATENCY_BOUNDARIES_S

log = logging.getLogger(__name__)


Kind = Literal["counter", "gauge", "histogram"]

# name -> (kind, description, tag keys)
METRICS: dict[str, tuple[Kind, str, tuple[str, ...]]] = {
    "gonka_requests": ("counter", "HTTP requests answered, by endpoint and status code",
                       ("endpoint", "code")),
    "gonka_request_latency_s": ("histogram", "HTTP request latency to the last byte (s)",
                                ("endpoint", "stream")),
    "gonka_tokens": ("counter", "tokens served over HTTP (prompt and completion)", ("kind",)),
    "gonka_ta_requests": ("counter", "requests a transport agent handled, by outcome",
                          ("participant", "outcome")),
    "gonka_validations": ("counter", "inference checks a verifier recorded, by result",
                          ("participant", "passed")),
    "gonka_votes": ("counter", "votes a verifier cast", ("participant",)),
    "gonka_invalidations": ("gauge", "inferences the ledger has invalidated (total)",
                            ("participant",)),
    "gonka_ledger_height": ("gauge", "committed height applied by a ledger replica",
                            ("participant",)),
    "gonka_ledger_txs": ("counter", "transactions committed (applied) by a ledger replica",
                         ("participant",)),
    "gonka_ledger_commit_latency_s": ("histogram", "ledger submit to commit receipt (s)",
                                      ("participant",)),
}  # fmt: skip

_made: dict[str, Any] = {}
_disabled = False


def _metric(name: str) -> Any | None:
    """The Ray metric ``name`` in this process (made on first use), or None outside Ray."""
    global _disabled
    m = _made.get(name)
    if m is not None or _disabled:
        return m
    try:
        import ray

        if not ray.is_initialized():
            return None
        from ray.util import metrics as rm

        kind, desc, tags = METRICS[name]
        if kind == "counter":
            m = rm.Counter(name, description=desc, tag_keys=tags)
        elif kind == "gauge":
            m = rm.Gauge(name, description=desc, tag_keys=tags)
        else:
            m = rm.Histogram(name, description=desc, boundaries=LATENCY_BOUNDARIES_S, tag_keys=tags)
    except KeyError:
        raise
    except Exception as exc:  # metrics unavailable here: stop trying in this process
        log.debug("metrics disabled: %r", exc)
        _disabled = True
        return None
    _made[name] = m
    return m


def _tags(tags: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in tags.items()}


def _record(name: str, op: str, value: float, tags: dict[str, Any], *, skip: bool = False) -> None:
    m = _metric(name)
    if m is None or skip:
        return
    try:
        getattr(m, op)(value, tags=_tags(tags))
    except Exception as exc:
        log.debug("metric %s: %r", name, exc)


def inc(name: str, value: float = 1.0, **tags: Any) -> None:
    """Add ``value`` to counter ``name``."""
    _record(name, "inc", value, tags, skip=value <= 0)


def observe(name: str, value: float, **tags: Any) -> None:
    """Record ``value`` in histogram ``name``."""
    _record(name, "observe", value, tags)


def set_gauge(name: str, value: float, **tags: Any) -> None:
    """Set gauge ``name`` to ``value``."""
    _record(name, "set", value, tags)
