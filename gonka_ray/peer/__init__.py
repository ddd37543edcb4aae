"""The peer transport between replicas and participants (DESIGN §9).

- :mod:`~gonka_ray.peer.tcp`: :class:`~gonka_ray.ledger.transport.PeerTransport` over framed
  TCP between processes or clusters, without Ray, and the calls between participants
  (:mod:`~gonka_ray.peer.calls`: execute with its token stream, payload fetches): :mod:`~gonka_ray.peer.framing` (frames, batches, frame cipher),
  :mod:`~gonka_ray.peer.handshake` (mutual signed hellos), :mod:`~gonka_ray.peer.connection`
  (one connection's deadlines, limits and dispatch), :mod:`~gonka_ray.peer.limits` (the bounds).

The interface itself is :mod:`gonka_ray.ledger.transport` (the ledger owns what it needs); this
package holds the implementations that need a network below them.
"""
