"""The end of a sweep in the terminal: trials ranked, each score with its spread, ties marked."""

from __future__ import annotations

from collections import Counter

import optuna
from rich import box
from rich.table import Table

from dicesearch.metrics.score import Score
from dicesearch.sweep.results.statistics import tied
from dicesearch.sweep.store.queries import is_scored, ranked_trials, rung_reached, stopped_at_rung
from dicesearch.sweep.store.schema import ATTR_DUPLICATE_OF, ATTR_METRICS, ATTR_REASON, ATTR_STATUS, STATUS_SURPLUS

TIE_MARK = "≈"


def tied_with_best(study: optuna.Study, key: str) -> set[int]:
    """Numbers of the scored trials whose ``key`` is not shown to differ from the best's (the best excluded; :func:`tied`)."""
    scored = [t for t in ranked_trials(study) if is_scored(t)]
    if not scored:
        return set()
    best = Score.of(scored[0].user_attrs.get(ATTR_METRICS, {}), key)
    if best is None:
        return set()
    out = set()
    for trial in scored[1:]:
        score = Score.of(trial.user_attrs.get(ATTR_METRICS, {}), key)
        if score is not None and tied(score, best):
            out.add(trial.number)
    return out


def failure_summary(study: optuna.Study) -> str | None:
    """None if a trial was scored; else one line: how many trials ended how, and why (the
    commonest reasons first)."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ATTR_STATUS) != STATUS_SURPLUS]
    if any(is_scored(t) for t in trials):
        return None
    if not trials:
        return f"study '{study.study_name}' has no trials"
    by_status: dict[str, Counter] = {}
    for trial in trials:
        status = trial.user_attrs.get(ATTR_STATUS, trial.state.name.lower())
        reason = " ".join(str(trial.user_attrs.get(ATTR_REASON) or "no reason recorded").split())
        by_status.setdefault(status, Counter())[reason[:90] + ("..." if len(reason) > 90 else "")] += 1
    parts = []
    for status, reasons in sorted(by_status.items(), key=lambda item: -sum(item[1].values())):
        shown = "; ".join(f"{n} x {reason}" if n > 1 else reason for reason, n in reasons.most_common(2))
        more = f"; {len(reasons) - 2} other reason(s)" if len(reasons) > 2 else ""
        parts.append(f"{sum(reasons.values())} {status} ({shown}{more})")
    return f"no trial of study '{study.study_name}' completed: {', '.join(parts)}"


def ranked_table(study: optuna.Study, metric_keys: list[str], limit: int = 30, rungs: int | None = None, rung_keys: tuple[str, ...] | None = None) -> Table:
    """The trials ranked (``ranked_trials``); with ``rungs`` (multi-fidelity) a column says the rung each reached.
    ``rung_keys``: the score each rung ranks by; a trial stopped at a rung that scores fewer images
    shows that score, named (``191 ± 5 (fid_32)``)."""
    several = len(metric_keys) > 1  # the Pareto front is marked only then; study.best_trials deep-copies every trial
    pareto = {t.number for t in study.best_trials} if several and any(is_scored(t) for t in study.get_trials(deepcopy=False)) else set()
    ties = tied_with_best(study, metric_keys[0])
    table = Table(
        title=f"study {study.study_name}: trials ranked by {metric_keys[0]}",
        caption=(
            f"± one standard deviation (over replicates, else over resampled images); {TIE_MARK}: "
            f"not shown to differ from the best on {metric_keys[0]} (|difference| within 1.96 standard errors: a 5 % test, not a claim they are equal)"
        ),
        caption_justify="left",
        box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, padding=(0, 1),
    )  # fmt: skip
    rung_column = ("rung",) if rungs else ()
    for column in ("#", "trial", "status", *rung_column, *metric_keys, TIE_MARK, "Mparams", "GMACs", "GiB", "s"):
        table.add_column(column, no_wrap=True)
    table.add_column("parameters / reason", overflow="fold", min_width=20, ratio=1)  # takes what width is left
    rank = 0
    for trial in ranked_trials(study)[:limit]:
        metrics = trial.user_attrs.get(ATTR_METRICS, {})
        status = trial.user_attrs.get(ATTR_STATUS, trial.state.name.lower())
        scored = is_scored(trial) or stopped_at_rung(trial)
        rank += scored
        marker = " *" if trial.number in pareto else ""
        detail = trial.user_attrs.get(ATTR_REASON) or ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        if trial.user_attrs.get(ATTR_DUPLICATE_OF) is not None:
            detail = f"same configuration as trial {trial.user_attrs[ATTR_DUPLICATE_OF]} (its result, not trained again); {detail}"
        scores = [Score.of(metrics, k) if scored else None for k in metric_keys]
        texts = [score.text() if score else "-" for score in scores]
        at_rung = rung_reached(trial)
        if scored and rung_keys and at_rung is not None and rung_keys[at_rung] != metric_keys[0] and stopped_at_rung(trial):
            score = Score.of(metrics, rung_keys[at_rung])  # its rung's score, at that rung's image count
            texts[0] = f"{score.text()} ({rung_keys[at_rung]})" if score else "-"
        table.add_row(
            str(rank) if scored else "-",
            f"{trial.number}{marker}",
            status,
            *([f"{at_rung + 1}/{rungs}" if at_rung is not None else "-"] if rungs else []),
            *texts,
            TIE_MARK if trial.number in ties else "",
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
