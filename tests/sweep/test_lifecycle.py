"""The trial lifecycle's parts, one at a time: request, gate, outcome recording, recovery.

Real components: an Optuna study on sqlite, MLflow on its sqlite store, a spawned trial
process. The end-to-end sweeps on both backends are in test_optuna_sweep.py,
test_ray_sweep.py and tests/faults/.
"""

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from lifecycle_steps import finish_trial
from mlflow import MlflowClient
from optuna.trial import TrialState

from dicesearch.analysis.memory import estimate_training_memory
from dicesearch.data import DigitsSpec
from dicesearch.errors import SpecError
from dicesearch.objective import Budget
from dicesearch.spec import dump_spec
from dicesearch.sweep.backends.ray_tune.trainable import SampledConfig, TrialReport
from dicesearch.sweep.lifecycle import gate
from dicesearch.sweep.lifecycle.messages import (
    Candidate,
    TrialOutcome,
    TrialRequest,
    TrialSettings,
)
from dicesearch.sweep.lifecycle.process import run_trial
from dicesearch.sweep.prechecks import check_budget_reachable
from dicesearch.sweep.space.config import MemoryBudget
from dicesearch.sweep.space.search_space import load_search_space
from dicesearch.sweep.store.mlflow_mirror import MlflowMirror
from dicesearch.sweep.store.schema import ATTR_RETRY_OF, ATTR_STATUS, ATTR_WORKER, CONSTRAINT, TrialRecord
from dicesearch.sweep.store.studies import SweepStudy, this_worker
from dicesearch.testing import tiny_spec


@pytest.fixture
def spec(registry):
    return tiny_spec("dice", "adaln_zero", layout="noise", resolution=8, registry=registry)


def _request(spec, tmp_path) -> TrialRequest:
    budget = Budget(train_steps=3, batch_size=4, fid_samples=4, sampling_steps=2, report_every=1)
    settings = TrialSettings(
        data=DigitsSpec(resolution=8), budget=budget, memory=MemoryBudget(budget_gb=1.0), memory_batch=4, seed=7, metric_keys=("fid_4",)
    )
    return settings.request(dump_spec(spec), tmp_path / "trial-0", count_static=False)


# -- the request ----------------------------------------------------------------------------------


def test_a_request_crosses_a_process_boundary_as_itself(spec, tmp_path):
    request = _request(spec, tmp_path)
    assert pickle.loads(pickle.dumps(request)) == request  # multiprocessing's spawn, Ray's object store
    assert TrialRequest.model_validate(request.model_dump()) == request
    assert request.spec() == spec  # the resolved spec, re-validated on the other side
    assert request.workdir == tmp_path / "trial-0" and request.count_static is False
    with pytest.raises(ValueError, match="extra"):
        TrialRequest.model_validate({**request.model_dump(), "count_statics": True})  # no silent typos


def test_ray_messages_round_trip_through_plain_data():
    outcome = TrialOutcome(status="complete", metrics={"fid_4": 12.5, "params": 10.0}, loss_curve=[(1, 0.5), (2, 0.25)], wall_seconds=3.0)
    report = TrialReport(metrics={"params": 10.0}, outcome=outcome)
    assert TrialReport.of({"dicesearch": report.model_dump(), "loss": 0.2}) == report
    assert TrialReport.of({"loss": 0.2}) == TrialReport()  # a result Ray made without us
    sampled = SampledConfig(candidate=Candidate(spec_yaml="name: x\n", summary={"stages": 1}), distributions={"a": "{}"})
    config = {"stages[0].channels": 32, "dicesearch": sampled.model_dump()}
    assert SampledConfig.of(config) == sampled and SampledConfig.values(config) == {"stages[0].channels": 32}


