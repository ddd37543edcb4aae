"""Pure protocol rules (no Ray): selection, sampling decisions, reputation, status, rewards."""
