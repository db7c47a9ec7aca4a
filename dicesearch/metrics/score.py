"""A recorded score with its spread: ``fid_128`` and, where recorded, ``fid_128_sd``, ``_lo`` and ``_hi``.

Every score :mod:`dicesearch.metrics` produces comes with its standard deviation and a
95 % interval under these suffixes (over seed replicates, else over resampled images).
"""

from __future__ import annotations

from dataclasses import dataclass

from dicesearch.numbers import finite


@dataclass(frozen=True)
class Score:
    """One trial's value of one metric, with its spread where the trial recorded one."""

    value: float
    sd: float | None = None
    lo: float | None = None
    hi: float | None = None

    @classmethod
    def of(cls, metrics: dict, key: str) -> Score | None:
        value = metrics.get(key)
        if not finite(value):
            return None
        extra = {name: metrics.get(f"{key}_{name}") for name in ("sd", "lo", "hi")}
        return cls(float(value), **{k: float(v) if finite(v) else None for k, v in extra.items()})

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    def text(self) -> str:
        """``148 ± 4.2``, or the value alone when no spread was recorded."""
        if self.sd is None:
            return f"{self.value:.3g}"
        return f"{self.value:.3g} ± {self.sd:.2g}"