def test_a_trial_process_reports_a_spec_it_cannot_build_as_one_failed_line(spec, tmp_path):
    bad = _request(spec, tmp_path).model_copy(update={"spec_yaml": "stages: []\n"})
    outcome = run_trial(bad, on_report=lambda step, loss: False, time_limit_s=120)
    assert outcome.status == "failed"
    assert outcome.reason.startswith("invalid: SpecError: trial spec") and "\n" not in outcome.reason
    assert "SpecError" in outcome.traceback and outcome.wall_seconds > 0 and outcome.loss_curve == []


def test_a_trial_process_whose_sweep_is_gone_ends_quietly_at_its_next_message(spec, tmp_path, capfd):
    # the sweep process killed: its end of the pipe closed; the child's first report finds no
    # reader and the trial ends at once, without a traceback on the terminal it shares
    import multiprocessing

    from dicesearch.sweep.lifecycle.process import trial_child

    sweep_end, child_end = multiprocessing.get_context("spawn").Pipe()
    sweep_end.close()
    digits = spec.model_copy(update={"input": spec.input.model_copy(update={"channels": 1, "num_classes": 10})})
    trial_child(child_end, _request(digits, tmp_path))  # returns (raises nothing) on the broken pipe
    assert "Traceback" not in capfd.readouterr().err
    assert not (tmp_path / "trial-0" / "samples.png").exists()  # it stopped at the first report, before sampling


def test_a_trial_process_ended_while_the_sweep_answers_its_message_is_a_crash_not_an_error(spec, tmp_path):
    # Ctrl-C to the sweep ends its trial processes (OptunaSweep._stop_workers) while a worker
    # may be answering one's report or rung: the answer then meets a closed pipe. That is the
    # trial dying, recorded as such (the sweep then records it interrupted), not an exception
    # that escapes the worker and leaves the trial without a record
    import multiprocessing

    digits = spec.model_copy(update={"input": spec.input.model_copy(update={"channels": 1, "num_classes": 10})})

    def end_the_trial_process(step, loss):
        for child in multiprocessing.active_children():
            child.terminate()
            child.join(timeout=10)
        return False

    outcome = run_trial(_request(digits, tmp_path), on_report=end_the_trial_process, time_limit_s=300)
    assert outcome.status == "crashed", outcome
    assert outcome.loss_curve and outcome.loss_curve[0][0] == 1  # it died after its first report


def test_a_trial_process_takes_its_sweeps_environment_and_folder_as_they_are_when_the_trial_starts(spec, tmp_path, monkeypatch):
    # trial processes fork from a server started with the first trial (process.PRELOAD); an
    # environment variable set later (handed over by run_trial), and a later working folder
    # (multiprocessing's own preparation data), still reach them, as they would a spawned process
    failing = _request(spec, tmp_path).model_copy(update={"spec_yaml": "stages: []\n"})
    assert run_trial(failing, on_report=lambda step, loss: False, time_limit_s=120).status == "failed"  # the server runs now
    cache, later = tmp_path / "later-cache", tmp_path / "later-folder"
    monkeypatch.setenv("DICESEARCH_CACHE_DIR", str(cache))
    later.mkdir()
    monkeypatch.chdir(later)
    digits = spec.model_copy(update={"input": spec.input.model_copy(update={"channels": 1, "num_classes": 10})})
    relative = _request(digits, tmp_path).model_copy(update={"workdir": Path("trial-0")})
    outcome = run_trial(relative, on_report=lambda step, loss: False, time_limit_s=300)
    assert outcome.status == "complete", outcome.reason
    assert list((cache / "fid").glob("*.npz"))  # the reference statistics went where the variable says now
    assert (later / "trial-0" / "samples.png").is_file()  # a relative path means the sweep's folder now


