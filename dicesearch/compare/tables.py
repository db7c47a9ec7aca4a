"""The compare in tables: the models as in DICE Tab. 1/Tab. 2, then each model's verdict against the baseline.

* :func:`results_table`: one row per model: parameters, GMACs, training steps, training
  FLOPs, samples/s, then each score as mean ± the half-width of its 95 % Student-t interval
  over that model's own seeds (:func:`dicesearch.compare.paired.mean_interval`).
* :func:`verdict_table`: one row per model and score (the primary score first): the mean
  paired difference to the baseline, its interval, p, Holm-adjusted p, the word and the
  seeds needed (:mod:`dicesearch.compare.verdict` states the rule).

Each is a :class:`TextTable` of formatted cells, built once and rendered as a rich Table for
the terminal (:func:`as_rich`) or as Markdown (:func:`as_markdown`, :func:`markdown_report`).
The per-model intervals are wider than the paired ones: they keep the seed-to-seed spread
both models share, which the paired differences cancel. The CSV files are in
:mod:`dicesearch.compare.csv_files`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.table import Table

from dicesearch.compare.metric import Metric
from dicesearch.compare.paired import MeanInterval, mean_interval
from dicesearch.compare.results import ModelResult
from dicesearch.compare.verdict import Comparison, Verdict

MISSING = "–"
TEXT_COLUMNS = ("score", "family", "verdict")


@dataclass(frozen=True)
class TextTable:
    """A table of formatted cells: ``title``, column names, rows, and a note printed under it."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


def number(value: float | None, digits: int = 4) -> str:
    """``value`` to ``digits`` significant figures (``41.23``, ``0.003412``, ``1.2e+15``); ``–`` for None."""
    return MISSING if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def mean_text(interval: MeanInterval) -> str:
    """``41.23 ± 3.1``: the mean ± its interval's half-width (the mean alone from one seed)."""
    if interval.half_width is None:
        return number(interval.mean)
    return f"{number(interval.mean)} ± {number(interval.half_width, 2)}"


def interval_text(lo: float | None, hi: float | None) -> str:
    return MISSING if lo is None else f"[{number(lo, 3)}, {number(hi, 3)}]"


def p_text(p: float | None) -> str:
    return MISSING if p is None else f"{p:.2g}"


def score_header(metric: Metric) -> str:
    """``fid_128 ↓``: the score with the way that is better."""
    return f"{metric.name} {'↓' if metric.better == 'lower' else '↑'}"


def results_table(models: Sequence[ModelResult], comparison: Comparison) -> TextTable:
    """DICE Tab. 1-style: costs, then each score's mean ± 95 % half-width over the model's seeds."""
    metrics = comparison.rules.metrics
    header = ("model", "seeds", "params (M)", "GMACs", "train steps", "train FLOPs", "samples/s", *(score_header(m) for m in metrics))
    rows = []
    for model in models:
        costs = model.costs
        name = f"{model.name} (baseline)" if model.name == comparison.baseline else model.name
        scores = []
        for metric in metrics:
            values = model.values(metric.name)
            scores.append(mean_text(mean_interval(values, comparison.rules.level)) if values else MISSING)
        rows.append(
            (
                name,
                str(len(model.runs)),
                f"{costs.params / 1e6:.2f}",
                number(costs.gmacs),
                f"{costs.train_steps:,}",
                f"{costs.train_flops:.3g}",
                number(costs.samples_per_second, 3),
                *scores,
            )
        )
    level = round(100 * comparison.rules.level)
    note = f"scores: mean ± half-width of the {level} % Student-t interval over the model's own seeds"
    return TextTable("Models", header, tuple(rows), note)


def verdict_row(verdict: Verdict) -> tuple[str, ...]:
    """One verdict's cells, in :func:`verdict_table`'s column order."""
    family = "primary" if verdict.primary else "secondary"
    delta = MISSING if verdict.metric.delta is None else number(verdict.metric.delta, 3)
    return (
        verdict.model,
        score_header(verdict.metric),
        family,
        str(len(verdict.seeds)),
        number(verdict.difference),
        interval_text(verdict.lo, verdict.hi),
        delta,
        p_text(verdict.p),
        p_text(verdict.p_holm),
        verdict.word,
        verdict.seeds_needed.text(),
    )


def verdict_table(comparison: Comparison) -> TextTable:
    """Each model against the baseline, per score (primary first): the rule's inputs and its word."""
    level = round(100 * comparison.rules.level)
    header = ("model", "score", "family", "seeds", "difference", f"{level} % interval", "δ", "p", "Holm p", "verdict", "seeds needed")
    rows = tuple(verdict_row(v) for v in comparison.verdicts)
    power = round(100 * comparison.rules.power)
    note = (
        f"difference: mean over shared seeds of score(model) - score({comparison.baseline}); "
        f"paired t-test, Holm over the models per score, α = {comparison.rules.alpha:g}; "
        f"equivalent: the interval inside ±δ; seeds needed: for {power} % power at the observed difference and spread"
    )
    return TextTable(f"Against {comparison.baseline}", header, rows, note)


def as_rich(table: TextTable) -> Table:
    """``table`` as a rich Table (numbers right-aligned, the verdict word coloured)."""
    out = Table(title=table.title, caption=table.note or None, box=box.SIMPLE_HEAVY)
    for i, name in enumerate(table.header):
        out.add_column(name, justify="left" if _text_column(i, name) else "right")
    colours = {"better": "green", "worse": "red", "equivalent": "cyan"}
    for row in table.rows:
        out.add_row(*(f"[{colours[c]}]{c}[/]" if c in colours else c for c in row))
    return out


def as_markdown(table: TextTable) -> str:
    """``table`` as a GitHub-flavoured Markdown table under a heading, its note below."""
    lines = [f"### {table.title}", "", _markdown_row(table.header)]
    lines.append("| " + " | ".join("---" if _text_column(i, name) else "---:" for i, name in enumerate(table.header)) + " |")
    lines += [_markdown_row(row) for row in table.rows]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines) + "\n"


def _text_column(index: int, name: str) -> bool:
    """Left-aligned: the first column and the columns of words; numbers align right."""
    return index == 0 or name in TEXT_COLUMNS


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def markdown_report(models: Sequence[ModelResult], comparison: Comparison) -> str:
    """Both tables as one Markdown document."""
    return as_markdown(results_table(models, comparison)) + "\n" + as_markdown(verdict_table(comparison))
