"""ConvNeXt block (Liu et al. 2022), and the form of it DiMR's code uses (DiMR Sec. 4.1, 4.3).

Two forms of a k x k depthwise convolution (k = 7) and an inverted-bottleneck MLP (4x
with GELU, or GeGLU with hidden 2x as in DiMR Sec. 4.3) behind one conditioned norm:

    form convnext (ConvNeXt):    x = x + gate_0 * MLP(norm_0(DWConv_kxk(x)))
    form dimr (DiMR's code):     x = x + DWConv_kxk(x)
                                 x = x + gate_0 * MLP(norm_0(x))

``dimr`` is DiMR's ``ConvNeXtBlock``: the depthwise convolution is a residual branch of
its own, without a norm, and the MLP is a second, normalised branch. Both forms have the
same parameters (and state-dict keys); only the wiring differs.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from dicesearch.conditioning import ConditionSignal
from dicesearch.layers import Activation, FeedForward, channels_first, channels_last, check_odd_kernel
from dicesearch.plugin_api import BlockContext, BlockParams, BlockType, hookimpl


class ConvNeXtParams(BlockParams):
    kernel_size: PositiveInt = Field(7, description="Depthwise kernel size (odd).")
    mlp_ratio: PositiveFloat = Field(4.0, description="MLP hidden width / channels.")
    glu: bool = Field(False, description="GeGLU MLP (DiMR Sec. 4.3) instead of the plain MLP.")
    activation: Activation = Field("gelu", description="MLP activation.")
    form: Literal["convnext", "dimr"] = Field(
        "convnext",
        description="convnext: x + MLP(norm(dwconv(x))); dimr (DiMR code): x + dwconv(x), then x + MLP(norm(x)).",
    )


class ConvNeXtBlock(nn.Module):
    def __init__(self, params: ConvNeXtParams, ctx: BlockContext):
        super().__init__()
        dim, k = ctx.geometry.channels, params.kernel_size
        self.form = params.form
        self.dwconv = nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim)
        self.modulator = ctx.conditioning.modulator(dim, sublayers=1)
        self.mlp = FeedForward(dim, int(dim * params.mlp_ratio), params.glu, params.activation)

    def forward(self, x: torch.Tensor, signal: ConditionSignal) -> torch.Tensor:
        # x: (B, H, W, C)
        h = channels_last(self.dwconv(channels_first(x)))  # (B, H, W, C)
        mod = self.modulator(signal)
        if self.form == "dimr":
            x = x + h
            return x + mod.gate(0, self.mlp(mod.norm(0, x)))
        return x + mod.gate(0, self.mlp(mod.norm(0, h)))


@hookimpl
def dicesearch_block_types():
    return [
        BlockType(
            name="convnext",
            params=ConvNeXtParams,
            build=ConvNeXtBlock,
            check=check_odd_kernel,
            description="ConvNeXt: 7x7 depthwise conv, LayerNorm, 4x GELU MLP (optional GeGLU; form dimr as DiMR's code).",
        )
    ]
