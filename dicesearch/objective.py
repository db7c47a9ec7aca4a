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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from dicesearch.analysis.flops import static_metrics
from dicesearch.devices import resolve_device
from dicesearch.filemodel import FileModel
from dicesearch.train.config import Precision


class Budget(FileModel):
    """What one short run may spend (identical for every trial of a sweep).

    ``match`` says what is equal across the models trained under it (:mod:`dicesearch.train.matching`):
    the optimiser steps (``train_steps``, as DiT and DICE compare), the training FLOPs
    (``train_flops``: each model trains ``train_flops`` / its FLOPs per step) or the
    wall-clock seconds of training on this device (``train_seconds``: from a measured warm-up).
    """

    match: Literal["steps", "flops", "seconds"] = Field("steps", description="What every model gets equally: optimiser steps, training FLOPs or training seconds.")
    train_steps: PositiveInt = Field(300, description="Optimiser steps (match: steps).")
    train_flops: PositiveFloat | None = Field(None, description="Training FLOPs per model (match: flops), e.g. 2e13.")
    train_seconds: PositiveFloat | None = Field(None, description="Seconds of training per model on this device (match: seconds).")
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
    precision: Precision = Field(
        "auto",
        description="Training arithmetic: auto (fp16 on CUDA; on a CPU bf16 autocast only where measured faster with scores inside the seed spread, dicesearch.speed.precision: nowhere yet, so fp32), fp32, bf16, fp16.",
    )
    threads: PositiveInt | None = Field(
        1, description="torch intra-op threads of a sweep's trial process (1: fastest for small models on a shared CPU, where 2 threads run 5-10x slower); None: torch's default. evaluate() itself leaves the setting alone."
    )

    @model_validator(mode="after")
    def _matched_amount_given(self):
        from dicesearch.errors import SpecFieldError

        for kind, field_name, example in (("flops", "train_flops", "2e13"), ("seconds", "train_seconds", "120")):
            given = getattr(self, field_name) is not None
            if self.match == kind and not given:
                raise SpecFieldError((field_name,), f"match: {kind} needs {field_name}: what every model gets, e.g. {field_name}: {example}")
            if self.match != kind and given:
                raise SpecFieldError((field_name,), f"{field_name} is only read with match: {kind} (match is {self.match}); set match: {kind} or drop {field_name}")
        return self


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


RungCallback = Callable[[int, int, dict], bool]  # (rung index, steps, metrics) -> go on?


