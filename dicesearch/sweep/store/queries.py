"""Questions asked of a finished or running study's trials: which were scored, at which rung, in what order.

Pure functions over Optuna's ``FrozenTrial`` records (the schema is :mod:`dicesearch.sweep.store.schema`);
the ranked table, the plots, ``export`` and ``calibrate`` all read trials through them.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from dicesearch.sweep.store.schema import ATTR_DUPLICATE_OF, ATTR_RUNGS, ATTR_STATUS, STATUS_SURPLUS, superseded


def is_scored(trial) -> bool:
    """A trial that trained and was scored (infeasible trials are COMPLETE too, with placeholders)."""
    return trial.state == TrialState.COMPLETE and trial.user_attrs.get(ATTR_STATUS, "complete") == "complete"


def rung_reached(trial) -> int | None:
    """The index of the last rung a multi-fidelity trial was scored at (None: no rungs)."""
    rungs = trial.user_attrs.get(ATTR_RUNGS)
    return max(r["rung"] for r in rungs) if rungs else None


def stopped_at_rung(trial) -> bool:
    return trial.state == TrialState.PRUNED and rung_reached(trial) is not None and bool(trial.intermediate_values)


def sweep_configurations(trials: list) -> list:
    """The configurations a sweep tried, once each: trials scored or scored at a rung, less the
    paused ones a later trial continued (that one stands for them) and duplicates (an earlier
    trial's result reported again, never trained)."""
    gone = superseded(trials)
    return [t for t in trials if t.number not in gone and ATTR_DUPLICATE_OF not in t.user_attrs and (is_scored(t) or rung_reached(t) is not None)]


def ranked_trials(study: optuna.Study) -> list:
    """Scored trials best first: the furthest rung first, then by the first objective; then the
    others by number. (A rung's scores only compare with scores at the same rung.)"""
    everything = study.get_trials(deepcopy=False)
    gone = superseded(everything)  # paused trials shown once, as the trial that continued them
    trials = [t for t in everything if t.user_attrs.get(ATTR_STATUS) != STATUS_SURPLUS and t.number not in gone]
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1

    def value(t) -> float:
        return t.values[0] if is_scored(t) else t.intermediate_values[max(t.intermediate_values)]

    done = [t for t in trials if is_scored(t) or stopped_at_rung(t)]
    done.sort(key=lambda t: (-(rung_reached(t) or 0), not is_scored(t), sign * value(t), t.number))
    ranked = {t.number for t in done}  # a set: `t not in done` compared every trial with every ranked one
    rest = sorted((t for t in trials if t.number not in ranked), key=lambda t: t.number)
    return done + rest
