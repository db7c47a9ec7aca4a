"""What Ray runs for one trial (in a Ray worker), and the typed messages it exchanges with the driver.

Ray Tune carries two things between the driver and a trial: the trial's *config* (the
sampled values, plus :class:`SampledConfig` under :data:`KEY`, which the searcher's
define-by-run function adds: the prepared :class:`~dicesearch.sweep.lifecycle.messages.Candidate`)
and the trial's *results* (the training loss for ASHA, the objective's metrics for the
searcher, plus :class:`TrialReport` under :data:`KEY`). Both travel as plain data,
validated back into their models on the other side.

The trainable is the lifecycle's *run* step (:mod:`dicesearch.sweep.lifecycle.trial`): the
candidate's request to a trial process, its progress and rung scores reported to Tune. A
candidate whose outcome was decided when it was prepared (invalid, rejected, a duplicate's
result) reports that outcome and trains nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from dicesearch.sweep.lifecycle.messages import Candidate, Message, TrialOutcome, TrialSettings
from dicesearch.sweep.lifecycle.process import run_trial

KEY = "dicesearch"  # the config and result entry that carries what dicesearch adds to Ray's


class SampledConfig(Message):
    """What the searcher's sampling adds to a trial's config: the prepared candidate and the
    parameters' distributions (for the results study)."""

    candidate: Candidate = Candidate()
    distributions: dict[str, str] = {}  # name -> optuna.distributions.distribution_to_json

    @classmethod
    def of(cls, config: dict[str, Any]) -> SampledConfig:
        return cls.model_validate(config.get(KEY) or {})

    @staticmethod
    def values(config: dict[str, Any]) -> dict[str, Any]:
        """The sampled parameter values in a Tune config."""
        return {k: v for k, v in config.items() if k != KEY}


class RungReport(Message):
    """A multi-fidelity trial's scores at one rung."""

    index: int
    steps: int
    metrics: dict[str, float | None]


class TrialReport(Message):
    """What every result of a trial carries: the gate's metrics; a rung's result its scores;
    the final one its outcome."""

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
    """Run one prepared candidate; the last result reported is its outcome.

    With rungs, each rung's scores are a result of their own (the driver's scheduler stops the
    trial there if they do not go on), and the rung checkpoints live in ``run_root/<trial id>``:
    a trial Ray runs again after the sweep was killed continues from its last one.
    """
    candidate = SampledConfig.of(config).candidate
    keys = settings.metric_keys
    blank = dict.fromkeys(keys)  # Tune wants the searcher's metrics in every result
    last_loss: list[float | None] = [None]

    def report_outcome(outcome: TrialOutcome) -> None:
        result: dict[str, Any] = {**blank, "loss": last_loss[0]}
        if outcome.status == "complete":
            result.update({k: outcome.metrics.get(k) for k in keys})
        result[KEY] = TrialReport(metrics=candidate.metrics or outcome.metrics, outcome=outcome).model_dump()
        samples = outcome.samples_png if outcome.status == "complete" else None
        checkpoint = tune.Checkpoint.from_directory(str(Path(samples).parent)) if samples else None
        tune.report(result, checkpoint=checkpoint)  # the sample grid travels back as the trial's checkpoint

    if candidate.outcome is not None:
        report_outcome(candidate.outcome)
        return
    if not candidate.spec_yaml:
        report_outcome(TrialOutcome(status="invalid", reason="invalid configuration: no spec was sampled"))
        return

    def progress(step: int, loss: float) -> bool:
        last_loss[0] = loss
        tune.report({**blank, "loss": loss, "step": step, KEY: TrialReport(metrics=candidate.metrics).model_dump()})
        return False  # ASHA stops a trial by ending its Ray task, not by answering here

    def rung(index: int, steps: int, metrics: dict) -> bool:
        report = TrialReport(metrics=candidate.metrics, rung=RungReport(index=index, steps=steps, metrics=metrics))
        score = metrics.get(settings.rung_key(index))
        # top level too: Tune hands schedulers the result flattened
        flat = {"rung_index": index, "rung_steps": steps, "rung_score": score}
        tune.report({**blank, "loss": last_loss[0], **flat, KEY: report.model_dump()})
        return True  # the driver's rung scheduler stops the trial by ending its Ray task

    rungs = settings.request_for(candidate, None).rungs  # this trial's own scoring points (compute matching scales them)
    run_dir, start_rung = None, 0
    if rungs and run_root:
        run_dir = Path(run_root) / tune.get_context().get_trial_id()
        done = rung_checkpoint_step(run_dir)
        start_rung = list(rungs).index(done) if done in rungs else 0  # re-scores that rung, then goes on
    with tempfile.TemporaryDirectory(prefix="dicesearch-trial-") as workdir:
        if rungs and run_dir is None:
            run_dir = Path(workdir) / "run"
        request = settings.request_for(candidate, Path(workdir), run_dir, start_rung)
        outcome = run_trial(request, progress, time_limit_s=settings.time_limit_s, on_rung=rung)
        report_outcome(outcome.with_metrics(candidate.metrics))
