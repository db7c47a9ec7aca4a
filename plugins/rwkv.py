"""Bi-RWKV block of Diffusion-RWKV (Fei et al. 2024, Sec. 2.1-2.2, Fig. 2b), after Vision-RWKV.

Two conditioned residual sub-layers on the grid, flattened in raster order to T = H * W
tokens where a sequence is needed::

    x = x + gate_0 * SpatialMix(norm_0(x))
    x = x + gate_1 * ChannelMix(norm_1(x))

Spatial mix (Eq. 3-6 with the bidirectional WKV of Sec. 2.2)::

    x' = QShift(x)                                  quad-directional token shift on the 2D grid
    k = (mu_k x + (1 - mu_k) x') W_k,  v = (mu_v x + (1 - mu_v) x') W_v,  r = (mu_r x + (1 - mu_r) x') W_r
    out = (sigmoid(r) * BiWKV(w, u, k, v)) W_o

Channel mix (Eq. 9-11)::

    k = (mu_k x + (1 - mu_k) x') W_k                (C -> E * C)
    r = (mu_r x + (1 - mu_r) x') W_r                (C -> C)
    out = sigmoid(r) * (max(k, 0)^2 W_v)            (E * C -> C)

QShift (Sec. 2.2: "a quad-directional shift operation tailored for two-dimensional vision
data") fills four channel groups of each token from its neighbours, zero outside the grid:
group 0 from the token ``shift_pixels`` to the left, group 1 from the right, group 2 from
above, group 3 from below; each group is ``shift_fraction`` of the channels and the
remaining channels are not shifted. BiWKV is :func:`dicesearch.ops.bi_wkv`, a weighted
average over all T tokens with weights exp(-(|t - i| - 1) / T * w + k_i) and exp(u + k_t)
for the token itself, computed in linear memory.

Choices where the paper is silent, taken from the released Diffusion-RWKV code
(feizc/Diffusion-RWKV, ``models_drwkv.py``), which the paper's Tab. 1 parameter counts
match:

* The token shift with the channel split above (Vision-RWKV's ``q_shift``, 1/4 of the
  channels per direction, 1 pixel), used by both mixes.
* No biases in the mixes' projections; the channel mix's hidden width is E = 4 times the
  channels (Tab. 1: "E is the embedding ratio", 4 for every size).
* The bonus u is divided by T, as the code passes ``spatial_first / T`` to its kernel.
  The equation (see :mod:`dicesearch.ops.wkv`) uses u as it is; ``bonus_over_length:
  false`` does that. The decay w is always divided by T (the op does it).
* Initial values of w, u and the mixing weights mu follow the code's layer-dependent
  "fancy" init, with the layer's index and count taken within the stage: for channel
  c of C and layer i of n, with a = i / (n - 1) and b = 1 - i / n,
  w_c = -5 + 8 (c / (C - 1))^(0.7 + 1.3 a), u_c = log 0.3 + 0.5 ((c + 1) mod 3 - 1),
  mu_k = (c / C)^b, mu_v = (c / C)^b + 0.3 a, mu_r = (c / C)^(b / 2) in the spatial mix
  and mu_k = mu_r = (c / C)^b in the channel mix.
* The optional LayerNorm of the code's ``key_norm`` (off by default there and here): on
  the WKV output before the receptance gate, and on the squared-ReLU hidden features.
* Conditioning through the modulator (adaLN-Zero, as the paper's best variant, Fig. 3c,
  or any other method), which owns the block's two norms. The code's norms are
  ``nn.LayerNorm``s with an elementwise affine, then DiT's modulation: adaLN-Zero's
  ``norm_affine: true`` reproduces them (4C parameters per block).
* ``stack_norms: true`` adds the code's two other LayerNorms (with affine, 2C parameters
  each): ``ln0`` on the first block's input (block 0 normalises the stream before its
  first sub-layer, and the normalised stream is what continues) and the final norm
  ``norm_f`` on the last block's output, before the output head (whose own norm, the
  code's ``norm_final``, has no affine and is the head's conditioned norm here). The
  first and last block of the stage apply them, so the final norm sees the stream after
  every long skip, as the code's does.
* The long skip (Linear(Concat(h_shallow, h_deep))) is the stage's ``long_skip: true``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveFloat
from torch import nn

from dicesearch.conditioning import ConditionSignal
from dicesearch.ops import bi_wkv
from dicesearch.plugin_api import BlockContext, BlockParams, BlockType, hookimpl


class RWKVParams(BlockParams):
    hidden_ratio: PositiveFloat = Field(4.0, description="Channel-mix hidden width / channels (Tab. 1: E = 4).")
    shift_pixels: NonNegativeInt = Field(1, description="Distance of the quad-directional token shift; 0: no shift.")
    shift_fraction: float = Field(
        0.25, gt=0.0, le=0.25, description="Fraction of the channels shifted in each of the four directions."
    )
    bonus_over_length: bool = Field(
        True, description="Divide the bonus u by T, as the released code does (false: the equation's u)."
    )
    key_norm: bool = Field(False, description="LayerNorm on the WKV output and on the channel mix's hidden features.")
    stack_norms: bool = Field(
        False, description="LayerNorms on the first block's input (code: ln0) and the last block's output (code: norm_f)."
    )


def quad_shift(x: torch.Tensor, pixels: int, fraction: float) -> torch.Tensor:
    """Quad-directional token shift on a grid: (B, H, W, C) -> (B, H, W, C).

    With g = floor(C * fraction) and s = ``pixels``, output token (h, w) takes channels
    [0, g) from (h, w - s), [g, 2g) from (h, w + s), [2g, 3g) from (h - s, w) and
    [3g, 4g) from (h + s, w), zeros where that token is off the grid; channels from 4g on
    are its own.
    """
    _, height, width, channels = x.shape
    g = int(channels * fraction)
    sw, sh = min(pixels, width), min(pixels, height)
    if g == 0 or pixels == 0:
        return x
    from_left = F.pad(x[:, :, : width - sw, :g], (0, 0, sw, 0))  # (B, H, W, g)
    from_right = F.pad(x[:, :, sw:, g : 2 * g], (0, 0, 0, sw))
    from_above = F.pad(x[:, : height - sh, :, 2 * g : 3 * g], (0, 0, 0, 0, sh, 0))
    from_below = F.pad(x[:, sh:, :, 3 * g : 4 * g], (0, 0, 0, 0, 0, sh))
    return torch.cat([from_left, from_right, from_above, from_below, x[..., 4 * g :]], dim=-1)


def _layer_ratios(index: int, depth: int) -> tuple[float, float]:
    """(a, b) of the fancy init: a = i / (n - 1) rises 0 -> 1, b = 1 - i / n falls 1 -> ~0."""
    rising = index / (depth - 1) if depth > 1 else 0.0
    return rising, 1.0 - index / depth


def _channel_positions(channels: int, last: int) -> torch.Tensor:
    """c / last for c < channels, as float64 (0 when last is 0)."""
    return torch.arange(channels, dtype=torch.float64) / max(last, 1)


class SpatialMix(nn.Module):
    """Token shift, r/k/v projections, Bi-WKV, receptance gate, output: (B, H, W, C) -> same."""

    def __init__(self, dim: int, params: RWKVParams, index: int, depth: int):
        super().__init__()
        self.params, self.index, self.depth = params, index, depth
        self.decay = nn.Parameter(torch.empty(dim))  # w, (C,)
        self.bonus = nn.Parameter(torch.empty(dim))  # u, (C,)
        self.mix_k = nn.Parameter(torch.empty(dim))  # mu_k, (C,)
        self.mix_v = nn.Parameter(torch.empty(dim))
        self.mix_r = nn.Parameter(torch.empty(dim))
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.key_norm = nn.LayerNorm(dim) if params.key_norm else None
        self.output = nn.Linear(dim, dim, bias=False)
        self.reset_special_parameters()

    @torch.no_grad()
    def reset_special_parameters(self) -> None:
        dim = self.decay.shape[0]
        rising, falling = _layer_ratios(self.index, self.depth)
        position = _channel_positions(dim, dim - 1)  # c / (C - 1)
        fraction = _channel_positions(dim, dim)  # c / C
        zigzag = 0.5 * ((torch.arange(dim) + 1) % 3 - 1).double()
        for param, value in (
            (self.decay, -5 + 8 * position ** (0.7 + 1.3 * rising)),
            (self.bonus, math.log(0.3) + zigzag),
            (self.mix_k, fraction**falling),
            (self.mix_v, fraction**falling + 0.3 * rising),
            (self.mix_r, fraction ** (0.5 * falling)),
        ):
            param.copy_(value.to(param.device, param.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        length = h * w
        shifted = quad_shift(x, self.params.shift_pixels, self.params.shift_fraction)  # (B, H, W, C)
        k = self.key(x * self.mix_k + shifted * (1 - self.mix_k)).reshape(b, length, c)  # (B, T, C)
        v = self.value(x * self.mix_v + shifted * (1 - self.mix_v)).reshape(b, length, c)  # (B, T, C)
        r = self.receptance(x * self.mix_r + shifted * (1 - self.mix_r))  # (B, H, W, C)
        bonus = self.bonus / length if self.params.bonus_over_length else self.bonus
        wkv = bi_wkv(self.decay, bonus, k, v).reshape(b, h, w, c)  # (B, H, W, C), both directions
        if self.key_norm is not None:
            wkv = self.key_norm(wkv)
        return self.output(torch.sigmoid(r) * wkv)


class ChannelMix(nn.Module):
    """Token shift, squared-ReLU MLP gated by sigmoid(receptance): (B, H, W, C) -> same."""

    def __init__(self, dim: int, params: RWKVParams, index: int, depth: int):
        super().__init__()
        self.params, self.index, self.depth = params, index, depth
        hidden = max(1, int(dim * params.hidden_ratio))
        self.mix_k = nn.Parameter(torch.empty(dim))
        self.mix_r = nn.Parameter(torch.empty(dim))
        self.key = nn.Linear(dim, hidden, bias=False)
        self.key_norm = nn.LayerNorm(hidden) if params.key_norm else None
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(hidden, dim, bias=False)
        self.reset_special_parameters()

    @torch.no_grad()
    def reset_special_parameters(self) -> None:
        dim = self.mix_k.shape[0]
        _, falling = _layer_ratios(self.index, self.depth)
        value = _channel_positions(dim, dim) ** falling  # (c / C)^b
        self.mix_k.copy_(value.to(self.mix_k.device, self.mix_k.dtype))
        self.mix_r.copy_(value.to(self.mix_r.device, self.mix_r.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = quad_shift(x, self.params.shift_pixels, self.params.shift_fraction)  # (B, H, W, C)
        k = torch.relu(self.key(x * self.mix_k + shifted * (1 - self.mix_k))).square()  # (B, H, W, E*C)
        if self.key_norm is not None:
            k = self.key_norm(k)
        r = self.receptance(x * self.mix_r + shifted * (1 - self.mix_r))  # (B, H, W, C)
        return torch.sigmoid(r) * self.value(k)


class RWKVBlock(nn.Module):
    def __init__(self, params: RWKVParams, ctx: BlockContext):
        super().__init__()
        dim = ctx.geometry.channels
        self.modulator = ctx.conditioning.modulator(dim, sublayers=2)
        self.spatial = SpatialMix(dim, params, ctx.index, ctx.depth)
        self.channel = ChannelMix(dim, params, ctx.index, ctx.depth)
        first, last = ctx.index == 0, ctx.index == ctx.depth - 1
        self.input_norm = nn.LayerNorm(dim) if params.stack_norms and first else None  # the code's ln0
        self.final_norm = nn.LayerNorm(dim) if params.stack_norms and last else None  # the code's norm_f

    def forward(self, x: torch.Tensor, signal: ConditionSignal) -> torch.Tensor:
        # x: (B, H, W, C)
        if self.input_norm is not None:
            x = self.input_norm(x)
        mod = self.modulator(signal)
        x = x + mod.gate(0, self.spatial(mod.norm(0, x)))
        x = x + mod.gate(1, self.channel(mod.norm(1, x)))
        return self.final_norm(x) if self.final_norm is not None else x


@hookimpl
def dicesearch_block_types():
    return [
        BlockType(
            name="rwkv",
            params=RWKVParams,
            build=RWKVBlock,
            description="Diffusion-RWKV Bi-RWKV: quad-directional shift + bidirectional WKV, squared-ReLU channel mix.",
        )
    ]
