"""What a sweep records of each trial: the schema of its Optuna user attributes.

The Optuna storage is a sweep's source of truth. Both backends write a trial's record
with these keys; the MLflow mirror, the ranked table and ``dicesearch export`` read them.

A trial's *status* says what happened to it, finer than Optuna's state (in brackets):

* ``complete`` (COMPLETE): trained and scored;
* ``pruned`` (PRUNED): stopped early by the pruner (Optuna) or ASHA (Ray);
* ``paused`` (PRUNED): multi-fidelity (Optuna backend): stopped at a rung, with its rung
  checkpoint kept; if later trials make it one of the best there, a new trial continues it
  (``continues``), and the paused one is then *superseded*: counted, ranked and shown once,
  as its continuation;
* ``rejected`` (COMPLETE, infeasible): estimated over the memory budget, never trained;
* ``invalid`` (FAIL): the sampled combination is not a valid model;
* ``failed`` (FAIL): raised, diverged or produced no objective; one that ran out of
  memory is COMPLETE and infeasible, like a rejected one;
* ``timeout`` (FAIL): stopped at ``trial_time_limit_s``;
* ``crashed`` (FAIL): its process died without a word;
* ``interrupted`` (FAIL): the sweep stopped during it; it runs again as a new trial;
* ``surplus`` (FAIL): another worker already held the study's trials; never run.

*Infeasible* trials (over the memory budget, by the estimate or by running out of memory)
end COMPLETE with a positive constraint value ``CONSTRAINT`` (GiB over the budget) set
through ``optuna.trial.Trial.set_constraint``: TPE and NSGA-II read it and learn where the
budget ends, ``study.best_trial(s)`` leave them out, and their objective values are
placeholders (+inf for a minimised score, the known count for ``gmacs``/``params``). Every
other complete trial records its (negative) headroom under the same key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from optuna.trial import TrialState

ATTR_METRICS = "metrics"  # dict[str, float]: scores, counts, estimates, timings
ATTR_CURVE = "loss_curve"  # list[[step, loss]]: the mean training loss every report_every steps
ATTR_SPEC = "spec_yaml"  # the resolved model spec
ATTR_REASON = "reason"  # why a trial failed, was pruned or rejected (one line)
ATTR_STATUS = "status"  # see the table above
ATTR_SAMPLES = "samples_png"  # path of the trial's sample grid
ATTR_PARAMS = "params"  # the sampled values (also Optuna's own params)
ATTR_TRACEBACK = "traceback"  # the last lines of a failed trial's traceback
ATTR_WORKER = "worker"  # "<host>:<pid>" of the sweep process running the trial
ATTR_RETRY_OF = "retry_of"  # the interrupted trial this one runs again
ATTR_CONTINUES = "continues"  # multi-fidelity: the paused trial this one continues from its rung checkpoint
ATTR_RAY_TRIAL = "ray_trial_id"  # the Ray Tune trial a results-study trial records (Ray backend)
ATTR_DUPLICATE_OF = "duplicate_of"  # an identical configuration's trial whose result this one reuses
ATTR_RUNGS = "rungs"  # multi-fidelity: [{"rung": k, "steps": s, <score>: value, ...}] for every rung scored
STUDY_RUNG_KEYS = "rung_keys"  # a study's own attribute (multi-fidelity): the score each rung ranks by, e.g. ["fid_64", "fid_128", "fid_128"]

Status = Literal["complete", "pruned", "paused", "rejected", "invalid", "failed", "timeout", "crashed", "interrupted", "surplus"]

CONSTRAINT = "memory_over_budget_gb"  # Optuna constraint: estimated peak - budget, > 0 infeasible
MIN_VIOLATION = 0.01  # GiB: the violation of a trial that ran out of memory although estimated to fit

STATUS_SURPLUS: Status = "surplus"
STATUS_PAUSED: Status = "paused"
STATUS_INTERRUPTED: Status = "interrupted"
NOT_COUNTED: tuple[Status, ...] = (STATUS_INTERRUPTED, STATUS_SURPLUS)  # re-run elsewhere / never run
REUSABLE: tuple[Status, ...] = ("complete", "rejected", STATUS_PAUSED)  # outcomes another trial of the same configuration would repeat

_PRUNED: tuple[Status, ...] = ("pruned", STATUS_PAUSED)


@dataclass(frozen=True)
class TrialRecord:
    """How a trial ended, as its study keeps it: written in one call
    (:meth:`dicesearch.sweep.store.studies.SweepStudy.finish`)."""

    status: Status
    reason: str = ""  # one line; empty for complete trials
    attrs: Mapping[str, Any] = field(default_factory=dict)  # ATTR_METRICS, ATTR_CURVE, ATTR_SAMPLES, ATTR_TRACEBACK
    values: tuple[float, ...] | None = None  # objective values told to the study (complete, or infeasible placeholders)
    constraint: float | None = None  # CONSTRAINT: GiB over the memory budget (> 0 infeasible), where known


def superseded(trials) -> set[int]:
    """Numbers of the paused trials a later trial continues (shown and counted as that one)."""
    return {t.user_attrs[ATTR_CONTINUES] for t in trials if ATTR_CONTINUES in t.user_attrs}


def state_for(status: Status) -> TrialState:
    """The Optuna state a trial of ``status`` ends in without objective values (see above)."""
    if status == "complete":
        return TrialState.COMPLETE
    return TrialState.PRUNED if status in _PRUNED else TrialState.FAIL


def is_failure(status: str) -> bool:
    """What a sampler is told is a failure (rather than a result, a rejection or an early stop)."""
    return status in ("invalid", "failed", "timeout", "crashed")


__all__ = [
    "CONSTRAINT",
    "MIN_VIOLATION",
    "ATTR_CURVE",
    "ATTR_DUPLICATE_OF",
    "ATTR_RUNGS",
    "ATTR_METRICS",
    "ATTR_PARAMS",
    "ATTR_RAY_TRIAL",
    "ATTR_REASON",
    "ATTR_RETRY_OF",
    "ATTR_CONTINUES",
    "ATTR_SAMPLES",
    "ATTR_SPEC",
    "ATTR_STATUS",
    "ATTR_TRACEBACK",
    "ATTR_WORKER",
    "NOT_COUNTED",
    "REUSABLE",
    "STATUS_INTERRUPTED",
    "STATUS_PAUSED",
    "STATUS_SURPLUS",
    "Status",
    "TrialRecord",
    "is_failure",
    "state_for",
    "superseded",
]
