"""Sweeps: search-space files, the budget gate, and the Optuna and Ray Tune backends."""