def test_trial_processes_fork_from_the_preloading_server_on_linux_only(monkeypatch):
    from dicesearch.sweep.lifecycle.process import trial_context

    for platform, method in (("linux", "forkserver"), ("darwin", "spawn"), ("win32", "spawn")):
        monkeypatch.setattr(sys, "platform", platform)
        assert trial_context.__wrapped__().get_start_method() == method, platform
    monkeypatch.undo()
    if sys.platform.startswith("linux"):
        assert trial_context().get_start_method() == "forkserver"  # what the sweep's trials use here


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preloading server is Linux's")
def test_the_preloading_server_starts_before_the_first_trial_when_asked():
    # a fresh interpreter: this one's server may already run for earlier tests
    probe = """
import os
from dicesearch.sweep.lifecycle.process import start_trial_server

def children():
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if entry.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            found.append(cmdline)
    return found

before = [c for c in children() if "forkserver" in c]
start_trial_server()
after = [c for c in children() if "forkserver" in c]
print(len(before), len(after), "dicesearch.objective" in " ".join(after))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1", "True"]  # none before; one after, preloading what trials import


def test_a_trial_process_takes_the_threads_its_sweep_offers_where_a_core_is_idle(spec, tmp_path, monkeypatch):
    import multiprocessing
    import threading

    import torch

    from dicesearch.speed.cores import IdleCores
    from dicesearch.sweep.lifecycle.process import CONTINUE, trial_child

    monkeypatch.setattr(IdleCores, "__call__", lambda self: 1.0)  # the other core idle, whatever this machine does
    sweep_end, child_end = multiprocessing.get_context("spawn").Pipe()
    messages = []

    def sweep() -> None:  # the sweep's side: go on at every report (offering two threads) and rung
        while (message := sweep_end.recv())[0] in ("report", "rung"):
            messages.append(message)
            sweep_end.send((CONTINUE, 2) if message[0] == "report" else CONTINUE)
        messages.append(message)

    digits = spec.model_copy(update={"input": spec.input.model_copy(update={"channels": 1, "num_classes": 10})})
    request = _request(digits, tmp_path).model_copy(update={"threads": 1})
    before = torch.get_num_threads()
    listener = threading.Thread(target=sweep)
    listener.start()
    try:
        trial_child(child_end, request)
    finally:
        listener.join(timeout=60)
        torch.set_num_threads(before)
    kind, evaluation = messages[-1]
    assert kind == "result" and [m[1] for m in messages if m[0] == "report"] == [1, 2, 3]
    assert evaluation.metrics["trial_threads"] == 2  # taken after one timed window at its own thread


# -- the gate --------------------------------------------------------------------------------------


def test_the_gate_passes_what_fits_and_rejects_what_does_not_with_the_estimate(spec, registry):
    estimate_gb = estimate_training_memory(spec, 64, "fp16", registry=registry).total / 2**30
    warnings = []
    fits = gate.assess(spec, MemoryBudget(budget_gb=estimate_gb * 1.01), 64, warnings.append)
    assert fits.rejection is None and not warnings
    assert fits.metrics["memory_estimated_gb"] == pytest.approx(estimate_gb)
    assert fits.metrics["params"] == sum(p.numel() for p in _model(spec).parameters())
    over = gate.assess(spec, MemoryBudget(budget_gb=estimate_gb * 0.99), 64, warnings.append)
    assert over.rejection == (
        f"rejected: estimated peak training memory {estimate_gb:.1f} GB at batch 64 fp16 exceeds the {estimate_gb * 0.99:g} GB budget"
    )
    assert over.metrics == fits.metrics  # the same configuration, counted the same


def test_the_gate_lets_an_unknown_estimate_through():
    assert gate.over_budget_reason({}, MemoryBudget(budget_gb=1.0), 8) is None
    assert gate.over_budget_reason({"memory_estimated_gb": 1.0}, MemoryBudget(budget_gb=1.0), 8) is None  # at the budget fits
    assert "exceeds the 1 GB budget" in gate.over_budget_reason({"memory_estimated_gb": 1.01}, MemoryBudget(budget_gb=1.0), 8)


def _model(spec):
    from dicesearch.model import build_model

    return build_model(spec)


SPACE = """\
name: reach
base:
  input: {channels: 1, resolution: 16, num_classes: 10}
  stages:
    - {patch_size: 1, channels: 16, depth: 1, block: {kind: dice}}
