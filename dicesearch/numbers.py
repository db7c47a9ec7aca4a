"""One question asked of every number a trial records: is it a real, finite number?"""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> bool:
    """True for an int or float that is neither nan nor infinite (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


__all__ = ["finite"]
