"""Learning: features, the network, training, the model bundle, calibration, search, the registry, planning."""
