"""Faults injected into real sweeps, and what must survive each.

One sweep meets every in-trial fault in turn (raise, NaN, simulated CUDA OOM, a plugin
whose build raises, a hang past the time limit) between healthy trials; another loses its
MLflow server mid-sweep and is then SIGKILLed mid-trial and resumed; two sweep processes
share one study. After each: completed trials and their metrics are intact in Optuna and
MLflow, the faulty trial is recorded with its reason, nothing is counted twice, and no
MLflow run is left RUNNING. (tests/sweep has each fault alone, in process.)
"""

from __future__ import annotations

import time

from optuna.trial import TrialState

FAULT = "stages[1].block.fault"

COMPLETE, FAIL = TrialState.COMPLETE, TrialState.FAIL


def _by_number(runs) -> dict[int, object]:
    trial_runs = [r for r in runs if r.data.tags["dicesearch.role"] == "trial"]
    numbers = [int(r.data.tags["dicesearch.trial"]) for r in trial_runs]
    assert len(numbers) == len(set(numbers)), f"a trial is mirrored twice: {sorted(numbers)}"
    return dict(zip(numbers, trial_runs))


def _assert_mirrored(trials, runs) -> None:
    """Every finished trial has exactly one finished MLflow run carrying its status and metrics."""
    assert not [r for r in runs if r.info.status == "RUNNING"], "an MLflow run was left RUNNING"
    parents = [r for r in runs if r.data.tags["dicesearch.role"] == "sweep"]
    assert len(parents) == 1
    by_number = _by_number(runs)
    for trial in trials:
        run = by_number[trial.number]
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["dicesearch.status"] == trial.user_attrs["status"]
        if trial.user_attrs["status"] == "complete":
            assert trial.state == COMPLETE
            assert run.info.status == "FINISHED"
            assert run.data.metrics["fid_8"] == trial.value == trial.user_attrs["metrics"]["fid_8"] > 0
        else:
            assert run.info.status in ("FAILED", "KILLED")
            assert run.data.tags["dicesearch.reason"] == trial.user_attrs["reason"]


def test_every_in_trial_fault_is_recorded_and_the_sweep_goes_on(harness):
    faults = ["raise", "nan", "oom", "build", "hang", "none"]
    space = harness.space("faults", trials=len(faults), time_limit=30)
    harness.enqueue("faults", faults)
    start = time.monotonic()
    output = harness.run(space)
    assert time.monotonic() - start < 400

    trials = harness.trials("faults")
    assert [t.params[FAULT] for t in trials] == faults  # each ran once, in order
    outcome = {t.params[FAULT]: t for t in trials}
    healthy = outcome["none"]  # after all the faults, a trial still trains, samples and scores
    assert healthy.state == COMPLETE and healthy.user_attrs["status"] == "complete" and healthy.user_attrs["loss_curve"]
    expected = {
        "raise": ("failed", "error: RuntimeError: injected fault at training step 3"),
        "nan": ("diverged", "diverged"),
        "oom": ("failed", "out of memory: OutOfMemoryError: CUDA out of memory"),
        "build": ("invalid", "injected fault: the block's builder raised"),  # caught by the size check, before a process starts
        "hang": ("timeout", "timeout: stopped after"),
    }
    for fault, (status, reason) in expected.items():
        trial = outcome[fault]
        if fault == "oom":  # over the memory budget: infeasible, so the sampler learns from it
            assert trial.state == COMPLETE and trial.constraints["memory_over_budget_gb"] > 0 and trial.value == float("inf")
        else:
            assert trial.state == FAIL, fault
        assert reason in trial.user_attrs["reason"], (fault, trial.user_attrs["reason"])
        if status != "diverged":
            assert trial.user_attrs["status"] == status, fault
        else:
            assert trial.user_attrs["reason"].startswith("diverged"), trial.user_attrs["reason"]
        if status != "invalid":  # an invalid configuration has no spec; its reason names the block and plugin
            assert trial.user_attrs["spec_yaml"]  # what failed can be rebuilt and debugged
    assert "traceback" in outcome["raise"].user_attrs and "injected fault" in outcome["raise"].user_attrs["traceback"]
    assert outcome["hang"].user_attrs["metrics"]["wall_seconds"] < 30 + 30
    _assert_mirrored(trials, harness.runs("faults"))
    assert "Compare trials:" in output


