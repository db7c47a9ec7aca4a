"""The short-run objective: train, sample, score. Knows nothing of Optuna, Ray or MLflow.

``evaluate(spec, data, budget)`` is DICE's protocol (Sec. 4.1) in miniature: train every
model on the same seeded stream of images, labels, timesteps and noise; sample a fixed
number of images from fixed seeds with the EMA weights; score them against cached
reference statistics of the same number of real images. FID is biased by about 1/N, so
the metric names carry N (``fid_200``): only equal-N values compare. Every score comes
with its uncertainty (``metrics.image_scores``); with ``replicates`` = k the run is
repeated with seeds seed, seed + 1, ..., seed + k - 1 (init, data order, noise and the
samples' noise; the reference images stay those of ``seed``) and the scores are their
means (``metrics.replicates``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

from dicesearch.devices import resolve_device


class Budget(BaseModel):
    """What one short run may spend (identical for every trial of a sweep)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train_steps: PositiveInt = Field(300, description="Optimiser steps.")
    batch_size: PositiveInt = Field(64, description="Training batch.")
    lr: PositiveFloat = Field(1e-3, description="AdamW learning rate (constant after the warm-up).")
    warmup_steps: NonNegativeInt = Field(0, description="Linear learning-rate warm-up steps.")
    ema_decay: float = Field(0.999, ge=0.0, le=1.0, description="EMA of weights (warmed up: min(decay, (1+k)/(10+k))); the EMA model is sampled.")
    fid_samples: PositiveInt = Field(200, description="N of fid_N: generated and reference images.")
    sampling_steps: PositiveInt = Field(25, description="Sampler steps per image.")
    sampler: Literal["ddpm", "ddim", "dpmsolver++"] = "ddim"
    report_every: PositiveInt = Field(25, description="Steps between progress reports (the pruner's intermediate values).")
    fast_kernels: bool = Field(
        True, description="Train, sample and score on dicesearch.speed's fast kernels and the eager Inception (same scores to float rounding); false: PyTorch's and TorchScript's own."
    )
    compile: Literal["auto", "always", "never"] = Field(
        "auto", description="torch.compile the training step: auto where its measured cost is paid back within the run (never on a CPU), always, never."
    )
    threads: PositiveInt | None = Field(
        1, description="torch intra-op threads of a sweep's trial process (1: fastest for small models on a shared CPU, where 2 threads run 5-10x slower); None: torch's default. evaluate() itself leaves the setting alone."
    )


@dataclass
class Evaluation:
    metrics: dict[str, float]  # fid_N, sfid_N, precision_N, recall_N, final_loss, params, gmacs, ...
    loss_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since the last report)
    samples_png: str | None = None


class _Reporter:
    """A training callback that averages the loss over ``every`` steps and reports it."""

    def __init__(self, every: int, on_progress: Callable[[int, float], None] | None):
        self.every, self.on_progress = every, on_progress
        self.window: list[float] = []
        self.curve: list[tuple[int, float]] = []
        self.losses: list[float] = []

    # the trainer's Callback protocol (duck-typed: only the events used here)
    def on_train_start(self, start) -> None: ...
    def on_log(self, event) -> None: ...
    def on_checkpoint(self, step, path) -> None: ...
    def on_eval(self, event) -> None: ...
    def on_train_end(self, result) -> None: ...

    def on_step(self, step: int, loss: float) -> None:
        self.window.append(loss)
        self.losses.append(loss)
        if step % self.every == 0:
            mean = sum(self.window) / len(self.window)
            self.window.clear()
            self.curve.append((step, mean))
            if self.on_progress is not None:
                self.on_progress(step, mean)


