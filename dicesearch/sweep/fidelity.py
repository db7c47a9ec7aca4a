"""Multi-fidelity on the score: rungs of training steps, each scored as the full budget is.

A search-space file may declare ``fidelity: {rungs: [60, 240, 960], keep: 1/3}``. Every
trial then trains to the first rung, is scored there exactly as at the end (the same N,
sampler and reference statistics: equal-N comparisons only), and goes on to the next rung
only if its score is among the best ``keep`` of the scores at that rung. A trial that goes
on continues from its rung checkpoint, never from scratch, and its scores at every rung are
Optuna intermediate values (the step is the rung's training steps), which is what TPE
ranks stopped trials by.

Two forms of asynchronous successive halving (Li et al. 2020, "A System for Massively
Parallel Hyperparameter Tuning"):

* **Promotion** (the Optuna backend; the paper's Alg. 2, with its budget capped): with n
  trials scored at a rung, floor(n * keep) of them may go on, the best ones not yet
  promoted, while fewer than that many have gone on from it. A trial that may go on when
  it reaches the rung goes straight on; one that may not is *paused* there with its
  checkpoint, and is continued later, before any new configuration is drawn, if later
  trials make room for it. Once the sweep has drawn all its configurations the count
  becomes max(1, floor(n * keep)), so at least one trial reaches the full budget. Nothing
  is spent on the first trials merely for being first, and at most floor(n * keep) trials
  go on from a rung of n.
* **Stopping** (the Ray backend, as Tune's ASHA): a trial goes on if it is among the best
  max(1, floor(n * keep)) of the n scored at the rung so far, else it stops for good
  (*pruned*); the first trial at a rung always goes on.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from pydantic import Field, PositiveInt, field_validator

from dicesearch.filemodel import FileModel


class Fidelity(FileModel):
    """The ``fidelity:`` section of a search-space file (finite numbers, no boolean for a number)."""

    rungs: tuple[PositiveInt, ...] = Field(description="Training steps at which a trial is scored; the last is the full budget.")
    keep: float = Field(description="The fraction of the trials scored at a rung that go on to the next (e.g. 1/3).")

    @field_validator("rungs")
    @classmethod
    def _increasing(cls, value):
        if len(value) < 2:
            raise ValueError("give at least two rungs of training steps, e.g. [60, 240, 960]")
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError(f"rungs must increase, got {list(value)}; write them as training steps, e.g. [60, 240, 960]")
        return value

    @field_validator("keep", mode="before")
    @classmethod
    def _fraction(cls, value):
        if isinstance(value, bool):
            raise ValueError("keep is a fraction of the trials, e.g. 1/3 or 0.5")
        if isinstance(value, str):
            numerator, slash, denominator = value.partition("/")
            try:
                value = float(numerator) / float(denominator) if slash else float(value)
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"keep: {value!r} is not a fraction; write e.g. 1/3 or 0.5") from None
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value < 1:
            raise ValueError(f"keep must be a fraction between 0 and 1 (exclusive), e.g. 1/3; got {value!r}")
        return float(value)


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
