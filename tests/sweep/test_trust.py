"""What makes a sweep's answer trustworthy, piece by piece: replicates, ties, rank agreement,
constraints for infeasible configurations, and identical configurations not trained twice."""

import math

import numpy as np
import optuna
import pytest
from lifecycle_steps import finish_trial
from optuna.trial import TrialState
from scipy import stats

from dicesearch.data import DigitsSpec
from dicesearch.metrics.replicates import aggregate_replicates
from dicesearch.metrics.score import Score
from dicesearch.objective import Budget, evaluate
from dicesearch.spec import parse_spec
from dicesearch.sweep.lifecycle.messages import TrialOutcome
from dicesearch.sweep.results.statistics import tied
from dicesearch.sweep.results.table import ranked_table, tied_with_best
from dicesearch.sweep.store.mlflow_mirror import MlflowMirror
from dicesearch.sweep.store.queries import ranked_trials
from dicesearch.sweep.store.schema import CONSTRAINT
from dicesearch.sweep.store.studies import SweepStudy


def test_replicates_aggregate_to_mean_sd_and_a_t_interval():
    runs = [{"fid_8": 10.0, "fid_8_sd": 1.0, "train_seconds": 2.0, "final_loss": 0.5}, {"fid_8": 14.0, "fid_8_sd": 3.0, "train_seconds": 3.0, "final_loss": 0.7}, {"fid_8": 12.0, "fid_8_sd": 2.0, "train_seconds": 1.0, "final_loss": 0.6}]
    out = aggregate_replicates(runs, ["fid_8"])
    sd = np.std([10.0, 14.0, 12.0], ddof=1)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert out["fid_8"] == pytest.approx(12.0) and out["fid_8_sd"] == pytest.approx(sd)
    assert (out["fid_8_lo"], out["fid_8_hi"]) == (pytest.approx(12.0 - half), pytest.approx(12.0 + half))
    assert [out[f"fid_8_r{r}"] for r in range(3)] == [10.0, 14.0, 12.0]
    assert out["train_seconds"] == 6.0 and out["final_loss"] == pytest.approx(0.6)  # timings add up, the rest averages
    assert aggregate_replicates(runs[:1], ["fid_8"]) == runs[0]  # one replicate: its own metrics, bootstrap sd included


def test_replicate_means_equal_the_separate_runs_they_stand_for(registry):
    stages = [{"patch_size": 2, "channels": 16, "depth": 1, "block": {"kind": "dice"}}, {"patch_size": 1, "channels": 16, "depth": 1, "block": {"kind": "convnext"}}]
    spec = parse_spec({"name": "digits-8", "input": {"channels": 1, "resolution": 8, "num_classes": 10}, "stages": stages}, registry=registry)
    data = DigitsSpec(resolution=8)
    budget = Budget(train_steps=3, batch_size=4, fid_samples=8, sampling_steps=2, report_every=1)
    reports = []
    both = evaluate(spec, data, budget, seed=5, replicates=2, device="cpu", on_progress=lambda s, loss: reports.append(s), count_static=False)
    alone = [evaluate(spec, data, budget, seed=s, reference_seed=5, device="cpu", count_static=False).metrics for s in (5, 6)]
    for key in ("fid_8", "kid_8", "precision_8", "recall_8"):
        assert both.metrics[f"{key}_r0"] == pytest.approx(alone[0][key], rel=1e-6)
        assert both.metrics[f"{key}_r1"] == pytest.approx(alone[1][key], rel=1e-6)
        assert both.metrics[key] == pytest.approx((alone[0][key] + alone[1][key]) / 2, rel=1e-6)
    assert both.metrics["fid_8_sd"] == pytest.approx(abs(alone[0]["fid_8"] - alone[1]["fid_8"]) / math.sqrt(2), rel=1e-6)
    assert alone[0]["fid_8"] != alone[1]["fid_8"]  # the seeds really differ
    assert reports == [1, 2, 3, 4, 5, 6]  # replicate 1 reports after replicate 0, for the pruner


def test_scores_print_with_their_spread_and_ties_follow_interval_overlap():
    best, close, far = Score(148.4, 4.2, 140.0, 156.8), Score(151.1, 4.0, 143.0, 159.2), Score(222.7, 3.9, 215.0, 230.4)
    assert best.text() == "148 ± 4.2" and Score(0.01234).text() == "0.0123"
    assert tied(best, close) and not tied(best, far)
    assert tied(Score(3.0), Score(3.0)) and not tied(Score(3.0), Score(3.1))  # no interval: only equal values tie