def static_metrics(spec) -> dict[str, float]:
    """Parameters and multiply-adds per forward at batch 1, counted on the meta device."""
    from dicesearch.analysis.flops import count_flops
    from dicesearch.model import build_model

    with torch.device("meta"):
        model = build_model(spec)
        r, c = spec.input.resolution, spec.input.channels
        x = torch.zeros(1, c, r, r)
        t = torch.zeros(1)
        y = torch.zeros(1, dtype=torch.long) if spec.input.num_classes else None
    flops = count_flops(lambda: model(x, t, y))
    return {
        "params": float(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "gmacs": flops.macs / 1e9,  # the unit DiT and DiMR report as "Gflops"
        "gflops": flops.flops / 1e9,
    }


def evaluate(
    spec,
    data,
    budget: Budget = Budget(),
    *,
    seed: int = 42,
    replicates: int = 1,
    reference_seed: int | None = None,
    workdir: str | Path | None = None,
    device: str = "auto",
    on_progress: Callable[[int, float], None] | None = None,
    progress_bar: bool = False,
    count_static: bool = True,
) -> Evaluation:
    """Train ``spec`` on ``data`` for ``budget``, sample, and score with real FID.

    ``on_progress(step, mean_loss)`` is called every ``budget.report_every`` steps (replicate
    r's step s reports as r * train_steps + s); it may raise to stop the run (the exception
    propagates). Returns metrics including ``fid_<N>``, ``kid_<N>``, ``sfid_<N>``,
    ``precision_<N>``, ``recall_<N>`` with N = fid_samples, their uncertainties, and
    (unless ``count_static`` is False, e.g. when the caller counted them already) the
    parameters and multiply-adds. The sample grid is replicate 0's. ``reference_seed``
    (default: ``seed``) chooses the real images the scores compare against.
    """
    from dicesearch.metrics import score_names
    from dicesearch.metrics.replicates import aggregate_replicates

    if replicates < 1:
        raise ValueError(f"replicates must be at least 1, got {replicates}")
    runs = []
    for r in range(replicates):
        offset = r * budget.train_steps
        report = None if on_progress is None else (lambda step, loss, offset=offset: on_progress(offset + step, loss))
        reference = seed if reference_seed is None else reference_seed
        runs.append(_run_once(spec, data, budget, seed + r, reference, workdir if r == 0 else None, device, report, progress_bar))
    metrics = static_metrics(spec) if count_static else {}
    metrics.update(aggregate_replicates([run.metrics for run in runs], score_names(budget.fid_samples).values()))
    curve = [(r * budget.train_steps + step, loss) for r, run in enumerate(runs) for step, loss in run.loss_curve]
    return Evaluation(metrics=metrics, loss_curve=curve, samples_png=runs[0].samples_png)


def _run_once(spec, data, budget: Budget, seed: int, reference_seed: int, workdir, device: str, on_progress, progress_bar: bool) -> Evaluation:
    """One replicate: train with ``seed``, sample with ``seed``, score against ``reference_seed``'s real images."""
    from dicesearch.data import load_dataset
    from dicesearch.data.images import ImageView
    from dicesearch.metrics import image_scores, reference_stats_from_dataset
    from dicesearch.metrics.inception_score import load_logits_network, logits_network_path
    from dicesearch.train import SamplingConfig, TrainConfig, save_grid, train
    from dicesearch.train.sampling import sample_images

    device_t = resolve_device(device)
    metrics: dict[str, float] = {}
    dataset = load_dataset(data)
    reporter = _Reporter(budget.report_every, on_progress)
    config = TrainConfig(
        steps=budget.train_steps,
        batch_size=budget.batch_size,
        lr=budget.lr,
        warmup_steps=budget.warmup_steps,
        ema_decay=budget.ema_decay,
        seed=seed,
        log_every=budget.report_every,
        fast_kernels=budget.fast_kernels,
        compile=budget.compile,
    )
    if device_t.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device_t)
    start = time.perf_counter()
    result = train(spec, data, config, out_dir=None, callbacks=[reporter], device=device_t, progress=progress_bar, dataset=dataset)
    metrics["train_seconds"] = time.perf_counter() - start
    metrics["train_steps_per_second"] = budget.train_steps / metrics["train_seconds"]
    tail = reporter.losses[-max(1, len(reporter.losses) // 10):]
    metrics["final_loss"] = sum(tail) / len(tail)
    if device_t.type == "cuda":
        metrics["memory_measured_gb"] = torch.cuda.max_memory_allocated(device_t) / 2**30

    sampling = SamplingConfig(
        sampler=budget.sampler, steps=budget.sampling_steps, num_samples=budget.fid_samples, seed=seed, batch_size=min(budget.fid_samples, 250),
        fast_kernels=budget.fast_kernels,
    )
    start = time.perf_counter()
    images = sample_images(result.ema, spec, data, sampling, device=device_t)
    metrics["sampling_seconds"] = time.perf_counter() - start
    metrics["samples_per_second"] = budget.fid_samples / metrics["sampling_seconds"]

    start = time.perf_counter()
    reference = reference_stats_from_dataset(
        ImageView(dataset, data), budget.fid_samples, dataset.fingerprint, seed=reference_seed, progress=progress_bar, fast=budget.fast_kernels
    )
    classifier_path = logits_network_path()
    classifier = load_logits_network(classifier_path) if classifier_path else None
    metrics.update(image_scores(images, reference, budget.fid_samples, classifier=classifier, seed=seed, progress=progress_bar, fast=budget.fast_kernels))
    metrics["fid_seconds"] = time.perf_counter() - start

    samples_png = None
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        samples_png = str(save_grid(images[:64], Path(workdir) / "samples.png"))
    return Evaluation(metrics=metrics, loss_curve=reporter.curve, samples_png=samples_png)
