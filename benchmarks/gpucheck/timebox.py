"""The check's time budget: each section gets a share of what is left when it starts."""

from __future__ import annotations

import time


class Deadline:
    """A point in time; work that cannot finish before it is skipped and reported as such."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.end = self.start + seconds

    @property
    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def allows(self, seconds: float = 0.0) -> bool:
        """Is there time left for work expected to take ``seconds``?"""
        return not self.expired and self.remaining >= seconds

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


class Budget:
    """``total_s`` seconds for the sections named in ``weights``, shared in those proportions.

    A section that finishes early leaves its time to the ones after it: each section's
    deadline is its weight's share of the time left when it starts.
    """

    def __init__(self, total_s: float, weights: dict[str, float]):
        self.clock = Deadline(total_s)
        self.weights = dict(weights)

    def section(self, name: str) -> Deadline:
        weight = self.weights.pop(name)
        share = weight / (weight + sum(self.weights.values()))
        return Deadline(self.clock.remaining * share)
