"""``dicesearch sweep`` with the Optuna backend: ask, gate, train in a child process, tell.

Per trial: sample a spec from the search space; reject it if it is not a valid model or
its estimated full-length training memory is over budget (no training step spent); else
run ``evaluate`` in a fresh process (progress feeds the pruner; a wall-clock limit stops
it); record the outcome in the Optuna storage (the source of truth) and mirror it to
MLflow. Re-running the same command resumes the study.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console

from dicesearch.errors import SpecError
from dicesearch.spec import dump_spec
from dicesearch.sweep import study as studies
from dicesearch.sweep.load import SearchSpace
from dicesearch.sweep.tracking import (
    ATTR_CURVE,
    ATTR_METRICS,
    ATTR_PARAMS,
    ATTR_REASON,
    ATTR_SAMPLES,
    ATTR_SPEC,
    ATTR_STATUS,
    ATTR_STATUS_SURPLUS,
    SweepTracker,
)
from dicesearch.sweep.worker import TrialOutcome, run_trial


_ESTIMATE_LOCK = threading.Lock()


@dataclass(frozen=True)
class SweepPaths:
    """Where a sweep writes (all relative to the working directory by default)."""

    out_dir: Path  # runs/<study>/: per-trial folders, plots
    storage_url: str  # Optuna storage
    tracking_uri: str  # MLflow tracking store

    @classmethod
    def for_space(cls, space: SearchSpace, out_dir: str | Path | None = None, storage: str | None = None, tracking_uri: str | None = None):
        sweep = space.sweep
        return cls(
            out_dir=Path(out_dir or Path("runs") / sweep.resolved_study_name).absolute(),
            storage_url=absolute_sqlite(storage or sweep.storage or "sqlite:///optuna.db"),
            tracking_uri=absolute_sqlite(tracking_uri or sweep.tracking_uri or "sqlite:///mlflow.db"),
        )


def absolute_sqlite(url: str) -> str:
    """'sqlite:///x.db' -> 'sqlite:////abs/dir/x.db' (libraries cache stores by URI: a relative
    path would keep pointing at the directory of the first use in a process)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(Path(url[len(prefix):]).absolute())
    return url


def objective_metric_names(space: SearchSpace) -> list[str]:
    """The metric keys the objective reads: 'fid' means fid_<N> at the budget's N."""
    from dicesearch.metrics import metric_names

    names = metric_names(space.sweep.budget.fid_samples)
    return [names["fid"] if m == "fid" else m for m in space.sweep.objective.metrics]


@dataclass
class SweepResult:
    study: optuna.Study
    ran: int = 0
    recovered: list[int] = field(default_factory=list)
    mlflow_failures: int = 0


