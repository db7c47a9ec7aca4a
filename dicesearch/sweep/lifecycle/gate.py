"""The budget gate: count a configuration and estimate its memory before a training step is spent.

Every trial passes it (in the sweep process for the Optuna backend, in the Ray worker for
Ray Tune): parameters and multiply-adds on the meta device, then the peak training memory
of full-length training (``memory.batch_size`` at ``memory.precision``) on fake tensors.
A configuration estimated over ``memory.budget_gb`` is *rejected*, with the estimate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from dicesearch.sweep.space.config import MemoryBudget

_HOOKS_LOCK = threading.Lock()  # the FLOP counter's and MemTracker's module hooks are process-global: one count at a time


@dataclass(frozen=True)
class Assessment:
    """What the gate found: ``metrics`` (params, gmacs, gflops, memory_estimated_gb, each
    where known) and, for a configuration over budget, the ``rejection`` reason."""

    metrics: dict[str, float]
    rejection: str | None = None


def static_metrics_or_empty(spec, warn: Callable[[str], object]) -> dict[str, float]:
    """Parameters, GMACs and GFLOPs of ``spec``; ``{}`` (and ``warn(message)``) if counting fails."""
    from dicesearch.analysis.flops import static_metrics

    try:
        with _HOOKS_LOCK:  # two worker threads counting at once mix their module trees
            return static_metrics(spec)
    except Exception as exc:  # counting must never stop a sweep
        warn(f"could not count FLOPs: {exc}")
        return {}


def estimate_memory(spec, memory: MemoryBudget, batch_size: int) -> dict[str, float]:
    """``{"memory_estimated_gb": ...}`` for full-length training of ``spec``, or ``{}`` if unknown."""
    from dicesearch.analysis.memory import estimate_training_memory

    with _HOOKS_LOCK:
        estimate = estimate_training_memory(spec, batch_size, memory.precision, ema=True, gradient_checkpointing=memory.gradient_checkpointing)
    if not estimate.known:
        return {}
    return {"memory_estimated_gb": estimate.total / 2**30}  # GiB: a "24 GB" card has 24 GiB


def over_budget_reason(metrics: dict[str, float], memory: MemoryBudget, batch_size: int) -> str | None:
    """Why a configuration is rejected without training, or None if it fits (or is unknown)."""
    estimated = metrics.get("memory_estimated_gb")
    if estimated is None or estimated <= memory.budget_gb:
        return None
    return (
        f"rejected: estimated peak training memory {estimated:.1f} GB at batch "
        f"{batch_size} {memory.precision} exceeds the {memory.budget_gb:g} GB budget"
    )


def assess(spec, memory: MemoryBudget, batch_size: int, warn: Callable[[str], object], counted: dict[str, float] | None = None) -> Assessment:
    """Count ``spec``, estimate its memory at ``batch_size`` and judge it against ``memory``.
    ``counted``: what an earlier assessment of the same spec, memory settings and batch found
    (then nothing is counted again)."""
    metrics = counted if counted is not None else {**static_metrics_or_empty(spec, warn), **estimate_memory(spec, memory, batch_size)}
    return Assessment(dict(metrics), over_budget_reason(metrics, memory, batch_size))
