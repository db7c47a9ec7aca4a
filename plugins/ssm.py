"""DiffuSSM gated bidirectional SSM block with hourglass MLPs (Yan, Gu and Rush 2023,
"Diffusion Models Without Attention", Sec. 4.1-4.2).

One conditioned residual sub-layer, x = x + gate_0 * Hourglass(norm_0(x)). The block's
tokens are the stage grid flattened in raster order, the paper's shortened sequence
I (J = H * W tokens of width D). With downscale ratio M, L = M * J, and for long position
l = j * M + m (Sec. 4.2: "j = floor(l / M), m = l mod M, D_m = 2D / M")::

    U_l = act(W_up_m act(W_0 I_j))                           (B, L, D)    up: M maps D -> D
    Y   = Bidirectional-SSM(U)                               (B, L, 2D)   S4D forward ++ backward
    I'_j[D_m m : D_m (m + 1)] = act(W_down_m Y_l)            (B, J, 2D)   down: M maps 2D -> 2D/M
    O_j = W_3 (act(W_2 I'_j) * act(W_1 I_j))                 (B, J, D)    multiplicative gate

Bidirectional-SSM is :class:`dicesearch.ops.BidirectionalS4DLayer`: two S4D layers (Sec.
4.1: "We use ... S4D [15] as our backbone"), one run over the reversed sequence, their
outputs concatenated ("to yield a L x 2D output"), each a long convolution done with
FFTs in O(L log L). The MLPs see J tokens, the SSM all L ("the entire block including the
bidirectional SSMs is computed in the original length").

Choices where the paper is ambiguous, stated here:

* The residual stream lives at the short length J: the equations take I in R^{J x D} as
  the block's input and return O in R^{J x D}, and only that reading gives Sec. 4.2's
  cost "13 (L/M) D^2 + L D^2" per layer. The stage grid is therefore the short sequence,
  and each grid token is expanded into M consecutive SSM positions.
* Width of W_1, W_2 (D -> hD, 2D -> hD) and W_3 (hD -> D), h = ``expansion``: the paper
  does not state it, and its two formulas disagree. The FLOP count "13 (L/M) D^2" needs
  5 + 4h = 13, so h = 2; the parameter count "9 D^2 + 2 M D^2" needs h = 1 + M/4 (1.5 at
  M = 2). The default, h = 1.75, is the value at which the model reproduces both totals
  the paper reports for DiffuSSM-XL (D = 1152, 29 layers, M = 2, adaLN-Zero): 673.1M
  parameters ("approximately 673M", Sec. 5.1), and, on its J = 512, L = 1024
  sequences, 276 G multiply-adds in the linear maps (the terms of the paper's cost
  formula) against 1.85e11 total Gflops / 660M images = 280 G (Tab. 1). Counting also
  the FFT convolutions and S4D's complex kernel product (dicesearch.costs), 290 G.
  h = 2 would give 711.6M and 296 G (310 G), h = 1.5 634.6M and 256 G (270 G).
* act is GELU: the paper writes sigma for "activation functions" and names none.
  Every linear map has a bias.
* W_down_m are M separate 2D -> 2D/M maps, stored as the M row blocks of one 2D -> 2D
  linear map and applied as one batched matmul; W_up_m are one D -> M*D linear map
  split into M parts.
* S4D: state size N = 64 per channel and direction (S4D's default; not stated), S4D-Lin
  initialisation, dt in [1e-3, 1e-1], learnable skip D, as in :mod:`dicesearch.ops.s4d`.
* Conditioning: Sec. 4.2 adds "a combination of the class label and timestep at each
  position"; here the block's one norm and gate come from the modulator (adaLN-Zero, or
  any other method), with the gate on the block's output.
* Any grid works, 1x1 included (L = M); M must divide 2D so that D_m is whole.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from dicesearch.conditioning import ConditionSignal
from dicesearch.layers import Activation, activation
from dicesearch.ops import BidirectionalS4DLayer
from dicesearch.plugin_api import BlockContext, BlockParams, BlockType, StageGeometry, hookimpl


class SSMParams(BlockParams):
    downscale: PositiveInt = Field(
        2, description="Hourglass ratio M: SSM positions per grid token (DiffuSSM: 2); must divide 2 x channels."
    )
    expansion: PositiveFloat = Field(
        1.75, description="Width of the gated MLP (W_1, W_2, W_3) / channels (fits DiffuSSM-XL's totals)."
    )
    state_size: PositiveInt = Field(64, description="S4D state size N per channel and direction (even).")
    s4d_init: Literal["lin", "inv"] = Field("lin", description="S4D-Lin or S4D-Inv initialisation of A.")
    activation: Activation = Field("gelu", description="The activation sigma of Sec. 4.2.")


def check(params: SSMParams, geometry: StageGeometry) -> None:
    width = 2 * geometry.channels  # Y has 2D channels, cut into M slices of 2D / M
    if width % params.downscale:
        divisors = [m for m in range(1, min(width, 16) + 1) if width % m == 0]
        raise ValueError(
            f"downscale: 2 x {geometry.channels} channels (the bidirectional SSM's output) are not "
            f"divisible by downscale {params.downscale}; use a divisor of {width} such as "
            f"{', '.join(map(str, divisors[:4]))}"
        )
    if params.state_size % 2:
        raise ValueError(
            f"state_size: {params.state_size} is odd, but S4D keeps conjugate pairs of complex "
            f"modes; use an even size such as {params.state_size + 1}"
        )


class HourglassSSM(nn.Module):
    """DiffuSSM Sec. 4.2 on a grid: (B, H, W, D) -> (B, H, W, D), the SSM at M x H x W positions."""

    def __init__(self, dim: int, params: SSMParams):
        super().__init__()
        m = params.downscale
        hidden = max(1, round(dim * params.expansion))
        self.downscale = m
        self.act = activation(params.activation)
        self.w0 = nn.Linear(dim, dim)
        self.up = nn.Linear(dim, m * dim)  # [W_up_0; ...; W_up_{M-1}]
        self.ssm = BidirectionalS4DLayer(dim, d_state=params.state_size, init=params.s4d_init)
        self.down = nn.Linear(2 * dim, 2 * dim)  # rows [m 2D/M, (m+1) 2D/M): W_down_m, 2D -> 2D/M
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(2 * dim, hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, d = x.shape
        m, act = self.downscale, self.act
        u = act(self.up(act(self.w0(x))))  # (B, H, W, M*D): grid token j -> positions jM..jM+M-1
        y = self.ssm(u.reshape(b, h * w * m, d))  # (B, L, 2D), L = M*H*W in raster order
        y = y.reshape(b * h * w, m, 2 * d).transpose(0, 1)  # (M, B*J, 2D): position jM+m in row m
        weight = self.down.weight.reshape(m, 2 * d // m, 2 * d)  # (M, 2D/M, 2D): W_down_m
        bias = self.down.bias.reshape(m, 1, 2 * d // m)
        short = torch.baddbmm(bias, y, weight.transpose(1, 2))  # (M, B*J, 2D/M): W_down_m Y_{jM+m}
        short = act(short.transpose(0, 1).reshape(b, h, w, 2 * d))  # I': (B, H, W, 2D), slice m from jM+m
        return self.w3(act(self.w2(short)) * act(self.w1(x)))  # O: (B, H, W, D)


class SSMBlock(nn.Module):
    def __init__(self, params: SSMParams, ctx: BlockContext):
        super().__init__()
        dim = ctx.geometry.channels
        self.modulator = ctx.conditioning.modulator(dim, sublayers=1)
        self.hourglass = HourglassSSM(dim, params)

    def forward(self, x: torch.Tensor, signal: ConditionSignal) -> torch.Tensor:
        # x: (B, H, W, C)
        mod = self.modulator(signal)
        return x + mod.gate(0, self.hourglass(mod.norm(0, x)))


@hookimpl
def dicesearch_block_types():
    return [
        BlockType(
            name="ssm",
            params=SSMParams,
            build=SSMBlock,
            check=check,
            description="DiffuSSM: bidirectional S4D over M sub-positions per token inside a gated hourglass MLP.",
        )
    ]
