"""The training loop: ``train(spec, data_spec, config) -> TrainResult``.

One step k (1-based; its batch and draws are index i = k - 1):

1. batch i of ``fixed_batches`` (images, labels, flips) and ``step_draws`` (timesteps,
   noise, label-dropout coins): a pure function of (seed, i), the same for every model;
2. labels dropped to the null label ``num_classes`` with probability ``class_dropout``;
3. ``training_loss``: ``forward_stages`` under autocast, in a torch RNG state seeded by
   (seed, i), then ``diffusion_loss`` (multi-scale ε-MSE + learned-variance VLB) in fp32;
   on ``dicesearch.speed``'s fast kernels (``fast_kernels``) and through ``torch.compile``
   where ``compile`` decides so (``dicesearch.speed.compile``);
4. a NaN or infinite loss raises ``TrainingDiverged`` before the weights are touched;
5. backward (through a GradScaler in fp16), optional clipping, AdamW at ``lr_at(k)``;
6. EMA update with ``ema_decay_at(k)``;
7. checkpoint (every ``checkpoint_every`` and after the last step), then the callbacks:
   ``on_step``, ``on_log`` every ``log_every``, ``on_eval`` every ``eval_every``.

The initial weights come from ``build_model`` under ``torch.manual_seed(seed)``. Since no
other state is random, a run resumed from checkpoint k replays steps k+1.. exactly.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dicesearch.data import DataSpec, DiffusionDataset, fixed_batches, load_dataset
from dicesearch.devices import resolve_device
from dicesearch.errors import DataError, TrainingDiverged
from dicesearch.speed import fast_kernels
from dicesearch.speed.chunks import ThreadChunks, batch_independent, chunk_count
from dicesearch.speed.compile import CompileDecision, decide_compile
from dicesearch.speed.precision import decide_precision
from dicesearch.speed.worker_threads import one_intra_op_thread
from dicesearch.train.callbacks import Callback, EvalEvent, LogEvent, ProgressBar, StartEvent, StopTraining
from dicesearch.train.checkpoint import checkpoint_path, load_checkpoint, prune_checkpoints, remove_partial_files, save_checkpoint
from dicesearch.train.config import TrainConfig
from dicesearch.train.diffusion import NoiseSchedule, training_loss
from dicesearch.train.ema import create_ema, update_ema
from dicesearch.train.precision import MixedPrecision, resolve_precision
from dicesearch.train.rundir import RunDir, prepare_run
from dicesearch.train.seeding import seeded_step, step_draws

__all__ = ["TrainResult", "check_data_fits", "train"]


@dataclass
class TrainResult:
    """What a run produced (the checkpoints, if any, are on disk)."""

    model: nn.Module  # the trained weights, eval mode
    ema: nn.Module  # their EMA, eval mode: what to evaluate and sample from
    step: int  # optimiser steps done in all
    start_step: int  # steps already done when this call began (> 0 after a resume)
    losses: list[float] = field(default_factory=list)  # loss of steps start_step+1 .. step
    stopped_early: bool = False  # a callback raised StopTraining
    run_dir: RunDir | None = None
    last_checkpoint: Path | None = None


def check_data_fits(spec, dataset: DiffusionDataset, data_spec: DataSpec) -> None:
    """The data must have the model's input shape and no more classes than it embeds."""
    expected = (spec.input.channels, spec.input.resolution, spec.input.resolution)
    x, _ = dataset[0]
    if tuple(x.shape) != expected:
        what = "latents" if dataset.kind == "latents" else "images"
        raise DataError(
            f"data {getattr(data_spec, 'path', data_spec.kind)}: {what} are {'x'.join(map(str, x.shape))} but the "
            f"spec {spec.name!r} takes {'x'.join(map(str, expected))} (input.channels x input.resolution^2); "
            "give matching data or change the spec's input"
        )
    if spec.input.num_classes and dataset.num_classes > spec.input.num_classes:
        raise DataError(
            f"data {getattr(data_spec, 'path', data_spec.kind)}: {dataset.num_classes} classes but the spec "
            f"{spec.name!r} embeds {spec.input.num_classes}; set input.num_classes >= {dataset.num_classes}"
        )


class _Emitter:
    """Calls one hook on every callback, in order."""

    def __init__(self, callbacks: Sequence[Callback]):
        self.callbacks = list(callbacks)

    def __call__(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)


