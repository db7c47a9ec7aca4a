"""Which earlier trials a new configuration is drawn from: the same ones whatever finishes first.

Optuna's TPE draws a trial's configuration from the trials finished when it asks. With two or
more trials running at once, which those are depends on which trial finished first (the
machine, its load, a lever that makes some trials faster), and one space and seed can take
another path on another run: two of twelve default sweeps on this project's machine never drew
the configuration the others picked (docs/benchmarks.md, "The second rung at 64 images").

With ``draw_order: fixed`` the k-th configuration a sweep draws (k = 0, 1, ...; continuations
and retries draw none) is drawn by a sampler seeded from (seed, k) from a fixed history: the
first-rung results of the configurations drawn before it, except the last P - 1 (P the sweep's
parallelism): those may still run beside it, and the sampler sees them as running trials (as
Optuna's constant liar sees running trials, so that it does not draw next to them). Neither
depends on the order trials finish in, so one space and seed draw the same configurations on
every run (up to the rounding of trials that borrowed an idle core). A configuration of the
history still in its first rung in this process is waited for (not while the history is too
short for the sampler to read: it draws at random then); one running in another process is
left out until it has a result.

A configuration's *first-rung result* is what is known of it after its first rung, whatever
happened to it later: its score there (without rungs, its result), as a complete trial; a
configuration rejected by the budget gate as it was recorded (infeasible, so that the sampler
learns where the budget ends); a duplicate as the trial whose result it reused; an interrupted
one as the trial that ran it again. Failed and invalid ones are left out, as TPE leaves them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState, create_trial

from dicesearch.sweep.store.schema import ATTR_DUPLICATE_OF, ATTR_PARAMS, ATTR_RETRY_OF, ATTR_STATUS, ATTR_WORKER, STATUS_INTERRUPTED, STATUS_SURPLUS

ENQUEUED = "fixed_params"  # Optuna's system attribute of a trial whose values were given, not drawn


@dataclass(frozen=True)
class DrawHistory:
    """What the ``index``-th drawn configuration is drawn from."""

    index: int  # configurations drawn before this one
    trials: list[FrozenTrial] = field(default_factory=list)  # their first-rung results, as the sampler sees them
    pending: list[FrozenTrial] = field(default_factory=list)  # trials whose first-rung results it lacks (running, or waiting to run)


def drew(trial: FrozenTrial) -> bool:
    """Whether ``trial`` drew its configuration (not a continuation, retry or given one; not surplus)."""
    return ENQUEUED not in trial.system_attrs and trial.user_attrs.get(ATTR_STATUS) != STATUS_SURPLUS


def history_for(trials: Sequence[FrozenTrial], number: int, parallelism: int, first_rung: int | None, reads_from: int = 0) -> DrawHistory:
    """The history trial ``number`` draws its configuration from. ``trials``: the study's (oldest
    first); ``first_rung``: the first rung's steps (None without rungs); ``reads_from``: the
    fewest results the sampler reads (with fewer it draws at random whatever they are, and
    nothing is waited for)."""
    by_number = {t.number: t for t in trials}
    retried = {t.user_attrs[ATTR_RETRY_OF]: t for t in trials if ATTR_RETRY_OF in t.user_attrs}
    earlier = [t for t in trials if t.number < number and drew(t)]
    cut = max(0, len(earlier) - (parallelism - 1))
    window, beside = earlier[:cut], earlier[cut:]
    history, pending = [], []
    for trial in window:
        result, awaited = _first_result(trial, by_number, retried, first_rung)
        if result is not None:
            history.append(result)
        if awaited is not None:
            pending.append(awaited)
    for trial in beside:  # may still run: running trials to the sampler (Optuna's constant liar), once drawn
        if ATTR_PARAMS in trial.user_attrs:  # its proposal is complete (its params are written one by one)
            history.append(create_trial(state=TrialState.RUNNING, params=trial.params, distributions=trial.distributions))
        elif trial.state in (TrialState.RUNNING, TrialState.WAITING):
            pending.append(trial)  # not drawn yet: waited for (a moment, or while it waits for its own history)
    return DrawHistory(len(earlier), history, pending if len(window) >= reads_from else [])


def await_history(
    read: Callable[[], Sequence[FrozenTrial]],
    number: int,
    parallelism: int,
    first_rung: int | None,
    worker: str,
    stop: threading.Event,
    waits: Callable[[list[int]], Callable[[], None]],
    reads_from: int = 0,
    poll_s: float = 0.25,
) -> DrawHistory | None:
    """Trial ``number``'s history once every configuration of it that ``worker`` (this process)
    runs has its first-rung result; None if the trial draws nothing (its values were given).
    ``read()``: the study's trials now; ``waits(numbers)`` is called once if it must wait for
    those trials and returns what to call when the wait ends. Raises KeyboardInterrupt once
    ``stop`` is set (the sweep is stopping)."""
    ended: Callable[[], None] | None = None
    try:
        while True:
            trials = read()
            if not drew(next(t for t in trials if t.number == number)):
                return None
            history = history_for(trials, number, parallelism, first_rung, reads_from)
            ours = [t.number for t in history.pending if t.state == TrialState.RUNNING and t.user_attrs.get(ATTR_WORKER) == worker]
            if not ours:
                return history
            if ended is None:
                ended = waits(ours)
            if stop.wait(poll_s):
                raise KeyboardInterrupt
    finally:
        if ended is not None:
            ended()


def _first_result(trial: FrozenTrial, by_number, retried, first_rung: int | None) -> tuple[FrozenTrial | None, FrozenTrial | None]:
    """(``trial``'s first-rung result as the sampler sees it, or None where it has none or the
    sampler leaves it out; the trial that result still waits for, or None)."""
    if first_rung is not None and first_rung in trial.intermediate_values:
        score = trial.intermediate_values[first_rung]
        return create_trial(state=TrialState.COMPLETE, value=score, params=trial.params, distributions=trial.distributions), None
    attrs = trial.user_attrs
    if ATTR_DUPLICATE_OF in attrs and attrs[ATTR_DUPLICATE_OF] in by_number:
        return _first_result(by_number[attrs[ATTR_DUPLICATE_OF]], by_number, retried, first_rung)
    if attrs.get(ATTR_STATUS) == STATUS_INTERRUPTED:
        again = retried.get(trial.number)
        return (None, trial) if again is None else _first_result(again, by_number, retried, first_rung)
    if trial.state == TrialState.FAIL:
        return None, None
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return trial, None
    return None, trial  # running before its first result, or waiting to run
