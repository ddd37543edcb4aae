"""The BFT ledger: pure consensus core, deterministic state machine, storage, replica actor.

- :mod:`~gonka_ray.ledger.consensus`: chained HotStuff, step-driven (no Ray, clock, disk), with
  :mod:`~gonka_ray.ledger.quorum` (validator sets, certificate checks),
  :mod:`~gonka_ray.ledger.ready` (what the core and its shell exchange),
  :mod:`~gonka_ray.ledger.pacemaker` (timeouts, view sync) and
  :mod:`~gonka_ray.ledger.block_sync` (fetching missing blocks).
- :mod:`~gonka_ray.ledger.state`: the state machine; ``register`` adds transaction types.
- :mod:`~gonka_ray.ledger.merkle`, :mod:`~gonka_ray.ledger.receipts`: offline-verifiable receipts.
- :mod:`~gonka_ray.ledger.storage`: SQLite blocks, safety record, commits, snapshots.
- :mod:`~gonka_ray.ledger.replica`, :mod:`~gonka_ray.ledger.client`: the Ray shell and its client.
- :mod:`~gonka_ray.ledger.sim`: the seeded fault-injecting network used by tests/sim.
"""
