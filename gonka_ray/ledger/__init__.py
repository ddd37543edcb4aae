"""The BFT ledger: pure consensus core, deterministic state machine, storage, replica shell.

Nothing here imports Ray or the layers above (``gonka_ray.actors``, ``gonka_ray.peer``); a test
checks it.

- :mod:`~gonka_ray.ledger.consensus`: chained HotStuff, step-driven (no Ray, clock, disk), with
  :mod:`~gonka_ray.ledger.quorum` (validator sets, certificate checks),
  :mod:`~gonka_ray.ledger.ready` (what the core and its shell exchange),
  :mod:`~gonka_ray.ledger.pacemaker` (timeouts, view sync) and
  :mod:`~gonka_ray.ledger.block_sync` (fetching missing blocks).
- :mod:`~gonka_ray.ledger.state`: the state machine; ``register`` adds transaction types.
- :mod:`~gonka_ray.ledger.merkle`, :mod:`~gonka_ray.ledger.receipts`: offline-verifiable receipts.
- :mod:`~gonka_ray.ledger.storage`: SQLite blocks, safety record, commits, snapshots.
- :mod:`~gonka_ray.ledger.replica`: the replica shell (clock, storage, peers);
  :mod:`~gonka_ray.ledger.transport`: the peer-transport interface it is given, and an
  in-process network; :mod:`~gonka_ray.ledger.client`: the client of a replica group.
"""
