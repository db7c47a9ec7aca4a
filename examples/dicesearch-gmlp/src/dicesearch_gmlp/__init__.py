"""gMLP as a dicesearch block: a gated MLP whose gate mixes tokens.

Liu, Dai, So and Le, "Pay Attention to MLPs", NeurIPS 2021 (arXiv:2105.08050), Sec. 2.
On the n = H * W tokens of a stage, with X: (n, d)::

    Z = GELU(X U)                 U: d -> 2 d_h, then Z = [Z_1, Z_2] along channels   (Eq. 1)
    f(Z_2) = W Z_2 + b            W: (n, n) mixes tokens, b: (n,) one bias per token  (Eq. 2)
    s(Z) = Z_1 * f(LN(Z_2))       the spatial gating unit (SGU)                       (Eq. 4)
    Y = s(Z) V                    V: d_h -> d                                          (Eq. 1)

W starts near zero and b at one, so f ~ 1 and each block starts as a token-wise MLP;
mixing across tokens is learned (Sec. 2.1, which also puts the LayerNorm on f's input).
W is shared by every channel and holds the positions, so gMLP needs no position
embedding. The paper's d_ffn = 6 d is d_h = 3 d here (``mlp_ratio`` 3). Cost: n^2
weights and n^2 * d_h multiply-adds per block, so the block suits coarse stages;
``max_tokens`` rejects fine ones before anything is built.

In a dicesearch model it is one conditioned, pre-norm residual sub-layer::

    x = x + gate_0(Y(norm_0(x)))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from dicesearch.conditioning import ConditionSignal
from dicesearch.layers import Activation, activation
from dicesearch.plugin_api import BlockContext, BlockParams, BlockType, StageGeometry, hookimpl

__all__ = ["GMLPBlock", "GMLPParams", "check", "dicesearch_block_types"]

SPATIAL_INIT = 1e-3  # W ~ U(-SPATIAL_INIT, SPATIAL_INIT): "near-zero" (Sec. 2.1)


class GMLPParams(BlockParams):
    """What a spec may set under ``block: {kind: gmlp, ...}`` (``kind`` is added for us)."""

    mlp_ratio: PositiveFloat = Field(3.0, description="Width d_h of each gated half / channels (the paper's d_ffn = 6 d).")
    activation: Activation = Field("gelu", description="Activation after the first projection.")
    max_tokens: PositiveInt = Field(4096, description="Largest H * W accepted (W holds tokens^2 weights).")


def check(params: GMLPParams, geometry: StageGeometry) -> None:
    """Reject stages the block cannot take, before anything is built ("field: problem; fix")."""
    if geometry.tokens > params.max_tokens:
        raise ValueError(
            f"max_tokens: the stage's {geometry.height}x{geometry.width} grid has {geometry.tokens} tokens, over the "
            f"limit of {params.max_tokens} (the spatial projection would hold {geometry.tokens**2:,} weights "
            "per block); use a larger patch_size for this stage or raise max_tokens"
        )
    if int(geometry.channels * params.mlp_ratio) < 1:
        raise ValueError(f"mlp_ratio: {params.mlp_ratio} x {geometry.channels} channels leaves no hidden width; raise it")


class GMLPBlock(nn.Module):
    """(B, H, W, C) -> (B, H, W, C), for the H x W grid it was built for."""

    def __init__(self, params: GMLPParams, ctx: BlockContext):
        super().__init__()
        dim, tokens = ctx.geometry.channels, ctx.geometry.tokens
        hidden = int(dim * params.mlp_ratio)
        # One conditioned norm (and residual gate) for the block's one sub-layer.
        self.modulator = ctx.conditioning.modulator(dim, sublayers=1)
        self.proj_in = nn.Linear(dim, 2 * hidden)  # U
        self.act = activation(params.activation)
        self.gate_norm = nn.LayerNorm(hidden)  # LN on Z_2, as the paper's SGU
        self.spatial_weight = nn.Parameter(torch.empty(tokens, tokens))  # W: (n, n)
        self.spatial_bias = nn.Parameter(torch.empty(tokens))  # b: (n,)
        self.proj_out = nn.Linear(hidden, dim)  # V
        self.reset_special_parameters()

    def reset_special_parameters(self) -> None:
        # The model initialises every nn.Linear / nn.Conv2d by the spec's init scheme after
        # building, then calls this on every module that has it: our own parameters go here.
        nn.init.uniform_(self.spatial_weight, -SPATIAL_INIT, SPATIAL_INIT)
        nn.init.ones_(self.spatial_bias)

    def forward(self, x: torch.Tensor, signal: ConditionSignal) -> torch.Tensor:
        b, h, w, _ = x.shape  # x: (B, H, W, C)
        mod = self.modulator(signal)
        z = self.act(self.proj_in(mod.norm(0, x)))  # (B, H, W, 2 d_h)
        z1, z2 = z.chunk(2, dim=-1)  # (B, H, W, d_h) each
        z2 = self.gate_norm(z2).reshape(b, h * w, -1).transpose(1, 2)  # (B, d_h, n)
        gate = F.linear(z2, self.spatial_weight, self.spatial_bias)  # (B, d_h, n): W Z_2 + b over tokens
        gate = gate.transpose(1, 2).reshape(b, h, w, -1)  # (B, H, W, d_h)
        return x + mod.gate(0, self.proj_out(z1 * gate))  # (B, H, W, C)


@hookimpl
def dicesearch_block_types():
    return [
        BlockType(
            name="gmlp",
            params=GMLPParams,
            build=GMLPBlock,
            check=check,
            description="gMLP (Liu et al. 2021): MLP with a spatial gating unit, W (tokens x tokens) mixes positions.",
        )
    ]
