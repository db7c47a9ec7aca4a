"""The rung rules of multi-fidelity: which trial goes on from a rung, in both forms, in one place.

With ``fidelity: {rungs: [...], keep: k}`` (:mod:`dicesearch.sweep.space.fidelity`) every trial
is scored at each rung exactly as at the full budget, and its scores are Optuna
intermediate values (the step is the rung's training steps), which is what TPE ranks
stopped trials by. A trial that goes on continues from its rung checkpoint, never from
scratch. Which trials go on is one of two forms of asynchronous successive halving (Li et
al. 2020, "A System for Massively Parallel Hyperparameter Tuning"):

==================  ==========================================  ==========================================
                    **promotion** (the Optuna backend)           **stopping** (the Ray backend, as ASHA)
==================  ==========================================  ==========================================
decided by          the sweep process, when the trial reports   the driver's scheduler, on the trial's
                    its rung score (:func:`by_promotion`)       rung result (:func:`by_stopping`)
n                   trials scored at the rung (running or       trials scored at the rung so far
                    finished, each configuration once)
goes on if          among the best floor(n * k) not yet         among the best max(1, floor(n * k)) of
                    promoted, while fewer than floor(n * k)     the n
                    have gone on from the rung (the paper's
                    Alg. 2, its budget capped)
once all drawn      max(1, floor(n * k)): at least one trial     (no change)
                    reaches the full budget; where floor(n * k)
                    is 0, a paused trial only once no running
                    trial has yet to score at the rung or a
                    lower one and no lower rung's paused trial
                    may go on (a first rung still running may
                    make one promotable to the rung); a trial
                    scoring there as the best goes straight on
otherwise           *paused* with its checkpoint; continued     *pruned*: stopped for good
                    by a new trial before any new configuration
                    is drawn if later trials make it promotable
                    (:func:`promotable_paused`, :func:`take_over`)
worse at the next   gives its place at the rung up: the next     (no change)
rung                best there may go on (:func:`standing`)
the first trial     paused (floor(1 * k) = 0 go on)              goes on
cost                at most floor(n * k) go on from a rung of    every trial that is best so far goes on
                    n, whatever order the sampler finds them     (early trials go far)
==================  ==========================================  ==========================================

A trial without a finite score at a rung does not go on in either form: it is *failed*.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from dicesearch.sweep.lifecycle.messages import TrialOutcome
from dicesearch.sweep.store.schema import ATTR_RUNGS, STATUS_PAUSED, Status


@dataclass(frozen=True)
class RungDecision:
    """Whether a trial goes on from a rung; if not, the status and reason it ends with there."""

    go_on: bool
    status: Status | None = None  # paused (promotion), pruned (stopping) or failed (no score)
    reason: str = ""

    def applied_to(self, outcome: TrialOutcome) -> TrialOutcome:
        """The trial's outcome as recorded: one that stopped at the rung ends with this decision
        (and that rung's scores); any other outcome stands."""
        if self.go_on or outcome.status != "complete":
            return outcome
        return outcome.model_copy(update={"status": self.status, "reason": self.reason})


def no_score(index: int, steps: int, key: str) -> RungDecision:
    return RungDecision(False, "failed", f"failed: no {key} at rung {index + 1} ({steps} steps)")


def by_promotion(view, number: int, index: int, steps: int, score: float | None, keep: float, direction: str, key: str, final: bool) -> RungDecision:
    """The promotion form: trial ``number`` scored ``score`` at rung ``index`` (``steps``);
    ``view`` is the study read once (:class:`~dicesearch.sweep.store.view.StudyView`) and
    ``final`` whether the sweep has drawn all its configurations."""
    if score is None:
        return no_score(index, steps, key)
    entries, promoted = standing(view, steps, direction, number)
    if number in promotable(entries, keep, direction, final, promoted):
        return RungDecision(True)
    return RungDecision(False, STATUS_PAUSED, pause_reason(index, steps, key, score, len(entries), keep, final, len(promoted)))


def by_stopping(score: float | None, scores_at_rung: Sequence[float], index: int, steps: int, keep: float, direction: str, key: str) -> RungDecision:
    """The stopping form: ``scores_at_rung`` are the scores seen at the rung so far, ``score`` included."""
    if score is None:
        return no_score(index, steps, key)
    if goes_on(score, scores_at_rung, keep, direction):
        return RungDecision(True)
    return stopped(score, len(scores_at_rung), index, steps, keep, key)


def stopped(score: float | None, n: int, index: int, steps: int, keep: float, key: str) -> RungDecision:
    """How a trial the stopping form stopped at a rung ends (``n`` trials scored there)."""
    if score is None:
        return no_score(index, steps, key)
    return RungDecision(False, "pruned", stop_reason(index, steps, key, score, n, keep))


def promotable_paused(view, rungs: Sequence[int], keep: float, direction: str, final: bool):
    """The promotion form's claim: a paused trial now among the promotable at its rung (the
    highest rung first), or None."""
    paused = {t.number: t for t in view.paused()}
    if not paused:
        return None
    for index in reversed(range(len(rungs) - 1)):
        steps = rungs[index]
        entries, promoted = standing(view, steps, direction)
        if final and promotion_count(len(entries), keep, False) == 0 and others_may_reach(view, steps, rungs[:index], keep, direction, final):
            continue  # the sweep's end sends one on from a rung too small for its fraction: the best of all that reach it
        for number in promotable(entries, keep, direction, final, promoted):
            if number in paused and max(paused[number].intermediate_values) == steps:
                return paused[number]
    return None


def others_may_reach(view, steps: int, lower: Sequence[int], keep: float, direction: str, final: bool) -> bool:
    """Whether the rung at ``steps`` may still gain a score: a running trial has not scored there
    or beyond yet, or a paused trial at a lower rung (``lower``: their steps) may go on now. The
    sweep's end waits for these before it sends one on from a rung too small for its fraction:
    otherwise the order in which trials finish decides (a default sweep sent the best of three
    at 400 steps on while the last first rung ran, which then promoted a fourth that scored better)."""
    if view.reaching(steps):
        return True
    paused = {t.number: t for t in view.paused()}
    return any(
        number in paused and max(paused[number].intermediate_values) == low
        for low in lower
        for number in _promotable_at(view, low, keep, direction, final)
    )


def standing(view, steps: int, direction: str, deciding: int | None = None) -> tuple[list[tuple[int, float]], set[int]]:
    """(number, score) of the trials that hold a place at the rung at ``steps``, and those of
    them that went on from it (``deciding``: the trial whose rung this is, not gone yet). A
    trial that went on and scored worse at the next rung than at this one gives its place up:
    it got nothing from the steps it was sent on for (a full-budget trial whose training spiked
    after the rung that chose it), and the next best there may go on in its place."""
    regressed = view.regressed_after(steps, direction)
    entries = [(number, score) for number, score in view.entries_at(steps) if number not in regressed]
    return entries, view.promoted_from(steps, deciding) - regressed


def _promotable_at(view, steps: int, keep: float, direction: str, final: bool) -> list[int]:
    entries, promoted = standing(view, steps, direction)
    return promotable(entries, keep, direction, final, promoted)


def take_over(study, number: int, earlier, earlier_run: Path, run_dir: Path, rungs: Sequence[int]) -> int:
    """Trial ``number`` continues ``earlier`` (a paused trial it promotes, or an interrupted one
    it retries): it takes over that trial's rung checkpoints (``earlier_run`` -> ``run_dir``)
    and the scores of the rungs they stand for, and returns the rung it starts at (0: from scratch)."""
    if not (earlier.intermediate_values and earlier_run.is_dir()):
        return 0
    done = [step for step in rungs if step in earlier.intermediate_values]
    start_rung = min(len(done), len(rungs) - 1)
    if earlier_run != run_dir:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(earlier_run), str(run_dir))  # this trial's own from now on (a retry of it finds them here)
    for step in done[:start_rung]:  # the scores it already has, as this trial's own
        study.report(number, earlier.intermediate_values[step], step)
    study.set_attrs(number, {ATTR_RUNGS: earlier.user_attrs.get(ATTR_RUNGS, [])[:start_rung]})
    return start_rung


