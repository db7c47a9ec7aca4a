"""Exponential moving average of a model's weights (DiT, DICE: decay 0.9999, used for evaluation)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["create_ema", "update_ema"]


def create_ema(model: nn.Module) -> nn.Module:
    """A frozen fp32 copy of ``model`` in eval mode, starting at its current weights."""
    ema = copy.deepcopy(model).float().eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for every parameter; buffers are copied."""
    ema_params = [p for p in ema.parameters()]
    params = [p.detach().to(dtype=torch.float32) for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)