class OptunaSweep:
    def __init__(self, space: SearchSpace, paths: SweepPaths, console: Console | None = None, device: str = "auto"):
        self.space, self.paths, self.device = space, paths, device
        self.console = console or Console()
        sweep = space.sweep
        self.directions = sweep.objective.directions
        self.metric_keys = objective_metric_names(space)
        self.tracker = SweepTracker(paths.tracking_uri, sweep.resolved_study_name, space.source)
        self._lock = threading.Lock()
        self.study: optuna.Study | None = None

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> SweepResult:
        sweep = self.space.sweep
        pruner = studies.make_pruner(sweep.pruner, self.directions, sweep.budget.train_steps, sweep.budget.report_every)
        self.study = studies.open_study(sweep.resolved_study_name, self.paths.storage_url, self.directions, sweep.seed, pruner)
        result = SweepResult(self.study)
        result.recovered = studies.recover_interrupted(self.study)
        if result.recovered:
            self.console.print(f"resuming: trial(s) {', '.join(map(str, result.recovered))} were interrupted and will run again")
        done = len(studies.counted_trials(self.study))
        if done:
            self.console.print(f"resuming study '{sweep.resolved_study_name}': {done} of {sweep.trials} trials already finished")
        self.tracker.start_sweep(self._sweep_params(), Path(self.space.source).read_text() if Path(self.space.source).is_file() else "")
        self.tracker.reconcile(self.study.get_trials(deepcopy=False))
        try:
            with ThreadPoolExecutor(max_workers=sweep.parallelism) as pool:
                ran = list(pool.map(lambda _: self._worker_loop(), range(sweep.parallelism)))
            result.ran = sum(ran)
        except KeyboardInterrupt:
            self.tracker.reconcile(self.study.get_trials(deepcopy=False))
            self.tracker.end_sweep("KILLED")
            raise
        self.tracker.reconcile(self.study.get_trials(deepcopy=False))
        result.mlflow_failures = self.tracker.failures
        return result

    def _claim(self) -> optuna.trial.Trial | None:
        """The next trial to run, or None once the sweep has its number of trials.

        Other sweep processes may share the study: a trial this one creates after the study
        already has its number of trials (counting those running anywhere) is marked
        surplus and not run, so parallel workers never run more trials than asked.
        """
        total = self.space.sweep.trials
        with self._lock:
            running = len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            if len(studies.counted_trials(self.study)) + running >= total:
                return None
            trial = self.study.ask()
            trial.set_user_attr(studies.WORKER_ATTR, studies.this_worker())
            if studies.rank_among_live(self.study, trial.number) >= total:
                trial.set_user_attr(ATTR_STATUS, ATTR_STATUS_SURPLUS)
                trial.set_user_attr(ATTR_REASON, "not run: other workers already hold the study's trials")
                self.study.tell(trial, state=TrialState.FAIL)
                return None
            return trial

    def _sample(self, trial: optuna.trial.Trial):
        """The trial's spec and values, drawn by a sampler seeded from (seed, trial number): two
        sweep processes on one study (or a resumed sweep) never repeat each other's draws."""
        with self._lock:  # the study's sampler is shared by this process's worker threads
            self.study.sampler = studies.make_sampler(self.directions, self.space.sweep.seed + trial.number)
            return self.space.sample(trial)

    def _worker_loop(self) -> int:
        ran = 0
        while (trial := self._claim()) is not None:
            try:
                self._run_one(trial)
            except KeyboardInterrupt:
                self._finish(trial, "interrupted", "interrupted: the sweep was stopped (Ctrl-C) during this trial", state=TrialState.FAIL)
                if trial.params:
                    self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                raise
            ran += 1
        return ran

    # -- one trial ---------------------------------------------------------------------------------

    def _run_one(self, trial: optuna.trial.Trial) -> None:
        sweep = self.space.sweep
        number = trial.number
        try:
            spec, values = self._sample(trial)
        except SpecError as exc:
            self._finish(trial, "invalid", f"invalid configuration: {exc}", state=TrialState.FAIL)
            return
        spec_yaml = dump_spec(spec)
        trial.set_user_attr(ATTR_SPEC, spec_yaml)
        trial.set_user_attr(ATTR_PARAMS, values)
        summary = _spec_summary(spec)
        metrics = {**self._static(spec), **self._estimate_memory(spec)}
        trial.set_user_attr(ATTR_METRICS, metrics)
        self.tracker.start_trial(number, values, summary, spec_yaml)
        reason = over_budget_reason(metrics, sweep.memory, self._memory_batch())
        if reason:
            self._finish(trial, "rejected", reason, state=TrialState.PRUNED)
            return
        payload = {
            "spec_yaml": spec_yaml,
            "data": sweep.data.model_dump(mode="json"),
            "budget": sweep.budget.model_dump(mode="json"),
            "seed": sweep.seed,
            "workdir": str(self.paths.out_dir / f"trial-{number}"),
            "device": self.device,
            "threads": None,
            "count_static": not metrics.get("params"),  # counted above unless counting failed there
        }
        self.console.print(f"trial {number}: {_describe(values)}", highlight=False)
        single = len(self.directions) == 1

        def on_report(step: int, loss: float) -> bool:
            self.tracker.log_loss(number, step, loss)
            if not single:
                return False
            trial.report(loss, step)
            return trial.should_prune()

        outcome = run_trial(payload, on_report, time_limit_s=sweep.trial_time_limit_s)
        self._record(trial, outcome, metrics)

    def _record(self, trial, outcome: TrialOutcome, metrics: dict[str, Any]) -> None:
        trial.set_user_attr(ATTR_CURVE, [list(p) for p in outcome.loss_curve])
        metrics = {**metrics, "wall_seconds": outcome.wall_seconds}
        if outcome.status == "complete":
            evaluation = outcome.evaluation or {}
            metrics.update(evaluation.get("metrics", {}))
            trial.set_user_attr(ATTR_METRICS, metrics)
            if evaluation.get("samples_png"):
                trial.set_user_attr(ATTR_SAMPLES, evaluation["samples_png"])
            missing = [k for k in self.metric_keys if metrics.get(k) is None]
            if missing:
                self._finish(trial, "failed", f"failed: the run did not produce {', '.join(missing)}", state=TrialState.FAIL)
                return
            values = [float(metrics[k]) for k in self.metric_keys]
            trial.set_user_attr(ATTR_STATUS, "complete")
            self.study.tell(trial, values if len(values) > 1 else values[0])
            self.tracker.finish_trial(self.study.get_trials(deepcopy=False)[trial.number])
            scores = ", ".join(f"{k} {metrics[k]:.4g}" for k in self.metric_keys)
            self.console.print(f"trial {trial.number}: {scores} ({outcome.wall_seconds:.0f} s)", highlight=False)
            return
        trial.set_user_attr(ATTR_METRICS, metrics)
        if outcome.evaluation and outcome.evaluation.get("traceback"):
            trial.set_user_attr("traceback", outcome.evaluation["traceback"][-4000:])
        state = TrialState.PRUNED if outcome.status == "pruned" else TrialState.FAIL
        self._finish(trial, outcome.status, outcome.reason, state=state)

    def _finish(self, trial, status: str, reason: str, state: TrialState) -> None:
        trial.set_user_attr(ATTR_STATUS, status)
        trial.set_user_attr(ATTR_REASON, reason)
        self.study.tell(trial, state=state)
        self.tracker.finish_trial(self.study.get_trials(deepcopy=False)[trial.number])
        self.console.print(f"trial {trial.number}: {reason}", highlight=False, style="yellow")

    # -- static analysis and the budget gate -----------------------------------------------------------

    def _memory_batch(self) -> int:
        return memory_batch(self.space.sweep)

    def _static(self, spec) -> dict[str, float]:
        return safe_static_metrics(spec, lambda message: self.console.print(f"[yellow]warning:[/] {message}"))

    def _estimate_memory(self, spec) -> dict[str, float]:
        return estimate_memory(spec, self.space.sweep.memory, self._memory_batch())

    def _sweep_params(self) -> dict[str, Any]:
        return sweep_params(self.space.sweep)


