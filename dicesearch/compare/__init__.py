"""Compare trained models seed by seed: the verdict against a baseline, tables and pictures.

What ``dicesearch compare`` calls, all pure functions over typed inputs::

    from dicesearch.compare import ModelResult, Run, Costs, compare, default_rules

    models = [ModelResult("DiT-S/2", costs, runs), ModelResult("DICE-S", costs2, runs2)]
    comparison = compare(models, baseline="DiT-S/2", rules=default_rules(["fid_128", "precision_128"]))
    console.print(as_rich(results_table(models, comparison)), as_rich(verdict_table(comparison)))
    write_csv(models, comparison, folder); save_pictures(models, comparison, folder)

The statistics, one idea a module: :mod:`.paired` (Student-t interval, paired t-test),
:mod:`.holm` (Holm 1979), :mod:`.seeds_needed` (paired-t power), :mod:`.noncentral_t`,
:mod:`.metric` (direction and equivalence margin), :mod:`.verdict` (the rule for the word).
"""

from dicesearch.compare.csv_files import score_rows_csv, seed_rows_csv, write_csv
from dicesearch.compare.holm import holm_adjust
from dicesearch.compare.metric import DEFAULT_MARGINS, DIRECTIONS, Metric, score_family
from dicesearch.compare.paired import MeanInterval, PairedTest, mean_interval, paired_t_test
from dicesearch.compare.pictures import compute_figure, forest_figure, sample_panels, samples_figure, save_pictures
from dicesearch.compare.results import Costs, CurvePoint, ModelResult, Pairs, Run, paired_scores
from dicesearch.compare.seeds_needed import SeedsNeeded, paired_t_power, seeds_needed
from dicesearch.compare.tables import TextTable, as_markdown, as_rich, markdown_report, results_table, verdict_table
from dicesearch.compare.verdict import WORDS, Comparison, Rules, Verdict, Word, compare, decide, default_rules

__all__ = [
    "DEFAULT_MARGINS",
    "DIRECTIONS",
    "WORDS",
    "Comparison",
    "Costs",
    "CurvePoint",
    "MeanInterval",
    "Metric",
    "ModelResult",
    "PairedTest",
    "Pairs",
    "Rules",
    "Run",
    "SeedsNeeded",
    "TextTable",
    "Verdict",
    "Word",
    "as_markdown",
    "as_rich",
    "compare",
    "compute_figure",
    "decide",
    "default_rules",
    "forest_figure",
    "holm_adjust",
    "markdown_report",
    "mean_interval",
    "paired_scores",
    "paired_t_power",
    "paired_t_test",
    "results_table",
    "sample_panels",
    "samples_figure",
    "save_pictures",
    "score_family",
    "score_rows_csv",
    "seed_rows_csv",
    "seeds_needed",
    "verdict_table",
    "write_csv",
]