parameters:
  stages[0].channels: {int: [16, 512], step: 16}
memory: {budget_gb: BUDGET, precision: fp16, batch_size: 64}
"""


def test_a_space_none_of_whose_configurations_fits_is_refused_before_it_starts(tmp_path):
    path = tmp_path / "reach.yaml"
    path.write_text(SPACE.replace("BUDGET", "1.0"))
    check_budget_reachable(load_search_space(path))  # 16 channels fit 1 GiB
    path.write_text(SPACE.replace("BUDGET", "0.01"))
    with pytest.raises(SpecError, match=r"reach\.yaml:\d+: memory.budget_gb: no configuration of this space fits 0.01 GiB: the smallest found \(stages\[0\]\.channels=16\)"):
        check_budget_reachable(load_search_space(path))


# -- recording an outcome --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One MLflow store for the module (creating one costs seconds); each test is its own study."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def stores(tmp_path, mlflow_uri, request, monkeypatch):
    monkeypatch.chdir(mlflow_uri.removeprefix("sqlite:///").rsplit("/", 1)[0])  # MLflow's default artifact root is ./mlruns: beside the store, not in the repository
    name = f"lifecycle-{abs(hash(request.node.name))}"
    study = SweepStudy.open(name, f"sqlite:///{tmp_path}/optuna.db", ["minimize"], seed=0)
    mirror = MlflowMirror(mlflow_uri, name, "space.yaml")
    mirror.start_sweep({"study": name}, "")
    return study, mirror, MlflowClient(tracking_uri=mlflow_uri)


def _started(study, mirror, channels: int) -> int:
    trial = study.study.ask()
    trial.suggest_categorical("channels", [channels])
    mirror.start_trial(trial.number, trial.params, {}, "name: x\n")
    return trial.number


def _run_of(client, study, number: int):
    experiment = client.get_experiment_by_name("dicesearch")
    where = f"tags.`dicesearch.study` = '{study.study.study_name}' and tags.`dicesearch.trial` = '{number}'"
    (run,) = client.search_runs([experiment.experiment_id], filter_string=where)
    return run


def test_a_complete_outcome_becomes_the_trials_value_its_record_and_its_mlflow_run(stores, tmp_path):
    study, mirror, client = stores
    number = _started(study, mirror, 32)
    samples = tmp_path / "samples.png"
    samples.write_bytes(b"\x89PNG")
    outcome = TrialOutcome(status="complete", metrics={"fid_4": 12.5, "params": 100.0}, loss_curve=[(1, 0.9), (2, 0.7)], wall_seconds=4.0, samples_png=str(samples))
    assert finish_trial(study, mirror, number, outcome, ["fid_4"], ["minimize"], 1.0) == outcome
    trial = study.trial(number)
    assert trial.state == TrialState.COMPLETE and trial.value == 12.5
    assert trial.user_attrs[ATTR_STATUS] == "complete" and "reason" not in trial.user_attrs
    assert trial.user_attrs["metrics"] == {"fid_4": 12.5, "params": 100.0}
    assert trial.user_attrs["loss_curve"] == [[1, 0.9], [2, 0.7]] and trial.user_attrs["samples_png"] == str(samples)
    run = _run_of(client, study, number)
    assert run.info.status == "FINISHED" and run.data.metrics["fid_4"] == 12.5 and run.data.tags["dicesearch.status"] == "complete"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.9, 0.7]
    # recorded once: a second record of the same trial changes nothing
    assert finish_trial(study, mirror, number, outcome.model_copy(update={"metrics": {"fid_4": 1.0}}), ["fid_4"], ["minimize"], 1.0) is None
    assert study.trial(number).value == 12.5


@pytest.mark.parametrize("metrics", [{}, {"fid_4": float("nan")}, {"fid_4": None}])
def test_a_complete_outcome_without_a_finite_objective_is_recorded_as_failed(stores, metrics):
    study, mirror, client = stores
    number = _started(study, mirror, 16)
    recorded = finish_trial(study, mirror, number, TrialOutcome(status="complete", metrics=metrics), ["fid_4"], ["minimize"], 1.0)
    assert recorded.status == "failed" and recorded.reason == "failed: the run did not produce fid_4"
    trial = study.trial(number)
    assert trial.state == TrialState.FAIL and trial.user_attrs["reason"] == recorded.reason
    assert _run_of(client, study, number).data.tags["dicesearch.status"] == "failed"


@pytest.mark.parametrize(
    ("status", "state", "has_curve"),
    [("pruned", TrialState.PRUNED, True), ("rejected", TrialState.COMPLETE, False), ("timeout", TrialState.FAIL, True),
     ("crashed", TrialState.FAIL, True), ("invalid", TrialState.FAIL, False)],
)
def test_every_other_status_ends_in_its_state_with_its_reason(stores, status, state, has_curve):
    study, mirror, client = stores
    number = _started(study, mirror, 48)
    outcome = TrialOutcome(status=status, reason=f"{status}: because", metrics={"params": 1.0}, traceback="Traceback ...\nValueError: x")
    finish_trial(study, mirror, number, outcome, ["fid_4"], ["minimize"], 1.0)
    trial = study.trial(number)
    assert trial.state == state and trial.user_attrs[ATTR_STATUS] == status and trial.user_attrs["reason"] == f"{status}: because"
    assert ("loss_curve" in trial.user_attrs) == has_curve  # a configuration that never trained has no curve
    assert trial.user_attrs["traceback"].endswith("ValueError: x")
    run = _run_of(client, study, number)
    assert run.data.tags["dicesearch.reason"] == f"{status}: because" and run.info.status == "FAILED"


def test_a_study_with_more_runs_than_mlflow_answers_at_once_is_mirrored_once(stores, mlflow_uri, monkeypatch):
    """MLflow answers a search a page at a time (a server caps the page; here at 2 runs, as a
    sqlite store does at 50,000): every page is read, so no trial looks missing and none is
    backfilled twice."""
    study, mirror, client = stores
    for fid in (3.0, 2.0, 1.0, 4.0):
        trial = study.study.ask()
        trial.suggest_categorical("channels", [16])
        study.finish(trial.number, TrialRecord("complete", attrs={"metrics": {"fid_4": fid}}, values=(fid,)))
    search = MlflowClient.search_runs
    monkeypatch.setattr(MlflowClient, "search_runs", lambda self, *args, max_results=1000, **kwargs: search(self, *args, max_results=min(max_results, 2), **kwargs))
    assert mirror.reconcile(study.trials()) == 4  # backfilled
    again = MlflowMirror(mlflow_uri, mirror.study_name, "space.yaml")  # the next sweep's start
    again.start_sweep({"study": mirror.study_name}, "")
    assert again.reconcile(study.trials()) == 0 and again.failures == 0
    monkeypatch.undo()
    experiment = client.get_experiment_by_name("dicesearch")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`dicesearch.study` = '{mirror.study_name}'")
    assert sorted(r.data.tags["dicesearch.role"] for r in runs) == ["sweep"] + ["trial"] * 4
    assert len({r.data.tags.get("dicesearch.trial") for r in runs}) == 5  # one run a trial


# -- recovery after a kill -------------------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_a_dead_workers_trials_are_recovered_and_requeued_once(tmp_path):
    study = SweepStudy.open("recover", f"sqlite:///{tmp_path}/optuna.db", ["minimize"], seed=0)
    workers = {
        "dead": f"{socket.gethostname()}:{_dead_pid()}",
        "alive": this_worker(),
        "elsewhere": f"another-host-{socket.gethostname()}:1",
    }
    numbers = {}
    for who, worker in workers.items():
        trial = study.study.ask()
        trial.suggest_int("channels", 16, 64, step=16)
        trial.set_user_attr(ATTR_WORKER, worker)
        numbers[who] = trial.number
    dead = study.trial(numbers["dead"])

    assert study.recover_interrupted() == [numbers["dead"]]
    recovered = study.trial(numbers["dead"])
    assert recovered.state == TrialState.FAIL and recovered.user_attrs[ATTR_STATUS] == "interrupted"
    assert recovered.user_attrs["reason"] == "interrupted: the sweep process ended during this trial"
    assert {t.number for t in study.view().running()} == {numbers["alive"], numbers["elsewhere"]}  # live workers untouched
    (waiting,) = study.trials((TrialState.WAITING,))
    assert waiting.user_attrs[ATTR_RETRY_OF] == numbers["dead"]
    assert study.recover_interrupted() == []  # nothing twice
    assert numbers["dead"] not in {t.number for t in study.view().counted()}  # re-run, so not counted
    retry = study.study.ask()  # the next claim takes the queued retry, with the same values
    assert retry.number == waiting.number and retry.user_attrs[ATTR_RETRY_OF] == numbers["dead"]
    assert retry.suggest_int("channels", 16, 64, step=16) == dead.params["channels"]


def test_a_trial_another_process_already_ended_is_not_claimed_again(tmp_path):
    study = SweepStudy.open("claim", f"sqlite:///{tmp_path}/optuna.db", ["minimize"], seed=0)
    trial = study.study.ask()
    assert study.interrupt(trial.number, "interrupted: first")
    assert not study.interrupt(trial.number, "interrupted: second")  # the state change was the claim
    assert study.trial(trial.number).user_attrs["reason"] == "interrupted: first"


def test_a_study_opened_for_another_objective_is_refused(tmp_path):
    SweepStudy.open("dirs", f"sqlite:///{tmp_path}/optuna.db", ["minimize"], seed=0)
    with pytest.raises(SpecError, match="optimises \\['minimize'\\], but the search space asks for \\['minimize', 'minimize'\\]"):
        SweepStudy.open("dirs", f"sqlite:///{tmp_path}/optuna.db", ["minimize", "minimize"], seed=0)
    assert optuna.load_study(study_name="dirs", storage=f"sqlite:///{tmp_path}/optuna.db").directions == [optuna.study.StudyDirection.MINIMIZE]


def test_a_study_opened_with_scores_of_another_n_is_refused(tmp_path):
    """Resumed with another fid_samples or fidelity.samples, its old and new scores would be ranked side by side."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    SweepStudy.open("n", url, ["minimize"], seed=0, metric_names=["fid_128"], rung_keys=["fid_64", "fid_128"])
    SweepStudy.open("n", url, ["minimize"], seed=0, metric_names=["fid_128"], rung_keys=["fid_64", "fid_128"])  # resumed alike: fine
    SweepStudy.open("n", url, ["minimize"], seed=0)  # a reader (calibrate, export) names nothing
    with pytest.raises(SpecError, match="scores fid_128, but the search space asks for fid_200 .*use a new study_name"):
        SweepStudy.open("n", url, ["minimize"], seed=0, metric_names=["fid_200"], rung_keys=["fid_200", "fid_200"])
    with pytest.raises(SpecError, match="ranks its rungs by fid_64, fid_128, but the search space asks for fid_128, fid_128 .*use a new study_name"):
        SweepStudy.open("n", url, ["minimize"], seed=0, metric_names=["fid_128"], rung_keys=["fid_128", "fid_128"])
    study = optuna.load_study(study_name="n", storage=url)
    assert study.metric_names == ["fid_128"] and study.user_attrs["rung_keys"] == ["fid_64", "fid_128"]  # left as they were


