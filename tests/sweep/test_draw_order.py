"""A fixed order of draws: what each configuration is drawn from, and that finishing order no longer moves the path."""

import heapq
import math
import random
import threading
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from dicesearch.sweep.store.draw_order import ENQUEUED, await_history, history_for
from dicesearch.sweep.space.samplers import make_sampler
from dicesearch.sweep.store.schema import (
    ATTR_CONTINUES,
    ATTR_DUPLICATE_OF,
    ATTR_PARAMS,
    ATTR_RETRY_OF,
    ATTR_STATUS,
    ATTR_WORKER,
    CONSTRAINT,
)

CHANNELS = IntDistribution(64, 128, step=32)
LAMBDA = FloatDistribution(0.1, 10.0, log=True)
KIND = CategoricalDistribution(["adaln_zero", "tdln"])
DISTRIBUTIONS = {"channels": CHANNELS, "lambda": LAMBDA, "kind": KIND}
FIRST = 100  # the first rung's steps


def a_trial(number, state=TrialState.PRUNED, rungs=None, channels=64, user=None, system=None, value=None):
    trial = create_trial(
        state=state,
        value=value,
        params={"channels": channels, "lambda": 1.0, "kind": "tdln"},
        distributions=DISTRIBUTIONS,
        intermediate_values=rungs or {},
        user_attrs=user or {},
        system_attrs=system or {},
    )
    trial.number = number
    return trial


def running(number, rungs=None, worker="here:1", **kwargs):
    trial = a_trial(number, rungs=rungs, user={ATTR_WORKER: worker, **kwargs.pop("user", {})}, **kwargs)
    trial.state = TrialState.RUNNING
    return trial


def test_a_draw_sees_the_first_rung_scores_of_all_but_the_last_parallelism_minus_one_drawn_before_it():
    trials = [
        a_trial(0, rungs={FIRST: 50.0, 400: 40.0}),  # went on: seen by its first-rung score all the same
        a_trial(1, rungs={FIRST: 70.0}, channels=96),
        a_trial(2, rungs={FIRST: 50.0, 400: 45.0}, user={ATTR_CONTINUES: 0}, system={ENQUEUED: {}}),  # drew nothing
        running(3, rungs={FIRST: 60.0}, channels=128, user={ATTR_PARAMS: {}}),  # straight on from its first rung: seen
        running(4, channels=96, user={ATTR_PARAMS: {}}),  # the last drawn before 5: may still run beside it (parallelism 2)
    ]
    history = history_for(trials, 5, parallelism=2, first_rung=FIRST)
    assert history.index == 4  # trials 0, 1, 3 and 4 drew; the continuation did not
    assert [(t.state, t.value, t.params["channels"]) for t in history.trials] == [
        (TrialState.COMPLETE, 50.0, 64),
        (TrialState.COMPLETE, 70.0, 96),
        (TrialState.COMPLETE, 60.0, 128),
        (TrialState.RUNNING, None, 96),  # a constant liar's running trial, whatever it has scored by now
    ]
    assert history.pending == []
    assert [t.number for t in history_for(trials, 5, parallelism=1, first_rung=FIRST).pending] == [4]  # one at a time: waited for
    three = history_for(trials, 5, parallelism=3, first_rung=FIRST)
    assert [(t.state, t.value) for t in three.trials] == [(TrialState.COMPLETE, 50.0), (TrialState.COMPLETE, 70.0), (TrialState.RUNNING, None), (TrialState.RUNNING, None)]
    assert history_for(trials, 5, parallelism=1, first_rung=FIRST, reads_from=5).pending == []  # too short to be read: nothing to wait for


def test_a_configuration_beside_the_draw_is_waited_for_until_it_is_drawn():
    trials = [a_trial(0, rungs={FIRST: 50.0}), running(1, channels=96)]  # trial 1 asked, its values not all written yet
    assert [t.number for t in history_for(trials, 2, parallelism=2, first_rung=FIRST).pending] == [1]


def test_a_rejected_trial_is_seen_as_recorded_a_duplicate_as_its_original_and_a_failure_not_at_all():
    rejected = a_trial(1, state=TrialState.COMPLETE, value=float("inf"), channels=128, user={ATTR_STATUS: "rejected"}, system={f"constraints:{CONSTRAINT}": 3.0})
    trials = [
        a_trial(0, rungs={FIRST: 55.0}),
        rejected,
        a_trial(2, state=TrialState.PRUNED, user={ATTR_STATUS: "pruned", ATTR_DUPLICATE_OF: 0}),  # reused trial 0's result
        a_trial(3, state=TrialState.FAIL, user={ATTR_STATUS: "failed"}),
        a_trial(4, rungs={FIRST: 65.0}),
    ]
    history = history_for(trials, 5, parallelism=1, first_rung=FIRST)
    assert history.index == 5 and history.pending == []
    assert [t.value for t in history.trials] == [55.0, float("inf"), 55.0, 65.0]
    assert history.trials[1] is rejected  # its constraint tells TPE where the budget ends


def test_an_interrupted_configuration_is_seen_as_the_trial_that_runs_it_again():
    interrupted = a_trial(0, state=TrialState.FAIL, user={ATTR_STATUS: "interrupted"})
    retry = running(1, user={ATTR_RETRY_OF: 0}, system={ENQUEUED: {}})
    history = history_for([interrupted, retry], 2, parallelism=1, first_rung=FIRST)
    assert history.index == 1 and history.trials == [] and history.pending == [retry]
    retry_scored = running(1, rungs={FIRST: 58.0}, user={ATTR_RETRY_OF: 0}, system={ENQUEUED: {}})
    assert [t.value for t in history_for([interrupted, retry_scored], 2, 1, FIRST).trials] == [58.0]
    assert history_for([interrupted], 1, 1, FIRST).pending == [interrupted]  # not queued again (yet): nobody to wait for here


