"""What Ray runs for one trial (in a Ray worker), and the typed messages it exchanges with the driver.

Ray Tune carries two things between the driver and a trial: the trial's *config* (the
sampled values, plus :class:`SampledConfig` under :data:`KEY`, which the searcher's
define-by-run function adds) and the trial's *results* (the training loss for ASHA, the
objective's metrics for the searcher, plus :class:`TrialReport` under :data:`KEY`). Both
travel as plain data, validated back into their models on the other side.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from ray import tune

from dicesearch.sweep import gate
from dicesearch.sweep.trial import TrialOutcome, TrialSettings
from dicesearch.sweep.trial_process import run_trial

KEY = "dicesearch"  # the config and result entry that carries what dicesearch adds to Ray's


class SampledConfig(BaseModel):
    """What the searcher's sampling adds to a trial's config: the resolved spec, or why the
    combination is invalid; the parameters' distributions (for the results study)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_yaml: str | None = None
    invalid: str | None = None  # the one-line reason, instead of a spec
    summary: dict[str, Any] = {}  # the architecture at a glance (MLflow params)
    distributions: dict[str, str] = {}  # name -> optuna.distributions.distribution_to_json
    duplicate_of: int | None = None  # a finished trial of the same configuration...
    reused: TrialOutcome | None = None  # ...whose outcome this trial reports instead of training

    @classmethod
    def of(cls, config: dict[str, Any]) -> SampledConfig:
        return cls.model_validate(config.get(KEY) or {})

    @staticmethod
    def values(config: dict[str, Any]) -> dict[str, Any]:
        """The sampled parameter values in a Tune config."""
        return {k: v for k, v in config.items() if k != KEY}


class RungReport(BaseModel):
    """A multi-fidelity trial's scores at one rung."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    steps: int
    metrics: dict[str, float | None]


class TrialReport(BaseModel):
    """What every result of a trial carries: the gate's metrics; a rung's result its scores;
    the final one its outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metrics: dict[str, float | None] = {}
    rung: RungReport | None = None
    outcome: TrialOutcome | None = None  # set in the trial's last result only

    @classmethod
    def of(cls, result: dict[str, Any] | None) -> TrialReport:
        return cls.model_validate((result or {}).get(KEY) or {})


def rung_root(out_dir: Path, study_name: str) -> Path:
    """Where a Ray sweep keeps its trials' rung checkpoints, one folder per Ray trial id."""
    return Path(out_dir) / "ray" / study_name / "rung-checkpoints"


def rung_checkpoint_step(run_dir: Path) -> int | None:
    """The training step of the newest rung checkpoint in ``run_dir`` (replicate 0's), if any."""
    from dicesearch.train.rundir import RunDir

    checkpoint = RunDir(run_dir / "r0").latest_checkpoint() if (run_dir / "r0").is_dir() else None
    return int(checkpoint.stem.split("-")[-1]) if checkpoint is not None else None


def run_ray_trial(config: dict[str, Any], settings: TrialSettings, run_root: str | None = None) -> None:
    """Gate, train and score one configuration; the last result reported is its outcome.

    With rungs, each rung's scores are a result of their own (the driver's scheduler stops the
    trial there if they do not go on), and the rung checkpoints live in ``run_root/<trial id>``:
    a trial Ray runs again after the sweep was killed continues from its last one.
    """
    sampled = SampledConfig.of(config)
    keys = settings.metric_keys
    blank = dict.fromkeys(keys)  # Tune wants the searcher's metrics in every result
    last_loss: list[float | None] = [None]

    def finish(outcome: TrialOutcome, metrics: dict[str, float | None]) -> None:
        result: dict[str, Any] = {**blank, "loss": last_loss[0]}
        if outcome.status == "complete":
            result.update({k: outcome.metrics.get(k) for k in keys})
        result[KEY] = TrialReport(metrics=metrics, outcome=outcome).model_dump()
        samples = outcome.samples_png if outcome.status == "complete" else None
        checkpoint = tune.Checkpoint.from_directory(str(Path(samples).parent)) if samples else None
        tune.report(result, checkpoint=checkpoint)  # the sample grid travels back as the trial's checkpoint

    if sampled.reused is not None:
        finish(sampled.reused, sampled.reused.metrics)
        return
    if sampled.invalid or not sampled.spec_yaml:
        finish(TrialOutcome(status="invalid", reason=sampled.invalid or "invalid configuration: no spec was sampled"), {})
        return
    request_spec = settings.request(sampled.spec_yaml, None).spec()
    assessment = gate.assess(request_spec, settings.memory, settings.memory_batch, warnings.warn)
    if assessment.rejection:
        finish(TrialOutcome(status="rejected", reason=assessment.rejection, metrics=assessment.metrics), assessment.metrics)
        return

    def progress(step: int, loss: float) -> bool:
        last_loss[0] = loss
        tune.report({**blank, "loss": loss, "step": step, KEY: TrialReport(metrics=assessment.metrics).model_dump()})
        return False  # ASHA stops a trial by ending its Ray task, not by answering here

    def rung(index: int, steps: int, metrics: dict) -> bool:
        report = TrialReport(metrics=assessment.metrics, rung=RungReport(index=index, steps=steps, metrics=metrics))
        score = metrics.get(keys[0])
        # top level too: Tune hands schedulers the result flattened
        flat = {"rung_index": index, "rung_steps": steps, "rung_score": score}
        tune.report({**blank, "loss": last_loss[0], **flat, KEY: report.model_dump()})
        return True  # the driver's rung scheduler stops the trial by ending its Ray task

    run_dir, start_rung = None, 0
    if settings.rungs and run_root:
        run_dir = Path(run_root) / tune.get_context().get_trial_id()
        done = rung_checkpoint_step(run_dir)
        start_rung = list(settings.rungs).index(done) if done in settings.rungs else 0  # re-scores that rung, then goes on
    with tempfile.TemporaryDirectory(prefix="dicesearch-trial-") as workdir:
        if settings.rungs and run_dir is None:
            run_dir = Path(workdir) / "run"
        count_static = not assessment.metrics.get("params")
        request = settings.request(sampled.spec_yaml, Path(workdir), count_static, run_dir=run_dir, start_rung=start_rung)
        outcome = run_trial(request, progress, time_limit_s=settings.time_limit_s, on_rung=rung)
        finish(outcome.with_metrics(assessment.metrics), assessment.metrics)
