"""Count multiply-adds and FLOPs of a forward (and backward) pass.

Built on ``torch.utils.flop_counter.FlopCounterMode``, which counts matmuls and
convolutions (2 FLOPs per multiply-add) but, on CPU, sees fused attention as
``aten._scaled_dot_product_flash_attention_for_cpu`` and counts it as zero. We register
that kernel (and its backward) with PyTorch's own SDPA formula so attention's two
matmuls, 4 * B * heads * L^2 * head_dim FLOPs, are counted. Elementwise work (norms,
activations, the DICE merge) is not counted, as in fvcore and the DiT/DiMR papers' "Gflops".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _cpu_flash_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _custom_formulas() -> dict:
    formulas = {}
    aten = torch.ops.aten
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        formulas[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_forward
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        formulas[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_flash_backward
    return formulas


@dataclass(frozen=True)
class FlopCount:
    flops: int  # 2 x multiply-adds
    by_operator: dict[str, int]

    @property
    def macs(self) -> int:
        """Multiply-adds: the unit DiT and DiMR report as "Gflops"."""
        return self.flops // 2


def count_flops(run: Callable[[], object]) -> FlopCount:
    """FLOPs of whatever ``run()`` executes (a forward, or a forward and a backward)."""
    with FlopCounterMode(display=False, custom_mapping=_custom_formulas()) as counter:
        run()
    by_operator = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCount(flops=int(counter.get_total_flops()), by_operator=by_operator)
