"""The compare as CSV: one row per model and score (with the verdict), one per model and seed (raw scores).

* :func:`score_rows_csv`: ``model, metric, better, primary, seeds, mean, sd, lo, hi`` (the
  model's own seeds, Student-t interval at the compare's level), then for every model but the
  baseline ``shared_seeds, difference, difference_lo, difference_hi, p, p_holm, verdict,
  seeds_needed, delta, alpha`` (:mod:`dicesearch.compare.verdict`); empty where not computed.
* :func:`seed_rows_csv`: ``model, seed``, one column per score and the sample grid's path.

Numbers are written with ``repr`` so they read back exactly; costs sit in the model rows of
:mod:`dicesearch.compare.tables`, not here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from dicesearch.compare.metric import Metric
from dicesearch.compare.paired import mean_interval
from dicesearch.compare.results import ModelResult
from dicesearch.compare.verdict import Comparison

SCORE_COLUMNS = (
    "model", "metric", "better", "primary", "seeds", "mean", "sd", "lo", "hi",
    "shared_seeds", "difference", "difference_lo", "difference_hi", "p", "p_holm", "verdict", "seeds_needed", "delta", "alpha",
)  # fmt: skip
SCORES_FILE, SEEDS_FILE = "compare_scores.csv", "compare_seeds.csv"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _csv(columns: Sequence[str], rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def score_rows_csv(models: Sequence[ModelResult], comparison: Comparison) -> str:
    """One row per model x score (module docstring)."""
    rows = []
    for metric in comparison.rules.metrics:
        for model in models:
            values = model.values(metric.name)
            own = mean_interval(values, comparison.rules.level) if values else None
            row: dict[str, object] = {
                "model": model.name,
                "metric": metric.name,
                "better": metric.better,
                "primary": metric.name == comparison.rules.primary.name,
                "seeds": len(values),
                "mean": own.mean if own else None,
                "sd": own.sd if own else None,
                "lo": own.lo if own else None,
                "hi": own.hi if own else None,
            }
            if model.name != comparison.baseline:
                verdict = comparison.of(model.name, metric.name)
                row.update(
                    shared_seeds=len(verdict.seeds),
                    difference=verdict.difference,
                    difference_lo=verdict.lo,
                    difference_hi=verdict.hi,
                    p=verdict.p,
                    p_holm=verdict.p_holm,
                    verdict=verdict.word,
                    seeds_needed=verdict.seeds_needed.count,
                    delta=metric.delta,
                    alpha=comparison.rules.alpha,
                )
            rows.append(row)
    return _csv(SCORE_COLUMNS, rows)


def seed_rows_csv(models: Sequence[ModelResult], metrics: Sequence[Metric]) -> str:
    """One row per model x seed: the raw scores (empty where a run lacks one) and the sample grid."""
    columns = ("model", "seed", *(m.name for m in metrics), "samples")
    rows = []
    for model in models:
        for run in model.runs:
            row: dict[str, object] = {"model": model.name, "seed": run.seed, "samples": run.samples}
            row.update({m.name: run.scores.get(m.name) for m in metrics})
            rows.append(row)
    return _csv(columns, rows)


def write_csv(models: Sequence[ModelResult], comparison: Comparison, folder: Path) -> tuple[Path, Path]:
    """Write both CSV files into ``folder``; returns their paths (scores, seeds)."""
    folder.mkdir(parents=True, exist_ok=True)
    scores, seeds = folder / SCORES_FILE, folder / SEEDS_FILE
    scores.write_text(score_rows_csv(models, comparison), encoding="utf-8")
    seeds.write_text(seed_rows_csv(models, comparison.rules.metrics), encoding="utf-8")
    return scores, seeds