def sweep_params(sweep) -> dict[str, Any]:
    """The few key params of a sweep's MLflow parent run (both backends; Ray adds its own)."""
    return {
        "study": sweep.resolved_study_name,
        "backend": sweep.backend,
        "trials": sweep.trials,
        "objective": ",".join(sweep.objective.metrics),
        "fid_samples": sweep.budget.fid_samples,
        "train_steps": sweep.budget.train_steps,
        "batch_size": sweep.budget.batch_size,
        "memory_budget_gb": sweep.memory.budget_gb,
        "data": sweep.data.kind,
        "seed": sweep.seed,
    }


# -- the budget gate, shared by both backends -------------------------------------------------------


def memory_batch(sweep) -> int:
    """The batch the memory budget is checked at: full-length training's, else the trial's."""
    return sweep.memory.batch_size or sweep.budget.batch_size


def safe_static_metrics(spec, warn) -> dict[str, float]:
    """Parameters, GMACs and GFLOPs of ``spec``; ``{}`` (and ``warn(message)``) if counting fails."""
    from dicesearch.objective import static_metrics

    try:
        return static_metrics(spec)
    except Exception as exc:  # counting must never stop a sweep
        warn(f"could not count FLOPs: {exc}")
        return {}


def estimate_memory(spec, memory, batch_size: int) -> dict[str, float]:
    """``{"memory_estimated_gb": ...}`` for full-length training of ``spec``, or ``{}`` if unknown."""
    from dicesearch.analysis.memory import estimate_training_memory

    with _ESTIMATE_LOCK:  # MemTracker's hooks are process-global: one estimate at a time
        estimate = estimate_training_memory(spec, batch_size, memory.precision, ema=True, gradient_checkpointing=memory.gradient_checkpointing)
    if not estimate.known:
        return {}
    return {"memory_estimated_gb": estimate.total / 2**30}  # GiB: a "24 GB" card has 24 GiB


def over_budget_reason(metrics: dict[str, float], memory, batch_size: int) -> str | None:
    """Why a configuration is rejected without training, or None if it fits (or is unknown)."""
    estimated = metrics.get("memory_estimated_gb")
    if estimated is None or estimated <= memory.budget_gb:
        return None
    return (
        f"rejected: estimated peak training memory {estimated:.1f} GB at batch "
        f"{batch_size} {memory.precision} exceeds the {memory.budget_gb:g} GB budget"
    )


def _spec_summary(spec) -> dict[str, Any]:
    """A few key params per trial: the architecture at a glance."""
    summary = {"conditioning": spec.conditioning.kind, "stages": len(spec.stages)}
    for i, stage in enumerate(spec.stages):
        summary[f"stage{i}.block"] = stage.block.kind
        summary[f"stage{i}.channels"] = stage.channels
        summary[f"stage{i}.depth"] = stage.depth
    return summary


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
