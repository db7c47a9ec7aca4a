"""Small layers shared by blocks and the composer, public for plugin authors."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Activation = Literal["gelu", "gelu_tanh", "silu"]


def activation(name: Activation) -> nn.Module:
    return {"gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"), "silu": nn.SiLU()}[name]


class FeedForward(nn.Module):
    """Token-wise MLP: Linear -> act -> Linear, or GeGLU when ``glu`` (DiMR Sec. 4.3).

    With ``glu`` the first projection makes two ``hidden``-wide halves, ``act(a) * b``
    (Shazeer 2020), so at equal ``hidden`` it has 1.5x the parameters of the plain MLP;
    DiMR uses hidden = 2 * dim with GLU instead of 4 * dim without.

    x: (..., dim) -> (..., dim)
    """

    def __init__(self, dim: int, hidden: int, glu: bool = False, act: Activation = "gelu"):
        super().__init__()
        self.glu = glu
        self.fc1 = nn.Linear(dim, hidden * (2 if glu else 1))
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)  # (..., hidden) or (..., 2 * hidden)
        if self.glu:
            a, b = h.chunk(2, dim=-1)
            h = self.act(a) * b
        else:
            h = self.act(h)
        return self.fc2(h)


def timestep_features(
    t: torch.Tensor, dim: int, max_period: float = 10000.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps, as in DDPM/DiT.

    t: (B,) -> (B, dim): [cos(t * f_i), sin(t * f_i)] with f_i = max_period^(-i / (dim/2)),
    computed in ``dtype`` (float32 as DiT; float64 for a model run in double precision).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    angles = t.to(dtype)[:, None] * freqs[None, :]  # (B, half)
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        features = F.pad(features, (0, 1))
    return features


def sincos_position_embedding(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding, DiT's table (MAE's ``get_2d_sincos_pos_embed``).

    For the token in row i, column j, with omega_k = 10000^(-k / (dim/4)), k < dim/4::

        [sin(j omega), cos(j omega), sin(i omega), cos(i omega)]

    The first half of the channels encodes the column and the second the row, as DiT's
    code builds it (its grid is ``meshgrid(w, h)``, "w goes first"). Computed in float64,
    returned as float32 (height, width, dim).
    """
    if dim % 4:
        raise ValueError(f"sincos position embedding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim/4,)
    cols = torch.arange(width, dtype=torch.float64)[:, None] * omega[None, :]  # (W, dim/4)
    rows = torch.arange(height, dtype=torch.float64)[:, None] * omega[None, :]  # (H, dim/4)
    col_emb = torch.cat([cols.sin(), cols.cos()], dim=-1)[None, :, :].expand(height, width, 2 * quarter)
    row_emb = torch.cat([rows.sin(), rows.cos()], dim=-1)[:, None, :].expand(height, width, 2 * quarter)
    return torch.cat([col_emb, row_emb], dim=-1).float()


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, C, H, W)."""
    return x.permute(0, 3, 1, 2)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W, C)."""
    return x.permute(0, 2, 3, 1)


def check_odd_kernel(params, geometry) -> None:
    """A block ``check`` for blocks with a ``kernel_size`` parameter: even sizes shift the map."""
    if params.kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size: {params.kernel_size} is even, which would shift the feature map; "
            "use an odd size such as 7"
        )


def divisors_near(n: int, target: int, count: int = 4) -> list[int]:
    """The ``count`` divisors of ``n`` closest to ``target``, ascending (for "use a divisor ..." hints)."""
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return sorted(sorted(divisors, key=lambda d: (abs(d - target), d))[:count])


def check_heads_divide(params, geometry) -> None:
    """A block ``check`` for blocks with a ``heads`` parameter: the heads must split the channels evenly."""
    channels, heads = geometry.channels, params.heads
    if channels % heads:
        raise ValueError(
            f"heads: {channels} channels are not divisible by {heads} heads; "
            f"use a divisor of {channels} such as {', '.join(map(str, divisors_near(channels, heads)))}"
        )
