"""The compare as pictures: samples side by side, score against training compute, and a forest plot.

* :func:`samples_figure`: each model's sample grid at one seed, side by side, labelled. At a
  seed every model samples from the same noise, so the grids pair image by image.
* :func:`compute_figure`: a score against training FLOPs (log x), one line per model with
  its interval band over seeds at every ``eval_at`` point (DiT, Peebles & Xie 2023, Fig. 9:
  "FID vs training compute"). A model's curve points are matched across seeds by their
  training FLOPs (the same step gives the same FLOPs), and each point shows the mean and the
  Student-t interval of the seeds that reached it (:func:`dicesearch.compare.paired.mean_interval`).
* :func:`forest_figure`: each model's mean paired difference to the baseline with its
  interval (:mod:`dicesearch.compare.verdict`), the line of no difference, the ±δ band of
  equivalence and the verdict word beside each line.

Figures are built without pyplot (``matplotlib.figure.Figure``, rendered by Agg when saved),
so nothing depends on a display or on pyplot's global state; :func:`save_pictures` writes
them all as PNG and returns the paths.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dicesearch.compare.metric import Metric
from dicesearch.compare.paired import MeanInterval, mean_interval
from dicesearch.compare.results import ModelResult
from dicesearch.compare.verdict import Comparison

DPI = 110
WORD_COLOURS = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:cyan", "inconclusive": "tab:gray"}


def sample_panels(models: Sequence[ModelResult], seed: int) -> list[tuple[str, Path]]:
    """(model name, sample grid PNG) of every model that saved a grid at ``seed``, in model order."""
    panels = []
    for model in models:
        run = model.run_at(seed)
        if run is not None and run.samples is not None and Path(run.samples).is_file():
            panels.append((model.name, Path(run.samples)))
    return panels


def samples_figure(panels: Sequence[tuple[str, Path]], seed: int) -> Figure:
    """One panel per (label, PNG), side by side, shown pixel for pixel (nearest neighbour)."""
    from PIL import Image

    if not panels:
        raise ValueError("no sample grids to show")
    images = [np.asarray(Image.open(path).convert("RGB")) for _, path in panels]
    height = max(image.shape[0] for image in images)
    width = sum(image.shape[1] for image in images)
    scale = max(1.0, 4.0 / (height / DPI))  # at least 4 inches tall
    figure = Figure(figsize=(width / DPI * scale + 0.3 * len(images), height / DPI * scale + 0.8), dpi=DPI)
    axes = figure.subplots(1, len(images), squeeze=False)[0]
    for ax, (label, _), image in zip(axes, panels, images, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(label)
        ax.set_axis_off()
    figure.suptitle(f"samples at seed {seed}: the same noise for every model")
    return figure


def compute_points(model: ModelResult, metric: str, level: float = 0.95) -> list[tuple[float, MeanInterval]]:
    """(training FLOPs, mean and interval over the seeds that scored ``metric`` there), by FLOPs."""
    by_flops: dict[float, list[float]] = defaultdict(list)
    for run in model.runs:
        for point in run.curve:
            if metric in point.scores:
                by_flops[point.train_flops].append(point.scores[metric])
    return [(flops, mean_interval(values, level)) for flops, values in sorted(by_flops.items())]


def compute_figure(models: Sequence[ModelResult], metric: Metric, level: float = 0.95) -> Figure | None:
    """``metric`` against training FLOPs per model, with interval bands; None if no model has a curve."""
    curves = [(model.name, compute_points(model, metric.name, level)) for model in models]
    curves = [(name, points) for name, points in curves if points]
    if not curves:
        return None
    figure = Figure(figsize=(6.4, 4.4), dpi=DPI)
    ax = figure.subplots()
    for name, points in curves:
        flops = np.array([f for f, _ in points])
        means = np.array([i.mean for _, i in points])
        (line,) = ax.plot(flops, means, marker="o", label=name)
        banded = [(f, i) for f, i in points if i.lo is not None]
        if banded:
            ax.fill_between([f for f, _ in banded], [i.lo for _, i in banded], [i.hi for _, i in banded], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel(metric.label())
    ax.set_title(f"{metric.name} against training compute (mean, {round(100 * level)} % interval over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return figure


def forest_figure(comparison: Comparison, metric: str) -> Figure:
    """Each model's mean difference to the baseline on ``metric``, with its interval and the ±δ band.

    Models read top to bottom in the compare's order; a model without an interval (one shared
    seed, or no spread) shows its mean alone, one without a shared seed only its label."""
    verdicts = comparison.on(metric)
    if not verdicts:
        raise ValueError(f"the compare has no score {metric!r}")
    chosen = verdicts[0].metric
    figure = Figure(figsize=(7.0, 1.2 + 0.55 * len(verdicts)), dpi=DPI)
    ax = figure.subplots()
    rows = np.arange(len(verdicts))[::-1]  # the first model on top
    if chosen.delta is not None:
        ax.axvspan(-chosen.delta, chosen.delta, color="tab:cyan", alpha=0.15, label=f"±δ = {chosen.delta:g}: equivalent")
    ax.axvline(0.0, color="black", linewidth=0.8)
    spans = [(y, v) for y, v in zip(rows, verdicts, strict=True) if v.lo is not None]
    if spans:
        ax.hlines([y for y, _ in spans], [v.lo for _, v in spans], [v.hi for _, v in spans], colors=[WORD_COLOURS[v.word] for _, v in spans], linewidth=2.5)
    points = [(y, v) for y, v in zip(rows, verdicts, strict=True) if v.difference is not None]
    if points:
        ax.plot([v.difference for _, v in points], [y for y, _ in points], linestyle="none", marker="o", color="black")
    for y, verdict in zip(rows, verdicts, strict=True):
        ax.annotate(verdict.word, (1.01, y), xycoords=("axes fraction", "data"), va="center", color=WORD_COLOURS[verdict.word])
    ax.set_yticks(rows, [v.model for v in verdicts])
    ax.set_ylim(-0.7, len(verdicts) - 0.3)
    better_side = "left" if chosen.better == "lower" else "right"
    level = round(100 * comparison.rules.level)
    ax.set_xlabel(f"{metric}: model - {comparison.baseline} (mean over seeds, {level} % interval); better to the {better_side}")
    ax.set_title(f"{metric} against {comparison.baseline}")
    if chosen.delta is not None:
        ax.legend(loc="lower right", fontsize="small")
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def save_pictures(models: Sequence[ModelResult], comparison: Comparison, folder: Path, seed: int | None = None) -> list[Path]:
    """Write every picture that has data into ``folder``; returns the paths written.

    ``samples_seed<s>.png`` at ``seed`` (default: the first seed at which most models saved a
    grid), ``compute_<score>.png`` for each score with ``eval_at`` points, and
    ``forest_<score>.png`` for each score."""
    written = []
    seed = _best_samples_seed(models) if seed is None else seed
    panels = sample_panels(models, seed) if seed is not None else []
    if panels:
        written.append(save_figure(samples_figure(panels, seed), folder / f"samples_seed{seed}.png"))
    for metric in comparison.rules.metrics:
        curve = compute_figure(models, metric, comparison.rules.level)
        if curve is not None:
            written.append(save_figure(curve, folder / f"compute_{metric.name}.png"))
    for metric in comparison.rules.metrics:
        written.append(save_figure(forest_figure(comparison, metric.name), folder / f"forest_{metric.name}.png"))
    return written


def _best_samples_seed(models: Sequence[ModelResult]) -> int | None:
    seeds = sorted({s for m in models for s in m.seeds})
    counts = {s: len(sample_panels(models, s)) for s in seeds}
    best = max(counts.values(), default=0)
    return next((s for s in seeds if counts[s] == best), None) if best else None
