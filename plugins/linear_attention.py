"""LiT linear-attention block ("LiT: Delving into a Simple Linear Diffusion Transformer for
Image Generation", supplement Sec. A, Tab. 1 and Sec. G, Alg. 1).

A DiT block (Peebles & Xie 2023) whose softmax attention is replaced by LiT's ReLU linear
attention plus a depthwise convolution on the values. Two conditioned residual sub-layers
on the grid of N = H * W tokens::

    x = x + gate_0 * Proj( LinAttn(Q, K, V) + DWConv(V) )      Q, K, V from norm_0(x)
    x = x + gate_1 * MLP(norm_1(x))

with, per head (Alg. 1; phi(z) = ReLU(z) + 1e-6, means over the N keys)::

    LinAttn(Q, K, V)_i = phi(q_i)^T mean_j(phi(k_j) v_j^T) / (phi(q_i) . mean_j phi(k_j) + 1e-6)

The kernelised core, its normaliser and its fp32 computation under autocast are
:func:`dicesearch.ops.linear_attention`.

Choices where the paper leaves room, stated here:

* Projections as Alg. 1: ``q`` (C -> C) and ``kv`` (C -> 2C) separately, output ``proj``
  with a bias. ``qkv_bias`` defaults to True: the class-conditional LiT models follow
  DiT's settings (supplement Sec. A), and DiT's attention has a qkv bias. Alg. 1's
  signature defaults to False; its caller (the PixArt-based text-to-image model) is not
  shown.
* The depthwise convolution is Alg. 1's: a k x k conv over ``head_dim`` channels applied
  to every head's values as a 2D map, so its weights are shared by all heads, with a
  bias and zero padding k // 2. Its result is added to the attention output before the
  projection. k = 5 is the only size the supplement states (Sec. G); it is a parameter.
  The grid shape comes from the input, so non-square grids work (Alg. 1 assumes a square
  one when HW is not given).
* Alg. 1 runs the depthwise conv inside its fp32 region and then casts to fp16 before
  ``proj``. Here the conv runs in the autocast dtype like every other convolution; only
  the kernelised core (where sums over N tokens can overflow) is forced to fp32. The
  core's result keeps the input dtype (Alg. 1 hard-codes float16).
* Few heads: 2 by default (LiT-S/2 and the text-to-image LiT-XL; B/2, L/2, XL/2 use
  3, 4, 4, Tab. 1). The MLP is DiT's: 4x with tanh-GELU.
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from dicesearch.conditioning import ConditionSignal
from dicesearch.layers import Activation, FeedForward, check_heads_divide, check_odd_kernel
from dicesearch.ops import linear_attention
from dicesearch.plugin_api import BlockContext, BlockParams, BlockType, StageGeometry, hookimpl


class LinearAttentionParams(BlockParams):
    heads: PositiveInt = Field(
        2, description="Linear-attention heads; must divide the channels (LiT: 2/3/4/4 for S/B/L/XL)."
    )
    kernel_size: PositiveInt = Field(5, description="Depthwise convolution on V, k x k over the grid (odd; LiT: 5).")
    mlp_ratio: PositiveFloat = Field(4.0, description="MLP hidden width / channels.")
    glu: bool = Field(False, description="GeGLU MLP instead of the plain MLP.")
    qkv_bias: bool = Field(True, description="Bias on the query and key/value projections (DiT: yes).")
    activation: Activation = Field("gelu_tanh", description="MLP activation.")


def check(params: LinearAttentionParams, geometry: StageGeometry) -> None:
    check_heads_divide(params, geometry)
    check_odd_kernel(params, geometry)


class LinearAttention(nn.Module):
    """LiT Alg. 1 on a grid: (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, dim: int, heads: int, kernel_size: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        head_dim = dim // heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        # one depthwise conv over a head's channels, shared by the heads (Alg. 1: self.dwc)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        n, heads = h * w, self.heads
        d = c // heads
        q = self.q(x).reshape(b, n, heads, d).transpose(1, 2)  # (B, heads, N, d)
        k, v = self.kv(x).reshape(b, n, 2, heads, d).permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
        out = linear_attention(q, k, v)  # (B, heads, N, d), normaliser in fp32
        v_maps = v.reshape(b * heads, h, w, d).permute(0, 3, 1, 2)  # (B*heads, d, H, W)
        local = self.dwc(v_maps).reshape(b, heads, d, n).transpose(2, 3)  # (B, heads, N, d)
        out = (out + local).transpose(1, 2).reshape(b, h, w, c)  # heads concatenated: (B, H, W, C)
        return self.proj(out)


class LinearAttentionBlock(nn.Module):
    def __init__(self, params: LinearAttentionParams, ctx: BlockContext):
        super().__init__()
        dim = ctx.geometry.channels
        self.modulator = ctx.conditioning.modulator(dim, sublayers=2)
        self.attn = LinearAttention(dim, params.heads, params.kernel_size, params.qkv_bias)
        self.mlp = FeedForward(dim, int(dim * params.mlp_ratio), params.glu, params.activation)

    def forward(self, x: torch.Tensor, signal: ConditionSignal) -> torch.Tensor:
        # x: (B, H, W, C)
        mod = self.modulator(signal)
        x = x + mod.gate(0, self.attn(mod.norm(0, x)))
        return x + mod.gate(1, self.mlp(mod.norm(1, x)))


@hookimpl
def dicesearch_block_types():
    return [
        BlockType(
            name="linear_attention",
            params=LinearAttentionParams,
            build=LinearAttentionBlock,
            check=check,
            description="LiT: ReLU linear attention with few heads + depthwise conv on V, then the DiT MLP.",
        )
    ]
