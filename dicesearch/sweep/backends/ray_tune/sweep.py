"""``dicesearch sweep`` with the Ray Tune backend: the same sweep, scheduled by Ray.

Ray Tune drives the loop: ``OptunaSearch`` proposes configurations (the search space's
define-by-run sampling, the same TPE / NSGA-II sampler as the Optuna backend), ASHA stops
trials whose training loss falls behind, and each trial runs as a Ray task with its own
CPUs and (fractional) GPUs, on a local runtime or an existing cluster (``ray_address``,
:mod:`dicesearch.sweep.backends.ray_tune.cluster`).

The trial lifecycle (:mod:`dicesearch.sweep.lifecycle.trial`) is split where Ray splits the
work: *prepare* (the proposal, a duplicate, the budget gate) runs in the searcher's
define-by-run function on the driver; *run* in a Ray worker
(:func:`~dicesearch.sweep.backends.ray_tune.trainable.run_ray_trial`), its progress reported
to Tune for ASHA or the rung scheduler, its outcome the trial's last result; *begin* and
*finish* on the driver, in :class:`~dicesearch.sweep.backends.ray_tune.results.ResultsRecorder`
(a Tune callback), which records every trial in the sweep's Optuna study and mirrors it to
MLflow, so the ranked table, the plots and ``dicesearch export`` work unchanged.

Resume: Ray keeps the experiment (trials, searcher state) under ``<out>/ray/<study>``.
Re-running the command restores it with ``Tuner.restore``: finished and errored trials
are kept, unfinished ones run again from the start. In the results study a trial the
dead sweep left RUNNING is marked ``interrupted``; its re-run is a new trial with
``retry_of`` pointing at it, as in the Optuna backend.
"""

from __future__ import annotations

import contextlib
import json
import pickletools
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console

from dicesearch.errors import SpecError
from dicesearch.files import inside
from dicesearch.numbers import finite
from dicesearch.speed import collector
from dicesearch.sweep.backends.ray_tune import cluster as ray_cluster
from dicesearch.sweep.backends.ray_tune.results import RayResults, ResultsRecorder
from dicesearch.sweep.backends.ray_tune.trainable import KEY, SampledConfig, TrialReport, run_ray_trial, rung_root
from dicesearch.sweep.lifecycle import rungs
from dicesearch.sweep.lifecycle.messages import TrialSettings
from dicesearch.sweep.lifecycle.session import SweepResult, SweepSession, sweep_params
from dicesearch.sweep.lifecycle.trial import prepare
from dicesearch.sweep.space.samplers import make_sampler
from dicesearch.sweep.space.search_space import load_search_space
from dicesearch.sweep.store.locations import SweepLocations
from dicesearch.sweep.store.schema import is_failure
from dicesearch.sweep.store.studies import SweepStudy

MARKER = "dicesearch_sweep.json"  # in the Ray experiment folder: what the experiment was started with


