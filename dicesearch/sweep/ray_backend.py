"""``dicesearch sweep`` with the Ray Tune backend: the same sweep, scheduled by Ray.

Ray Tune drives the loop: ``OptunaSearch`` proposes configurations (the search space's
define-by-run sampling, the same TPE / NSGA-II sampler as the Optuna backend), ASHA stops
trials whose training loss falls behind, and each trial runs as a Ray task with its own
CPUs and (fractional) GPUs, on a local runtime or an existing cluster (``ray_address``).

Per trial, in a Ray worker (:func:`dicesearch_trial`): an invalid configuration is
recorded without a step; the budget gate estimates peak training memory and rejects an
over-budget configuration without training; otherwise ``evaluate`` runs in a child
process (:func:`dicesearch.sweep.worker.run_trial`, as in the Optuna backend: past
``trial_time_limit_s`` the child is terminated whether or not it still reports, so a hung
trial ends as ``timeout``; a child that dies is ``crashed``), its progress is reported to
Tune for ASHA, and the outcome (complete, failed with the error, timeout, ...) is the
trial's last result. The sample grid travels back as the trial's Tune checkpoint.

On the driver, :class:`_Recorder` (a Tune callback) writes every trial into an Optuna
study in the sweep's storage (the *results study*, same user attributes as the Optuna
backend, so the ranked table, the plots and ``dicesearch export`` work unchanged) and
mirrors it to MLflow through :class:`~dicesearch.sweep.tracking.SweepTracker`.

Resume: Ray keeps the experiment (trials, searcher state) under ``<out>/ray/<study>``.
Re-running the command restores it with ``Tuner.restore``: finished and errored trials
are kept, unfinished ones run again from the start. In the results study a trial the
dead sweep left RUNNING is marked ``interrupted``; its re-run is a new trial with
``retry_of`` pointing at it, as in the Optuna backend.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console

from dicesearch.errors import SpecError
from dicesearch.spec import dump_spec
from dicesearch.sweep import study as studies
from dicesearch.sweep.load import SearchSpace
from dicesearch.sweep.runner import (
    SweepPaths,
    SweepResult,
    _describe,
    _spec_summary,
    estimate_memory,
    memory_batch,
    objective_metric_names,
    over_budget_reason,
    safe_static_metrics,
    sweep_params,
)
from dicesearch.sweep.tracking import (
    ATTR_CURVE,
    ATTR_METRICS,
    ATTR_PARAMS,
    ATTR_REASON,
    ATTR_SAMPLES,
    ATTR_SPEC,
    ATTR_STATUS,
    SweepTracker,
)

KEY = "dicesearch"  # the config and result entry that carries what dicesearch adds to Ray's
RAY_TRIAL_ATTR = "ray_trial_id"  # results-study user attribute: the Ray trial it records
MARKER = "dicesearch_sweep.json"  # in the Ray experiment folder: what the experiment was started with
_FAILED = ("invalid", "failed", "timeout", "crashed")  # statuses the searcher is told are failures

# The sweep running in this process, by study name. Ray pickles the searcher and the
# callbacks into its experiment folder and unpickles them on restore; they carry only the
# study name and look the live sweep up here, so a restored experiment reports to the
# sweep that restored it (its console, tracker and storage), not to a stale copy.
_ACTIVE: dict[str, RaySweep] = {}


def _active(name: str) -> RaySweep:
    try:
        return _ACTIVE[name]
    except KeyError:
        raise RuntimeError(f"no Ray sweep '{name}' is running in this process") from None


# -- the driver ----------------------------------------------------------------------------------


class RaySweep:
    def __init__(self, space: SearchSpace, paths: SweepPaths, console: Console | None = None, device: str = "auto"):
        self.space, self.paths, self.device = space, paths, device
        self.console = console or Console()
        sweep = space.sweep
        self.name = sweep.resolved_study_name
        self.directions = sweep.objective.directions
        self.metric_keys = objective_metric_names(space)
        self.tracker = SweepTracker(paths.tracking_uri, self.name, space.source)
        self.experiment_dir = paths.out_dir / "ray" / self.name
        self.study: optuna.Study | None = None
        self._lock = threading.Lock()
        self._numbers: dict[str, int] = {}  # Ray trial id -> results-study trial number of its current run
        self._kept: set[str] = set()  # Ray trials re-run although their result was already recorded
        self._curves: dict[str, list[list[float]]] = {}
        self._ran = 0

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> SweepResult:
        started = self._started_with()
        started_ray = self._connect()
        try:
            self._check_resources(local=started_ray and not (self.space.sweep.ray_address or os.environ.get("RAY_ADDRESS")))
            return self._run(started)
        finally:
            if started_ray:
                import ray

                ray.shutdown()

    def _run(self, started: dict[str, int] | None) -> SweepResult:
        sweep = self.space.sweep
        self.study = studies.open_study(self.name, self.paths.storage_url, self.directions, sweep.seed, optuna.pruners.NopPruner())
        result = SweepResult(self.study)
        result.recovered = studies.recover_interrupted(self.study, requeue=False)
        if result.recovered:
            self.console.print(f"resuming: trial(s) {', '.join(map(str, result.recovered))} were interrupted and will run again")
        done = len(studies.counted_trials(self.study))
        if done:
            self.console.print(f"resuming study '{self.name}': {done} of {sweep.trials} trials already finished")
        source = Path(self.space.source)
        self.tracker.start_sweep(self._sweep_params(), source.read_text() if source.is_file() else "")
        self.tracker.reconcile(self.study.get_trials(deepcopy=False))
        _ACTIVE[self.name] = self
        try:
            # a restored experiment runs what it was started with; a new one what the study still lacks
            expected = started["num_samples"] if started else sweep.trials - done
            grid = self._fit(started is not None, expected)
            if grid is not None:
                self._catch_up(grid)
                if grid.num_terminated + grid.num_errors < expected:
                    raise KeyboardInterrupt  # Tune caught Ctrl-C and ended the experiment early
        except KeyboardInterrupt:
            self._mark_interrupted("interrupted: the sweep was stopped (Ctrl-C) during this trial")
            self.tracker.reconcile(self.study.get_trials(deepcopy=False))
            self.tracker.end_sweep("KILLED")
            raise
        except BaseException:
            self._mark_interrupted("interrupted: the sweep stopped on an error during this trial")
            self.tracker.reconcile(self.study.get_trials(deepcopy=False))
            self.tracker.end_sweep("FAILED")
            raise
        finally:
            _ACTIVE.pop(self.name, None)
        self.tracker.reconcile(self.study.get_trials(deepcopy=False))
        result.ran = self._ran
        result.mlflow_failures = self.tracker.failures
        return result

    def _started_with(self) -> dict[str, int] | None:
        """What the Ray experiment of this study was started with, if there is one to restore."""
        from ray.tune import Tuner

        if not Tuner.can_restore(str(self.experiment_dir)):
            return None
        marker = self.experiment_dir / MARKER
        trials = self.space.sweep.trials
        started = json.loads(marker.read_text()) if marker.is_file() else {"trials": trials, "num_samples": trials}
        if started["trials"] != trials:
            raise SpecError(
                f"{self.space.source}: trials: this Ray sweep was started with {started['trials']} trials and Ray Tune "
                f"cannot change that on resume; keep trials: {started['trials']}, or set a new study_name for {trials}"
            )
        return started

    def _connect(self) -> bool:
        """Connect to ``ray_address`` or start a local runtime; False if Ray was already up."""
        import logging

        import ray

        if ray.is_initialized():
            return False
        address = self.space.sweep.ray_address or os.environ.get("RAY_ADDRESS")  # Ray's own convention
        where = f"{self.space.source}: ray_address" if self.space.sweep.ray_address else "the RAY_ADDRESS environment variable"
        quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address:
            _check_reachable(address, where)
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise SpecError(
                    f"{where}: cannot join the Ray cluster at {address} ({_first_line(exc)}); "
                    "check that `ray status` works there, or remove the address to run on a local runtime"
                ) from None
        else:
            # all of this machine's CPUs and GPUs; a small object store: trials exchange only
            # configurations and metrics, never tensors
            ray.init(include_dashboard=False, object_store_memory=256 * 2**20, **quiet)
        return True

    def _check_resources(self, local: bool) -> None:
        """Requests that cannot work, said now: a trial asking for more than the runtime has would
        wait forever, and a CUDA trial without a GPU share would fail every time."""
        import ray

        sweep = self.space.sweep
        total = ray.cluster_resources()
        if sweep.gpus_per_trial == 0 and self.device.startswith("cuda"):
            raise SpecError(
                f"{self.space.source}: gpus_per_trial: 0 hides every GPU from the trials, but --device {self.device} asks for one; "
                "set gpus_per_trial (1, or 0.5 for two trials per GPU)"
            )
        if sweep.gpus_per_trial == 0 and total.get("GPU", 0) and self.device == "auto":
            self.console.print("[yellow]note:[/] gpus_per_trial is 0, so trials train on CPUs although the Ray runtime has GPUs", highlight=False)
        short = [
            f"{field}: {asked:g} but the Ray runtime has {total.get(kind, 0):g} {kind}s"
            for field, kind, asked in (("cpus_per_trial", "CPU", sweep.cpus_per_trial), ("gpus_per_trial", "GPU", sweep.gpus_per_trial))
            if asked > total.get(kind, 0)
        ]
        if not short:
            return
        if local:
            raise SpecError(f"{self.space.source}: {'; '.join(short)}; ask for less per trial, or set ray_address to a cluster that has them")
        self.console.print(f"[yellow]warning:[/] {'; '.join(short)} now; trials wait until the cluster grows", highlight=False)

    def _fit(self, restore: bool, num_samples: int):
        from ray.tune import Tuner

        trainable = self._trainable()
        if restore:
            self.console.print(f"restoring the Ray experiment in {self.experiment_dir}")
            # errored trials stay failed (a Ray worker died under them): never retried, as in the Optuna backend
            tuner = Tuner.restore(str(self.experiment_dir), trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)
            with _tune_environment():
                return tuner.fit()
        if num_samples <= 0:
            return None
        sweep = self.space.sweep
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory"
        try:
            searcher = _Searcher(
                _Sampler(self.name),
                metric=self.metric_keys if len(self.metric_keys) > 1 else self.metric_keys[0],
                mode=[d[:3] for d in self.directions] if len(self.directions) > 1 else self.directions[0][:3],
                sampler=studies.make_sampler(self.directions, sweep.seed),
            )
        finally:
            optuna.logging.set_verbosity(verbosity)
        tuner = Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=self._scheduler(),
                num_samples=num_samples,
                max_concurrent_trials=sweep.parallelism,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=self.name,
                storage_path=str(self.experiment_dir.parent),
                callbacks=[_Recorder(self.name)],
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        (self.experiment_dir / MARKER).write_text(json.dumps({"trials": sweep.trials, "num_samples": num_samples}))
        with _tune_environment():
            return tuner.fit()

    def _trainable(self):
        sweep = self.space.sweep
        context = {
            "data": sweep.data.model_dump(mode="json"),
            "budget": sweep.budget.model_dump(mode="json"),
            "memory": sweep.memory.model_dump(mode="json"),
            "memory_batch": memory_batch(sweep),
            "seed": sweep.seed,
            "device": self.device,
            "threads": max(1, int(sweep.cpus_per_trial)),
            "time_limit_s": sweep.trial_time_limit_s,
            "metric_keys": self.metric_keys,
        }
        resources = {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial}
        return tune.with_resources(tune.with_parameters(dicesearch_trial, context=context), resources)

    def _scheduler(self):
        """ASHA on the training loss; none for ``pruner: none`` or several objectives (as Optuna)."""
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

        sweep = self.space.sweep
        budget = sweep.budget
        grace = max(budget.report_every, budget.train_steps // 3)  # as the Optuna backend's median pruner warms up
        if sweep.pruner == "none" or len(self.directions) > 1 or grace >= budget.train_steps:
            return FIFOScheduler()
        # rungs at grace * 3^k below the last step: stopping a trial whose training is done
        # would only throw away its evaluation
        return ASHAScheduler(
            time_attr="step", metric="loss", mode="min", grace_period=grace, max_t=budget.train_steps - 1, reduction_factor=3, stop_last_trials=False
        )

    # -- trials, as the callback sees them (driver side) ----------------------------------------------

    def _trial_started(self, trial) -> None:
        with self._lock:
            if trial.trial_id in self._numbers:
                return
            info = trial.config.get(KEY, {})
            values = _params(trial.config)
            records = [t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get(RAY_TRIAL_ATTR) == trial.trial_id]
            recorded = [t for t in records if t.state.is_finished() and t.user_attrs.get(ATTR_STATUS) != "interrupted"]
            if recorded:
                # the trial ended before Ray's last experiment snapshot caught up: keep the first result
                self._numbers[trial.trial_id] = recorded[0].number
                self._kept.add(trial.trial_id)
                return
            user_attrs = {studies.WORKER_ATTR: studies.this_worker(), RAY_TRIAL_ATTR: trial.trial_id, ATTR_PARAMS: values}
            if info.get("spec_yaml"):
                user_attrs[ATTR_SPEC] = info["spec_yaml"]
            retried = records[-1] if records else self._interrupted_like(values)
            if retried is not None:
                user_attrs["retry_of"] = retried.number
            distributions = {k: optuna.distributions.json_to_distribution(v) for k, v in info.get("distributions", {}).items()}
            self.study.add_trial(
                optuna.trial.create_trial(state=TrialState.RUNNING, params=values, distributions=distributions, user_attrs=user_attrs)
            )
            number = max(t.number for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get(RAY_TRIAL_ATTR) == trial.trial_id)
            self._numbers[trial.trial_id] = number
        if info.get("spec_yaml"):
            self.tracker.start_trial(number, values, info.get("summary", {}), info["spec_yaml"])
            self.console.print(f"trial {number}: {_describe(values)}", highlight=False)

    def _interrupted_like(self, values: dict[str, Any]):
        """An interrupted trial with these values that no trial retries yet: Ray re-created it
        under a new id because its last experiment snapshot predates the trial."""
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        return next(
            (t for t in trials if t.user_attrs.get(ATTR_STATUS) == "interrupted" and t.params == values and t.number not in retried),
            None,
        )

    def _trial_progress(self, trial, result: dict) -> None:
        if result.get(KEY, {}).get("final") or "step" not in result:
            return
        step, loss = int(result["step"]), float(result["loss"])
        self._curves.setdefault(trial.trial_id, []).append([step, loss])
        number = self._numbers.get(trial.trial_id)
        if number is not None and trial.trial_id not in self._kept:
            self.tracker.log_loss(number, step, loss)

    def _trial_completed(self, trial) -> None:
        if trial.trial_id not in self._numbers:
            self._trial_started(trial)  # the start was missed (a callback failure): record it now
        if trial.trial_id in self._kept:
            return
        result = trial.last_result or {}
        outcome = result.get(KEY, {})
        if outcome.get("final"):
            metrics = dict(outcome.get("metrics") or {})
            curve = outcome.get("curve") or []
            status, reason = outcome["status"], outcome.get("reason", "")
            samples = self._fetch_samples(trial) if status == "complete" else None
            extra = {"traceback": outcome["traceback"]} if outcome.get("traceback") else {}
        else:  # stopped between two progress reports: ASHA decided it is not worth finishing
            metrics = dict(outcome.get("metrics") or {})
            curve = self._curves.get(trial.trial_id, [])
            status, reason, samples, extra = "pruned", f"pruned by ASHA at step {result.get('step', 0)}", None, {}
        self._record(trial.trial_id, status, reason, metrics, curve, samples, extra)

    def _trial_errored(self, trial) -> None:
        """A Ray-level failure: the trainable raised outside the trial process, or its worker died."""
        if trial.trial_id not in self._numbers:
            self._trial_started(trial)
        if trial.trial_id in self._kept:
            return
        error_file = Path(trial.error_file) if trial.error_file else None
        text = error_file.read_text() if error_file and error_file.is_file() else ""
        status, reason = _ray_error_reason(text)
        metrics = dict(((trial.last_result or {}).get(KEY) or {}).get("metrics") or {})
        self._record(trial.trial_id, status, reason, metrics, self._curves.get(trial.trial_id, []), None, {"traceback": text[-4000:]})

    def _record(self, trial_id: str, status: str, reason: str, metrics, curve, samples: str | None, extra: dict) -> None:
        """Finish the results-study trial of Ray trial ``trial_id`` and mirror it to MLflow."""
        with self._lock:
            number = self._numbers[trial_id]
            frozen = self._frozen(number)
            if frozen.state.is_finished():
                return
            storage = self.study._storage
            attrs = {ATTR_METRICS: metrics, ATTR_CURVE: curve, **extra}
            if samples:
                attrs[ATTR_SAMPLES] = samples
            if status == "complete":
                missing = [k for k in self.metric_keys if not _finite(metrics.get(k))]
                if missing:
                    status, reason = "failed", f"failed: the run did not produce {', '.join(missing)}"
            attrs[ATTR_STATUS] = status
            if status != "complete":
                attrs[ATTR_REASON] = reason
            for key, value in attrs.items():
                storage.set_trial_user_attr(frozen._trial_id, key, value)
            if status == "complete":
                values = [float(metrics[k]) for k in self.metric_keys]
                self.study.tell(number, values if len(values) > 1 else values[0])
            else:
                self.study.tell(number, state=TrialState.PRUNED if status in ("pruned", "rejected") else TrialState.FAIL)
            self._ran += 1
        self.tracker.finish_trial(self._frozen(number))
        if status == "complete":
            scores = ", ".join(f"{k} {metrics[k]:.4g}" for k in self.metric_keys)
            self.console.print(f"trial {number}: {scores} ({metrics.get('wall_seconds', 0):.0f} s)", highlight=False)
        else:
            self.console.print(f"trial {number}: {reason}", highlight=False, style="yellow")

    def _frozen(self, number: int):
        return next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)

    def _fetch_samples(self, trial) -> str | None:
        """Copy the sample grid from the trial's checkpoint to ``<out>/trial-<n>/samples.png``."""
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return None
        target = self.paths.out_dir / f"trial-{self._numbers[trial.trial_id]}" / "samples.png"
        with checkpoint.as_directory() as folder:
            source = Path(folder) / "samples.png"
            if not source.is_file():
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return str(target)

    def _catch_up(self, grid) -> None:
        """Record Ray trials that ended without the callback recording them (its failures)."""
        recorded = {
            t.user_attrs.get(RAY_TRIAL_ATTR)
            for t in self.study.get_trials(deepcopy=False)
            if t.state.is_finished() and t.user_attrs.get(ATTR_STATUS) != "interrupted"
        }
        for result in grid:
            trial_id = (result.metrics or {}).get("trial_id")
            if trial_id is not None and trial_id not in recorded and (result.metrics or {}).get(KEY, {}).get("final"):
                self._trial_completed(_EndedTrial(trial_id, result))

    def _mark_interrupted(self, reason: str) -> None:
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get(studies.WORKER_ATTR) != studies.this_worker():
                continue
            self.study._storage.set_trial_user_attr(trial._trial_id, ATTR_STATUS, "interrupted")
            self.study._storage.set_trial_user_attr(trial._trial_id, ATTR_REASON, reason)
            self.study.tell(trial.number, state=TrialState.FAIL)

    def _sweep_params(self) -> dict[str, Any]:
        sweep = self.space.sweep
        return {
            **sweep_params(sweep),
            "ray_address": sweep.ray_address or "local",
            "cpus_per_trial": sweep.cpus_per_trial,
            "gpus_per_trial": sweep.gpus_per_trial,
            "scheduler": type(self._scheduler()).__name__,
        }


