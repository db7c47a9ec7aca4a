"""The tables and CSV files carry the verdict module's numbers, and the CSV reads back exactly."""

import csv
import io
import math
import re

import numpy as np
import pytest
from rich.console import Console
from scipy import stats

from dicesearch.compare.csv_files import SCORE_COLUMNS, score_rows_csv, seed_rows_csv, write_csv
from dicesearch.compare.metric import Metric
from dicesearch.compare.results import Costs, ModelResult, Run
from dicesearch.compare.tables import MISSING, as_markdown, as_rich, markdown_report, results_table, verdict_table
from dicesearch.compare.verdict import Rules, compare


@pytest.fixture(scope="module")
def models():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 3, 4)

    def model(name, fid, precision, params, seeds=range(4), samples_per_second=35.2, with_is=True):
        runs = []
        for s in seeds:
            scores = {"fid_128": fid + shared[s] + rng.normal(0, 1.5), "precision_128": precision + rng.normal(0, 0.02)}
            if with_is:
                scores["is_128"] = 8.0 + rng.normal(0, 0.3)
            runs.append(Run(s, scores))
        return ModelResult(name, Costs(params, params / 1.1e7, 20_000, params * 6.4e7, samples_per_second), tuple(runs))

    base = model("DiT-S/2", 40, 0.60, 33_000_000)
    same = ModelResult("twin", base.costs, tuple(Run(r.seed, {**r.scores, "precision_128": r.scores["precision_128"] + 0.01}) for r in base.runs))
    return [
        base,
        model("DICE-S", 31, 0.66, 30_500_000),
        model("DRWKV-S", 41, 0.60, 35_100_000, seeds=[0, 1, 3], samples_per_second=None, with_is=False),
        same,  # precision 0.01 higher at every seed: no spread, no test
    ]


@pytest.fixture(scope="module")
def comparison(models):
    return compare(models, "DiT-S/2", Rules(Metric.named("fid_128"), (Metric.named("precision_128"), Metric.named("is_128"))))


def _number(cell):
    return None if cell == MISSING else float(cell.replace(",", ""))


def _close(cell, value, digits):
    """A cell shows ``value`` to ``digits`` significant figures."""
    if value is None:
        return cell == MISSING
    return float(cell) == pytest.approx(value, rel=0.51 * 10 ** (1 - digits), abs=1e-12)


def test_the_results_table_shows_each_models_costs_and_mean_with_its_t_interval(models, comparison):
    table = results_table(models, comparison)
    assert len(table.rows) == len(models)
    for model, row in zip(models, table.rows, strict=True):
        cells = dict(zip(table.header, row, strict=True))
        assert cells["model"].startswith(model.name) and (cells["model"].endswith("(baseline)") == (model.name == "DiT-S/2"))
        assert int(cells["seeds"]) == len(model.runs)
        assert _number(cells["params (M)"]) == pytest.approx(model.costs.params / 1e6, abs=0.005)
        assert _close(cells["GMACs"], model.costs.gmacs, 4)
        assert _number(cells["train steps"]) == model.costs.train_steps
        assert _close(cells["train FLOPs"], model.costs.train_flops, 3)
        assert _close(cells["samples/s"], model.costs.samples_per_second, 3)
        for metric in comparison.rules.metrics:
            header = next(h for h in table.header if h.startswith(metric.name + " "))
            values = [r.scores[metric.name] for r in model.runs if metric.name in r.scores]
            if not values:
                assert cells[header] == MISSING
                continue
            mean, half = cells[header].split(" ± ")
            expected_half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
            assert _close(mean, float(np.mean(values)), 4) and _close(half, expected_half, 2)
    assert table.header[-3:] == ("fid_128 ↓", "precision_128 ↑", "is_128 ↑")


