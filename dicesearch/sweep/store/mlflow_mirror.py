"""MLflow mirror of a sweep: one parent run, one nested run per trial.

The Optuna storage is the source of truth: every finished trial keeps its metrics, loss
curve, resolved spec and status reason in its user attributes. This module mirrors that
into MLflow and never lets MLflow stop a sweep: every call is guarded, a failure is
reported once, and for ``RETRY_AFTER_S`` after a failure calls are skipped instead of
waiting on a store that is down (an HTTP tracking server is asked with few retries and a
short timeout unless the user's MLFLOW_HTTP_REQUEST_* variables say otherwise).
:meth:`MlflowMirror.reconcile` (run at the start and end of every sweep) backfills trials
MLflow missed and closes runs a killed sweep left RUNNING. So ``mlflow ui`` ends up showing
every trial, whatever happened on the way.

Several sweep processes may share one study: each mirrors its own trials, the parent run
is shared (if two are created at once, the older one wins and the other is deleted), and
a trial is never mirrored into two runs (reconcile removes a duplicate a race left).
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dicesearch.errors import DicesearchError, TrackingWarning, one_line
from dicesearch.stores import tracking_store_problem
from dicesearch.sweep.store.locks import sqlite_creation_lock
from dicesearch.sweep.store.schema import ATTR_CURVE, ATTR_METRICS, ATTR_PARAMS, ATTR_REASON, ATTR_SAMPLES, ATTR_SPEC, ATTR_STATUS, STATUS_SURPLUS

EXPERIMENT = "dicesearch"
RETRY_AFTER_S = 30.0  # after a failed call, skip MLflow this long rather than wait on it each time
RUNS_PAGE = 5000  # runs asked of MLflow at a time

# A tracking server that is down must not stall every trial by minutes of retries
# (MLflow's defaults: 7 retries with backoff, 120 s timeout). The user's settings win.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def mlflow_key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . space : /; 'stages[0].depth' -> 'stages.0.depth'."""
    name = name.replace("[*]", ".all").replace("[", ".").replace("]", "")
    return re.sub(r"[^\w.\- :/]", "_", name)


def spec_params(spec: dict[str, Any]) -> dict[str, Any]:
    """A few key params of a trial's run: the architecture at a glance, from the resolved spec as data."""
    stages = spec.get("stages") or []
    summary: dict[str, Any] = {"conditioning": (spec.get("conditioning") or {}).get("kind"), "stages": len(stages)}
    for i, stage in enumerate(stages):
        summary[f"stage{i}.block"] = (stage.get("block") or {}).get("kind")
        summary[f"stage{i}.channels"] = stage.get("channels")
        summary[f"stage{i}.depth"] = stage.get("depth")
    return summary


def _spec_params_of(spec_yaml: str | None) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(spec_yaml) if spec_yaml else None
        return spec_params(data) if isinstance(data, dict) else {}
    except Exception:  # a record's spec is what dicesearch wrote; anything else only loses the summary
        return {}


def run_name(number: int, params: dict[str, Any]) -> str:
    """``trial-3``; a comparison's run is named by its model and seed: ``DiT-digits seed 43``."""
    if "model" in params and "seed" in params:
        return f"{params['model']} seed {params['seed']}"
    return f"trial-{number}"


def _provenance_tags(spec_yaml: str) -> dict[str, str]:
    """``dicesearch.version`` and each plugin's distribution and version, from the spec's header."""
    from dicesearch.provenance import Provenance

    recorded = Provenance.from_header(spec_yaml)
    return recorded.mlflow_tags() if recorded is not None else {}


