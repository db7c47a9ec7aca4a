"""The end of a sweep as pictures: Optuna's plots of the scored trials, and the best trials' samples.

* ``optimization_history.png`` (one per objective with several), ``slice.png`` (the
  objective against each parameter) and, with several objectives, ``pareto_front.png``:
  drawn from the scored trials only (infeasible ones carry placeholder values). With
  multi-fidelity rungs (one objective) they draw every configuration's score at the first
  rung, the one budget all of them were scored at (few reach the full budget).
* ``param_importances.png`` (:mod:`dicesearch.sweep.results.importance`: fANOVA's share of the
  score's variance, with its range over forest seeds, the question named in the title) only
  when the sweep has enough scored trials for the estimate to mean something: at least
  ``IMPORTANCE_MIN_TRIALS`` and ``IMPORTANCE_TRIALS_PER_PARAM`` per parameter that varied.
  fANOVA fits a random forest to (parameters -> objective); with fewer points than that, the
  forest explains noise and the "importances" are an artefact of which configurations
  happened to be drawn. Otherwise :func:`importance_note` says why it is omitted.
* ``best_samples.png``: the sample grids of the best few trials side by side, scaled up
  (nearest neighbour) so a person can judge them, each titled with its trial and score
  (and, for a trial stopped at a rung, the steps it was scored at).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import optuna

from dicesearch.sweep.store.queries import is_scored, ranked_trials, stopped_at_rung, sweep_configurations
from dicesearch.sweep.store.schema import ATTR_CONTINUES, ATTR_DUPLICATE_OF, ATTR_METRICS, ATTR_SAMPLES

IMPORTANCE_MIN_TRIALS = 16
IMPORTANCE_TRIALS_PER_PARAM = 4
GALLERY_TRIALS = 4
GALLERY_MIN_WIDTH = 480  # pixels a grid is scaled up to, at least


def importance_needs(study: optuna.Study, first_rung: int | None = None) -> int:
    """Scored trials a parameter-importance estimate needs for this study's parameters."""
    return _importance_needs(plotted_trials(study, first_rung))


def _importance_needs(plotted: list) -> int:
    varied = {name for t in plotted for name in t.params}
    return max(IMPORTANCE_MIN_TRIALS, IMPORTANCE_TRIALS_PER_PARAM * len(varied))


def importance_note(study: optuna.Study, first_rung: int | None = None) -> str | None:
    """Why parameter importance is omitted, or None when there are enough scored trials."""
    return _importance_note(plotted_trials(study, first_rung))


def _importance_note(plotted: list) -> str | None:
    have, need = len(plotted), _importance_needs(plotted)
    if have >= need:
        return None
    return (
        f"parameter importance omitted: {have} scored trial(s), fewer than the {need} it needs to mean something "
        f"(at least {IMPORTANCE_MIN_TRIALS}, and {IMPORTANCE_TRIALS_PER_PARAM} per parameter that varies)"
    )


def plotted_trials(study: optuna.Study, first_rung: int | None = None) -> list:
    """The trials the plots draw: the scored ones, or with ``first_rung`` (steps; one objective)
    every configuration scored there, as a complete trial valued at that score, in the order
    the configurations were first scored there (a trial that continues a paused one takes that
    one's place: the score is the paused trial's, and a continuation begun later moves nothing)."""
    trials = study.get_trials(deepcopy=False)
    if first_rung is None or len(study.directions) > 1:
        return [t for t in trials if is_scored(t)]
    continues = {t.number: t.user_attrs[ATTR_CONTINUES] for t in trials if ATTR_CONTINUES in t.user_attrs}

    def first_of(number: int) -> int:  # the configuration's first trial, along a chain of continuations
        while number in continues:
            number = continues[number]
        return number

    configurations = sorted((t for t in sweep_configurations(trials) if first_rung in t.intermediate_values), key=lambda t: first_of(t.number))
    return [optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=t.intermediate_values[first_rung]) for t in configurations]


