"""The end of a sweep: a ranked table in the terminal, Optuna's plots as PNG artifacts."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich import box
from rich.table import Table

from dicesearch.sweep.record import ATTR_METRICS, ATTR_REASON, ATTR_STATUS, STATUS_SURPLUS


def ranked_trials(study: optuna.Study) -> list:
    """Completed trials best first (by the first objective), then the others by number."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ATTR_STATUS) != STATUS_SURPLUS]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    done.sort(key=lambda t: sign * t.values[0])
    rest = sorted((t for t in trials if t.state != TrialState.COMPLETE), key=lambda t: t.number)
    return done + rest


def ranked_table(study: optuna.Study, metric_keys: list[str], limit: int = 30) -> Table:
    pareto = {t.number for t in study.best_trials} if study.get_trials(states=(TrialState.COMPLETE,)) else set()
    table = Table(title=f"study {study.study_name}: trials ranked by {metric_keys[0]}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, padding=(0, 1))
    for column in ("#", "trial", "status", *metric_keys, "Mparams", "GMACs", "GiB", "s"):
        table.add_column(column, no_wrap=True)
    table.add_column("parameters / reason", overflow="fold", min_width=20, ratio=1)  # takes what width is left
    rank = 0
    for trial in ranked_trials(study)[:limit]:
        metrics = trial.user_attrs.get(ATTR_METRICS, {})
        status = trial.user_attrs.get(ATTR_STATUS, trial.state.name.lower())
        if trial.state == TrialState.COMPLETE:
            rank += 1
        marker = " *" if trial.number in pareto and len(metric_keys) > 1 else ""
        detail = trial.user_attrs.get(ATTR_REASON) or ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        table.add_row(
            str(rank) if trial.state == TrialState.COMPLETE else "-",
            f"{trial.number}{marker}",
            status,
            *[_fmt(metrics.get(k)) for k in metric_keys],
            _fmt(metrics.get("params", 0) / 1e6 if metrics.get("params") else None),
            _fmt(metrics.get("gmacs")),
            _fmt(metrics.get("memory_estimated_gb")),
            _fmt(metrics.get("wall_seconds")),
            detail,
        )
    return table


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def save_plots(study: optuna.Study, out_dir: Path, target_names: list[str]) -> list[Path]:
    """Optimisation history, parameter importances and (multi-objective) the Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots: list[tuple[str, callable]] = []
    if len(study.directions) == 1:
        plots.append(("optimization_history.png", lambda: ovm.plot_optimization_history(study, target_name=target_names[0])))
        if len(complete) >= 2:
            plots.append(("param_importances.png", lambda: ovm.plot_param_importances(study, target_name=target_names[0])))
    else:
        for i, name in enumerate(target_names):
            plots.append((f"optimization_history_{name}.png", lambda i=i, name=name: ovm.plot_optimization_history(study, target=lambda t: t.values[i], target_name=name)))
        if len(complete) >= 2:
            plots.append(("pareto_front.png", lambda: ovm.plot_pareto_front(study, target_names=target_names)))
            plots.append(("param_importances.png", lambda: ovm.plot_param_importances(study, target=lambda t: t.values[0], target_name=target_names[0])))
    written = []
    for filename, make in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's "experimental" notices
                axes = make()
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            path = out_dir / filename
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)
            written.append(path)
        except Exception as exc:  # a plot is a nicety, never a reason to fail
            warnings.warn(f"could not draw {filename}: {exc}", stacklevel=2)
    return written