class MlflowMirror:
    """Best-effort MLflow logging for one sweep (study)."""

    def __init__(self, tracking_uri: str, study_name: str, sweep_source: str):
        self.tracking_uri = tracking_uri
        self.study_name = study_name
        self.sweep_source = sweep_source
        self._client = None
        self._experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._trial_runs: dict[int, str] = {}
        self._warned = False
        self._retry_at = 0.0
        self._sweep_params: dict[str, Any] | None = None
        self._space_yaml = ""
        self.failures = 0
        if tracking_uri.startswith(("http://", "https://")):
            for name, value in _HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)

    # -- plumbing ------------------------------------------------------------------------------

    def _safe(self, what: str, call: Callable[[], Any], *, force: bool = False) -> Any:
        """``call()``, or None if it fails or MLflow failed less than RETRY_AFTER_S ago
        (``force`` tries anyway: the reconciliations that repair what was skipped)."""
        if not force and time.monotonic() < self._retry_at:
            self.failures += 1
            return None
        try:
            result = call()
            self._retry_at = 0.0
            return result
        except Exception as exc:  # MLflow down, disk full, network: never stop the sweep
            self.failures += 1
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            self._client = None  # reconnect (and re-read the experiment) next time
            if not self._warned:
                # one line: a SQLAlchemy error's own text carries its SQL statement; its driver's error does not
                cause = str(exc) if isinstance(exc, DicesearchError) else f"{type(exc).__name__}: {one_line(getattr(exc, 'orig', None) or exc)}"
                warnings.warn(
                    f"MLflow logging failed while trying to {what} ({cause}); the sweep goes on, "
                    "results stay in the Optuna storage and are mirrored to MLflow when it is reachable again",
                    TrackingWarning,
                    stacklevel=2,
                )
                self._warned = True
            return None

    def _connect(self):
        if self._client is None:
            from mlflow import MlflowClient

            problem = tracking_store_problem(self.tracking_uri)  # not a database, or another program's: left untouched
            if problem:
                raise DicesearchError(problem)

            with sqlite_creation_lock(self.tracking_uri):  # fresh stores are migrated on first use
                client = MlflowClient(tracking_uri=self.tracking_uri)
                experiment = client.get_experiment_by_name(EXPERIMENT)
                self._experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
                if experiment is None or "mlflow.experimentKind" not in experiment.tags:
                    # MLflow 3 opens untagged experiments in its GenAI traces view; ours are training runs
                    client.set_experiment_tag(self._experiment_id, "mlflow.experimentKind", "custom_model_development")
            self._client = client
        return self._client

    def _runs_of_sweep(self) -> list:
        """Every run of this study (its parent, its trials), a page of ``RUNS_PAGE`` at a time: a
        study of thousands of trials has more runs than one page holds. A run another worker
        creates meanwhile pushes the newest-first pages down; the run that shows twice is kept once."""
        client = self._connect()
        runs, token = {}, None
        while True:
            page = client.search_runs(
                [self._experiment_id], filter_string=f"tags.`dicesearch.study` = '{self.study_name}'", max_results=RUNS_PAGE, page_token=token
            )
            for run in page:
                runs.setdefault(run.info.run_id, run)
            token = page.token
            if not token:
                return list(runs.values())

    # -- parent run ------------------------------------------------------------------------------

    def start_sweep(self, params: dict[str, Any], space_yaml: str) -> None:
        """Find this study's parent run (a resumed sweep, or another worker, made it) or create it."""
        self._sweep_params, self._space_yaml = params, space_yaml
        self._safe("start the sweep's parent run", self._open_parent, force=True)

    def _open_parent(self) -> None:
        client = self._connect()
        runs = self._runs_of_sweep()
        parents = [r for r in runs if r.data.tags.get("dicesearch.role") == "sweep"]
        if not parents:
            created = client.create_run(
                self._experiment_id,
                run_name=self.study_name,
                tags={"dicesearch.study": self.study_name, "dicesearch.role": "sweep", "dicesearch.source": self.sweep_source},
            )
            from mlflow.entities import Param

            params = self._sweep_params or {}
            client.log_batch(created.info.run_id, params=[Param(mlflow_key(k), str(v)[:6000]) for k, v in list(params.items())[:100]])
            client.log_text(created.info.run_id, self._space_yaml, "search_space.yaml")
            # another sweep process of this study may have created one at the same moment
            parents = [r for r in self._runs_of_sweep() if r.data.tags.get("dicesearch.role") == "sweep"]
            winner = min(parents, key=lambda r: (r.info.start_time, r.info.run_id))
            if winner.info.run_id != created.info.run_id:
                client.delete_run(created.info.run_id)
            parents = [winner]
        parent = min(parents, key=lambda r: (r.info.start_time, r.info.run_id))
        if parent.info.status != "RUNNING":
            client.update_run(parent.info.run_id, status="RUNNING")
        self.parent_run_id = parent.info.run_id
        for run in runs:
            if run.data.tags.get("dicesearch.role") == "trial":
                self._trial_runs.setdefault(int(run.data.tags["dicesearch.trial"]), run.info.run_id)

    def _parent(self) -> str | None:
        """The parent run's id, opening it now if MLflow was down when the sweep started."""
        if self.parent_run_id is None and self._sweep_params is not None:
            self._open_parent()
        return self.parent_run_id

    def end_sweep(self, status: str, artifacts: list[Path] = (), folder: str = "plots") -> None:
        """Close the parent run with ``status``, logging ``artifacts`` into its ``folder``."""

        def end():
            client = self._connect()
            if self._parent() is None:
                return
            for path in artifacts:
                client.log_artifact(self.parent_run_id, str(path), folder)
            client.set_terminated(self.parent_run_id, status)

        self._safe("close the sweep's parent run", end, force=True)

    def log_side_run(self, role: str, params: dict[str, Any], metrics: dict[str, float], artifacts: list[Path] = ()) -> str | None:
        """A finished run nested under the sweep's parent run (left as it is), e.g. a calibration."""

        def log():
            from mlflow.entities import Metric, Param

            client = self._connect()
            parents = [r for r in self._runs_of_sweep() if r.data.tags.get("dicesearch.role") == "sweep"]
            tags = {"dicesearch.study": self.study_name, "dicesearch.role": role}
            if parents:
                tags["mlflow.parentRunId"] = min(parents, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id
            run = client.create_run(self._experiment_id, run_name=f"{self.study_name}-{role}", tags=tags)
            now = int(time.time() * 1000)
            client.log_batch(
                run.info.run_id,
                metrics=[Metric(mlflow_key(k), float(v), now, 0) for k, v in metrics.items()],
                params=[Param(mlflow_key(k), str(v)[:6000]) for k, v in list(params.items())[:100]],
            )
            for path in artifacts:
                client.log_artifact(run.info.run_id, str(path))
            client.set_terminated(run.info.run_id, "FINISHED")
            return run.info.run_id

        return self._safe(f"log the sweep's {role} run", log, force=True)

    # -- trial runs ------------------------------------------------------------------------------

    def _trial_tags(self, number: int) -> dict[str, str]:
        tags = {"dicesearch.study": self.study_name, "dicesearch.role": "trial", "dicesearch.trial": str(number)}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        return tags

    def start_trial(self, number: int, params: dict[str, Any], summary: dict[str, Any], spec_yaml: str) -> None:
        """A RUNNING nested run, so the UI shows trials in progress."""

        def start():
            client = self._connect()
            if self._parent() is None:
                return
            from mlflow.entities import Param

            name, tags = run_name(number, params), self._trial_tags(number)
            run = client.create_run(self._experiment_id, run_name=name, tags={**tags, **_provenance_tags(spec_yaml)})
            self._trial_runs[number] = run.info.run_id
            values = {**{mlflow_key(k): v for k, v in params.items()}, **summary}
            client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in list(values.items())[:100]])
            client.log_text(run.info.run_id, spec_yaml, "spec.yaml")

        self._safe(f"start trial {number}'s run", start)

    def log_loss(self, number: int, step: int, loss: float) -> None:
        run_id = self._trial_runs.get(number)
        if run_id is None:
            return
        self._safe(f"log trial {number}'s loss", lambda: self._connect().log_metric(run_id, "loss", loss, step=step))

    def log_rung(self, number: int, index: int, steps: int, scores: dict[str, float]) -> None:
        """A rung's scores: each as ``rung<k>.<name>`` (one metric per rung, to compare trials at a
        rung) and in the ``<name>`` series at step = the rung's training steps."""
        run_id = self._trial_runs.get(number)
        if run_id is None:
            return

        def log():
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(mlflow_key(f"rung{index + 1}.{k}"), float(v), now, 0) for k, v in scores.items() if v is not None]
            metrics += [Metric(mlflow_key(k), float(v), now, int(steps)) for k, v in scores.items() if v is not None]
            self._connect().log_batch(run_id, metrics=metrics)

        self._safe(f"log trial {number}'s rung {index + 1}", log)

    def finish_trial(self, frozen_trial) -> None:
        """Log a finished trial from what the Optuna storage holds, and close its run."""
        self._safe(f"log trial {frozen_trial.number}", lambda: self._write_trial(frozen_trial))

    def _write_trial(self, trial) -> None:
        from mlflow.entities import Metric, Param, RunTag

        client = self._connect()
        self._parent()
        attrs = trial.user_attrs
        number = trial.number
        run_id = self._trial_runs.get(number)
        created = run_id is None
        if created:
            run = client.create_run(self._experiment_id, run_name=run_name(number, attrs.get(ATTR_PARAMS) or trial.params), tags=self._trial_tags(number))
            run_id = self._trial_runs[number] = run.info.run_id
            params = {**{mlflow_key(k): v for k, v in (attrs.get(ATTR_PARAMS) or trial.params).items()}, **_spec_params_of(attrs.get(ATTR_SPEC))}
            client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in list(params.items())[:100]])
            if attrs.get(ATTR_SPEC):
                client.log_text(run_id, attrs[ATTR_SPEC], "spec.yaml")
        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), float(v), now, 0) for k, v in (attrs.get(ATTR_METRICS) or {}).items() if v is not None]
        curve = [Metric("loss", float(loss), now, int(step)) for step, loss in (attrs.get(ATTR_CURVE) or [])]
        existing = client.get_run(run_id).data.metrics
        if "loss" in existing and not created:
            curve = []  # streamed while the trial ran
        status = attrs.get(ATTR_STATUS, trial.state.name.lower())
        tags = [RunTag("dicesearch.status", status)] + [RunTag(k, v) for k, v in _provenance_tags(attrs.get(ATTR_SPEC) or "").items()]
        if attrs.get(ATTR_REASON):
            tags.append(RunTag("dicesearch.reason", str(attrs[ATTR_REASON])[:5000]))
        for start in range(0, len(metrics + curve), 900):
            client.log_batch(run_id, metrics=(metrics + curve)[start : start + 900], tags=tags if start == 0 else [])
        if not metrics and not curve:
            client.log_batch(run_id, tags=tags)
        samples = attrs.get(ATTR_SAMPLES)
        if samples and Path(samples).is_file():
            client.log_artifact(run_id, samples, "samples")
        client.set_terminated(run_id, {"complete": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"))

    # -- reconciliation ---------------------------------------------------------------------------

    def reconcile(self, trials: list) -> int:
        """Backfill finished trials missing in MLflow; close runs left RUNNING; remove a second
        run of one trial (two workers backfilling at once). Returns runs fixed."""

        def run():
            self._parent()
            fixed = 0
            by_number: dict[int, Any] = {}
            for r in sorted(self._runs_of_sweep(), key=lambda r: (r.info.start_time, r.info.run_id)):
                if r.data.tags.get("dicesearch.role") != "trial":
                    continue
                number = int(r.data.tags["dicesearch.trial"])
                if number in by_number:
                    self._connect().delete_run(r.info.run_id)
                    fixed += 1
                else:
                    by_number[number] = r
            for trial in trials:
                if not trial.state.is_finished() or trial.user_attrs.get(ATTR_STATUS) == STATUS_SURPLUS:
                    continue
                mirrored = by_number.get(trial.number)
                if mirrored is None or mirrored.info.status == "RUNNING":
                    self._trial_runs.pop(trial.number, None)
                    if mirrored is not None:
                        self._trial_runs[trial.number] = mirrored.info.run_id
                    self._write_trial(trial)
                    fixed += 1
            return fixed

        return self._safe("reconcile MLflow with the Optuna storage", run, force=True) or 0
