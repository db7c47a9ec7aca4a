"""Whether ``precision: auto`` trains under bf16 autocast on a CPU, decided from measurement.

bf16 autocast on a CPU pays only where bf16 matrix units make the model's products faster
than the casts it adds cost, and it is worth taking only where it does not move the scores
more than re-seeding does. Both are measurements per kind of CPU (``MEASURED``):

* ``step_ratio``: a training step under bf16 autocast / the fp32 step, fast kernels on, one
  thread (``benchmarks/sweep_speed.py``, the training-precision table);
* ``scores_within_seed_spread``: whether the full-budget fid_N of several configurations
  trained in bf16 differs from fp32's by less than the seed-to-seed sd, over 3 seeds
  (``benchmarks/precision_scores.py``); None where not measured.

``auto`` on a CPU trains in bf16 only where ``step_ratio < 1`` and the scores were found
within the seed spread; a kind of CPU without a measurement trains in fp32
(``precision: bf16`` trains in bf16 anyway: run the benchmarks there to measure it). On CUDA
``auto`` stays fp16 with a GradScaler (``dicesearch.train.precision``). The weights, the
optimiser state, the EMA and the loss are fp32 in every mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["BF16_MEASURED", "Bf16Cost", "CpuKind", "PrecisionDecision", "cpu_kind", "decide_precision"]

CpuKind = Literal["amx", "avx512_bf16", "no_bf16_units"]


@dataclass(frozen=True)
class Bf16Cost:
    """What bf16 autocast training measured on one kind of CPU."""

    step_ratio: float  # bf16 step time / fp32 step time (fast kernels, one thread); < 1 pays
    scores_within_seed_spread: bool | None  # full-budget fid_N, bf16 vs fp32, 3 seeds; None: not measured
    where: str  # the machine, the model and the load it was measured under


# benchmarks/sweep_speed.py and benchmarks/precision_scores.py (docs/benchmarks.md, "A faster sweep").
BF16_MEASURED: dict[str, Bf16Cost] = {
    "avx512_bf16": Bf16Cost(
        step_ratio=1.33,  # 0.140 vs 0.105 s/step, dice-cascade-base at batch 64: the casts cost more than the products save
        scores_within_seed_spread=None,
        where="2-core AMD EPYC (Zen 4: AVX512-BF16, no AMX), torch 2.13, one thread, load average 8-9",
    ),
}


def cpu_kind() -> CpuKind:
    """This CPU's bf16 units: AMX tiles, AVX512-BF16 dot products, or neither (bf16 emulated)."""
    cpu = getattr(torch, "cpu", None)
    if cpu is not None and getattr(cpu, "_is_amx_tile_supported", lambda: False)():
        return "amx"
    if cpu is not None and getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "avx512_bf16"
    return "no_bf16_units"


@dataclass(frozen=True)
class PrecisionDecision:
    name: str  # what resolve_precision is given: auto | fp32 | bf16 | fp16
    reason: str  # one line, for the run's start event


def decide_precision(choice: str, device: torch.device, costs: dict[str, Bf16Cost] = BF16_MEASURED, kind: str | None = None) -> PrecisionDecision:
    """``auto`` on a CPU by the module docstring's rule; anything else (and ``auto`` elsewhere) as given."""
    if choice != "auto" or device.type != "cpu":
        return PrecisionDecision(choice, f"precision: {choice}")
    kind = kind or cpu_kind()
    cost = costs.get(kind)
    if cost is None:
        return PrecisionDecision("fp32", f"precision auto: bf16 autocast not measured on this CPU ({kind}); fp32 (precision: bf16 to try it)")
    if cost.step_ratio >= 1.0:
        return PrecisionDecision("fp32", f"precision auto: bf16 autocast steps are slower on this CPU ({kind}, x{cost.step_ratio:.2f} measured); fp32")
    if cost.scores_within_seed_spread is not True:
        what = "not measured" if cost.scores_within_seed_spread is None else "outside the seed spread"
        return PrecisionDecision("fp32", f"precision auto: bf16 autocast is x{cost.step_ratio:.2f} the fp32 step on this CPU ({kind}) but its scores are {what}; fp32")
    return PrecisionDecision("bf16", f"precision auto: bf16 autocast, x{cost.step_ratio:.2f} the fp32 step on this CPU ({kind}), scores within the seed spread")
