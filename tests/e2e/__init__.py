"""E2E tier (a package so that its served network is torn down after its last test)."""