def test_without_rungs_a_configuration_is_seen_once_it_has_finished():
    trials = [a_trial(0, state=TrialState.COMPLETE, value=61.0), running(1, rungs={5: 0.3})]  # trial 1's intermediate values are losses
    history = history_for(trials, 2, parallelism=1, first_rung=None)
    assert [t.value for t in history.trials] == [61.0] and [t.number for t in history.pending] == [1]


def test_a_draw_waits_for_this_processs_trial_in_its_first_rung_and_lends_its_cores_meanwhile():
    scored = threading.Event()
    waited: list[list[int]] = []
    ended: list[bool] = []

    def read():
        return [a_trial(0, rungs={FIRST: 50.0}), running(1, rungs={FIRST: 52.0} if scored.is_set() else None), running(2, user={ATTR_PARAMS: {}}), running(3)]

    def waits(numbers):
        waited.append(numbers)
        return lambda: ended.append(True)

    threading.Timer(0.3, scored.set).start()
    started = time.perf_counter()
    history = await_history(read, 3, parallelism=2, first_rung=FIRST, worker="here:1", stop=threading.Event(), waits=waits, poll_s=0.02)
    assert time.perf_counter() - started >= 0.25
    assert waited == [[1]] and ended == [True]  # said once, and its cores taken back once
    assert [t.value for t in history.trials] == [50.0, 52.0, None]


def test_another_processs_trial_is_not_waited_for_and_a_stopping_sweep_stops_the_wait():
    def read():
        return [running(0, worker="there:7"), a_trial(1, rungs={FIRST: 52.0}), running(2)]

    history = await_history(read, 2, 1, FIRST, "here:1", threading.Event(), waits=lambda n: pytest.fail("waited"), poll_s=0.01)
    assert [t.value for t in history.trials] == [52.0] and [t.number for t in history.pending] == [0]  # left out until it has a result
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(KeyboardInterrupt):
        await_history(lambda: [running(0), running(1)], 1, 1, FIRST, "here:1", stop, waits=lambda n: (lambda: None), poll_s=0.01)


def test_a_trial_whose_values_were_given_draws_nothing():
    given = running(1, user={ATTR_CONTINUES: 0}, system={ENQUEUED: {"channels": 64}})
    assert await_history(lambda: [a_trial(0, rungs={FIRST: 1.0}), given], 1, 2, FIRST, "here:1", threading.Event(), waits=lambda n: pytest.fail("waited")) is None


# -- the point of it: a sweep whose trials finish in another order draws the same configurations --------------


def first_rung_score(params) -> float:
    """A smooth stand-in for a configuration's first-rung FID (best: 96 channels, lambda 1, adaLN-Zero)."""
    return 50 + abs(params["channels"] - 96) / 8 + 6 * math.log10(params["lambda"]) ** 2 + (0 if params["kind"] == "adaln_zero" else 4)


def simulated_sweep(durations_seed: int, fixed: bool, configurations: int = 14, parallelism: int = 2) -> list[tuple]:
    """Workers that claim a trial as they free up, draw its configuration (with ``fixed``, once
    its history has its first-rung results) and score it after a random time (from
    ``durations_seed``), simulated in time order: the configurations drawn, in draw order."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    durations = random.Random(durations_seed)
    clock, scorings, claimed, drawn = 0.0, [], [], {}  # scorings: (time it scores, trial number); claimed: not drawn yet
    while len(drawn) < configurations or scorings:
        for trial in list(claimed):
            history = history_for(study.get_trials(deepcopy=False), trial.number, parallelism, FIRST, reads_from=3) if fixed else None
            if history is not None and history.pending:
                continue  # waits for a first rung still running
            seed = 42 + (history.index if fixed else trial.number)
            study.sampler = make_sampler(["minimize"], seed, history.trials if fixed else None)
            values = {name: trial._suggest(name, distribution) for name, distribution in DISTRIBUTIONS.items()}
            trial.set_user_attr(ATTR_PARAMS, values)
            drawn[trial.number] = (values["channels"], round(values["lambda"], 9), values["kind"])
            heapq.heappush(scorings, (clock + durations.uniform(5.0, 20.0), trial.number))
            claimed.remove(trial)
        busy = len(claimed) + len(scorings)
        if busy < parallelism and len(drawn) + len(claimed) < configurations:
            trial = study.ask()
            trial.set_user_attr(ATTR_WORKER, "here:1")
            claimed.append(trial)
            continue
        clock, number = heapq.heappop(scorings)
        trial_id = study.get_trials(deepcopy=False)[number]._trial_id
        study._storage.set_trial_intermediate_value(trial_id, FIRST, first_rung_score(drawn_params(study, number)))
        study._storage.set_trial_state_values(trial_id, TrialState.PRUNED)
    return [drawn[number] for number in sorted(drawn)]


def drawn_params(study, number):
    return study.get_trials(deepcopy=False)[number].params


def test_trials_finishing_in_another_order_draw_the_same_configurations_with_a_fixed_order_only():
    fixed = [simulated_sweep(seed, fixed=True) for seed in range(4)]
    assert all(path == fixed[0] for path in fixed[1:])
    assert len(set(fixed[0])) > 10  # real draws, not one configuration over and over
    finishing = [simulated_sweep(seed, fixed=False) for seed in range(4)]
    assert any(path != finishing[0] for path in finishing[1:])  # Optuna's own way: the order moves the path
    # TPE still learns from the history: the later draws score better than the random first ones
    scores = [first_rung_score({"channels": c, "lambda": lam, "kind": k}) for c, lam, k in fixed[0]]
    assert sum(scores[-5:]) / 5 < sum(scores[:4]) / 4
