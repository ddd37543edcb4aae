"""The peer transport between replicas and participants (DESIGN §9).

- :mod:`~gonka_ray.peer.ray_transport`: :class:`~gonka_ray.ledger.transport.PeerTransport` over
  named Ray actors (one actor call per peer per event-loop turn).

The interface itself is :mod:`gonka_ray.ledger.transport` (the ledger owns what it needs); this
package holds the implementations that need a network below them.
"""
