"""Whether ``precision: auto`` trains under bf16 autocast on a CPU, decided from measurement.

bf16 autocast on a CPU pays only where bf16 matrix units make the model's products faster
than the casts it adds cost, and it is worth taking only where it does not move the scores
more than re-seeding does. The two are measured apart:

* what bf16 does to the scores is a property of the arithmetic, not of the CPU:
  ``BF16_SCORES_WITHIN_SEED_SPREAD``, from ``benchmarks/precision_scores.py`` (the full-budget
  fid_N of several configurations trained in fp32 and in bf16 over 3 seeds: is every
  configuration's mean paired difference inside its seed-to-seed sd?);
* whether it is faster is a property of the CPU: ``BF16_STEP_RATIO`` per kind of CPU (a
  training step under bf16 autocast / the fp32 step, fast kernels on, one thread;
  ``benchmarks/sweep_speed.py --only precision``).

``auto`` on a CPU trains in bf16 only where both say so: the scores within the seed spread
and a measured ``step_ratio < 1`` for this kind of CPU. A kind without a measurement trains
in fp32 (``precision: bf16`` trains in bf16 anyway; measure it there and add its line). On
CUDA ``auto`` stays fp16 with a GradScaler (``dicesearch.train.precision``). The weights, the
optimiser state, the EMA and the loss are fp32 in every mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["BF16_SCORES_WITHIN_SEED_SPREAD", "BF16_STEP_RATIO", "CpuKind", "PrecisionDecision", "StepRatio", "cpu_kind", "decide_precision"]

CpuKind = Literal["amx", "avx512_bf16", "no_bf16_units"]

# benchmarks/precision_scores.py on the 2-core AMD EPYC (load average 3-10): 3 configurations of
# search_spaces/cascade.yaml x seeds 42-44 at 1600 steps, bf16 - fp32 fid_128 (mean of the paired
# differences, fp32 sd): the pick +0.45 (2.7), a wide one -10.2 (13), a small one -0.63 (3.8).
BF16_SCORES_WITHIN_SEED_SPREAD: bool | None = True


@dataclass(frozen=True)
class StepRatio:
    """A training step under bf16 autocast / the fp32 step on one kind of CPU; < 1 pays."""

    ratio: float
    where: str  # the machine, the model and the load it was measured under


BF16_STEP_RATIO: dict[str, StepRatio] = {
    "avx512_bf16": StepRatio(
        1.30,  # 0.128 vs 0.099 s/step: the casts cost more than the bf16 products save
        "2-core AMD EPYC (Zen 4: AVX512-BF16, no AMX), torch 2.13, dice-cascade-base at batch 64, one thread, load average 2.3",
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


def decide_precision(
    choice: str,
    device: torch.device,
    ratios: dict[str, StepRatio] = BF16_STEP_RATIO,
    scores_within_seed_spread: bool | None = BF16_SCORES_WITHIN_SEED_SPREAD,
    kind: str | None = None,
) -> PrecisionDecision:
    """``auto`` on a CPU by the module docstring's rule; anything else (and ``auto`` elsewhere) as given."""
    if choice != "auto" or device.type != "cpu":
        return PrecisionDecision(choice, f"precision: {choice}")
    kind = kind or cpu_kind()
    if scores_within_seed_spread is not True:
        what = "not measured" if scores_within_seed_spread is None else "outside the seed spread"
        return PrecisionDecision("fp32", f"precision auto: what bf16 autocast does to the scores is {what}; fp32")
    step = ratios.get(kind)
    if step is None:
        return PrecisionDecision("fp32", f"precision auto: bf16 autocast steps not measured on this CPU ({kind}); fp32 (precision: bf16 to try it)")
    if step.ratio >= 1.0:
        return PrecisionDecision("fp32", f"precision auto: bf16 autocast steps are slower on this CPU ({kind}, x{step.ratio:.2f} measured); fp32")
    return PrecisionDecision("bf16", f"precision auto: bf16 autocast, x{step.ratio:.2f} the fp32 step on this CPU ({kind}); scores within the seed spread")
