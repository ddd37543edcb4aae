"""Pure verification math (no Ray): artifacts, distance, replay, calibration."""
