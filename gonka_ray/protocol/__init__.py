"""Pure protocol rules (no Ray, no torch, no engine): selection, sampling decisions, reputation,
status, rewards, PoC claims. ``tests/unit/test_poc.py`` checks the imports."""
