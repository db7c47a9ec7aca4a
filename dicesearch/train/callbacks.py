"""How a training run reports: callbacks receive events; the loop never prints or logs.

A ``Callback`` overrides the hooks it needs (all default to doing nothing):

- ``on_train_start(start)``: once, before the first step (``start.step`` > 0 on resume);
- ``on_step(step, loss)``: after every optimiser step, with that step's loss;
- ``on_log(event)``: every ``log_every`` steps: mean loss, steps/s, learning rate;
- ``on_checkpoint(step, path)``: after a checkpoint is safely on disk;
- ``on_eval(event)``: every ``eval_every`` steps, with the EMA model, to compute metrics
  such as FID (``dicesearch.metrics`` plugs in here);
- ``on_train_end(result)``: once, after the last step.

Any hook may raise to stop the run (a sweep prunes a trial or enforces a time limit this
way); the exception propagates out of ``train`` and every checkpoint on disk is complete.
``StopTraining`` is the polite variant: the run saves a checkpoint and returns normally.

Shipped here: ``ProgressBar`` (tqdm) and ``JsonlLog`` (one JSON object per log event).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from dicesearch.data import DataSpec, DiffusionDataset
    from dicesearch.train.trainer import TrainResult

__all__ = ["Callback", "EvalEvent", "JsonlLog", "LogEvent", "ProgressBar", "StartEvent", "StopTraining"]


class StopTraining(Exception):
    """Raised by a callback to end the run early but cleanly: checkpoint, then return."""


@dataclass(frozen=True)
class StartEvent:
    step: int  # optimiser steps already done (0, or the resumed checkpoint's step)
    steps: int  # the step the run will stop at
    out_dir: Path | None
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    compiled: bool = False  # the training step runs through torch.compile
    compile_reason: str = ""  # why (dicesearch.speed.compile.decide_compile)
    precision_reason: str = ""  # why this precision (dicesearch.speed.precision.decide_precision)


@dataclass(frozen=True)
class LogEvent:
    step: int
    loss: float  # mean loss of the steps since the previous log event
    steps_per_second: float  # over those steps (checkpoints and evals included)
    lr: float
    mse: tuple[float, ...]  # last step's unweighted ε-MSE per stage, coarse to fine
    vlb: float | None  # last step's VLB term (bits/dim), None without learn_sigma
    grad_norm: float | None  # last step's gradient norm before clipping (only with grad_clip)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class EvalEvent:
    """Everything an evaluation needs: sample from ``ema`` with ``dicesearch.train.sample_images``."""

    step: int
    ema: nn.Module  # the EMA weights, eval mode; do not modify
    model: nn.Module  # the raw weights being trained; do not modify
    spec: Any  # the ModelSpec
    data_spec: DataSpec
    dataset: DiffusionDataset
    device: torch.device
    out_dir: Path | None


class Callback:
    """Base class: override the hooks you need."""

    def on_train_start(self, start: StartEvent) -> None:
        pass

    def on_step(self, step: int, loss: float) -> None:
        pass

    def on_log(self, event: LogEvent) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path) -> None:
        pass

    def on_eval(self, event: EvalEvent) -> None:
        pass

    def on_train_end(self, result: TrainResult) -> None:
        pass


class ProgressBar(Callback):
    """A tqdm bar: steps done, steps/s, and the loss of the last log window."""

    def __init__(self, description: str = "train", **tqdm_options: Any):
        self.description, self.options = description, tqdm_options
        self.bar = None

    def on_train_start(self, start: StartEvent) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=start.steps, initial=start.step, desc=self.description, unit="step", dynamic_ncols=True, **self.options)

    def on_step(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def on_log(self, event: LogEvent) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)

    def on_train_end(self, result: TrainResult) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __del__(self) -> None:  # a run stopped by an exception never reaches on_train_end
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn tqdm down already
            pass


class JsonlLog(Callback):
    """Appends one JSON object per log event to a file (a resumed run appends to it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, event: LogEvent) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(event.as_dict()) + "\n")
