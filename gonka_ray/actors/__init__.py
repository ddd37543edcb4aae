"""Ray actors of a participant: transport agent, executor, verifier, ledger replica, MLNode."""