def train(
    spec,
    data_spec: DataSpec,
    config: TrainConfig = TrainConfig(),
    out_dir: str | os.PathLike | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    *,
    device: str | torch.device = "auto",
    progress: bool = False,
    dataset: DiffusionDataset | None = None,
) -> TrainResult:
    """Train ``spec`` on ``data_spec`` for ``config.steps`` optimiser steps.

    ``out_dir``: where the run files and checkpoints go (None: keep nothing on disk).
    ``resume``: continue the run in ``out_dir`` from its latest checkpoint (from step 0 if
    it has none). ``callbacks`` receive the run's events; ``progress`` adds a tqdm bar.
    ``dataset``: an already loaded ``load_dataset(data_spec)``, to share between runs.
    """
    from dicesearch.model import build_model

    device = resolve_device(device)
    precision_choice = decide_precision(config.precision, device)  # auto on a CPU: bf16 only where measured to pay
    precision = resolve_precision(precision_choice.name, device)
    dataset = dataset if dataset is not None else load_dataset(data_spec)
    check_data_fits(spec, dataset, data_spec)
    with torch.random.fork_rng(devices=[]):  # before the run folder is written: a model too big to build leaves nothing behind
        torch.manual_seed(config.seed)
        model = build_model(spec)
    run, resume_from = (None, None) if out_dir is None else prepare_run(out_dir, spec, data_spec, config, resume)
    model = model.to(device).train()
    model.set_gradient_checkpointing(config.gradient_checkpointing)
    ema = create_ema(model)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
        fused=config.fast_kernels and device.type in ("cpu", "cuda") or None,  # one kernel for all parameters: the same update to rounding
    )  # fmt: skip
    scaler = precision.grad_scaler()
    start = 0
    if resume_from is not None:
        remove_partial_files(run.checkpoints)
        start = load_checkpoint(resume_from, model=model, ema=ema, optimizer=optimizer, grad_scaler=scaler).step

    result = TrainResult(model=model, ema=ema, step=start, start_step=start, run_dir=run, last_checkpoint=resume_from)
    emit = _Emitter(list(callbacks) + ([ProgressBar(spec.name)] if progress else []))
    compiling = decide_compile(config.compile, device, config.steps - start, lambda: _train_gflop_per_step(spec, config.batch_size))
    loop = _Loop(
        spec=spec, data_spec=data_spec, dataset=dataset, config=config, device=device, precision=precision,
        model=model, ema=ema, optimizer=optimizer, scaler=scaler, run_dir=run, emit=emit, result=result, compiling=compiling,
    )  # fmt: skip
    try:
        emit("on_train_start", StartEvent(
            step=start, steps=config.steps, out_dir=run.root if run else None, device=device, precision=precision.name,
            compiled=compiling.compile, compile_reason=compiling.reason, precision_reason=precision_choice.reason,
        ))  # fmt: skip
        with fast_kernels(model, config.fast_kernels):
            loop.run(start)
    except StopTraining:
        result.stopped_early = True
        if result.step > start and loop.saved_step != result.step:
            loop.checkpoint(result.step)
    finally:
        loop.close()
    model.eval()
    emit("on_train_end", result)
    return result


def _train_gflop_per_step(spec, batch_size: int) -> float:
    """Forward + backward FLOPs of one step, ~3x the forward's (counted on the meta device)."""
    from dicesearch.analysis.flops import static_metrics

    return 3.0 * batch_size * static_metrics(spec)["gflops"]


@dataclass(frozen=True)
class _CompiledStages:
    """Stands in for the model where ``training_loss`` calls ``forward_stages``."""

    forward_stages: Any  # torch.compile(model.forward_stages)