def test_the_mark_tests_the_difference_not_whether_intervals_overlap():
    """Two 95 % intervals can overlap while the scores differ at the 5 % level: the mark is a
    z-test of the difference from the two sds (the rule the table's caption states)."""
    a, b = Score(100.0, 5.0, 90.2, 109.8), Score(115.0, 5.0, 105.2, 124.8)
    assert a.lo <= b.hi and b.lo <= a.hi  # the intervals overlap...
    assert not tied(a, b)  # ...but |15| > 1.96 x sqrt(5^2 + 5^2) = 13.9
    assert tied(a, Score(113.0, 5.0, 103.2, 122.8))  # |13| < 13.9


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def make_study(tmp_path, mlflow_uri, monkeypatch):
    monkeypatch.chdir(mlflow_uri.removeprefix("sqlite:///").rsplit("/", 1)[0])  # MLflow's default artifact root is ./mlruns: beside the store, not in the repository

    def make(name, directions=("minimize",)):
        study = SweepStudy.open(name, f"sqlite:///{tmp_path}/optuna.db", list(directions), seed=0)
        return study, MlflowMirror(mlflow_uri, f"{tmp_path.name}-{name}", "space.yaml")

    return make


def _record(study, mirror, outcome, keys=("fid_8",), directions=("minimize",), budget_gb=1.0):
    trial = study.study.ask()
    trial.suggest_float("x", 0, 1000)
    finish_trial(study, mirror, trial.number, outcome, list(keys), list(directions), budget_gb)
    return trial.number


def test_the_table_marks_the_trials_tied_with_the_best(make_study):
    study, mirror = make_study("ties")
    numbers = []
    for fid, sd in [(151.1, 4.0), (148.4, 4.2), (222.7, 3.9), (150.1, 4.1)]:
        metrics = {"fid_8": fid, "fid_8_sd": sd, "fid_8_lo": fid - 2 * sd, "fid_8_hi": fid + 2 * sd}
        numbers.append(_record(study, mirror, TrialOutcome(status="complete", metrics=metrics)))
    assert [t.number for t in ranked_trials(study.study)] == [numbers[1], numbers[3], numbers[0], numbers[2]]
    assert tied_with_best(study.study, "fid_8") == {numbers[0], numbers[3]}


def test_an_infeasible_configuration_reaches_the_sampler_and_leaves_the_pareto_front(make_study):
    study, mirror = make_study("pareto", ("minimize", "minimize"))
    keys, directions = ("fid_8", "gmacs"), ("minimize", "minimize")
    fits = [{"fid_8": 100.0, "gmacs": 2.0, "memory_estimated_gb": 0.5}, {"fid_8": 80.0, "gmacs": 4.0, "memory_estimated_gb": 0.6}]
    feasible = [_record(study, mirror, TrialOutcome(status="complete", metrics=m), keys, directions) for m in fits]
    # the smallest model of all, had it fitted: without the constraint it would be on the Pareto front
    over = TrialOutcome(status="rejected", reason="rejected: over budget", metrics={"gmacs": 1.0, "memory_estimated_gb": 3.5})
    infeasible = _record(study, mirror, over, keys, directions)
    oom_outcome = TrialOutcome(status="failed", reason="out of memory: CUDA out of memory", metrics={"gmacs": 0.5, "memory_estimated_gb": 0.9})
    oom = _record(study, mirror, oom_outcome, keys, directions)
    trials = {t.number: t for t in study.trials()}
    assert trials[infeasible].state == TrialState.COMPLETE and trials[infeasible].values == [math.inf, 1.0]
    assert trials[infeasible].constraints == {CONSTRAINT: pytest.approx(2.5)}  # 2.5 GiB over the 1 GiB budget
    assert trials[oom].constraints[CONSTRAINT] > 0 and trials[oom].user_attrs["status"] == "failed"  # estimated to fit, but did not
    assert trials[feasible[0]].constraints == {CONSTRAINT: pytest.approx(-0.5)}  # headroom
    assert {t.number for t in study.study.best_trials} == set(feasible)
    # NSGA-II's next generation is bred from its constrained-domination ranking: the feasible trials rank first
    from optuna.samplers.nsgaii._constraints_evaluation import _constrained_dominates

    for f in feasible:
        assert _constrained_dominates(trials[f], trials[infeasible], study.study.directions)
        assert not _constrained_dominates(trials[infeasible], trials[f], study.study.directions)


