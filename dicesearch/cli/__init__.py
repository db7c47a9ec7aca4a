"""The ``dicesearch`` command line (entry point ``dicesearch.cli:main``); see ``app``."""

from dicesearch.cli import checkpoints, comparisons, specs, sweeps, training  # noqa: F401  (each registers its commands)
from dicesearch.cli.app import main

__all__ = ["main"]
