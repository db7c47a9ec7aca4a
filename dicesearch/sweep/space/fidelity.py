"""The ``fidelity:`` section of a search-space file: rungs of training steps scored like the full budget.

A search-space file may declare ``fidelity: {rungs: [60, 240, 960], keep: 1/3}``. Every
trial then trains to the first rung, is scored there exactly as at the end (the same N,
sampler and reference statistics: equal-N comparisons only), and goes on to the next rung
only by the rung rules of :mod:`dicesearch.sweep.lifecycle.rungs`.

``samples: [32, 128, 128]`` scores fewer images at a rung: there a trial samples the first n
of the budget's N images (image i's noise and label depend on i alone) and is scored against
the same N-image reference statistics, as ``fid_32``. Every trial at a rung is scored alike,
so the rung still ranks equal-n scores only; the last rung scores the budget's N. Fewer
images pay only where the rung still ranks as N would (``benchmarks/first_rung_samples.py``
measures it on a finished sweep).
"""

from __future__ import annotations

import math

from pydantic import Field, PositiveInt, field_validator

from dicesearch.filemodel import FileModel


class Fidelity(FileModel):
    """The ``fidelity:`` section of a search-space file (finite numbers, no boolean for a number)."""

    rungs: tuple[PositiveInt, ...] = Field(description="Training steps at which a trial is scored; the last is the full budget.")
    keep: float = Field(description="The fraction of the trials scored at a rung that go on to the next (e.g. 1/3).")
    samples: tuple[PositiveInt, ...] | None = Field(
        None, description="Images scored at each rung (fid_n), one per rung, the last the budget's fid_samples; default: fid_samples at every rung."
    )

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
