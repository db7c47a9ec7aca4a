"""The lines after the ranked table: what the sweep cost, and (multi-fidelity) whether its first rung predicted its last."""

from __future__ import annotations

import datetime

import optuna

from dicesearch.sweep.results.statistics import rank_agreement
from dicesearch.sweep.store.queries import is_scored, rung_reached, sweep_configurations
from dicesearch.sweep.store.schema import ATTR_DUPLICATE_OF, ATTR_METRICS, ATTR_RUNGS


def cost_line(study: optuna.Study, since: datetime.datetime, seconds: float) -> str | None:
    """Configurations scored (at least at the first rung) in this run, per hour, and where the time went."""
    trials = study.get_trials(deepcopy=False)
    spent = [
        t for t in trials
        if t.datetime_complete is not None and t.datetime_complete >= since and (is_scored(t) or rung_reached(t) is not None)
    ]  # fmt: skip
    # one configuration each (a paused trial a later one continued counts once, its time in both parts; duplicates never trained)
    spent_numbers = {t.number for t in spent}
    scored = [t for t in sweep_configurations(trials) if t.number in spent_numbers]
    if not scored or seconds <= 0:
        return None
    parts = {name: sum(t.user_attrs.get(ATTR_METRICS, {}).get(f"{name}_seconds", 0.0) for t in spent) for name in ("train", "sampling", "fid")}
    total = sum(parts.values()) or 1.0
    split = ", ".join(f"{name} {100 * value / total:.0f} %" for name, value in parts.items())
    return f"{len(scored)} configurations scored in {seconds / 60:.1f} min: {len(scored) * 3600 / seconds:.0f} per hour (trial time: {split})"


def rung_agreement_line(study: optuna.Study, keys: tuple[str, ...], rungs: tuple[int, ...]) -> str:
    """How the first rung's scores rank the trials that reached the last rung, against their final
    scores (``keys``: the score each rung ranks by, e.g. fid_32 at the first and fid_128 at the last)."""
    pairs, first, last = [], keys[0], keys[-1]
    for trial in study.get_trials(deepcopy=False):
        records = {r["rung"]: r for r in trial.user_attrs.get(ATTR_RUNGS, [])}
        if is_scored(trial) and ATTR_DUPLICATE_OF not in trial.user_attrs and 0 in records and len(rungs) - 1 in records and first in records[0]:
            pairs.append((records[0][first], records[len(rungs) - 1][last]))
    if len(pairs) < 3:
        return f"rung 1 vs rung {len(rungs)}: {len(pairs)} trial(s) reached the last rung, too few for a rank correlation (3 or more)"
    agreement = rank_agreement([a for a, _ in pairs], [b for _, b in pairs])
    on = first if first == last else f"{first} and {last}"
    return f"rung 1 ({rungs[0]} steps) vs rung {len(rungs)} ({rungs[-1]} steps) on {on}: {agreement.text()}"
