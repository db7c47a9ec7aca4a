"""The Optuna backend end to end: real trial processes, sqlite storage, MLflow, real FID.

NaN, time limits, OOM, SIGKILL and resume, MLflow outages and parallel workers are in the
fault-injection harness, tests/faults/.
"""

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from dicesearch.cli import main
from dicesearch.provenance import dicesearch_version
from dicesearch.spec import load_spec


def test_a_sweep_logs_every_trial_to_optuna_and_mlflow_and_exports_the_best(sweep_kit):
    space = sweep_kit.space("basic")
    result = sweep_kit.run(space)
    assert result.exit_code == 0, result.output
    assert "Compare trials:  mlflow ui   (in this directory; it reads ./mlflow.db)" in result.output
    trials = sweep_kit.trials("basic")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    for t in trials:
        assert t.value == t.user_attrs["metrics"]["fid_8"] > 0
        assert t.user_attrs["loss_curve"] and t.user_attrs["spec_yaml"].startswith("# made with dicesearch ") and "\nname:" in t.user_attrs["spec_yaml"]
    runs = sweep_kit.runs("basic")
    parent = [r for r in runs if r.data.tags["dicesearch.role"] == "sweep"]
    children = [r for r in runs if r.data.tags["dicesearch.role"] == "trial"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        assert run.data.metrics["fid_8"] > 0 and "loss" in run.data.metrics and "gmacs" in run.data.metrics
        assert run.data.params["stage0.block"] == "dice"
        # what the trial was made with: dicesearch and each kind's distribution and version
        assert run.data.tags["dicesearch.version"] == dicesearch_version()
        assert run.data.tags["dicesearch.block.dice"] == f"dicesearch {dicesearch_version()}"
        assert run.data.tags["dicesearch.conditioning.adaln_zero"] == f"dicesearch {dicesearch_version()}"
    study = optuna.load_study(study_name="basic", storage=f"sqlite:///{sweep_kit.root}/optuna.db")
    assert study.metric_names == ["fid_8"]  # optuna-dashboard's label, instead of "Objective 0"
    assert (sweep_kit.root / "runs" / "basic" / "plots" / "optimization_history.png").is_file()
    assert (sweep_kit.root / "runs" / "basic" / "trial-0" / "samples.png").is_file()

    exported = CliRunner().invoke(main, ["export", str(space), "-o", "best.yaml"])
    assert exported.exit_code == 0, exported.output
    best = min(trials, key=lambda t: t.value)
    assert load_spec(sweep_kit.root / "best.yaml").stages[0].channels == best.params["stages[0].channels"]
    assert "dicesearch train best.yaml --data-kind digits" in exported.output
    assert f"# uses block 'dice' from dicesearch {dicesearch_version()}\n" in (sweep_kit.root / "best.yaml").read_text()
    assert "warning" not in exported.output  # the plugins it was made with are the installed ones


def test_an_over_budget_config_is_rejected_without_training(sweep_kit):
    # 16 channels fit the budget (so the sweep starts), 2048 do not; trial 0 gets 2048
    space = sweep_kit.space("gate", parameters="  stages[0].channels: {choice: [16, 2048]}", budget_gb=1.0, trials=1)
    optuna.create_study(study_name="gate", storage=f"sqlite:///{sweep_kit.root}/optuna.db").enqueue_trial({"stages[0].channels": 2048})
    result = sweep_kit.run(space)
    # its only trial was rejected: nothing scored, so the sweep says why and exits non-zero
    assert result.exit_code == 1, result.output
    assert "error: no trial of study 'gate' completed: 1 rejected (rejected: estimated peak training memory" in result.output
    assert "Export the best" not in result.output
    (trial,) = sweep_kit.trials("gate")
    # infeasible: COMPLETE with a placeholder value and a violated constraint the sampler reads
    assert trial.state == TrialState.COMPLETE and trial.value == float("inf")
    assert trial.constraints["memory_over_budget_gb"] == pytest.approx(trial.user_attrs["metrics"]["memory_estimated_gb"] - 1.0)
    assert trial.user_attrs["status"] == "rejected"
    assert trial.params["stages[0].channels"] == 2048
    assert "exceeds the 1 GB budget" in trial.user_attrs["reason"]
    assert trial.user_attrs["metrics"]["memory_estimated_gb"] > 1.0
    assert "loss_curve" not in trial.user_attrs  # not one training step
    assert not (sweep_kit.root / "runs" / "gate" / "trial-0").exists()
    (run,) = [r for r in sweep_kit.runs("gate") if r.data.tags["dicesearch.role"] == "trial"]
    assert run.data.tags["dicesearch.status"] == "rejected" and run.info.status == "FAILED"


def test_failing_trials_are_recorded_and_the_sweep_goes_on(sweep_kit):
    # 3-channel inputs do not fit the 1-channel digits: those trials fail inside the trial process
    space = sweep_kit.space("faults", parameters="  input.channels: {choice: [1, 3]}", trials=4)
    result = sweep_kit.run(space)
    assert result.exit_code == 0, result.output
    trials = sweep_kit.trials("faults")
    assert len(trials) == 4
    for t in trials:
        if t.params["input.channels"] == 3:
            assert t.state == TrialState.FAIL and "images are 1x16x16 but the spec" in t.user_attrs["reason"]
        else:
            assert t.state == TrialState.COMPLETE


def test_an_identical_configuration_is_not_trained_twice(sweep_kit):
    space = sweep_kit.space("twice", parameters="  stages[0].channels: {choice: [16]}", steps=4, trials=2)
    result = sweep_kit.run(space)
    assert result.exit_code == 0, result.output
    assert "trial 1: the same configuration as trial 0; its result is reused, not retrained" in result.output
    first, second = sweep_kit.trials("twice")
    assert second.state == TrialState.COMPLETE and second.value == first.value
    assert second.user_attrs["duplicate_of"] == 0 and second.user_attrs["metrics"]["fid_8"] == first.user_attrs["metrics"]["fid_8"]
    assert not (sweep_kit.root / "runs" / "twice" / "trial-1").exists()  # nothing was trained for it
    runs = [r for r in sweep_kit.runs("twice") if r.data.tags["dicesearch.role"] == "trial"]
    assert sorted(r.data.metrics["fid_8"] for r in runs) == [first.value, first.value]


@pytest.mark.parametrize("idle_cores", ["keep", "share"])
def test_idle_workers_lend_their_cores_only_where_the_sweep_says_share(sweep_kit, thread_offers, idle_cores):
    offered = thread_offers
    space = sweep_kit.space(f"cores_{idle_cores}", trials=2, extra=f"parallelism: 2\nidle_cores: {idle_cores}\n")
    result = sweep_kit.run(space)
    assert result.exit_code == 0, result.output
    assert offered  # the trials reported
    if idle_cores == "keep":  # reruns score alike: no trial is ever offered more than its own threads
        assert set(offered) == {None}
    else:
        assert all(isinstance(n, int) and n >= 1 for n in offered)


def test_the_garbage_collector_is_back_on_when_the_trials_begin_and_after_a_bad_space(sweep_kit, monkeypatch):
    """The sweep's start runs without it (dicesearch.speed.collector); nothing after that does."""
    import gc

    import dicesearch.sweep.lifecycle.trial as trial

    seen = []
    real = trial.run_trial

    def run_trial(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(trial, "run_trial", run_trial)
    gc.enable()
    result = sweep_kit.run(sweep_kit.space(trials=1))
    assert result.exit_code == 0, result.output
    assert seen == [True] and gc.isenabled()
    bad = sweep_kit.space(name="bad", parameters="  stages[0].no_such_field: {int: [16, 32]}")
    result = sweep_kit.run(bad)
    assert result.exit_code == 2 and gc.isenabled()
    gc.unfreeze()
