"""What a trial source proposes for one trial: a search space samples it, a comparison's plan looks it up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Proposal:
    """One configuration to try: its validated ModelSpec and the values that name it
    (sampled parameters; for a comparison ``{"model": ..., "seed": ...}``)."""

    spec: Any
    values: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None  # the run's own seed (a comparison); None: the sweep's
    train_steps: int | None = None  # the run's own optimiser steps (compute matching); None: the budget's
    rungs: tuple[int, ...] | None = None  # the run's own scoring points in steps (a comparison's eval_at); None: the sweep's
