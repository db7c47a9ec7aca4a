"""benchmarks/many_trials.py: the records it fills a study with, and its table in a tiny run."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import many_trials  # noqa: E402

from dicesearch.sweep.lifecycle.rungs import promotable_paused  # noqa: E402
from dicesearch.sweep.space.search_space import load_search_space  # noqa: E402
from dicesearch.sweep.store.queries import ranked_trials  # noqa: E402
from dicesearch.sweep.store.view import StudyView  # noqa: E402


@pytest.fixture(scope="module")
def space():
    return load_search_space(many_trials.SPACE)


def test_the_records_are_a_finished_sweeps_with_every_status_and_nothing_to_promote(space):
    import optuna

    trials = many_trials.recorded_trials(space, 400, "samples.png")
    assert len(trials) == 400
    study = optuna.create_study(direction="minimize")
    study.add_trials(trials)
    trials = study.get_trials(deepcopy=False)  # numbered as a storage numbers them
    statuses = Counter(t.user_attrs.get("status", t.state.name.lower()) for t in trials)
    assert set(statuses) == {"complete", "paused", "rejected", "invalid", "failed", "timeout", "interrupted", "running"}, statuses
    assert statuses["running"] == 2 and statuses["paused"] > statuses["complete"] > 0
    by_number = {t.number: t for t in trials}
    fidelity = space.config.fidelity
    for trial in trials:
        if "continues" in trial.user_attrs:  # a continuation: later than, and the configuration of, the paused trial it continues
            paused = by_number[trial.user_attrs["continues"]]
            assert paused.number < trial.number and paused.params == trial.params and paused.user_attrs["status"] == "paused"
            assert all(trial.intermediate_values[step] == value for step, value in paused.intermediate_values.items())
        if "duplicate_of" in trial.user_attrs:
            assert by_number[trial.user_attrs["duplicate_of"]].params == trial.params
        if "retry_of" in trial.user_attrs:
            assert by_number[trial.user_attrs["retry_of"]].user_attrs["status"] == "interrupted"
        if trial.user_attrs.get("status") in ("complete", "paused"):
            assert len(trial.user_attrs["loss_curve"]) == many_trials.CURVE_POINTS and 1000 < len(trial.user_attrs["spec_yaml"]) < 2000
            assert [r["steps"] for r in trial.user_attrs["rungs"]] == sorted(trial.intermediate_values)
            assert {"fid_128", "fid_128_sd", "fid_128_lo", "fid_128_hi"} <= set(trial.user_attrs["metrics"])
    view = StudyView(trials)
    for steps in fidelity.rungs[1:]:  # every rung's scans have work: trials went on from each rung below the last
        assert view.entries_at(steps) and len(view.entries_at(steps)) < len(view.entries_at(fidelity.rungs[0]))
    assert promotable_paused(view, fidelity.rungs, fidelity.keep, "minimize", final=False) is None
    assert ranked_trials(study)[0].user_attrs["status"] == "complete"


def test_growth_per_10x_trials():
    assert many_trials.per_10x(2.0, 20.0, 100, 1000) == "10.0x"  # linear
    assert many_trials.per_10x(20.0, 100.0, 1000, 5000) == "10.0x"  # linear over 5x as well
    assert many_trials.per_10x(1.0, 25.0, 1000, 5000) == "100.0x"  # quadratic
    assert many_trials.per_10x(3.0, 3.0, 100, 1000) == "1.0x"  # flat


def test_a_tiny_run_prints_its_machine_and_a_row_per_storage_and_operation(tmp_path, capsys):
    assert many_trials.main(["--trials", "20", "--storages", "sqlite", "journal", "--repeat", "1", "--mlflow-trials", "20", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("machine: ") and lines[-1].endswith("(1 / 5 / 15 min) (at the end)")
    header = "| storage | operation | 20 trials (ms) | study reads | SQL statements | notes |"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[lines.index(header) + 2 :] if line.startswith("|")]
    operations = [many_trials.CLAIM_FIRST, many_trials.CLAIM, many_trials.PROPOSE, many_trials.TABLE, many_trials.EXPORT]
    mirror = [many_trials.MIRROR_FIRST, many_trials.MIRROR_AGAIN]
    assert [(r[0], r[1]) for r in rows] == [("sqlite", op) for op in operations + mirror] + [("journal", op) for op in operations]
    by_row = {(r[0], r[1]): r[2:] for r in rows}
    for (storage, op), (ms, reads, statements, notes) in by_row.items():
        assert float(ms.replace(",", "")) > 0, (storage, op, ms)
        assert (statements == "-") == (storage == "journal"), (storage, op, statements)
    for storage in ("sqlite", "journal"):
        # a claim reads the study once before it draws, Optuna once for enqueued trials, once after (the surplus check)
        assert by_row[(storage, many_trials.CLAIM)][1] == "3"
        assert re.fullmatch(r"20: filled in \d+\.\d s", by_row[(storage, many_trials.CLAIM_FIRST)][3])
    assert re.fullmatch(r"20: one sqlite commit here \d+\.\d ms", by_row[("sqlite", many_trials.CLAIM)][3])
    assert by_row[("journal", many_trials.CLAIM)][3] == ""
    finished = sum(t.state.is_finished() for t in many_trials.recorded_trials(load_search_space(many_trials.SPACE), 20, "samples.png"))
    assert by_row[("sqlite", many_trials.MIRROR_FIRST)][3] == f"20: {finished} runs fixed"  # every finished trial backfilled
    assert by_row[("sqlite", many_trials.MIRROR_AGAIN)][3] == "20: 0 runs fixed"  # and only once
    assert (tmp_path / "out" / "many-sqlite-20-best.yaml").read_text().startswith("# Exported by `dicesearch export`")
