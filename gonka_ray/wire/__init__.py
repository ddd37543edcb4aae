"""The one typed wire format: every message that crosses a participant boundary.

- :mod:`gonka_ray.wire.codec`: the format itself: field annotations, canonical msgpack, the
  ``@message`` registry, signed envelopes (``seal`` / ``open_envelope``).
- :mod:`gonka_ray.wire.protocol`: the inference protocol's messages (client request, lifecycle
  transactions, executor/verifier messages).
- :mod:`gonka_ray.wire.ledger`: consensus and ledger messages (blocks, votes, certificates,
  genesis, ledger transactions).

Importing this package registers every declared message, so :func:`decode` knows them all; use
the names from here (``wire.encode``, ``wire.StartInference``).
"""

from __future__ import annotations

from gonka_ray.wire import ledger, protocol
from gonka_ray.wire.codec import *  # noqa: F403  (each module's __all__)
from gonka_ray.wire.codec import __all__ as _codec_all
from gonka_ray.wire.ledger import *  # noqa: F403
from gonka_ray.wire.protocol import *  # noqa: F403

__all__ = [*_codec_all, *ledger.__all__, *protocol.__all__]