# -- the whole life, without a backend ------------------------------------------------------------


def test_a_trials_whole_life_runs_without_either_backend(spec, tmp_path, monkeypatch):
    """prepare -> begin -> run -> finish, driven as both backends drive it (TrialLifecycle.drive),
    with no backend: a real trial process, the study and MLflow written; then the same values
    again (a duplicate: not trained, the result reused) and a configuration over the budget
    (rejected by the gate without a training step)."""
    from rich.console import Console

    from dicesearch.sweep.lifecycle.progress import TrialProgress
    from dicesearch.sweep.lifecycle.trial import TrialLifecycle
    from dicesearch.sweep.space.proposal import Proposal

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    digits = spec.model_copy(update={"input": spec.input.model_copy(update={"channels": 1, "num_classes": 10})})
    study = SweepStudy.open("life", f"sqlite:///{tmp_path}/optuna.db", ["minimize"], seed=0)
    mirror = MlflowMirror(f"sqlite:///{tmp_path}/mlflow.db", "life", "space.yaml")
    mirror.start_sweep({"study": "life"}, "")
    console = Console(file=open("/dev/null", "w"))
    budget = Budget(train_steps=3, batch_size=4, fid_samples=4, sampling_steps=2, report_every=1)
    settings = TrialSettings(
        data=DigitsSpec(resolution=8), budget=budget, memory=MemoryBudget(budget_gb=24), memory_batch=4, seed=7,
        metric_keys=("fid_4",), directions=("minimize",),
    )  # fmt: skip
    life = TrialLifecycle(study, mirror, console, TrialProgress(console, 3), settings, registry=None)

    def drive(values, budget_gb=None):
        trial = study.study.ask()
        trial.suggest_int("width", values["width"], values["width"])
        if budget_gb is not None:
            life.settings = settings.model_copy(update={"memory": MemoryBudget(budget_gb=budget_gb)})
        ran = []

        def run(candidate):
            ran.append(candidate)
            return life.run(trial.number, candidate, tmp_path / f"trial-{trial.number}")

        return trial.number, life.drive(trial.number, lambda: Proposal(digits, values), run), ran

    first, outcome, ran = drive({"width": 32})
    assert outcome.status == "complete" and len(ran) == 1 and outcome.metrics["fid_4"] > 0
    record = study.trial(first)
    assert record.state == TrialState.COMPLETE and record.value == outcome.metrics["fid_4"]
    assert record.user_attrs["params"] == {"width": 32} and record.user_attrs["spec_yaml"].startswith("# made with dicesearch ")
    assert len(record.user_attrs["loss_curve"]) == 3 and record.user_attrs["metrics"]["params"] > 0  # the gate counted it
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name("dicesearch").experiment_id]) if r.data.tags.get("dicesearch.trial") == str(first)]
    assert run.info.status == "FINISHED" and run.data.metrics["fid_4"] == outcome.metrics["fid_4"]

    second, again, ran = drive({"width": 32})
    assert not ran and again.status == "complete" and again.metrics["fid_4"] == outcome.metrics["fid_4"]
    assert study.trial(second).user_attrs["duplicate_of"] == first

    third, rejected, ran = drive({"width": 48}, budget_gb=1e-6)
    assert not ran and rejected.status == "rejected" and rejected.reason.startswith("rejected: estimated peak training memory")
    assert study.trial(third).state == TrialState.COMPLETE and study.trial(third).constraints[CONSTRAINT] > 0  # infeasible, for the sampler


