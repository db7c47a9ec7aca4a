"""Multi-head self-attention block (DiT, Peebles & Xie 2023, Sec. 3.2; Vaswani et al. 2017).

Two conditioned residual sub-layers on the flattened grid of L = H * W tokens::

    x = x + gate_0 * Attention(norm_0(x))
    x = x + gate_1 * MLP(norm_1(x))

Attention uses PyTorch's fused ``scaled_dot_product_attention``. DiT: qkv with bias, MLP
4x with tanh-GELU. DiMR's transformer branch: qkv without bias, GeGLU MLP of hidden 2x.

The block takes prefix tokens (``prefix_tokens``): P tokens ahead of the grid's L, e.g.
DiMR's class token (its code's ``torch.cat([cls_token, x], dim=1)``), which attention
mixes with the grid's and the norms and MLP treat as any other token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from dicesearch.conditioning import ConditionSignal
from dicesearch.layers import Activation, FeedForward, check_heads_divide
from dicesearch.plugin_api import BlockContext, BlockParams, BlockType, hookimpl


class AttentionParams(BlockParams):
    heads: PositiveInt = Field(16, description="Attention heads; must divide the stage's channels.")
    mlp_ratio: PositiveFloat = Field(4.0, description="MLP hidden width / channels.")
    glu: bool = Field(False, description="GeGLU MLP (DiMR Sec. 4.3) instead of the plain MLP.")
    qkv_bias: bool = Field(True, description="Bias on the query/key/value projection (DiT: yes, DiMR: no).")
    activation: Activation = Field("gelu_tanh", description="MLP activation.")


class SelfAttention(nn.Module):
    """(B, L, C) -> (B, L, C)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, length, dim))


class AttentionBlock(nn.Module):
    def __init__(self, params: AttentionParams, ctx: BlockContext):
        super().__init__()
        dim = ctx.geometry.channels
        self.modulator = ctx.conditioning.modulator(dim, sublayers=2)
        self.attn = SelfAttention(dim, params.heads, params.qkv_bias)
        self.mlp = FeedForward(dim, int(dim * params.mlp_ratio), params.glu, params.activation)

    def forward(self, x: torch.Tensor, signal: ConditionSignal, prefix: torch.Tensor | None = None):
        """x (B, H, W, C) -> (B, H, W, C); with prefix (B, P, C): -> (x, prefix)."""
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)  # (B, L, C)
        p = 0
        if prefix is not None:
            p = prefix.shape[1]
            tokens = torch.cat([prefix, tokens], dim=1)  # (B, P + L, C)
        mod = self.modulator(signal)
        tokens = tokens + mod.gate(0, self.attn(mod.norm(0, tokens)))  # (B, P + L, C)
        tokens = tokens + mod.gate(1, self.mlp(mod.norm(1, tokens)))  # (B, P + L, C)
        grid = tokens[:, p:].reshape(b, h, w, c)  # (B, H, W, C)
        return grid if prefix is None else (grid, tokens[:, :p])  # prefix: (B, P, C)


@hookimpl
def dicesearch_block_types():
    return [
        BlockType(
            name="attention",
            params=AttentionParams,
            build=AttentionBlock,
            check=check_heads_divide,
            prefix_tokens=True,
            description="DiT multi-head self-attention + MLP (fused scaled-dot-product attention).",
        )
    ]