@dataclass
class _Loop:
    """What one run's steps share; ``run`` does steps start+1 .. config.steps."""

    spec: Any  # ModelSpec
    data_spec: DataSpec
    dataset: DiffusionDataset
    config: TrainConfig
    device: torch.device
    precision: MixedPrecision
    model: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    run_dir: RunDir | None
    emit: _Emitter
    result: TrainResult
    compiling: CompileDecision = CompileDecision(False, "compile: never")
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)

    def __post_init__(self) -> None:
        # what training_loss calls forward_stages on: the model, or its compiled forward
        self.network = _CompiledStages(torch.compile(self.model.forward_stages)) if self.compiling.compile else self.model
        self.weights = self.spec.resolved_loss_weights()
        self.decoder = "latents" if self.dataset.kind == "latents" else "pixels"
        # a step on k CPU threads as k chunks of the batch (dicesearch.speed.chunks), where the step allows it
        chunkable = self.config.thread_chunks and self.device.type == "cpu" and not self.compiling.compile and not self.scaler.is_enabled()
        self.thread_chunks = ThreadChunks() if chunkable and batch_independent(self.model) else None
        self.null_label = self.spec.input.num_classes
        self.saved_step = self.result.step if self.result.last_checkpoint is not None else None

    def run(self, start: int) -> None:
        config = self.config
        if start >= config.steps:
            return
        batches = fixed_batches(self.dataset, config.batch_size, config.seed, start_step=start, num_steps=config.steps - start, num_workers=config.num_workers)
        window_losses: list[float] = []
        window_start = time.perf_counter()
        for step, (x0, y) in enumerate(batches, start=start + 1):
            loss, terms, grad_norm = self.step(step, x0, y)
            self.result.step = step
            self.result.losses.append(loss)
            window_losses.append(loss)
            if step % config.checkpoint_every == 0 or step == config.steps:
                self.checkpoint(step)
            self.emit("on_step", step, loss)
            if step % config.log_every == 0 or step == config.steps:
                elapsed = time.perf_counter() - window_start
                self.emit("on_log", LogEvent(
                    step=step,
                    loss=sum(window_losses) / len(window_losses),
                    steps_per_second=len(window_losses) / elapsed if elapsed > 0 else float("inf"),
                    lr=config.lr_at(step),
                    mse=tuple(terms.mse.tolist()),
                    vlb=None if terms.vlb is None else float(terms.vlb),
                    grad_norm=grad_norm,
                ))  # fmt: skip
                window_losses, window_start = [], time.perf_counter()
            if config.eval_every and step % config.eval_every == 0:
                self.emit("on_eval", EvalEvent(
                    step=step, ema=self.ema, model=self.model, spec=self.spec, data_spec=self.data_spec,
                    dataset=self.dataset, device=self.device, out_dir=self.run_dir.root if self.run_dir else None,
                ))  # fmt: skip

    def step(self, step: int, x0: torch.Tensor, y: torch.Tensor):
        """One optimiser step; returns (loss, its LossTerms, grad norm or None)."""
        chunks = 1 if self.thread_chunks is None else chunk_count(torch.get_num_threads(), x0.shape[0])
        if chunks > 1:  # the whole chunked step at one intra-op thread, its optimiser and EMA too (dicesearch.speed.chunks)
            with one_intra_op_thread():
                return self._step(step, x0, y, chunks)
        return self._step(step, x0, y, chunks)

    def _step(self, step: int, x0: torch.Tensor, y: torch.Tensor, chunks: int):
        config, index = self.config, step - 1
        draws = step_draws(config.seed, index, x0.shape[0], tuple(x0.shape[1:]), self.schedule.num_timesteps, config.class_dropout)
        x0 = x0.to(self.device, non_blocking=True)  # (B, C, H, W)
        t = draws.t.to(self.device)  # (B,)
        noise = draws.noise.to(self.device)  # (B, C, H, W)
        labels = None
        if self.null_label:
            labels = torch.where(draws.drop, torch.full_like(y, self.null_label), y).to(self.device)  # (B,)

        def loss_of(rows: slice = slice(None)):
            return training_loss(
                self.network, self.schedule, x0[rows], t[rows], noise[rows], None if labels is None else labels[rows],
                self.weights, self.spec.input.learn_sigma, self.decoder, self.precision.autocast(),
            )  # fmt: skip

        with seeded_step(config.seed, index, self.device):
            self.optimizer.zero_grad(set_to_none=True)
            if chunks > 1:  # forward and backward together, chunk by chunk on worker threads
                terms = self.thread_chunks.backward(x0.shape[0], chunks, loss_of)
            else:
                terms = loss_of()
            loss = terms.total.item()
            if not math.isfinite(loss):
                raise TrainingDiverged(step, loss)
            for group in self.optimizer.param_groups:
                group["lr"] = config.lr_at(step)
            if chunks == 1:
                self.scaler.scale(terms.total).backward()
        grad_norm = None
        if config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        update_ema(self.ema, self.model, config.ema_decay_at(step))
        return loss, terms, grad_norm

    def close(self) -> None:
        if self.thread_chunks is not None:
            self.thread_chunks.close()

    def checkpoint(self, step: int) -> None:
        if self.run_dir is None:
            return
        path = save_checkpoint(
            checkpoint_path(self.run_dir.checkpoints, step),
            step=step, seed=self.config.seed, model=self.model, ema=self.ema, optimizer=self.optimizer, grad_scaler=self.scaler,
        )  # fmt: skip
        prune_checkpoints(self.run_dir.checkpoints, self.config.keep_checkpoints)
        self.saved_step = step
        self.result.last_checkpoint = path
        self.emit("on_checkpoint", step, path)
