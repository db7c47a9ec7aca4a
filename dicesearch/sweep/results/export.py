"""Export a trial's full spec to YAML, ready for ``dicesearch train``."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from dicesearch.errors import DicesearchError
from dicesearch.stores import require_optuna_storage
from dicesearch.sweep.results.table import failure_summary
from dicesearch.sweep.store.queries import is_scored
from dicesearch.sweep.store.schema import ATTR_METRICS, ATTR_SPEC
from dicesearch.sweep.store.studies import storage_for


def load_study(study_name: str, storage_url: str) -> optuna.Study:
    require_optuna_storage(storage_url, study_name)  # reading creates nothing: no empty optuna.db left behind
    try:
        return optuna.load_study(study_name=study_name, storage=storage_for(storage_url))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage_for(storage_url))]
        raise DicesearchError(
            f"no study '{study_name}' in {storage_url}; studies there: {', '.join(names) or '(none)'}"
        ) from None


def choose_trial(study: optuna.Study, number: int | None = None):
    """The best trial (single objective), a given trial, or, for a Pareto front, the
    Pareto-optimal trial best on the first objective unless ``number`` picks another."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_scored(t)]
    if not complete:  # rejected (over budget) trials are COMPLETE too, but have nothing to export
        why = failure_summary(study) or f"study '{study.study_name}' has no completed trial"
        raise DicesearchError(f"{why}; nothing to export yet")
    if number is not None:
        match = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        if match is None or not is_scored(match):
            raise DicesearchError(f"trial {number} of study '{study.study_name}' did not complete; completed: {', '.join(str(t.number) for t in complete)}")
        return match
    if len(study.directions) == 1:
        return study.best_trial
    front = study.best_trials
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    return min(front, key=lambda t: sign * t.values[0])


def export_trial(study: optuna.Study, out: Path, number: int | None = None, data_args: str = "") -> tuple[Path, object]:
    trial = choose_trial(study, number)
    spec_yaml = trial.user_attrs.get(ATTR_SPEC)
    if not spec_yaml:
        raise DicesearchError(f"trial {trial.number} has no stored spec (was it made by dicesearch?)")
    metrics = trial.user_attrs.get(ATTR_METRICS, {})
    scores = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith(("fid_", "sfid_", "kid_", "is_", "precision_", "recall_")))
    header = (
        f"# Exported by `dicesearch export` from study '{study.study_name}', trial {trial.number}\n"
        f"# short-run scores: {scores or 'n/a'}\n"
        f"# train it at full length:  dicesearch train {out}{data_args}\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + spec_yaml)
    return out, trial
