"""The first-rung plots drawn ahead by a low-priority child, and taken at the sweep's end only while the study still gives what was drawn."""

from __future__ import annotations

import os
import time

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from dicesearch.sweep.results import ahead as module
from dicesearch.sweep.results.ahead import PlotsAhead, decode_trials, encode_trials
from dicesearch.sweep.results.plots import plotted_trials, save_score_plots
from dicesearch.sweep.store.schema import ATTR_CONTINUES, ATTR_RUNGS, ATTR_STATUS

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the child lowers its priority with os.nice")

_SPACE = {"x": FloatDistribution(0.01, 1.0, log=True), "kind": CategoricalDistribution(["a", "b"])}


def _paused_at_first_rung(study, x: float, kind: str, score: float) -> None:
    study.add_trial(create_trial(
        params={"x": x, "kind": kind}, distributions=_SPACE, state=TrialState.PRUNED, intermediate_values={10: score},
        user_attrs={ATTR_RUNGS: [{"rung": 0, "steps": 10, "fid_8": score}], ATTR_STATUS: "paused"},
    ))  # fmt: skip


def _continued_to_second_rung(study, continues: int) -> None:
    paused = study.trials[continues]
    first = paused.intermediate_values[10]
    study.add_trial(create_trial(
        params=paused.params, distributions=_SPACE, state=TrialState.PRUNED, intermediate_values={10: first, 20: first - 50},
        user_attrs={ATTR_RUNGS: [{"rung": 0, "steps": 10, "fid_8": first}, {"rung": 1, "steps": 20, "fid_8": first - 50}], ATTR_STATUS: "paused",
                    ATTR_CONTINUES: continues},
    ))  # fmt: skip


@pytest.fixture
def quick_watch(monkeypatch):
    monkeypatch.setattr(module, "WATCH_S", 0.05)


def _until(condition, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_trials_cross_to_the_child_exactly():
    study = optuna.create_study()
    _paused_at_first_rung(study, 0.1234567890123, "a", 251.123456789)
    _paused_at_first_rung(study, 1 / 3, "b", 199.5)
    plotted = plotted_trials(study, 10)
    again = decode_trials(encode_trials(plotted))
    assert [(t.params, t.distributions, t.value) for t in again] == [(t.params, t.distributions, t.value) for t in plotted]


def test_a_continuation_is_plotted_in_its_paused_trials_place():
    study = optuna.create_study()
    for i, score in enumerate((200.0, 190.0, 210.0)):
        _paused_at_first_rung(study, 0.1 * (i + 1), "a", score)
    before = encode_trials(plotted_trials(study, 10))
    _continued_to_second_rung(study, continues=0)  # trial 3 stands for trial 0 now
    _continued_to_second_rung(study, continues=3)  # and trial 4 for trial 3
    assert encode_trials(plotted_trials(study, 10)) == before
    assert [t.value for t in plotted_trials(study, 10)] == [200.0, 190.0, 210.0]


def test_the_child_draws_once_every_configuration_has_its_first_rung_and_the_end_takes_its_plots(tmp_path, quick_watch):
    study = optuna.create_study(study_name="ahead")
    for i in range(2):
        _paused_at_first_rung(study, 0.1 * (i + 1), "ab"[i % 2], 200.0 - i)
    ahead = PlotsAhead(["fid_8"], first_rung=10)
    ahead.start()
    try:
        assert _until(lambda: os.getpriority(os.PRIO_PROCESS, ahead._child.pid) == module.LOWEST_PRIORITY, 30)  # noqa: SLF001
        ahead.watch(study, tmp_path / "plots", configurations=3)
        time.sleep(0.5)
        assert ahead._sent is None  # noqa: SLF001 - two of three configurations: not yet
        _paused_at_first_rung(study, 0.7, "a", 190.0)  # the last configuration's first rung
        assert _until(lambda: ahead._sent is not None)  # noqa: SLF001
        # later trials change nothing the plots draw: a continuation of trial 1 (which now stands
        # for it, in its place), then a trial scored at the last rung
        _continued_to_second_rung(study, continues=1)
        study.tell(study.ask(), 180.0)
        drawn = ahead.take(study)
    finally:
        ahead.close()
    assert drawn is not None and sorted(p.name for p in drawn) == ["optimization_history.png", "slice.png"]
    # what the end would have drawn itself
    again = save_score_plots(plotted_trials(study, 10), "ahead", ["minimize"], tmp_path / "again", ["fid_8"], 10)
    for path in drawn:
        assert np.array_equal(_pixels(path), _pixels(tmp_path / "again" / path.name)), path.name
    assert [p.name for p in again] == [p.name for p in drawn]


def test_the_end_draws_the_plots_itself_if_the_trials_changed_after_they_were_sent(tmp_path, quick_watch):
    study = optuna.create_study(study_name="ahead")
    for i in range(2):
        _paused_at_first_rung(study, 0.1 * (i + 1), "a", 200.0 - i)
    ahead = PlotsAhead(["fid_8"], first_rung=10)
    ahead.start()
    try:
        ahead.watch(study, tmp_path / "plots", configurations=2)
        assert _until(lambda: ahead._sent is not None)  # noqa: SLF001
        _paused_at_first_rung(study, 0.9, "b", 150.0)  # a configuration more (say, an interrupted one run again)
        assert ahead.take(study) is None
    finally:
        ahead.close()


def test_a_child_sent_nothing_ends_with_the_sweep_and_draws_nothing(tmp_path, quick_watch):
    study = optuna.create_study(study_name="ahead")
    _paused_at_first_rung(study, 0.5, "a", 200.0)
    ahead = PlotsAhead(["fid_8"], first_rung=10)
    ahead.start()
    child = ahead._child  # noqa: SLF001
    ahead.watch(study, tmp_path / "plots", configurations=5)  # never all in
    start = time.monotonic()
    assert ahead.take(study) is None
    assert time.monotonic() - start < 15 and child.poll() is not None
    assert not (tmp_path / "plots").exists()


def test_only_sweeps_with_rungs_and_one_objective_draw_ahead():
    from types import SimpleNamespace

    def config(fidelity, directions):
        return SimpleNamespace(fidelity=fidelity, objective=SimpleNamespace(directions=directions), rung_keys=("fid_64", "fid_128"))

    rungs = SimpleNamespace(rungs=(100, 400))
    made = PlotsAhead.for_sweep(config(rungs, ["minimize"]))
    assert (made.first_rung, made.target_names) == (100, ["fid_64"])
    assert PlotsAhead.for_sweep(config(None, ["minimize"])) is None
    assert PlotsAhead.for_sweep(config(rungs, ["minimize", "minimize"])) is None
