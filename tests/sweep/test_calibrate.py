"""``dicesearch calibrate`` end to end (real trials, real FID), and rank agreement on known orderings."""

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from dicesearch.cli import main
from dicesearch.sweep.results.statistics import rank_agreement

SPACE = """\
name: calib
base:
  input: {channels: 1, resolution: 16, num_classes: 10}
  stages:
    - {patch_size: 2, channels: 16, depth: 1, block: {kind: dice, mlp_ratio: 2.0}}
    - {patch_size: 1, channels: 16, depth: 1, block: {kind: convnext, mlp_ratio: 2.0}}
parameters:
  stages[0].channels: {choice: [16, 32, 48]}
budget: {train_steps: 4, batch_size: 8, lr: 0.001, fid_samples: 8, sampling_steps: 2, report_every: 2}
memory: {budget_gb: 24, precision: fp16, batch_size: 8}
trials: 3
pruner: none
"""


def test_rank_agreement_of_known_orderings():
    same = rank_agreement([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert (same.spearman, same.kendall, same.spearman_lo, same.spearman_hi) == pytest.approx((1.0, 1.0, 1.0, 1.0))
    reversed_ = rank_agreement([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert (reversed_.spearman, reversed_.kendall) == pytest.approx((-1.0, -1.0))
    # one adjacent swap in six: rho = 1 - 6 * (3 * 2) / (6 * 35), tau = (15 - 2 * 3) / 15
    swapped = rank_agreement([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5])
    assert swapped.spearman == pytest.approx(1 - 36 / 210) and swapped.kendall == pytest.approx(9 / 15)
    assert swapped.spearman_lo < swapped.spearman < swapped.spearman_hi <= 1.0
    with pytest.raises(ValueError, match="at least 3"):
        rank_agreement([1, 2], [1, 2])


def test_calibrate_retrains_chosen_trials_longer_and_reports_rank_agreement(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "calib.yaml"
    space.write_text(SPACE)
    swept = CliRunner().invoke(main, ["sweep", str(space)], catch_exceptions=False, terminal_width=200)
    assert swept.exit_code == 0, swept.output
    # too few trials to choose from: said in one line
    too_few = CliRunner().invoke(main, ["calibrate", str(space), "--best", "1", "--random", "1"])
    assert too_few.exit_code == 2 and "a rank correlation needs at least 3" in too_few.output

    result = CliRunner().invoke(main, ["calibrate", str(space), "--best", "2", "--random", "1", "--factor", "2"], catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "re-trained for 8 steps (2x), scored by fid_8" in result.output
    assert "Spearman's rho" in result.output and "Kendall's tau" in result.output

    study = optuna.load_study(study_name="calib", storage=f"sqlite:///{tmp_path}/optuna.db")
    calibration = study.user_attrs["calibration"]
    assert calibration["train_steps"] == 8 and len(calibration["pairs"]) == 3
    pairs = calibration["pairs"]
    short = {t.number: t.value for t in study.trials}
    assert {p["trial"]: p["short"] for p in pairs} == pytest.approx(short)
    assert [p["chosen_as"] for p in pairs] == ["best", "best", "random"]
    assert all(p["long"] > 0 for p in pairs)
    agreement = calibration["agreement"]
    assert -1.0 <= agreement["spearman"] <= 1.0 and agreement["n"] == 3

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("dicesearch")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`dicesearch.study` = 'calib'")
    (parent,) = [r for r in runs if r.data.tags["dicesearch.role"] == "sweep"]
    (calibrate,) = [r for r in runs if r.data.tags["dicesearch.role"] == "calibrate"]
    assert calibrate.data.tags["mlflow.parentRunId"] == parent.info.run_id and parent.info.status == "FINISHED"
    assert calibrate.data.metrics["calibrate.spearman_rho"] == pytest.approx(agreement["spearman"])
    assert calibrate.data.params["factor"] == "2.0"


def test_calibrate_a_multi_fidelity_sweep_compares_the_first_rung_with_one_straight_long_run(tmp_path, monkeypatch):
    # rungs [2, 4]: the long run is one straight run of 8 steps (not rungs ending at 4), and
    # the short score of every trial is its score at 2 steps, the budget all of them reached
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "calib.yaml"
    # a continuous parameter: no identical configurations, so all three are scored at the first rung
    varied = SPACE.replace("stages[0].channels: {choice: [16, 32, 48]}", "stages[0].block.lambda_init: {float: [0.1, 10.0], log: true}")
    space.write_text(varied.replace("trials: 3\n", "trials: 3\nfidelity: {rungs: [2, 4], keep: 1/2}\n"))
    swept = CliRunner().invoke(main, ["sweep", str(space)], catch_exceptions=False, terminal_width=200)
    assert swept.exit_code == 0, swept.output
    result = CliRunner().invoke(main, ["calibrate", str(space), "--best", "2", "--random", "1", "--factor", "2"], catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "re-trained for 8 steps (2x), scored by fid_8" in result.output and "fid_8 at 2 steps" in result.output

    study = optuna.load_study(study_name="calib", storage=f"sqlite:///{tmp_path}/optuna.db")
    calibration = study.user_attrs["calibration"]
    first_rung = {t.number: t.user_attrs["rungs"][0]["fid_8"] for t in study.trials if t.user_attrs.get("rungs")}
    assert len(calibration["pairs"]) == 3
    assert all(p["short"] == pytest.approx(first_rung[p["trial"]]) for p in calibration["pairs"])
    assert calibration["short_key"] == "fid_8 at 2 steps" and calibration["train_steps"] == 8
    assert all(p["long"] > 0 for p in calibration["pairs"])