class RaySweep:
    """``space``: where the trials come from (see the Optuna backend); ``load(path)`` opens it
    again from its file in another process (a module-level function Ray can pickle)."""

    def __init__(self, space, locations: SweepLocations, console: Console | None = None, device: str = "auto", load=load_search_space):
        self.space, self.locations, self.device, self.load = space, locations, device, load
        self.config = space.config
        self.settings = TrialSettings.for_sweep(self.config, device, threads=max(1, int(self.config.cpus_per_trial)))
        self.session = SweepSession(space, locations, console, self.settings)
        self.console = self.session.console
        self.name = self.session.name
        self.experiment_dir = inside(locations.out_dir / "ray", self.name)  # the study name never leaves the folder
        self.source = str(Path(space.source).absolute())
        self.recorder = ResultsRecorder(self.source, load, locations, self.settings, self._sweep_params(), self.console.width)

    @property
    def mirror(self):
        return self.session.mirror

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> SweepResult:
        started = self._started_with()
        started_ray = ray_cluster.connect(self.config, self.space.source)
        try:
            local = started_ray and not ray_cluster.cluster_address(self.config)
            ray_cluster.check_resources(self.config, self.space.source, self.device, self.console, local)
            return self._run(started)
        finally:
            if started_ray:
                import ray

                ray.shutdown()

    def _run(self, started: dict[str, int] | None) -> SweepResult:
        result = self.session.open(self._sweep_params(), requeue=False)
        collector.resume()  # the start is over (dicesearch.speed.collector)
        done = len(self.session.study.view().counted())
        try:
            # a restored experiment runs what it was started with; a new one what the study still lacks
            expected = started["num_samples"] if started else self.config.trials - done
            grid = self._fit(started is not None, expected)
            if grid is not None:
                RayResults(self.session).catch_up(grid)
                if grid.num_terminated + grid.num_errors < expected:
                    raise KeyboardInterrupt  # Tune caught Ctrl-C and ended the experiment early
        except KeyboardInterrupt:
            self.session.interrupt_all_here("interrupted: the sweep was stopped (Ctrl-C) during this trial")
            self.session.stopped("KILLED")
            raise
        except BaseException:
            self.session.interrupt_all_here("interrupted: the sweep stopped on an error during this trial")
            self.session.stopped("FAILED")
            raise
        result = self.session.finish(result)
        result.mlflow_failures += self.recorder.mlflow_failures
        return result

    def _started_with(self) -> dict[str, int] | None:
        """What the Ray experiment of this study was started with, if there is one to restore."""
        from ray.tune import Tuner

        if not Tuner.can_restore(str(self.experiment_dir)):
            return None
        marker = self.experiment_dir / MARKER
        trials = self.config.trials
        started = json.loads(marker.read_text()) if marker.is_file() else {"trials": trials, "num_samples": trials}
        if started["trials"] != trials:
            raise SpecError(
                f"{self.space.source}: trials: this Ray sweep was started with {started['trials']} trials and Ray Tune "
                f"cannot change that on resume; keep trials: {started['trials']}, or set a new study_name for {trials}"
            )
        return started

    def _fit(self, restore: bool, num_samples: int):
        from ray.tune import Tuner

        trainable = self._trainable()
        if restore:
            self.console.print(f"restoring the Ray experiment in {self.experiment_dir}")
            discard_unreadable_searcher_state(self.experiment_dir)
            # errored trials stay failed (a Ray worker died under them): never retried, as in the Optuna backend
            tuner = Tuner.restore(str(self.experiment_dir), trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)
            with _tune_environment():
                return tuner.fit()
        if num_samples <= 0:
            return None
        keys, directions = self.config.metric_keys, self.session.directions
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory"
        try:
            searcher = _Searcher(
                _Sampler(self.source, self.load, self.locations, self.settings),
                metric=keys if len(keys) > 1 else keys[0],
                mode=[d[:3] for d in directions] if len(directions) > 1 else directions[0][:3],
                sampler=make_sampler(directions, self.config.seed),
                points_to_evaluate=self._fixed(),
            )
        finally:
            optuna.logging.set_verbosity(verbosity)
        tuner = Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=self._scheduler(),
                num_samples=num_samples,
                max_concurrent_trials=self.config.parallelism,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=self.experiment_dir.name,
                storage_path=str(self.experiment_dir.parent),
                callbacks=[self.recorder],
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        (self.experiment_dir / MARKER).write_text(json.dumps({"trials": self.config.trials, "num_samples": num_samples}))
        with _tune_environment():
            return tuner.fit()

    def _fixed(self) -> list[dict[str, Any]] | None:
        """A comparison's configurations the study has not finished (a search space has none)."""
        fixed = getattr(self.space, "fixed", None)
        if fixed is None:
            return None
        done = [t.params for t in self.session.study.view().counted()]
        return [params for params in fixed() if params not in done] or None

    def _trainable(self):
        resources = {"cpu": self.config.cpus_per_trial, "gpu": self.config.gpus_per_trial}
        run_root = str(rung_root(self.locations.out_dir, self.name)) if self.config.fidelity else None
        return tune.with_resources(tune.with_parameters(run_ray_trial, settings=self.settings, run_root=run_root), resources)

    def _scheduler(self):
        """The rung rule with fidelity rungs; else ASHA on the training loss; none for ``pruner: none``
        or several objectives (as Optuna)."""
        from ray.tune.schedulers import ASHAScheduler

        if self.config.fidelity:
            return RungScheduler(self.config.fidelity.keep, self.session.directions[0], self.config.rung_keys)
        budget = self.config.budget
        steps = budget.train_steps * self.config.replicates  # replicate r reports as r * train_steps + step
        grace = max(budget.report_every, steps // 3)  # as the Optuna backend's median pruner warms up
        if self.config.pruner == "none" or len(self.session.directions) > 1 or grace >= steps:
            return FIFOScheduler()
        # rungs at grace * 3^k below the last step: stopping a trial whose training is done
        # would only throw away its evaluation
        return ASHAScheduler(
            time_attr="step", metric="loss", mode="min", grace_period=grace, max_t=steps - 1, reduction_factor=3, stop_last_trials=False
        )

    def _sweep_params(self) -> dict[str, Any]:
        config = self.config
        return {
            **sweep_params(config),
            "ray_address": config.ray_address or "local",
            "cpus_per_trial": config.cpus_per_trial,
            "gpus_per_trial": config.gpus_per_trial,
            "scheduler": type(self._scheduler()).__name__,
        }


# -- what Ray pickles with the searcher -----------------------------------------------------------------


class _Sampler:
    """OptunaSearch's define-by-run function: the lifecycle's *prepare* step on the driver.

    Returns, under :data:`~dicesearch.sweep.backends.ray_tune.trainable.KEY`, the prepared
    candidate (the spec and the gate's counts, or the outcome decided without training:
    invalid, rejected by the gate, or an identical configuration's result) and the
    parameters' distributions (:class:`~dicesearch.sweep.backends.ray_tune.trainable.SampledConfig`).
    Ray pickles it with the searcher; it carries only the source file's path, its loader,
    where the results study is and the trial settings, and opens the source and the study on
    first use in the process that runs it (the driver, or the one that restores the experiment).
    """

    def __init__(self, source: str, load, locations: SweepLocations, settings: TrialSettings):
        self.source, self.load, self.locations, self.settings = source, load, locations, settings
        self._space = None
        self._study: SweepStudy | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_space": None, "_study": None}

    def __call__(self, trial) -> dict[str, Any]:
        if self._space is None:
            self._space = self.load(self.source)
            config = self._space.config
            self._study = SweepStudy.open(config.resolved_study_name, self.locations.storage_url, config.objective.directions, config.seed)
        candidate = prepare(lambda: self._space.propose(trial), self._study, self.settings, self._space.registry, warnings.warn)
        return {KEY: SampledConfig(candidate=candidate, distributions=_all_distributions(trial)).model_dump()}  # what was sampled: known only now


def _all_distributions(trial) -> dict[str, str]:
    return {k: optuna.distributions.distribution_to_json(d) for k, d in trial.distributions.items()}


class _Searcher(OptunaSearch):
    """OptunaSearch fed by the trial's final result only.

    Progress results carry the training loss (for ASHA) with the objective metrics as None;
    Optuna's sampler learns from final values, so they are not reported to it. A trial that
    failed (rather than being rejected or stopped early) is told as failed.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        outcome = TrialReport.of(result).outcome
        super().on_trial_complete(trial_id, result, error=error or (outcome is not None and is_failure(outcome.status)))


class RungScheduler(FIFOScheduler):
    """The stopping form of the rung rules (:func:`dicesearch.sweep.lifecycle.rungs.by_stopping`)
    as a Tune scheduler: a trial whose rung score is not among the best so far at that rung
    is stopped there, from the rung scores of every trial this scheduler has seen."""

    def __init__(self, keep: float, direction: str, keys: tuple[str, ...]):
        super().__init__()
        self.keep, self.direction, self.keys, self.rungs = keep, direction, keys, len(keys)  # keys: the score each rung ranks by
        self.scores: dict[int, dict[str, float]] = {}  # rung index -> Ray trial id -> score

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        """``result`` is flattened by Tune: the rung comes as rung_index, rung_steps, rung_score."""
        if result.get("rung_index") is None or int(result["rung_index"]) + 1 == self.rungs:
            return TrialScheduler.CONTINUE
        index, steps, score = int(result["rung_index"]), int(result["rung_steps"]), result.get("rung_score")
        at_rung = self.scores.setdefault(index, {})  # by index: a compute-matched trial reaches a rung at its own steps
        if finite(score):
            at_rung[trial.trial_id] = float(score)
        decision = rungs.by_stopping(float(score) if finite(score) else None, list(at_rung.values()), index, steps, self.keep, self.direction, self.keys[index])
        return TrialScheduler.CONTINUE if decision.go_on else TrialScheduler.STOP


def discard_unreadable_searcher_state(experiment_dir: Path) -> None:
    """Remove searcher snapshots a kill cut short: Tune restores the newest one and fails the
    whole restore on a truncated file ("Ran out of input"); without it, the one before is used
    (or the searcher starts afresh, and the results study still knows every finished trial)."""
    for pattern in ("searcher-state-*.pkl", "search_gen_state-*.json"):  # both pickles (Tune's ".json" too)
        for path in Path(experiment_dir).glob(pattern):
            if not _whole_pickle(path.read_bytes()):
                path.unlink(missing_ok=True)


def _whole_pickle(data: bytes) -> bool:
    """Whether ``data`` is one pickle stream to its STOP opcode, read without running it (a
    kill cuts the file short; only Tune itself loads its snapshot)."""
    try:
        return any(op.name == "STOP" for op, _, _ in pickletools.genops(data))
    except Exception:  # a cut stream or a byte that is no opcode
        return False


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


@contextlib.contextmanager
def _tune_environment():
    """Tune settings that only exist as environment variables, read when ``fit`` starts.

    ``RAY_AIR_NEW_OUTPUT=0``: Tune's newer console output prints an experiment banner even
    at verbose=0; the sweep prints its own trial lines. ``TUNE_GLOBAL_CHECKPOINT_S``: Tune
    snapshots the experiment at most every 10 s by default; a trial that ends in that window
    before a kill runs again on resume (its first result is kept), so snapshot more often.
    """
    settings = {
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_GLOBAL_CHECKPOINT_S": os.environ.get("TUNE_GLOBAL_CHECKPOINT_S", "2"),
        # recording a rung (the study, MLflow) takes a fraction of a second: not a bottleneck worth a warning
        "TUNE_WARN_THRESHOLD_S": os.environ.get("TUNE_WARN_THRESHOLD_S", "5"),
    }
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        with warnings.catch_warnings():
            # prepare (the gate's counts and memory estimate) runs in the define-by-run function
            # by design: Tune's warning that it takes over a second says nothing to act on
            warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took")
            yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
