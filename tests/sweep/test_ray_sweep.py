"""The Ray Tune backend end to end: a real Ray runtime, trial processes, sqlite, MLflow, real FID.

One small Ray runtime serves the whole module (starting one costs seconds); the sweeps run
in this process join it. The resume test's sweeps are separate processes: the first joins
that runtime through ``ray_address`` and is killed, the second resumes on a local runtime
of its own.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

import dicesearch
from dicesearch.cli import main
from dicesearch.spec import load_spec

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_runtime(tmp_path_factory):
    """A small local Ray runtime; its workers import this checkout and share the FID cache."""
    patch = pytest.MonkeyPatch()
    # workers inherit the environment Ray starts with (conftest sets the cache per test, too late for them)
    patch.setenv("PYTHONPATH", os.pathsep.join([str(Path(dicesearch.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    patch.setenv("DICESEARCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fid-cache"))
    patch.setenv("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    patch.undo()


SWEEP_BACKEND = "ray"  # the sweep_kit fixture's backend in this module


@pytest.fixture
def in_ray(sweep_kit, ray_runtime):
    """A sweep folder whose sweeps join this module's Ray runtime."""
    return sweep_kit.root


def test_a_ray_sweep_logs_every_trial_to_optuna_and_mlflow_and_exports_the_best(sweep_kit, in_ray):
    space = sweep_kit.space("basic", extra="parallelism: 2\ncpus_per_trial: 1")  # both trials at once
    result = sweep_kit.run(space)
    assert result.exit_code == 0, result.output
    assert "trials ranked by fid_8" in result.output
    trials = sweep_kit.trials("basic")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert sorted(t.params["stages[0].channels"] for t in trials) == [16, 32]  # not one configuration twice
    (a, b) = sorted(trials, key=lambda t: t.datetime_start)
    assert b.datetime_start < a.datetime_complete, "the two trials should have run at the same time"
    for t in trials:
        assert t.value == t.user_attrs["metrics"]["fid_8"] > 0
        assert t.user_attrs["loss_curve"] and t.user_attrs["spec_yaml"].startswith("# made with dicesearch ") and "\nname:" in t.user_attrs["spec_yaml"]
        assert Path(t.user_attrs["samples_png"]) == sweep_kit.root / "runs" / "basic" / f"trial-{t.number}" / "samples.png"
        assert Path(t.user_attrs["samples_png"]).is_file()
    runs = sweep_kit.runs("basic")
    (parent,) = [r for r in runs if r.data.tags["dicesearch.role"] == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.params["backend"] == "ray"
    children = sweep_kit.trial_runs("basic")
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["dicesearch.status"] == "complete"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.metrics["fid_8"] > 0 and "loss" in run.data.metrics and "gmacs" in run.data.metrics
        assert run.data.params["stage0.block"] == "dice"
    assert (sweep_kit.root / "runs" / "basic" / "plots" / "optimization_history.png").is_file()

    exported = CliRunner().invoke(main, ["export", str(space), "-o", "best.yaml"])
    assert exported.exit_code == 0, exported.output
    best = min(trials, key=lambda t: t.value)
    assert load_spec(sweep_kit.root / "best.yaml").stages[0].channels == best.params["stages[0].channels"]

    again = sweep_kit.run(space)  # a finished sweep runs nothing more
    assert again.exit_code == 0, again.output
    assert "2 of 2 trials already finished" in again.output
    assert len(sweep_kit.trials("basic")) == 2
    assert sweep_kit.run(space, "--trials", "3").exit_code == 2  # Ray cannot grow a started experiment: said, not ignored


def test_an_over_budget_config_is_rejected_without_training(sweep_kit, in_ray):
    # 16 channels fit the budget (so the sweep starts), 2048 do not; the seeded sampler draws 2048 first
    space = sweep_kit.space("gate", parameters="  stages[0].channels: {choice: [16, 2048]}", budget_gb=1.0, trials=1)
    result = sweep_kit.run(space)
    # its only trial was rejected: nothing scored, so the sweep says why and exits non-zero
    assert result.exit_code == 1, result.output
    assert "error: no trial of study 'gate' completed: 1 rejected (rejected: estimated peak training memory" in result.output
    (trial,) = sweep_kit.trials("gate")
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["status"] == "rejected"  # infeasible, for the sampler
    assert trial.value == float("inf") and trial.constraints["memory_over_budget_gb"] > 0
    assert trial.params["stages[0].channels"] == 2048
    assert "exceeds the 1 GB budget" in trial.user_attrs["reason"]
    assert trial.user_attrs["metrics"]["memory_estimated_gb"] > 1.0
    assert "loss_curve" not in trial.user_attrs  # not one training step (recorded as by the Optuna backend)
    assert "wall_seconds" not in trial.user_attrs["metrics"]  # no trial process was started
    (run,) = sweep_kit.trial_runs("gate")
    assert run.data.tags["dicesearch.status"] == "rejected" and run.info.status == "FAILED"
    assert "exceeds" in run.data.tags["dicesearch.reason"]


def test_failing_trials_are_recorded_and_the_sweep_goes_on(sweep_kit, in_ray):
    # 3-channel inputs do not fit the 1-channel digits: those trials fail inside their trial process
    space = sweep_kit.space("faults", parameters="  input.channels: {choice: [1, 3]}", trials=2)
    result = sweep_kit.run(space)
    assert result.exit_code == 0, result.output
    trials = sweep_kit.trials("faults")
    assert sorted(t.params["input.channels"] for t in trials) == [1, 3]  # the seeded sampler draws 3, then 1
    for t in trials:
        if t.params["input.channels"] == 3:
            assert t.state == TrialState.FAIL and t.user_attrs["status"] == "failed"
            assert "images are 1x16x16 but the spec" in t.user_attrs["reason"]
        else:
            assert t.state == TrialState.COMPLETE
    statuses = {r.data.tags["dicesearch.trial"]: (r.info.status, r.data.tags["dicesearch.status"]) for r in sweep_kit.trial_runs("faults")}
    assert statuses == {str(t.number): ("FINISHED", "complete") if t.state == TrialState.COMPLETE else ("FAILED", "failed") for t in trials}


def test_a_trial_over_its_time_limit_is_stopped_and_recorded(sweep_kit, in_ray):
    space = sweep_kit.space("slow", steps=100000, trials=1, extra="trial_time_limit_s: 5")
    result = sweep_kit.run(space)
    assert result.exit_code == 1, result.output  # no trial completed
    assert "error: no trial of study 'slow' completed: 1 timeout (timeout: stopped after" in result.output
    assert "Export the best" not in result.output
    (trial,) = sweep_kit.trials("slow")
    assert trial.state == TrialState.FAIL and trial.user_attrs["status"] == "timeout"
    assert trial.user_attrs["reason"].startswith("timeout: stopped after")


def test_asha_stops_a_trial_whose_loss_falls_behind(sweep_kit, in_ray):
    # the seeded sampler tries 16 channels, then 32; at step 5 (ASHA's one rung) the wider
    # model's loss is clearly behind (about 1.2 against 0.9), so ASHA stops it before its evaluation
    space = sweep_kit.space("asha", steps=15, pruner="median")
    result = sweep_kit.run(space)
    assert result.exit_code == 0, result.output
    first, second = sweep_kit.trials("asha")
    assert first.state == TrialState.COMPLETE
    assert second.state == TrialState.PRUNED and second.user_attrs["reason"] == "pruned by ASHA at step 5"
    assert second.user_attrs["loss_curve"][-1][0] == 5 and "fid_8" not in second.user_attrs["metrics"]
    assert first.user_attrs["loss_curve"][0][0] == 5
    assert first.user_attrs["loss_curve"][0][1] < second.user_attrs["loss_curve"][0][1]
    (run,) = [r for r in sweep_kit.trial_runs("asha") if r.data.tags["dicesearch.trial"] == str(second.number)]
    assert run.data.tags["dicesearch.status"] == "pruned" and run.info.status == "FAILED"


def test_ray_stops_trials_at_rungs_by_the_rung_rule_and_reuses_identical_ones(sweep_kit, in_ray):
    """The Optuna backend's multi-fidelity rule, on the same rung scores, in a Tune scheduler;
    a configuration drawn again is not trained again. The first rung scores 4 of the 8 images
    (``samples``): it ranks by fid_4, the last rung by fid_8."""
    parameters = "  stages[0].channels: {choice: [16, 32, 48]}"
    space = sweep_kit.space("rungs", parameters=parameters, trials=4, pruner="none", extra="fidelity: {rungs: [4, 8], keep: 1/2, samples: [4, 8]}")
    space.write_text(space.read_text().replace("train_steps: 10, ", ""))  # the last rung is the budget
    result = sweep_kit.run(space)
    assert result.exit_code == 0, result.output
    trials = sorted(sweep_kit.trials("rungs"), key=lambda t: t.datetime_start)
    seen = []
    for trial in trials:
        if "duplicate_of" in trial.user_attrs:
            assert trial.value is not None and "reused, not retrained" in result.output
            continue
        score = trial.intermediate_values[4]
        seen.append(score)
        if 8 in trial.intermediate_values:
            assert trial.state == TrialState.COMPLETE and trial.value == trial.intermediate_values[8]
        else:
            assert trial.state == TrialState.PRUNED and trial.user_attrs["reason"].startswith("pruned at rung 1 (4 steps): fid_4")
            assert trial.user_attrs["metrics"]["fid_4"] == score and "fid_8" not in trial.user_attrs["metrics"]
    assert "rung" in result.output


def test_an_unreachable_ray_address_is_one_line_and_exit_2(sweep_kit):
    space = sweep_kit.space("nowhere", extra="ray_address: 127.0.0.1:1")
    done = subprocess.run(
        [sys.executable, "-c", "from dicesearch.cli import main; main()", "sweep", str(space)],
        cwd=sweep_kit.root, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    error = done.stderr.strip()
    assert error.startswith("error:") and "\n" not in error
    assert "nowhere.yaml: ray_address: no Ray cluster answers at 127.0.0.1:1" in error and "remove it" in error


def test_a_killed_ray_sweep_resumes_with_the_same_command(sweep_kit, in_ray, ray_runtime):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"OMP_NUM_THREADS": "1"}
    # the first run joins the module's Ray runtime as a client of ray_address
    space = sweep_kit.space("resume", steps=150, extra=f"ray_address: {ray_runtime}")
    command = [sys.executable, "-c", "from dicesearch.cli import main; main()", "sweep", str(space)]
    proc = subprocess.Popen(command, cwd=sweep_kit.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    running = []
    while time.monotonic() < deadline and not running:  # wait until trial 0 is training
        time.sleep(1)
        try:
            running = [t for t in sweep_kit.trials("resume") if t.state == TrialState.RUNNING]
        except Exception:
            continue
    time.sleep(3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert running, "the sweep was killed before any trial started"

    # the second run: the same search space on a local runtime of its own
    sweep_kit.space("resume", steps=150)
    resumed = subprocess.run(command, cwd=sweep_kit.root, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "interrupted and will run again" in resumed.stdout and "restoring the Ray experiment" in resumed.stdout
    trials = sweep_kit.trials("resume")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    interrupted = [t for t in trials if t.user_attrs.get("status") == "interrupted"]
    assert len(complete) == 2 and len(interrupted) == 1
    assert interrupted[0].state == TrialState.FAIL
    (retry,) = [t for t in complete if t.user_attrs.get("retry_of") == interrupted[0].number]
    assert retry.params == interrupted[0].params and retry.user_attrs["ray_trial_id"] == interrupted[0].user_attrs["ray_trial_id"]
    runs = sweep_kit.runs("resume")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    statuses = sorted(r.data.tags.get("dicesearch.status", "") for r in runs if r.data.tags["dicesearch.role"] == "trial")
    assert statuses == ["complete", "complete", "interrupted"]


def test_ray_level_trial_errors_are_summarised_in_one_line():
    from dicesearch.sweep.backends.ray_tune.results import ray_error_reason

    raised = "Failure # 1 (occurred at x)\nray.exceptions.RayTaskError(ValueError): ray::ImplicitFunc.train() (pid=1)\n  File t.py\nValueError: boom\n"
    assert ray_error_reason(raised) == ("failed", "error: the Ray trial failed (ValueError: boom)")
    died = (
        "Failure # 1 (occurred at x)\nThe actor died unexpectedly before finishing this task.\n\tpid: 5714\nThe actor is dead because "
        "its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a "
        "connection error code 2. End of file. Some common causes include: ..."
    )
    assert ray_error_reason(died) == ("crashed", "crashed: the Ray worker running the trial died (Worker unexpectedly exits with a connection error code 2)")
    assert ray_error_reason("") == ("failed", "error: the Ray trial failed (Ray left no error text)")


def test_a_searcher_snapshot_cut_short_by_a_kill_is_removed_without_unpickling_any(tmp_path):
    import ray.cloudpickle as cloudpickle

    from dicesearch.sweep.backends.ray_tune.sweep import discard_unreadable_searcher_state

    class Loud:  # loading this would run code: the check must only read the opcodes
        def __reduce__(self):
            return (print, ("unpickled!",))

    whole = cloudpickle.dumps({"state": [1.0] * 50, "loud": Loud()})
    (tmp_path / "searcher-state-a.pkl").write_bytes(whole)
    (tmp_path / "searcher-state-b.pkl").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "search_gen_state-a.json").write_bytes(whole)  # Tune pickles this one too
    (tmp_path / "search_gen_state-b.json").write_bytes(whole[:-1])
    discard_unreadable_searcher_state(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search_gen_state-a.json", "searcher-state-a.pkl"]