def _scored_study(plotted: list, name: str, directions) -> optuna.Study:
    """An in-memory study holding only what the plots draw."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        copy = optuna.create_study(study_name=name, directions=directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    copy.add_trials(plotted)
    return copy


def save_plots(
    study: optuna.Study, out_dir: Path, target_names: list[str], first_rung: int | None = None, score_plots: list[Path] | None = None
) -> list[Path]:
    """Write the plots of the module docstring into ``out_dir``; returns the files written.
    ``first_rung``: a multi-fidelity sweep's first rung (steps). ``score_plots``: the score
    plots, already drawn from the study as it is (:mod:`dicesearch.sweep.results.ahead`)."""
    if score_plots is None:
        score_plots = save_score_plots(plotted_trials(study, first_rung), study.study_name, study.directions, out_dir, target_names, first_rung)
    gallery = save_best_samples(study, out_dir / "best_samples.png", target_names[0])
    return score_plots + ([gallery] if gallery else [])


def save_score_plots(plotted: list, study_name: str, directions, out_dir: Path, target_names: list[str], first_rung: int | None = None) -> list[Path]:
    """The plots of the scores (all but ``best_samples.png``) of the trials ``plotted``
    (:func:`plotted_trials`) of study ``study_name``, into ``out_dir``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    scored = _scored_study(plotted, study_name, directions)
    count = len(scored.trials)
    plots: list[tuple[str, Callable]] = []
    single = len(directions) == 1
    name = f"{target_names[0]} at {first_rung} steps" if first_rung is not None and single else target_names[0]
    first = {"target": (lambda t: t.values[0]) if not single else None, "target_name": name}
    if single:
        plots.append(("optimization_history.png", lambda: ovm.plot_optimization_history(scored, target_name=name)))
    else:
        for i, name in enumerate(target_names):
            plots.append((f"optimization_history_{name}.png", lambda i=i, name=name: ovm.plot_optimization_history(scored, target=lambda t: t.values[i], target_name=name)))
        if count >= 2:
            plots.append(("pareto_front.png", lambda: ovm.plot_pareto_front(scored, target_names=target_names)))
    if count >= 1:
        plots.append(("slice.png", lambda: ovm.plot_slice(scored, **first)))
    written = [path for name, make in plots if (path := _save_figure(make, out_dir / name)) is not None]
    if count >= 2 and _importance_note(plotted) is None:
        path = _save_importances(scored, name, first["target"], out_dir / "param_importances.png")
        written += [path] if path is not None else []
    return written


def _save_figure(make: Callable, path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's "experimental" notices
            axes = make()
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        return path
    except Exception as exc:  # a plot is a nicety, never a reason to fail
        warnings.warn(f"could not draw {path.name}: {exc}", stacklevel=2)
        return None


def _save_importances(scored: optuna.Study, target_name: str, target, path: Path) -> Path | None:
    from dicesearch.sweep.results.importance import fanova_importances, importance_figure

    try:
        importances = fanova_importances(scored, target)
        if not importances:
            return None
        importance_figure(importances, target_name).savefig(path, bbox_inches="tight")
        return path
    except Exception as exc:  # a plot is a nicety, never a reason to fail
        warnings.warn(f"could not draw {path.name}: {exc}", stacklevel=2)
        return None


def save_best_samples(study: optuna.Study, path: Path, key: str, count: int = GALLERY_TRIALS) -> Path | None:
    """The best ``count`` scored trials' sample grids side by side, scaled up; None if none has one."""
    from PIL import Image, ImageDraw, ImageFont

    from dicesearch.metrics.score import Score

    chosen = []
    for trial in ranked_trials(study):  # the furthest rung first
        grid = trial.user_attrs.get(ATTR_SAMPLES)
        if (is_scored(trial) or stopped_at_rung(trial)) and ATTR_DUPLICATE_OF not in trial.user_attrs and grid and Path(grid).is_file():
            chosen.append((trial, Image.open(grid).convert("RGB")))
        if len(chosen) == count:
            break
    if not chosen:
        return None
    scale = max(1, -(-GALLERY_MIN_WIDTH // max(image.width for _, image in chosen)))  # ceil
    tiles = [image.resize((image.width * scale, image.height * scale), Image.NEAREST) for _, image in chosen]
    title_height, gap = 28, 16
    width = sum(tile.width for tile in tiles) + gap * (len(tiles) + 1)
    height = max(tile.height for tile in tiles) + title_height + 2 * gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=18)
    x = gap
    for (trial, _), tile in zip(chosen, tiles, strict=True):
        metrics = trial.user_attrs.get(ATTR_METRICS, {})
        score = Score.of(metrics, key)
        at = f" ({metrics['rung_steps']:.0f} steps)" if not is_scored(trial) and "rung_steps" in metrics else ""
        draw.text((x, gap // 2), f"trial {trial.number}{at}: {key} {score.text() if score else '-'}", fill="black", font=font)
        canvas.paste(tile, (x, gap + title_height))
        x += tile.width + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
