"""Whether a run compiles its training step with ``torch.compile``, decided from measured cost.

Compiling costs ``compile_seconds`` once and then changes every step's time by
``step_ratio`` (compiled / eager). It pays, and ``compile: auto`` compiles, only when

    remaining_steps * eager_step_seconds * (1 - step_ratio) > compile_seconds,

with the eager step time estimated from the model's training FLOPs per step (forward and
backward, ~3x the forward's, times the batch) at the device kind's measured rate. The
costs are measurements per device kind and backend (``MEASURED``, from
``benchmarks/trial_speed.py --compile``); a device kind without one never compiles under
``auto`` (compile it with ``always`` to measure). ``always`` and ``never`` decide alone.

Inductor keeps what it compiled in its on-disk cache (``TORCHINDUCTOR_CACHE_DIR``), so
later trial processes of the same shape (same widths, depths and batch) load it instead of
compiling: on the 2-core machine 203 s cold, 14 s warm. ``compile_seconds`` is the cold
figure, so ``auto`` stays on the safe side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["CompileChoice", "CompileCost", "MEASURED", "CompileDecision", "decide_compile"]

CompileChoice = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class CompileCost:
    """What compiling the training step measured on one device kind (inductor backend)."""

    compile_seconds: float  # first compiled step minus an eager one, empty cache
    step_ratio: float  # compiled step time / eager step time (fast kernels on), < 1 pays
    eager_gflop_per_second: float  # training FLOPs per step / eager step time
    where: str  # the machine, the model and the load it was measured under


# benchmarks/trial_speed.py --compile, dice-cascade-base (225,735 parameters), batch 64.
MEASURED: dict[str, CompileCost] = {
    "cpu": CompileCost(
        compile_seconds=203.0,
        step_ratio=1.18,  # 174 ms compiled vs 147 ms eager (CPU time): inductor is slower here
        eager_gflop_per_second=16.0,  # 2.38 GFLOP per step (3 x 12.4 MFLOP x 64) in ~0.15 s
        where="2-core x86_64 (AVX-512), torch 2.13, load average 11-13",
    ),
}


@dataclass(frozen=True)
class CompileDecision:
    compile: bool
    reason: str  # one line, for the run's start event


def decide_compile(
    choice: CompileChoice,
    device: torch.device,
    remaining_steps: int,
    train_gflop_per_step: Callable[[], float],
    costs: dict[str, CompileCost] = MEASURED,
) -> CompileDecision:
    """``always``/``never`` as given; ``auto`` by the module docstring's rule.

    ``train_gflop_per_step()`` is only called when the answer depends on it.
    """
    if choice != "auto":
        return CompileDecision(choice == "always", f"compile: {choice}")
    cost = costs.get(device.type)
    if cost is None:
        return CompileDecision(False, f"compile auto: no measured compile cost for {device.type}; not compiling (compile: always measures it)")
    if cost.step_ratio >= 1.0:
        return CompileDecision(False, f"compile auto: compiled steps are slower on {device.type} (x{cost.step_ratio:.2f} measured); not compiling")
    eager_step = train_gflop_per_step() / cost.eager_gflop_per_second
    saved = remaining_steps * eager_step * (1.0 - cost.step_ratio)
    if saved > cost.compile_seconds:
        return CompileDecision(True, f"compile auto: saves ~{saved:.0f} s for ~{cost.compile_seconds:.0f} s of compiling")
    return CompileDecision(False, f"compile auto: would save ~{saved:.0f} s for ~{cost.compile_seconds:.0f} s of compiling; not compiling")
