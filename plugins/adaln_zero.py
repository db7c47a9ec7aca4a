"""adaLN-Zero conditioning (DiT, Peebles & Xie 2023, Sec. 3.2).

The timestep (sinusoidal features -> MLP) and class label (embedding table with an extra
"null" row for classifier-free guidance) are summed into one vector c (B, E). Every block
regresses, from SiLU(c), a shift, scale and gate per conditioned sub-layer::

    norm_i(x) = LN(x) * (1 + scale_i) + shift_i      (LN without affine, eps 1e-6)
    gate_i(h) = gate_i * h

The regression layers are zero-initialised, so every residual block starts as the
identity ("Zero"). Output heads get shift and scale only (``feature_norm``).

``norm_affine: true`` gives the blocks' LayerNorms their own elementwise affine before
the modulation, LN(x) * g_i + h_i, as Diffusion-RWKV's code does (an ``nn.LayerNorm``,
then DiT's ``modulate``): 2 C parameters per norm, starting at g = 1, h = 0. The norms
of output heads and connectors (``feature_norm``) never have one, as in DiT's and
Diffusion-RWKV's final layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from dicesearch.conditioning import ConditioningMethod, ConditionSignal, Modulation, Modulator, NormAffine, per_sample
from dicesearch.layers import timestep_features
from dicesearch.plugin_api import ConditioningContext, ConditioningParams, ConditioningType, hookimpl


class AdaLNZeroParams(ConditioningParams):
    embed_dim: PositiveInt | None = Field(
        None, description="Width E of the conditioning vector; default: the widest stage's channels."
    )
    frequency_dim: PositiveInt = Field(256, description="Sinusoidal timestep features fed to the time MLP.")
    eps: PositiveFloat = Field(1e-6, description="LayerNorm epsilon (heads; blocks too unless block_eps).")
    block_eps: PositiveFloat | None = Field(
        None, description="LayerNorm epsilon of the blocks' norms; default: eps (Diffusion-RWKV code: 1e-5 there, 1e-6 in heads)."
    )
    norm_affine: bool = Field(
        False, description="Blocks' LayerNorms keep an elementwise affine before the modulation (Diffusion-RWKV code)."
    )


class _AdaLNModulation(Modulation):
    def __init__(self, params: torch.Tensor, sublayers: int, gated: bool, eps: float, affine: tuple | None):
        # params: (B, k * sublayers * C) with k = 3 (shift, scale, gate) or 2 (shift, scale)
        self.chunks = params.chunk((3 if gated else 2) * sublayers, dim=-1)
        self.gated = gated
        self.eps = eps
        self.affine = affine  # None, or (weight, bias), each (sublayers, C)

    def norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        k = 3 if self.gated else 2
        shift, scale = self.chunks[k * index], self.chunks[k * index + 1]
        weight, bias = (self.affine[0][index], self.affine[1][index]) if self.affine is not None else (None, None)
        x = F.layer_norm(x, x.shape[-1:], weight, bias, eps=self.eps)
        return x * (1 + per_sample(scale, x)) + per_sample(shift, x)

    def gate(self, index: int, h: torch.Tensor) -> torch.Tensor:
        if not self.gated:
            return h
        return per_sample(self.chunks[3 * index + 2], h) * h

    def layer_norm_affine(self, index: int) -> NormAffine | None:
        if self.affine is not None:  # the norm's own affine comes first: not one per-sample affine
            return None
        k = 3 if self.gated else 2
        shift, scale = self.chunks[k * index], self.chunks[k * index + 1]  # (B, C) each
        return NormAffine(multiplier=1 + scale, offset=shift, eps=self.eps)


class AdaLNModulator(Modulator):
    """SiLU -> Linear(E, k * sublayers * dim), zero-initialised; optionally each norm's affine."""

    def __init__(self, embed_dim: int, dim: int, sublayers: int, gated: bool, eps: float, affine: bool = False):
        super().__init__()
        self.sublayers, self.gated, self.eps = sublayers, gated, eps
        self.regress = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, (3 if gated else 2) * sublayers * dim))
        if affine:  # LN(x) * norm_weight[i] + norm_bias[i] before the modulation
            self.norm_weight = nn.Parameter(torch.ones(sublayers, dim))
            self.norm_bias = nn.Parameter(torch.zeros(sublayers, dim))
        else:
            self.norm_weight = self.norm_bias = None

    def forward(self, signal: ConditionSignal) -> Modulation:
        affine = (self.norm_weight, self.norm_bias) if self.norm_weight is not None else None
        return _AdaLNModulation(self.regress(signal.embedding), self.sublayers, self.gated, self.eps, affine)

    def reset_special_parameters(self) -> None:
        nn.init.zeros_(self.regress[1].weight)
        nn.init.zeros_(self.regress[1].bias)
        if self.norm_weight is not None:
            with torch.no_grad():
                self.norm_weight.fill_(1.0)
                self.norm_bias.fill_(0.0)


class AdaLNZero(ConditioningMethod):
    def __init__(self, params: AdaLNZeroParams, ctx: ConditioningContext):
        super().__init__()
        self.params = params
        self.num_classes = ctx.num_classes
        self.embed_dim = params.embed_dim or max(ctx.stage_channels)
        e = self.embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(params.frequency_dim, e), nn.SiLU(), nn.Linear(e, e))
        # one extra row: the null label that classifier-free guidance conditions on
        self.label_embedding = nn.Embedding(ctx.num_classes + 1, e) if ctx.num_classes > 0 else None

    def forward(self, t: torch.Tensor, y: torch.Tensor | None) -> ConditionSignal:
        dtype = self.time_mlp[0].weight.dtype  # float32, or float64 after model.double()
        c = self.time_mlp(timestep_features(t, self.params.frequency_dim, dtype=dtype))  # (B, E)
        if self.label_embedding is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes, dtype=torch.long)
            c = c + self.label_embedding(y)
        return ConditionSignal(t=t, y=y, embedding=c)

    def modulator(self, dim: int, sublayers: int, gated: bool = True) -> Modulator:
        eps = self.params.block_eps or self.params.eps
        return AdaLNModulator(self.embed_dim, dim, sublayers, gated, eps, self.params.norm_affine)

    def feature_norm(self, dim: int) -> Modulator:
        return AdaLNModulator(self.embed_dim, dim, 1, gated=False, eps=self.params.eps)  # shift, scale; no affine

    def reset_special_parameters(self) -> None:
        for layer in (self.time_mlp[0], self.time_mlp[2]):  # DiT: timestep MLP ~ N(0, 0.02)
            nn.init.normal_(layer.weight, std=0.02)


@hookimpl
def dicesearch_conditioning_types():
    return [
        ConditioningType(
            name="adaln_zero",
            params=AdaLNZeroParams,
            build=AdaLNZero,
            description="DiT adaLN-Zero: shift/scale/gate regressed from time+label embedding, zero-init.",
        )
    ]
