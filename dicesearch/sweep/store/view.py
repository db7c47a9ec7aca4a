"""A study read once: every question a claim, a rung decision or a duplicate check asks of it.

A :class:`StudyView` holds the study's trials as one read of the storage
(:meth:`dicesearch.sweep.store.studies.SweepStudy.view`). A claim under the rung rule asks
several questions (how many trials count, which are running or paused, the scores at a
rung, who went on from it); asking them of one view costs one read of the storage instead
of one a question, which is what keeps a claim cheap when a study holds thousands of trials.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from dicesearch.sweep.store.schema import ATTR_CONTINUES, ATTR_RETRY_OF, ATTR_STATUS, NOT_COUNTED, REUSABLE, STATUS_PAUSED, superseded

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class StudyView:
    """The trials of a study at one moment (oldest first), and the questions asked of them."""

    def __init__(self, trials: list[FrozenTrial]):
        self.trials = trials
        self.gone = superseded(trials)  # paused trials a later trial continues: counted as that one
        self._live = [
            t for t in trials
            if t.state in (*FINISHED, TrialState.RUNNING) and t.user_attrs.get(ATTR_STATUS) not in NOT_COUNTED and t.number not in self.gone
        ]  # fmt: skip
        stand_ins, continuations = _awaiting_takeover(trials)
        self._stand_ins = {t.number for t in stand_ins}
        self._continuations = continuations  # trials that stand-ins hold the places of, meanwhile
        self._at_rungs = self._live + stand_ins  # who holds a place at a rung

    def counted(self) -> list[FrozenTrial]:
        """Trials that count towards the sweep's total: finished, except interrupted ones
        (re-run), surplus ones (never run) and paused ones a later trial continues."""
        return [t for t in self._live if t.state in FINISHED]

    def running(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.RUNNING]

    def paused(self) -> list[FrozenTrial]:
        """Paused trials no later trial continues (yet)."""
        return [t for t in self.trials if t.state == TrialState.PRUNED and t.user_attrs.get(ATTR_STATUS) == STATUS_PAUSED and t.number not in self.gone]

    def all_drawn(self, total: int) -> bool:
        """Whether the study holds (finished or running) all ``total`` configurations."""
        return len(self._live) >= total

    def rank_among_live(self, number: int) -> int:
        """How many counted or running trials have a smaller number than trial ``number``."""
        return sum(1 for t in self._live if t.number < number)

    def identical(self, values: Mapping[str, Any], number: int | None = None) -> FrozenTrial | None:
        """The earliest finished trial (other than ``number``) with exactly these values whose
        result holds for them too: scored, rejected by the gate, or paused at a rung (all deterministic)."""
        wanted = dict(values)
        for trial in self.trials:
            if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) or trial.number in self.gone or trial.number == number:
                continue
            if trial.params == wanted and trial.user_attrs.get(ATTR_STATUS) in REUSABLE:
                return trial
        return None

    # -- rungs -------------------------------------------------------------------------------

    def entries_at(self, step: int) -> list[tuple[int, float]]:
        """(number, intermediate value at ``step``) of every counted or running trial scored
        there, and of a paused or interrupted one whose continuation has not taken over its
        scores yet."""
        return [(t.number, t.intermediate_values[step]) for t in self._at_rungs if step in t.intermediate_values]

    def scores_at(self, step: int) -> list[float]:
        """Every counted or running trial's intermediate value at ``step`` (a rung's scores)."""
        return [score for _, score in self.entries_at(step)]

    def reaching(self, step: int) -> bool:
        """Whether a trial still running has scored nothing at the rung at ``step`` or beyond: it
        may still score there (on its way from the rung before), or, scoring at a lower rung,
        make a paused trial there promotable, who then may."""
        return any(
            not t.intermediate_values or max(t.intermediate_values) < step
            for t in self._at_rungs
            if (t.state == TrialState.RUNNING and t.number not in self._continuations) or t.number in self._stand_ins
        )

    def regressed_after(self, step: int, direction: str) -> set[int]:
        """Trials scored at the rung at ``step`` whose score at the next rung they reached is
        worse (``direction``: the objective's): they went on from it and got worse past it."""
        worse = (lambda later, here: later > here) if direction == "minimize" else (lambda later, here: later < here)
        regressed = set()
        for t in self._at_rungs:
            values = t.intermediate_values
            later = [s for s in values if s > step]
            if step in values and later and worse(values[min(later)], values[step]):
                regressed.add(t.number)
        return regressed

    def promoted_from(self, step: int, deciding: int | None = None) -> set[int]:
        """Counted or running trials that went on from the rung at ``step``: scored beyond it,
        or running on from it (``deciding``, the trial whose rung this is, has not gone yet).
        A trial whose continuation has not taken over yet goes on from every rung it scored at."""
        return {
            t.number for t in self._at_rungs
            if step in t.intermediate_values and t.number != deciding
            and (t.state == TrialState.RUNNING or t.number in self._stand_ins or max(t.intermediate_values) > step)
        }  # fmt: skip


def _awaiting_takeover(trials: list[FrozenTrial]) -> tuple[list[FrozenTrial], set[int]]:
    """Trials continued by a trial that waits, or runs without their rung scores yet (a paused
    trial promoted, an interrupted one retried): they keep their places at the rungs meanwhile,
    or a worker claiming in that gap would see a rung with nobody gone on from it and promote
    a second paused trial where the rule allows one. Returns them, and the numbers of the
    trials continuing them."""
    by_number = {t.number: t for t in trials}
    pairs = [
        (t.number, t.user_attrs.get(ATTR_CONTINUES, t.user_attrs.get(ATTR_RETRY_OF))) for t in trials
        if t.state in (TrialState.WAITING, TrialState.RUNNING) and not t.intermediate_values
    ]  # fmt: skip
    pairs = [(later, earlier) for later, earlier in pairs if earlier in by_number]
    return [by_number[earlier] for _, earlier in pairs], {later for later, _ in pairs}
