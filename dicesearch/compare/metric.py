"""A compared score: its name, which way is better, and the margin below which a difference is negligible.

Direction (lower or higher is better) follows from the score's family, the name without its
image count (``fid_128`` -> ``fid``): lower is better for FID, sFID and KID, higher for the
Inception Score, precision and recall (:mod:`dicesearch.metrics.evaluate` names them).

The equivalence margin δ (``delta``, in the score's own units) is the largest difference
that counts as negligible; :mod:`dicesearch.compare.verdict` states how the word
"equivalent" is read from it.

Default δ:

* ``fid_N``: **4.0 FID**, one seed-to-seed standard deviation of a single configuration's
  FID (measured 3.5-4 at N = 128 on the digits, where the training seed moves FID about
  twice as much as resampling the images). A difference smaller than the spread one
  configuration shows between two training seeds is below the resolution a sweep ranks
  configurations at, so a search could not act on it: we call it negligible. The margin
  was measured at N = 128 on the digits; FID's scale changes with N (its bias shrinks like
  1/N) and with the data, so set δ yourself elsewhere (``Metric.named("fid_5k", delta=...)``).
  What it implies: the training seed is each model's own, so the paired differences keep
  most of the seed spread (sd near √2 · 3.4 ≈ 4.8 FID); their 95 % interval is 2 · 4 wide
  only from about 10 seeds (half-width 3.4 at 10, 12 at 3), so at the default 3 seeds
  "equivalent" is out of reach by design: 3 seeds cannot show two backbones interchangeable.
* every other score: **none**. There is no measured seed spread to tie a margin to, and a
  margin nobody chose would make "equivalent" a claim nobody made; a score without δ is
  never called equivalent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Direction = Literal["lower", "higher"]

# which way is better, per score family
DIRECTIONS: dict[str, Direction] = {
    "fid": "lower",
    "sfid": "lower",
    "kid": "lower",
    "is": "higher",
    "precision": "higher",
    "recall": "higher",
}

# default equivalence margins per score family (the module docstring justifies them)
DEFAULT_MARGINS: dict[str, float] = {"fid": 4.0}

UseDefault = Literal["default"]


def score_family(name: str) -> str:
    """``fid_128`` -> ``fid``, ``sfid_5k`` -> ``sfid``, ``is`` -> ``is``."""
    head, _, tail = name.rpartition("_")
    return head if head and tail[:1].isdigit() else name


@dataclass(frozen=True)
class Metric:
    """One compared score: ``name`` as the runs record it (``fid_128``), ``better`` the
    direction of improvement, ``delta`` the equivalence margin (None: never "equivalent")."""

    name: str
    better: Direction
    delta: float | None = None

    def __post_init__(self) -> None:
        if self.better not in ("lower", "higher"):
            raise ValueError(f"{self.name}: better must be 'lower' or 'higher', got {self.better!r}")
        if self.delta is not None and not (math.isfinite(self.delta) and self.delta > 0):
            raise ValueError(f"{self.name}: the equivalence margin delta must be a positive number, got {self.delta}")

    @classmethod
    def named(cls, name: str, delta: float | None | UseDefault = "default", better: Direction | None = None) -> Metric:
        """The metric ``name`` with its family's direction and default margin (module docstring).

        ``delta``: a margin in the score's units, None for no margin, or "default".
        ``better``: needed only for a score outside the known families.
        """
        family = score_family(name)
        if better is None:
            if family not in DIRECTIONS:
                known = ", ".join(sorted(DIRECTIONS))
                raise ValueError(f"unknown score {name!r}: its family {family!r} is none of {known}; pass better='lower' or 'higher'")
            better = DIRECTIONS[family]
        margin = DEFAULT_MARGINS.get(family) if delta == "default" else delta
        return cls(name, better, margin)

    def improvement(self, difference: float) -> float:
        """``difference`` (model - baseline) signed so that positive means the model is better."""
        return -difference if self.better == "lower" else difference

    def label(self) -> str:
        """``fid_128 (lower is better)``."""
        return f"{self.name} ({self.better} is better)"
