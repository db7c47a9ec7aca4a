"""Weight initialisation as the papers state it.

1. The spec's scheme on every Linear/Conv2d weight (biases to zero) and every Embedding:
   ``normal``/``trunc_normal`` with the given std (DICE Sec. 3.3: N(0, 0.02); DiMR's code:
   truncated normal 0.02) or ``xavier_uniform`` on the flattened weight (DiT).
2. Then every module's own ``reset_special_parameters()`` (adaLN-Zero zeroes its
   regressions, TD-LN resets its interpolation vectors, DICE its lambda, ...).
3. ``zero_head`` zeroes the output projection of every stage head (DiT).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def initialize(model: nn.Module, scheme: str, std: float, zero_head: bool) -> None:
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            weight = module.weight
            if scheme == "xavier_uniform":
                nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
            elif scheme == "trunc_normal":
                nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
            else:
                nn.init.normal_(weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
    for module in model.modules():
        reset = getattr(module, "reset_special_parameters", None)
        if callable(reset):
            reset()
    if zero_head:
        from dicesearch.model.stage import StageHead

        for module in model.modules():
            if isinstance(module, StageHead):
                nn.init.zeros_(module.proj.weight)
                nn.init.zeros_(module.proj.bias)