# -- the rules -----------------------------------------------------------------------------------------


def goes_on(score: float, scores_at_rung: Sequence[float], keep: float, direction: str) -> bool:
    """Whether a trial with ``score`` at a rung continues, given every score at that rung
    (``score`` included): it must be among the best max(1, floor(n * keep)) of the n."""
    ranked = sorted(scores_at_rung, reverse=direction == "maximize")
    kept = max(1, math.floor(len(ranked) * keep))
    threshold = ranked[kept - 1]
    return score <= threshold if direction == "minimize" else score >= threshold


def promotion_count(n: int, keep: float, final: bool) -> int:
    """How many of the n trials scored at a rung are promotable: floor(n * keep), at least
    one once the sweep draws no more configurations (``final``)."""
    kept = math.floor(n * keep)
    return max(1, kept) if final and n else kept


def promotable(
    entries: Sequence[tuple[int, float]], keep: float, direction: str, final: bool, promoted: Collection[int] = ()
) -> list[int]:
    """The numbers of the trials that may go on from a rung, best first (ties go to the
    earlier trial): those among the best ``promotion_count`` of ``entries`` ((number, score)
    at the rung) not yet ``promoted``, while fewer than that count have been promoted from it.
    The cap bounds a sweep's cost whatever the order of its trials: a sampler that keeps
    finding better configurations does not send each new best on to the full budget."""
    ranked = sorted(entries, key=lambda e: (e[1] if direction == "minimize" else -e[1], e[0]))
    count = promotion_count(len(ranked), keep, final)
    slots = count - len(set(promoted))
    return [number for number, _ in ranked[:count] if number not in promoted][: max(0, slots)]


def pause_reason(index: int, steps: int, key: str, score: float, n: int, keep: float, final: bool, promoted: int = 0) -> str:
    count = promotion_count(n, keep, final)
    where = f"paused at rung {index + 1} ({steps} steps): {key} {score:.4g}"
    if count == 0:
        return f"{where}; {n} trial(s) scored there so far, too few for any to go on (keep {keep:.3g})"
    return f"{where}; {count} of the {n} trials scored there so far may go on, the best not yet gone on ({promoted} have)"


def stop_reason(index: int, steps: int, key: str, score: float, n: int, keep: float) -> str:
    kept = max(1, math.floor(n * keep))
    return f"pruned at rung {index + 1} ({steps} steps): {key} {score:.4g} is not among the best {kept} of the {n} trials scored there"
