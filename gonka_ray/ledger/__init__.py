"""The BFT ledger: pure consensus core, deterministic state machine, storage, replica actor."""
