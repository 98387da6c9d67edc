"""A run from start to end: its directory contract, lock, identity, checkpoints, metrics, preemption."""