def test_the_verdict_lines_carry_the_verdict_modules_numbers(comparison):
    table = verdict_table(comparison)
    assert len(table.rows) == len(comparison.verdicts) == 9
    for row in table.rows:
        cells = dict(zip(table.header, row, strict=True))
        verdict = comparison.of(cells["model"], cells["score"].split()[0])
        assert cells["family"] == ("primary" if verdict.metric.name == "fid_128" else "secondary")
        assert int(cells["seeds"]) == len(verdict.seeds)
        assert _close(cells["difference"], verdict.difference, 4)
        if verdict.lo is None:
            assert cells["95 % interval"] == MISSING
        else:
            lo, hi = re.fullmatch(r"\[(.+), (.+)\]", cells["95 % interval"]).groups()
            assert _close(lo, verdict.lo, 3) and _close(hi, verdict.hi, 3)
        assert _close(cells["p"], verdict.p, 2) and _close(cells["Holm p"], verdict.p_holm, 2)
        assert cells["verdict"] == verdict.word
        assert cells["seeds needed"] == (str(verdict.seeds_needed.count) if verdict.seeds_needed.count else "not estimable")
        assert cells["δ"] == (MISSING if verdict.metric.delta is None else "4")
    twin = comparison.of("twin", "precision_128")
    assert twin.p is None and twin.word == "inconclusive"  # the row of a difference without spread
    assert comparison.of("DICE-S", "fid_128").word == "better"


def test_markdown_holds_the_same_cells(models, comparison):
    text = markdown_report(models, comparison)
    for table in (results_table(models, comparison), verdict_table(comparison)):
        block = as_markdown(table)
        assert block in text
        lines = block.splitlines()
        assert lines[0] == f"### {table.title}"
        parsed = [tuple(cell.strip() for cell in line.strip("|").split(" | ")) for line in lines[2:] if line.startswith("|")]
        assert parsed[0] == table.header and parsed[2:] == list(table.rows)
        assert set(parsed[1]) <= {"---", "---:"}


def test_the_terminal_table_prints_every_row(comparison):
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(as_rich(verdict_table(comparison)))
    text = console.file.getvalue()
    for row in verdict_table(comparison).rows:
        line = next(line for line in text.splitlines() if line.split()[:2] == [row[0], row[1].split()[0]])
        assert [cell for cell in row if cell not in line] == []


def test_the_score_csv_reads_back_the_exact_numbers(models, comparison):
    rows = list(csv.DictReader(io.StringIO(score_rows_csv(models, comparison))))
    assert tuple(rows[0]) == SCORE_COLUMNS and len(rows) == len(models) * 3
    for row in rows:
        values = [r.scores[row["metric"]] for m in models if m.name == row["model"] for r in m.runs if row["metric"] in r.scores]
        assert int(row["seeds"]) == len(values)
        if values:
            assert float(row["mean"]) == pytest.approx(float(np.mean(values)), rel=1e-12)
        if row["model"] == "DiT-S/2":
            assert row["verdict"] == row["p"] == ""
            continue
        verdict = comparison.of(row["model"], row["metric"])
        assert row["verdict"] == verdict.word and int(row["shared_seeds"]) == len(verdict.seeds)
        for column, value in [("difference", verdict.difference), ("difference_lo", verdict.lo), ("difference_hi", verdict.hi), ("p", verdict.p), ("p_holm", verdict.p_holm)]:
            assert (row[column] == "") if value is None else float(row[column]) == value  # exact: written with repr
        assert row["seeds_needed"] == ("" if verdict.seeds_needed.count is None else str(verdict.seeds_needed.count))
        assert row["primary"] == str(row["metric"] == "fid_128")


def test_the_seed_csv_reads_back_the_raw_scores(models, comparison, tmp_path):
    scores_path, seeds_path = write_csv(models, comparison, tmp_path / "out")
    assert scores_path.read_text() == score_rows_csv(models, comparison)
    rows = list(csv.DictReader(seeds_path.open()))
    assert len(rows) == sum(len(m.runs) for m in models)
    for row in rows:
        run = next(m for m in models if m.name == row["model"]).run_at(int(row["seed"]))
        for metric in ("fid_128", "precision_128", "is_128"):
            assert (row[metric] == "") if metric not in run.scores else float(row[metric]) == run.scores[metric]
    assert seed_rows_csv(models, comparison.rules.metrics) == seeds_path.read_text()