def test_the_lifecycle_counts_a_spec_once_and_judges_it_against_the_budget_every_time(spec, tmp_path, monkeypatch):
    """A continuation (the paused trial's own spec) is not counted again by the gate: its FLOPs
    and memory are the earlier count's. Whether it fits is judged against the budget as it is."""
    from rich.console import Console

    from dicesearch.sweep.lifecycle.progress import TrialProgress
    from dicesearch.sweep.lifecycle.trial import TrialLifecycle
    from dicesearch.sweep.space.proposal import Proposal

    counted = []
    monkeypatch.setattr(gate, "static_metrics_or_empty", lambda spec, warn: {"params": 10.0})
    monkeypatch.setattr(gate, "estimate_memory", lambda spec, memory, batch: counted.append(spec) or {"memory_estimated_gb": 2.0})
    study = SweepStudy.open("count", f"sqlite:///{tmp_path}/optuna.db", ["minimize"], seed=0)
    console = Console(file=open(os.devnull, "w"))
    budget = Budget(train_steps=3, batch_size=4, fid_samples=4, sampling_steps=2, report_every=1)
    settings = TrialSettings(data=DigitsSpec(resolution=8), budget=budget, memory=MemoryBudget(budget_gb=24), memory_batch=4, seed=7, metric_keys=("fid_4",))
    life = TrialLifecycle(study, MlflowMirror(f"sqlite:///{tmp_path}/mlflow.db", "count", "space.yaml"), console, TrialProgress(console, 3), settings, registry=None)
    narrow = spec.model_copy(update={"input": spec.input.model_copy(update={"channels": 1, "num_classes": 10})})

    def prepared(model_spec):
        return life.prepare(lambda: Proposal(model_spec, {"width": 1}), number=0, check_duplicate=False)

    first, again = prepared(narrow), prepared(narrow)
    assert len(counted) == 1 and again.metrics == first.metrics == {"params": 10.0, "memory_estimated_gb": 2.0}
    assert first.outcome is None and again.outcome is None
    life.settings = settings.model_copy(update={"memory": MemoryBudget(budget_gb=1.0)})
    judged = prepared(narrow)  # the same count, a smaller budget: rejected now
    assert len(counted) == 1 and judged.outcome.status == "rejected" and "2.0 GB" in judged.outcome.reason
    life.settings = settings.model_copy(update={"memory_batch": 8})
    prepared(narrow)  # another batch: counted anew
    other = narrow.model_copy(update={"name": "another-model"})
    prepared(other)
    assert len(counted) == 3