def evaluate(
    spec,
    data,
    budget: Budget = Budget(),
    *,
    seed: int = 42,
    replicates: int = 1,
    reference_seed: int | None = None,
    workdir: str | Path | None = None,
    rungs: Sequence[int] | None = None,
    run_dir: str | Path | None = None,
    start_rung: int = 0,
    on_rung: RungCallback | None = None,
    rung_samples: Sequence[int] | None = None,
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

    Multi-fidelity: with ``rungs`` (increasing step counts, the last one
    ``budget.train_steps``) training stops at each rung, every replicate is scored there
    exactly as at the end (same N, sampler, reference), and ``on_rung(index, steps,
    metrics)`` says whether to go on (it is called at the last rung too, where the answer
    does not matter); False ends the evaluation with that rung's scores.
    Training continues from the rung's checkpoint in ``run_dir`` (``run_dir/r<k>`` per
    replicate), so a run continued over rungs equals one trained straight through; with
    ``start_rung`` > 0 it continues an interrupted evaluation from the checkpoint of rung
    ``start_rung - 1``. Metrics carry ``rung`` (the index reached) and ``rung_steps``.
    ``rung_samples`` (one per rung, the last ``budget.fid_samples``): a rung scores that many
    images instead, the first n of the N (image i's noise and label depend on i alone), against
    the same N-image reference statistics; its scores are named for n (``fid_32``).
    """
    from dicesearch.metrics import score_names
    from dicesearch.metrics.replicates import aggregate_replicates

    if replicates < 1:
        raise ValueError(f"replicates must be at least 1, got {replicates}")
    rungs = list(rungs or [budget.train_steps])
    if rungs != sorted(set(rungs)) or rungs[-1] != budget.train_steps:
        raise ValueError(f"rungs must increase and end at train_steps {budget.train_steps}, got {rungs}")
    if len(rungs) > 1 and run_dir is None:
        raise ValueError("rungs need a run_dir for the rung checkpoints")
    if not 0 <= start_rung < len(rungs):
        raise ValueError(f"start_rung {start_rung} is not one of the {len(rungs)} rungs")
    samples = list(rung_samples or [budget.fid_samples] * len(rungs))
    if len(samples) != len(rungs) or samples[-1] != budget.fid_samples or max(samples) > budget.fid_samples:
        raise ValueError(f"rung_samples must give one count per rung, at most fid_samples {budget.fid_samples} and ending there, got {samples}")
    reference = seed if reference_seed is None else reference_seed
    runs = []
    for r in range(replicates):
        offset = r * budget.train_steps
        report = None if on_progress is None else (lambda step, loss, offset=offset: on_progress(offset + step, loss))
        folder = None if run_dir is None else Path(run_dir) / f"r{r}"
        runs.append(_Replicate(spec, data, budget, seed + r, reference, folder, device, report, progress_bar))
    static = static_metrics(spec) if count_static else {}
    for index in range(start_rung, len(rungs)):
        results = [run.advance(rungs[index], workdir if r == 0 else None, samples[index]) for r, run in enumerate(runs)]
        scores = score_names(samples[index]).values()
        metrics = {**static, **aggregate_replicates([m for m, _ in results], scores), "rung": float(index), "rung_steps": float(rungs[index])}
        if on_rung is not None and not on_rung(index, rungs[index], metrics) and index + 1 < len(rungs):
            break
    curve = [(r * budget.train_steps + step, loss) for r, run in enumerate(runs) for step, loss in run.reporter.curve]
    return Evaluation(metrics=metrics, loss_curve=curve, samples_png=results[0][1])


class _Replicate:
    """One replicate of a short run: train with ``seed`` (to each rung in turn), sample with
    ``seed``, score against ``reference_seed``'s real images."""

    def __init__(self, spec, data, budget: Budget, seed: int, reference_seed: int, run_dir: Path | None, device: str, on_progress, progress_bar: bool):
        from dicesearch.data import load_dataset

        self.spec, self.data, self.budget, self.seed, self.reference_seed = spec, data, budget, seed, reference_seed
        self.run_dir, self.progress_bar = run_dir, progress_bar
        self.device = resolve_device(device)
        self.dataset = load_dataset(data)
        self.reporter = _Reporter(budget.report_every, on_progress)
        self.seconds = {"train_seconds": 0.0, "sampling_seconds": 0.0, "fid_seconds": 0.0}
        self.steps = 0

    def advance(self, steps: int, workdir, samples: int) -> tuple[dict[str, float], str | None]:
        """Train on to ``steps`` (from the last checkpoint), then sample and score ``samples`` images: (metrics, grid path)."""
        from dicesearch.train import TrainConfig, train

        budget = self.budget
        config = TrainConfig(
            steps=steps, batch_size=budget.batch_size, lr=budget.lr, warmup_steps=budget.warmup_steps, ema_decay=budget.ema_decay,
            seed=self.seed, log_every=budget.report_every, checkpoint_every=budget.train_steps + 1, keep_checkpoints=1,
            fast_kernels=budget.fast_kernels, compile=budget.compile, precision=budget.precision,
            thread_chunks=True,  # more threads than one (an idle worker's core) as chunks of the batch: dicesearch.speed.chunks
        )  # fmt: skip
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        result = train(
            self.spec, self.data, config, out_dir=self.run_dir, callbacks=[self.reporter], resume=self.run_dir is not None,
            device=self.device, progress=self.progress_bar, dataset=self.dataset,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        self.seconds["train_seconds"] += elapsed
        trained, self.steps = result.step - result.start_step, result.step
        metrics: dict[str, float] = {"train_steps_per_second": trained / elapsed if elapsed > 0 else 0.0}
        tail = self.reporter.losses[-max(1, len(self.reporter.losses) // 10):]
        if tail:
            metrics["final_loss"] = sum(tail) / len(tail)
        if self.device.type == "cuda":
            metrics["memory_measured_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        scores, samples_png = self._score(result.ema, workdir, samples)
        return {**metrics, **scores, **self.seconds}, samples_png

    def _score(self, ema, workdir, n: int) -> tuple[dict[str, float], str | None]:
        """Sample the first ``n`` images and score them against the budget's N-image reference statistics."""
        from dicesearch.metrics import image_scores
        from dicesearch.metrics.inception_score import load_logits_network, logits_network_path
        from dicesearch.train import SamplingConfig, save_grid
        from dicesearch.train.sampling import sample_images

        budget = self.budget
        sampling = SamplingConfig(
            sampler=budget.sampler, steps=budget.sampling_steps, num_samples=n, seed=self.seed, batch_size=min(n, 250),
            fast_kernels=budget.fast_kernels,
        )
        start = time.perf_counter()
        images = sample_images(ema, self.spec, self.data, sampling, device=self.device)
        sampling_seconds = time.perf_counter() - start
        self.seconds["sampling_seconds"] += sampling_seconds
        start = time.perf_counter()
        classifier_path = logits_network_path()
        classifier = load_logits_network(classifier_path) if classifier_path else None

        def reference():  # asked for after the images' features: the first trials on a new machine wait less for a reference being computed
            return budget_reference(self.dataset, self.data, budget, self.reference_seed, progress=self.progress_bar)

        scores = image_scores(images, reference, n, classifier=classifier, seed=self.seed, progress=self.progress_bar, fast=budget.fast_kernels)
        self.seconds["fid_seconds"] += time.perf_counter() - start
        scores["samples_per_second"] = n / sampling_seconds
        samples_png = None
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            samples_png = str(save_grid(images[:64], Path(workdir) / "samples.png"))
        return scores, samples_png


def budget_reference(dataset, data, budget: Budget, reference_seed: int, progress: bool = False):
    """The statistics every score of a run is measured against: ``budget.fid_samples`` real
    images of ``dataset`` drawn with ``reference_seed``, from the cache or computed into it
    (:mod:`dicesearch.metrics.reference`)."""
    from dicesearch.data.images import ImageView
    from dicesearch.metrics import reference_stats_from_dataset

    return reference_stats_from_dataset(
        ImageView(dataset, data), budget.fid_samples, dataset.fingerprint, seed=reference_seed, progress=progress, fast=budget.fast_kernels
    )
