"""Sweeps of the plan: launchers, SLURM state, preflight pricing, the sweep design, winners, Optuna objective."""
