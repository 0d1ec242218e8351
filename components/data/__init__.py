"""Data: the simulator, versioned datasets, validation, drift and shift checks."""