def test_two_worker_threads_assess_at_once_without_mixing_their_module_trees():
    """The gate counts FLOPs and estimates memory in the sweep's worker threads; torch's
    module hooks are process-global, so a count beside an estimate mixed their module trees
    (a warning and no FLOPs, seen once in a default sweep)."""
    from concurrent.futures import ThreadPoolExecutor

    specs = [tiny_spec("dice", channels=16, layout="noise"), tiny_spec("attention", channels=32)]
    alone = [gate.assess(s, MemoryBudget(), 8, print).metrics for s in specs]
    warnings = []
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda s: gate.assess(s, MemoryBudget(), 8, warnings.append).metrics, specs * 5))
    assert warnings == []
    assert together == alone * 5


def _network_already_loaded(queue) -> None:
    """In a trial process: whether the FID network and its eager version were there before any call."""
    from dicesearch.metrics import inception, inception_eager

    queue.put((len(inception._CACHE), inception_eager.eager_inception.cache_info().currsize))


def _in_a_forked_child(target):
    """What ``target(queue)`` puts, run in a process forked from the preloading server as a
    trial's is (skipped where trial processes are spawned)."""
    from dicesearch.sweep.lifecycle.process import trial_context

    context = trial_context()
    if context.get_start_method() != "forkserver":
        pytest.skip("trial processes are spawned here, not forked from a preloading server")
    queue = context.Queue()
    child = context.Process(target=target, args=(queue,))
    child.start()
    result = queue.get(timeout=120)
    child.join()
    return result


def test_trial_processes_fork_with_the_fid_network_loaded():
    """The preloading server loads the default network and builds its eager version once
    (``preload_inception``): a trial process finds both in their caches."""
    loaded, built = _in_a_forked_child(_network_already_loaded)
    assert loaded >= 1 and built >= 1


def _collector_state(queue) -> None:
    import gc

    queue.put((gc.isenabled(), gc.get_freeze_count()))


def test_trial_processes_fork_with_the_servers_objects_frozen_and_the_collector_on():
    """The server imports with the cyclic collector off (``preload_begins``), then freezes what it
    made and turns it back on (``preload_inception``): a forked process collects as ever, and its
    collections skip the server's objects."""
    enabled, frozen = _in_a_forked_child(_collector_state)
    assert enabled
    assert frozen > 100_000  # torch, diffusers, the objective and the network: out of the child's collections