def test_mlflow_outage_then_sigkill_mid_trial_then_resume_loses_nothing(harness, mlflow_server):
    name = "outage"
    space = harness.space(name, trials=4)
    harness.enqueue(name, ["none", "raise", "none", "slow"])
    mlflow_server.start()
    sweep = harness.start(space, "--tracking-uri", mlflow_server.uri)
    try:
        def finished(number):
            return lambda: harness.trials(name)[number].state.is_finished()

        harness.wait_for("trial 0 to finish", finished(0), proc=sweep)
        mlflow_server.stop()  # the tracking server goes away during trials 1 and 2
        harness.wait_for("trial 2 to finish", finished(2), proc=sweep)
        mlflow_server.start()  # back for trial 3, which is slow: it is killed in the middle
        harness.wait_for(
            "trial 3 to start",
            lambda: harness.trials(name)[3].state == TrialState.RUNNING and harness.trials(name)[3].user_attrs.get("spec_yaml"),
            proc=sweep,
        )
        time.sleep(1.0)  # into its training (the slow trial trains for 16 s and more)
    finally:
        if sweep.poll() is None:
            sweep.kill()  # SIGKILL: no handler, no cleanup, as a pre-empted machine
        sweep.wait()
    before = {t.number: (t.state, t.value, dict(t.user_attrs.get("metrics", {}))) for t in harness.trials(name)[:3]}
    assert [s for s, _, _ in before.values()] == [COMPLETE, FAIL, COMPLETE]
    assert harness.trials(name)[3].state == TrialState.RUNNING  # killed mid-trial

    output = harness.run(space, "--tracking-uri", mlflow_server.uri)  # the same command
    assert "trial(s) 3 were interrupted and will run again" in output
    trials = harness.trials(name)
    for number, (state, value, metrics) in before.items():  # completed trials are intact
        assert trials[number].state == state and trials[number].value == value
        assert trials[number].user_attrs.get("metrics", {}) == metrics
    assert trials[3].state == FAIL and trials[3].user_attrs["status"] == "interrupted"
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 3]
    assert len(retry) == 1 and retry[0].state == COMPLETE and retry[0].params == trials[3].params
    assert len(trials) == 5  # four counted, plus the interrupted attempt: none run twice
    runs = harness.runs(name, mlflow_server.uri)
    _assert_mirrored(trials, runs)
    assert _by_number(runs)[3].info.status == "KILLED"
    assert len(_by_number(runs)[2].data.metrics) > 0  # logged while MLflow was down: backfilled


def test_two_sweep_processes_share_one_study_without_duplicates(harness):
    name = "pair"
    space = harness.space(name, trials=4)
    storage = str(harness.root / "study.journal")  # a journal file: safe for several processes
    harness.enqueue(name, ["none"] * 4, storage=storage)
    sweeps = [harness.start(space, "--storage", storage, log=f"sweep-{i}.log") for i in range(2)]
    for sweep in sweeps:
        assert sweep.wait(timeout=400) == 0, harness.log("sweep-0.log") + harness.log("sweep-1.log")

    trials = harness.trials(name, storage=storage)
    counted = [t for t in trials if t.user_attrs.get("status") != "surplus"]
    assert [t.state for t in counted] == [COMPLETE] * 4
    workers = {t.user_attrs["worker"] for t in counted}
    assert len(workers) == 2, "both processes should have run trials"
    assert len({t.params["stages[0].block.lambda_init"] for t in counted}) == 4
    for surplus in [t for t in trials if t.user_attrs.get("status") == "surplus"]:
        assert "loss_curve" not in surplus.user_attrs  # created, never run
    _assert_mirrored(counted, harness.runs(name))
