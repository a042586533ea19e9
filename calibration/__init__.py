"""On-site threshold calibration (learns where "normal" ends for one camera)."""
