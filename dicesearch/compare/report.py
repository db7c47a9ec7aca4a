"""The end of a comparison: the verdict, printed, written as Markdown and CSV, drawn, and logged to MLflow."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from dicesearch.compare.collect import model_results
from dicesearch.compare.metric import score_family
from dicesearch.compare.pictures import save_pictures
from dicesearch.compare.tables import as_rich, markdown_report, results_table, verdict_table
from dicesearch.compare.verdict import compare, default_rules
from dicesearch.errors import DicesearchError


class ComparisonFailed(DicesearchError):
    """A comparison ended without what a verdict needs (exit status 1: the input may be fine)."""

    exit_code = 1


SCORES = ("fid", "sfid", "kid", "precision", "recall", "is")  # compared where the runs recorded them, fid_N first


def report(study, plan, folder: Path, mirror, console: Console) -> Path:
    """Judge every model against the baseline and write the report into ``folder``."""
    from dicesearch.compare.csv_files import write_csv
    from dicesearch.metrics import score_names
    from dicesearch.sweep.results.table import failure_summary

    config = plan.comparison
    names = score_names(config.budget.fid_samples)
    recorded = {k for t in study.get_trials(deepcopy=False) for k in (t.user_attrs.get("metrics") or {})}
    keys = [names[s] for s in SCORES if names[s] in recorded]
    primary = names[config.metric]
    results, unscored = model_results(study, plan, keys)
    for run in unscored:
        console.print(f"{run.model}, seed {run.seed}: {run.status} ({run.reason})", highlight=False, style="yellow")
    scored = {r.name for r in results}
    if plan.baseline not in scored or primary not in keys:
        mirror.end_sweep("FAILED")
        why = failure_summary(study) or f"the baseline {plan.baseline} has no scored run"
        raise ComparisonFailed(f"{why}; nothing to compare against; fix what the reasons say and run the same command again")
    margins = {k: config.equivalence[score_family(k)] for k in keys if score_family(k) in config.equivalence}
    comparison = compare(results, plan.baseline, default_rules(keys, primary=primary, margins=margins, alpha=config.alpha))
    console.print(as_rich(results_table(results, comparison)))
    console.print(as_rich(verdict_table(comparison)))
    missing = [m.name for m in plan.models if m.name not in scored]
    if missing:
        console.print(f"[yellow]no scored run:[/] {', '.join(missing)} (left out of the verdict)", highlight=False)
    folder.mkdir(parents=True, exist_ok=True)
    markdown = folder / "comparison.md"
    markdown.write_text(f"# Comparison {config.name}: every model against {plan.baseline}\n\n" + markdown_report(results, comparison))
    artifacts = [markdown, *write_csv(results, comparison, folder), *save_pictures(results, comparison, folder)]
    mirror.end_sweep("FINISHED", artifacts, folder="report")
    console.print(f"\nReport: {folder} (comparison.md, the CSV files, the pictures); also in MLflow under the parent run '{config.resolved_study_name}'", highlight=False)
    return folder


__all__ = ["SCORES", "ComparisonFailed", "report"]
