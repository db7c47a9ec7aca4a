"""sweep_configurations: each configuration a sweep tried, once (the table's, plots' and cost line's count)."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from dicesearch.sweep.store.queries import sweep_configurations
from dicesearch.sweep.store.schema import ATTR_CONTINUES, ATTR_DUPLICATE_OF, ATTR_RUNGS, ATTR_STATUS

_X = {"x": FloatDistribution(0.0, 1.0)}


def _add(study, x: float, state: TrialState, value=None, rungs=(), **attrs) -> None:
    records = [{"rung": i, "steps": 10 * (i + 1), "fid": 100.0 - i} for i in range(len(rungs))]
    study.add_trial(create_trial(
        params={"x": x}, distributions=_X, state=state, value=value,
        intermediate_values={10 * (i + 1): v for i, v in enumerate(rungs)},
        user_attrs={**({ATTR_RUNGS: records} if records else {}), **attrs},
    ))  # fmt: skip


def test_each_configuration_once():
    study = optuna.create_study()
    _add(study, 0.1, TrialState.COMPLETE, 5.0, rungs=[9.0, 5.0])  # 0: went to the last rung
    _add(study, 0.2, TrialState.PRUNED, rungs=[9.5], **{ATTR_STATUS: "paused"})  # 1: paused, later continued by 4
    _add(study, 0.3, TrialState.PRUNED, rungs=[9.9], **{ATTR_STATUS: "paused"})  # 2: paused, never continued
    _add(study, 0.1, TrialState.COMPLETE, 5.0, **{ATTR_DUPLICATE_OF: 0})  # 3: 0's result again, never trained
    _add(study, 0.2, TrialState.COMPLETE, 6.0, rungs=[9.5, 6.0], **{ATTR_CONTINUES: 1})  # 4: stands for 1
    _add(study, 0.4, TrialState.FAIL, **{ATTR_STATUS: "failed"})  # 5: never scored
    _add(study, 0.5, TrialState.COMPLETE, 7.0)  # 6: a straight (single-fidelity) trial
    assert [t.number for t in sweep_configurations(study.get_trials())] == [0, 2, 4, 6]