def test_the_table_marks_the_pareto_front_with_several_objectives_only(make_study):
    keys = ("fid_8", "gmacs")
    study, mirror = make_study("front", ("minimize", "minimize"))
    front = [_record(study, mirror, TrialOutcome(status="complete", metrics=m), keys, ("minimize", "minimize"))
             for m in ({"fid_8": 100.0, "gmacs": 2.0}, {"fid_8": 80.0, "gmacs": 4.0})]  # fmt: skip
    dominated = _record(study, mirror, TrialOutcome(status="complete", metrics={"fid_8": 120.0, "gmacs": 5.0}), keys, ("minimize", "minimize"))
    shown = list(ranked_table(study.study, list(keys)).columns[1].cells)  # the "trial" column
    assert sorted(shown) == sorted([f"{n} *" for n in front] + [str(dominated)])
    single, mirror = make_study("single")
    numbers = [_record(single, mirror, TrialOutcome(status="complete", metrics={"fid_8": fid})) for fid in (100.0, 80.0)]
    assert sorted(ranked_table(single.study, ["fid_8"]).columns[1].cells) == sorted(map(str, numbers))  # one objective: no front


def test_tpe_learns_from_infeasible_trials(make_study):
    """The memory constraint steers TPE away from configurations that do not fit."""
    study, mirror = make_study("tpe")
    study.study.sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    for _ in range(30):
        trial = study.study.ask()
        x = trial.suggest_float("channels", 0, 10)
        if x > 3:  # "does not fit"
            outcome = TrialOutcome(status="rejected", reason="rejected: over budget", metrics={"memory_estimated_gb": 1.0 + x / 10})
        else:
            outcome = TrialOutcome(status="complete", metrics={"fid_8": (x - 1.5) ** 2, "memory_estimated_gb": 0.5})
        finish_trial(study, mirror, trial.number, outcome, ["fid_8"], ["minimize"], 1.0)
    late = [t.params["channels"] for t in study.trials()[15:]]
    assert sum(x > 3 for x in late) <= 6  # at random, 70 % would not fit (P(<= 6 of 15) = 1.5 %)
    assert study.study.best_trial.params["channels"] <= 3


def test_the_importance_plot_answers_what_explains_the_score_and_says_so(tmp_path):
    """A categorical parameter that sets every score apart (a conditioning method) and a
    continuous one that only separates the very best: fANOVA gives the first the larger share,
    steadily over forest seeds; the plot's title names the evaluator and its question."""
    from dicesearch.sweep.results.importance import EVALUATOR, QUESTION, fanova_importances, importance_figure

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rng = np.random.default_rng(0)
    for _ in range(24):
        trial = study.ask()
        kind = trial.suggest_categorical("conditioning.kind", ["adaln_zero", "tdln"])
        lam = trial.suggest_float("lambda", 0.1, 10.0, log=True)
        study.tell(trial, (230.0 if kind == "tdln" else 190.0) - 8.0 * (lam > 5) + rng.normal(0, 2))
    importances = fanova_importances(study)
    assert [i.name for i in importances] == ["conditioning.kind", "lambda"]
    first = importances[0]
    assert first.low > 0.7 and first.mean > importances[1].high  # first on every forest seed
    assert all(abs(sum(i.shares[s] for i in importances) - 1.0) < 1e-6 for s in range(len(first.shares)))  # normalised shares
    figure = importance_figure(importances, "fid_128")
    assert figure.axes[0].get_title() == f"{EVALUATOR}: {QUESTION}" and "fANOVA" in EVALUATOR
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["lambda", "conditioning.kind"]  # the largest on top
    figure.savefig(tmp_path / "importances.png")



def test_the_exported_spec_names_every_score_the_trial_recorded(make_study, tmp_path):
    from dicesearch.sweep.results.export import export_trial

    study, mirror = make_study("export")
    trial = study.study.ask()
    trial.suggest_float("x", 0, 1000)
    study.set_attrs(trial.number, {"spec_yaml": "name: x\n"})
    metrics = {"fid_8": 120.0, "sfid_8": 130.0, "kid_8": 0.05, "is_8": 2.5, "precision_8": 0.5, "recall_8": 0.4, "params": 10.0}
    finish_trial(study, mirror, trial.number, TrialOutcome(status="complete", metrics=metrics), ["fid_8"], ["minimize"], 1.0)
    out, _ = export_trial(study.study, tmp_path / "best.yaml")
    header = out.read_text().splitlines()[1]
    for key in ("fid_8 120", "sfid_8 130", "kid_8 0.05", "is_8 2.5", "precision_8 0.5", "recall_8 0.4"):
        assert key in header, header
    assert "params" not in header
