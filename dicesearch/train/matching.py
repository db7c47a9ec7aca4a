"""Compute matching: how many optimiser steps a budget of steps, training FLOPs or seconds buys a model.

DiT and DICE compare models at equal training steps, which favours the largest model: it
spends more compute per step. A :class:`~dicesearch.objective.Budget` may instead hold the
compute equal (``match``):

* ``steps``: ``train_steps`` for every model;
* ``flops``: floor(``train_flops`` / F), F = the FLOPs of one training step (forward and
  backward at the training batch, counted by :func:`dicesearch.analysis.flops.training_step_flops`);
* ``seconds``: floor(``train_seconds`` / s), s = the seconds one training step takes on this
  device, measured by training ``WARMUP_STEPS`` steps of the model on the data (the first
  ``UNTIMED_STEPS`` not timed: they pay for allocation and the first kernels), at the
  threads the caller has set. Wall-clock depends on the machine and its load: state both.

At least one step is always trained.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

WARMUP_STEPS = 12
UNTIMED_STEPS = 4


@dataclass(frozen=True)
class MatchedSteps:
    steps: int  # optimiser steps the budget buys
    step_flops: int  # FLOPs of one training step (forward + backward at the batch)
    step_seconds: float | None = None  # measured seconds of one training step (match: seconds)

    @property
    def train_flops(self) -> float:
        return float(self.steps) * self.step_flops


def matched_steps(spec, data, budget, device: str = "auto") -> MatchedSteps:
    """The steps ``budget`` buys ``spec`` trained on ``data`` (a DataSpec), under ``budget.match``."""
    from dicesearch.analysis.flops import training_step_flops

    step_flops = training_step_flops(spec, budget.batch_size)
    if budget.match == "flops":
        return MatchedSteps(max(1, math.floor(budget.train_flops / step_flops)), step_flops)
    if budget.match == "seconds":
        seconds = measure_step_seconds(spec, data, budget, device)
        return MatchedSteps(max(1, math.floor(budget.train_seconds / seconds)), step_flops, seconds)
    return MatchedSteps(budget.train_steps, step_flops)


class _StepClock:
    """A training callback that notes when each step ends."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_start(self, start) -> None: ...
    def on_log(self, event) -> None: ...
    def on_checkpoint(self, step, path) -> None: ...
    def on_eval(self, event) -> None: ...
    def on_train_end(self, result) -> None: ...

    def on_step(self, step: int, loss: float) -> None:
        self.times.append(time.perf_counter())


def measure_step_seconds(spec, data, budget, device: str = "auto", steps: int = WARMUP_STEPS, untimed: int = UNTIMED_STEPS) -> float:
    """Seconds per training step of ``spec`` on this device: ``steps`` real steps of the training
    loop (the budget's batch, kernels and compile setting), timed after the first ``untimed``."""
    from dicesearch.train import TrainConfig, train

    config = TrainConfig(
        steps=steps, batch_size=budget.batch_size, lr=budget.lr, seed=0, log_every=steps, checkpoint_every=steps + 1,
        fast_kernels=budget.fast_kernels, compile=budget.compile, thread_chunks=True,  # as a trial process trains (dicesearch.objective)
    )  # fmt: skip
    clock = _StepClock()
    train(spec, data, config, out_dir=None, callbacks=[clock], device=device, progress=False)
    timed = clock.times[untimed:]
    if len(timed) < 2:
        raise ValueError(f"measuring a step needs more than {untimed + 1} steps, got {len(clock.times)}")
    return (timed[-1] - timed[0]) / (len(timed) - 1)