class _EndedTrial:
    """A Ray ``Result`` dressed as the parts of a Tune ``Trial`` the recorder reads."""

    def __init__(self, trial_id: str, result):
        self.trial_id = trial_id
        self.config = result.config or {}
        self.last_result = result.metrics or {}
        self.checkpoint = result.checkpoint


# -- what Ray pickles: the sampler, the searcher and the callback ----------------------------------------


class _Sampler:
    """OptunaSearch's define-by-run function: the search space's own sampling.

    Returns the extras the trial needs besides the sampled values: the resolved spec (or
    why the combination is invalid, so the trial records it instead of the searcher
    crashing) and the parameter distributions (for the results study).
    """

    def __init__(self, name: str):
        self.name = name

    def __call__(self, trial) -> dict[str, Any]:
        sweep = _active(self.name)
        try:
            spec, _ = sweep.space.sample(trial)
        except SpecError as exc:
            return {KEY: {"invalid": f"invalid configuration: {exc}", "distributions": _distributions(trial)}}
        return {KEY: {"spec_yaml": dump_spec(spec), "summary": _spec_summary(spec), "distributions": _distributions(trial)}}


class _Searcher(OptunaSearch):
    """OptunaSearch fed by the trial's final result only.

    Progress results carry the training loss (for ASHA) with the objective metrics as None;
    Optuna's sampler learns from final values, so they are not reported to it. A trial that
    failed (rather than being rejected or stopped early) is told as failed.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        status = ((result or {}).get(KEY) or {}).get("status")
        super().on_trial_complete(trial_id, result, error=error or status in _FAILED)


class _Recorder(tune.Callback):
    """Driver-side Tune callback: every trial into the results study and MLflow. Never raises."""

    def __init__(self, name: str):
        self.name = name

    def _guard(self, what: str, call) -> None:
        try:
            call(_active(self.name))
        except Exception as exc:  # recording must never stop the experiment; _catch_up fills gaps
            warnings.warn(f"could not record a trial's {what} ({type(exc).__name__}: {exc}); the sweep goes on", stacklevel=2)

    def on_trial_start(self, iteration, trials, trial, **info):
        def start(sweep):
            sweep._curves[trial.trial_id] = []
            sweep._trial_started(trial)

        self._guard("start", start)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._guard("progress", lambda sweep: sweep._trial_progress(trial, result))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._guard("result", lambda sweep: sweep._trial_completed(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._guard("error", lambda sweep: sweep._trial_errored(trial))


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


# -- one trial (runs in a Ray worker) -------------------------------------------------------------------


def dicesearch_trial(config: dict[str, Any], context: dict[str, Any]) -> None:
    """Gate, train and score one configuration; the last result reported is its outcome."""
    import tempfile

    import yaml

    from dicesearch.spec import parse_spec
    from dicesearch.sweep.space import MemoryBudget
    from dicesearch.sweep.worker import run_trial

    info = config.get(KEY, {})
    keys = context["metric_keys"]
    blank = dict.fromkeys(keys)  # Tune wants the searcher's metrics in every result
    state: dict[str, Any] = {"metrics": {}, "loss": None}

    def finish(status: str, reason: str = "", curve=(), traceback: str | None = None, samples: str | None = None) -> None:
        metrics = state["metrics"]
        result = {**blank, "loss": state["loss"]}
        if status == "complete":
            result.update({k: metrics.get(k) for k in keys})
        result[KEY] = {"final": True, "status": status, "reason": reason, "metrics": metrics, "curve": [list(p) for p in curve]}
        if traceback:
            result[KEY]["traceback"] = traceback[-4000:]
        checkpoint = tune.Checkpoint.from_directory(str(Path(samples).parent)) if samples else None
        tune.report(result, checkpoint=checkpoint)

    if info.get("invalid"):
        finish("invalid", info["invalid"])
        return
    spec = parse_spec(yaml.safe_load(info["spec_yaml"]), "trial spec")
    memory = MemoryBudget.model_validate(context["memory"])
    state["metrics"] = {**safe_static_metrics(spec, warnings.warn), **estimate_memory(spec, memory, context["memory_batch"])}
    reason = over_budget_reason(state["metrics"], memory, context["memory_batch"])
    if reason:
        finish("rejected", reason)
        return

    def progress(step: int, loss: float) -> bool:
        state["loss"] = loss
        tune.report({**blank, "loss": loss, "step": step, KEY: {"metrics": state["metrics"]}})
        return False  # ASHA stops a trial by ending its Ray task, not by answering here

    with tempfile.TemporaryDirectory(prefix="dicesearch-trial-") as workdir:
        payload = {
            "spec_yaml": info["spec_yaml"],
            "data": context["data"],
            "budget": context["budget"],
            "seed": context["seed"],
            "workdir": workdir,
            "device": context["device"],
            "threads": context["threads"],
        }
        outcome = run_trial(payload, progress, time_limit_s=context["time_limit_s"])
        state["metrics"]["wall_seconds"] = outcome.wall_seconds
        evaluation = outcome.evaluation or {}
        if outcome.status == "complete":
            state["metrics"].update(evaluation.get("metrics", {}))
        finish(outcome.status, outcome.reason, outcome.loss_curve, evaluation.get("traceback"), evaluation.get("samples_png"))


# -- helpers ---------------------------------------------------------------------------------------------


def _params(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != KEY}


def _distributions(trial) -> dict[str, str]:
    return {k: optuna.distributions.distribution_to_json(d) for k, d in trial.distributions.items()}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _ray_error_reason(text: str) -> tuple[str, str]:
    """(status, reason) from the error file Ray writes for a failed trial."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Failure #")]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)(\(\w+\))?: ", line)]
    if re.search(r"actor died|worker process has died|ActorDiedError|WorkerCrashedError", text):
        detail = re.search(r"Worker exit detail: ([^.]*)", text)
        return "crashed", "crashed: the Ray worker running the trial died" + (f" ({detail.group(1)})" if detail else "")
    summary = (errors or lines or ["Ray left no error text"])[-1][:300]
    return "failed", f"error: the Ray trial failed ({summary})"


@contextlib.contextmanager
def _tune_environment():
    """Two Tune settings that only exist as environment variables, read when ``fit`` starts.

    ``RAY_AIR_NEW_OUTPUT=0``: Tune's newer console output prints an experiment banner even
    at verbose=0; the sweep prints its own trial lines. ``TUNE_GLOBAL_CHECKPOINT_S``: Tune
    snapshots the experiment at most every 10 s by default; a trial that ends in that window
    before a kill runs again on resume (its first result is kept), so snapshot more often.
    """
    settings = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_GLOBAL_CHECKPOINT_S": os.environ.get("TUNE_GLOBAL_CHECKPOINT_S", "2")}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_reachable(address: str, where: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, not minutes (ray.init retries an unreachable address for a long time)."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SpecError(f"{where}: '{address}' is not host:port (or ray://host:port, or auto); e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SpecError(
            f"{where}: no Ray cluster answers at {address} ({exc.strerror or exc}); start one there with "
            "`ray start --head`, fix the address, or remove it to run on a local runtime"
        ) from None
