"""Edge appliance: camera -> pose -> skeleton maps -> 30-frame windows -> anomaly score -> events."""

__version__ = "0.1.0"
