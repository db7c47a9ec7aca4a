"""DICE signal-extraction ConvNeXt block (DICE Sec. 3.2-3.3, Fig. 5 and 10).

The 7x7 depthwise convolution is duplicated into "left" and "right" candidate features,
merged by the signal-extraction function (Fig. 5), then the ConvNeXt inverted bottleneck::

    f(l, r) = (l + r) / (1 + exp(lambda * (l - r)^2))        lambda learnable
    x = x + gate_0 * MLP(norm_0(f(DWConv_left(x), DWConv_right(x))))

Matching left/right signals pass (a hill for positive, a trough for negative values);
disagreeing ones are damped, more sharply as lambda grows.
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from dicesearch.conditioning import ConditionSignal
from dicesearch.layers import Activation, FeedForward, channels_last, check_odd_kernel
from dicesearch.ops.merge_norm import merged_norm
from dicesearch.ops.signal_merge import merge_pairs, merge_pairs_reference
from dicesearch.ops.signal_merge import signal_merge as signal_merge  # the formula, where it was public before
from dicesearch.plugin_api import BlockContext, BlockParams, BlockType, hookimpl
from dicesearch.speed.kernels import uses_fast_kernels


class DiceParams(BlockParams):
    kernel_size: PositiveInt = Field(7, description="Depthwise kernel size of both convolutions (odd).")
    lambda_init: float = Field(1.0, description="Initial value of the learnable lambda of the merge function.")
    lambda_per_channel: bool = Field(False, description="One lambda per channel instead of one per block.")
    mlp_ratio: PositiveFloat = Field(4.0, description="MLP hidden width / channels.")
    glu: bool = Field(False, description="GeGLU MLP instead of the plain MLP.")
    activation: Activation = Field("gelu", description="MLP activation.")


class DiceBlock(nn.Module):
    def __init__(self, params: DiceParams, ctx: BlockContext):
        super().__init__()
        dim, k = ctx.geometry.channels, params.kernel_size
        self.lambda_init = params.lambda_init
        # both depthwise convolutions in one grouped conv: output channel 2c is left_c, 2c+1 right_c
        self.dwconv_pair = nn.Conv2d(dim, 2 * dim, k, padding=k // 2, groups=dim)
        self.lam = nn.Parameter(torch.full((dim if params.lambda_per_channel else 1,), params.lambda_init))
        self.modulator = ctx.conditioning.modulator(dim, sublayers=1)
        self.mlp = FeedForward(dim, int(dim * params.mlp_ratio), params.glu, params.activation)

    def reset_special_parameters(self) -> None:
        with torch.no_grad():
            self.lam.fill_(self.lambda_init)

    def forward(self, x: torch.Tensor, signal: ConditionSignal) -> torch.Tensor:
        pair = self.dwconv_pair(x.permute(0, 3, 1, 2))  # (B, 2C, H, W): channel 2c is left_c, 2c+1 right_c
        mod = self.modulator(signal)
        fast = uses_fast_kernels(self.dwconv_pair)
        affine = mod.layer_norm_affine(0) if fast else None
        if affine is not None:  # fast kernels: merge and norm as one op (native where it builds)
            normed = merged_norm(pair, self.lam, affine.multiplier, affine.offset, affine.eps)  # (B, H, W, C)
        else:  # fast kernels: the same merge with a hand-written backward; else autograd's
            merged = (merge_pairs if fast else merge_pairs_reference)(pair, self.lam)  # (B, C, H, W)
            normed = mod.norm(0, channels_last(merged))  # (B, H, W, C)
        return x + mod.gate(0, self.mlp(normed))


@hookimpl
def dicesearch_block_types():
    return [
        BlockType(
            name="dice",
            params=DiceParams,
            build=DiceBlock,
            check=check_odd_kernel,
            description="DICE: duplicated 7x7 depthwise conv merged by (l+r)/(1+exp(lambda(l-r)^2)), then ConvNeXt MLP.",
        )
    ]
