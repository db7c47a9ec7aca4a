"""Time-Dependent Layer Normalisation, TD-LN (DiMR, Liu et al. 2024, Sec. 4.2, Eq. 5-7).

Each conditioned LayerNorm's affine parameters are functions of time, interpolating two
learned vectors each::

    s_g(t) = sigmoid(w_g * tau(t) + b_g)                        (Eq. 5)
    gamma(t) = s_g(t) * p1 + (1 - s_g(t)) * p2                  (Eq. 6)
    beta(t)  = s_b(t) * p3 + (1 - s_b(t)) * p4   ("formulated similarly")
    z = LN(x; gamma(t), beta(t))                                (Eq. 7)

There is no gate (residual branches are added as they are) and no conditioning MLP.

The time input tau(t), for timesteps t = 0 (least noise) ... T - 1 (pure noise):

* ``time_input: centered`` (default): tau = time_scale * (t / T - 0.5); the paper does
  not say what tau is.
* ``time_input: dimr``: what DiMR's official code feeds. Its training and sampling
  compute ``log_snr = 8 n / 1000 - 4`` from its timestep n = t + 1 in {1, ..., 1000}
  and pass ``log_snr / 4`` to every time-dependent parameter, so
  tau = (8 (t + 1) / T - 4) / 4 = 2 (t + 1) / T - 1, in (-1, 1]. Despite the name it is
  linear in t and grows with the noise, as ``centered`` does (``centered`` with
  time_scale 2 differs from it by the constant 2 / T).

Choices where the paper is silent, stated here:

* w, b are scalars per interpolated vector (the paper's "learnable weight and bias");
  ``per_channel: true`` makes them per-channel as in DiMR's official code, whose
  ``TimeDependentParameter`` holds p1, p2 and a per-channel weight and bias for every
  time-dependent vector. w starts at 1 and b at 0 (the code: a zero "nodecay" weight
  plus 1, a zero bias); p1 = p2 = 1 and p3 = p4 = 0, so TD-LN starts as a plain
  LayerNorm. An official (param0, param1, nodecay_weight, nodecay_bias) is (p1, p2,
  w - 1, b) here.
* ``block_norm``: the norm of the blocks' sub-layers. ``layer`` is Eq. 7. ``rms`` is the
  time-dependent RMSNorm of DiMR's XL and G configurations (the code's ``TDRMSNorm``):
  z = x / (RMS(x) + rms_eps) * gamma(t), with gamma(t) from Eq. 5-6 and no shift. The
  norms the composer asks for through ``feature_norm`` (stage heads, the feature
  cascade's upsampler) are always Eq. 7's LayerNorm, as in the code, where the output
  layer and the upsampler use its time-dependent LayerNorm whatever the blocks use.
* The class label: a learned class embedding (K + 1 rows, the last the null label for
  classifier-free guidance) per labelled stage, in every stage (``label_stages: all``)
  or in the first, coarsest one only (``first``: DiMR-XL/2R's transformer branch, with
  DiMR's 1001 x C table and none in the ConvNeXt branch). How it enters
  (``label_input``):

  - ``add`` (default): the row is added to every position of the stage's patchified
    input (``stage_input``), which reaches every block kind, convolutions included.
  - ``token``: the row is one extra token ahead of the stage's H * W grid tokens
    (``stage_tokens``), which the blocks' attention mixes with the others and which is
    dropped before the head and the features passed on: DiMR's code, which prepends
    ``class_embeds(y)`` to its transformer branch's sequence and strips it at the
    output. Only for stages whose blocks take prefix tokens (attention).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from dicesearch.conditioning import ConditioningMethod, ConditionSignal, Modulation, Modulator, NormAffine, per_sample
from dicesearch.plugin_api import ConditioningContext, ConditioningParams, ConditioningType, hookimpl

NormKind = Literal["layer", "rms"]


class TDLNParams(ConditioningParams):
    num_timesteps: PositiveInt = Field(1000, description="Training timesteps T; tau is computed from t / T.")
    time_input: Literal["centered", "dimr"] = Field(
        "centered",
        description="tau(t): centered = time_scale * (t / T - 0.5); dimr = DiMR code's log_snr / 4 = 2 (t + 1) / T - 1.",
    )
    time_scale: PositiveFloat = Field(5.0, description="centered: tau(t) = time_scale * (t / T - 0.5).")
    per_channel: bool = Field(False, description="Per-channel w and b (DiMR code) instead of scalars (paper).")
    block_norm: NormKind = Field(
        "layer", description="Blocks' norms: layer (Eq. 7) or rms (DiMR-XL's TDRMSNorm: time-dependent scale, no shift)."
    )
    label_stages: Literal["all", "first"] = Field(
        "all", description="Stages whose input gets the class embedding: all, or the first (DiMR: its transformer branch)."
    )
    label_input: Literal["add", "token"] = Field(
        "add",
        description="How the class embedding enters a labelled stage: add = to every position of its input; "
        "token = as one extra token ahead of its sequence (DiMR's code; attention stages only).",
    )
    eps: PositiveFloat = Field(1e-6, description="LayerNorm epsilon (DiMR code: 1e-5).")
    rms_eps: PositiveFloat = Field(1e-8, description="block_norm rms: added to RMS(x), as DiMR's code does.")


def time_condition(t: torch.Tensor, params: TDLNParams, dtype: torch.dtype) -> torch.Tensor:
    """tau(t) (B,) for timesteps t (B,), in ``dtype``."""
    fraction = t.to(dtype) / params.num_timesteps
    if params.time_input == "dimr":
        return 2 * (fraction + 1 / params.num_timesteps) - 1  # (8 (t + 1) / T - 4) / 4
    return params.time_scale * (fraction - 0.5)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / (sqrt(mean(x^2)) + eps) over the last dimension, in at least fp32, cast back."""
    compute = torch.promote_types(x.dtype, torch.float32)
    x32 = x.to(compute)
    rms = x32.square().mean(dim=-1, keepdim=True).sqrt()
    return (x32 / (rms + eps)).to(x.dtype)


class _TDLNModulation(Modulation):
    def __init__(self, gamma: torch.Tensor, beta: torch.Tensor | None, kind: NormKind, eps: float):
        self.gamma, self.beta, self.kind, self.eps = gamma, beta, kind, eps  # (B, sublayers, C) each

    def norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        gamma = per_sample(self.gamma[:, index], x)
        if self.kind == "rms":
            return rms_norm(x, self.eps) * gamma
        x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return x * gamma + per_sample(self.beta[:, index], x)

    def gate(self, index: int, h: torch.Tensor) -> torch.Tensor:
        return h

    def layer_norm_affine(self, index: int) -> NormAffine | None:
        if self.kind != "layer":
            return None
        return NormAffine(multiplier=self.gamma[:, index], offset=self.beta[:, index], eps=self.eps)  # (B, C) each


class TDLNModulator(Modulator):
    """The TD-LN parameters of ``sublayers`` norms of width ``dim``.

    layer: p (sublayers, 4, dim) = p1, p2 (gamma), p3, p4 (beta); w, b (sublayers, 2, 1 | dim).
    rms:   p (sublayers, 2, dim) = p1, p2 (gamma); w, b (sublayers, 1, 1 | dim).
    """

    def __init__(self, dim: int, sublayers: int, params: TDLNParams, kind: NormKind = "layer"):
        super().__init__()
        self.params, self.kind = params, kind
        width = dim if params.per_channel else 1
        vectors = 2 if kind == "layer" else 1  # gamma and beta, or gamma only
        self.p = nn.Parameter(torch.empty(sublayers, 2 * vectors, dim))
        self.w = nn.Parameter(torch.empty(sublayers, vectors, width))
        self.b = nn.Parameter(torch.empty(sublayers, vectors, width))
        self.reset_special_parameters()

    def reset_special_parameters(self) -> None:
        with torch.no_grad():
            self.p[:, :2].fill_(1.0)
            self.p[:, 2:].fill_(0.0)
            self.w.fill_(1.0)
            self.b.fill_(0.0)

    def forward(self, signal: ConditionSignal) -> Modulation:
        tau = time_condition(signal.t, self.params, torch.promote_types(self.w.dtype, torch.float32))  # (B,): fp32, or fp64 after model.double()
        s = torch.sigmoid(self.w * tau[:, None, None, None] + self.b)  # (B, sublayers, vectors, 1|C)
        p = self.p
        gamma = s[:, :, 0] * p[:, 0] + (1 - s[:, :, 0]) * p[:, 1]  # (B, sublayers, C)
        if self.kind == "rms":
            return _TDLNModulation(gamma, None, "rms", self.params.rms_eps)
        beta = s[:, :, 1] * p[:, 2] + (1 - s[:, :, 1]) * p[:, 3]
        return _TDLNModulation(gamma, beta, "layer", self.params.eps)


class LabelInjection(nn.Module):
    """Adds a learned class embedding to every position: (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)  # + the null label

    def forward(self, x: torch.Tensor, signal: ConditionSignal) -> torch.Tensor:
        y = signal.y
        if y is None:
            y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        return x + per_sample(self.embedding(y), x)


class LabelToken(nn.Module):
    """The class embedding as one token: signal -> (B, 1, C), DiMR's ``class_embeds(y)[:, None, :]``."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)  # + the null label

    def forward(self, signal: ConditionSignal) -> torch.Tensor:
        y = signal.y
        if y is None:
            y = torch.full(signal.t.shape, self.num_classes, dtype=torch.long, device=signal.t.device)
        return self.embedding(y)[:, None, :]  # (B, 1, C)


class TDLN(ConditioningMethod):
    def __init__(self, params: TDLNParams, ctx: ConditioningContext):
        super().__init__()
        self.params = params
        self.num_classes = ctx.num_classes

    def forward(self, t: torch.Tensor, y: torch.Tensor | None) -> ConditionSignal:
        return ConditionSignal(t=t, y=y, embedding=None)

    def modulator(self, dim: int, sublayers: int, gated: bool = True) -> Modulator:
        return TDLNModulator(dim, sublayers, self.params, self.params.block_norm)

    def feature_norm(self, dim: int) -> Modulator:
        return TDLNModulator(dim, 1, self.params, "layer")

    def _labelled(self, index: int) -> bool:
        return self.num_classes > 0 and (self.params.label_stages == "all" or index == 0)

    def stage_input(self, dim: int, index: int) -> nn.Module | None:
        if not self._labelled(index) or self.params.label_input != "add":
            return None
        return LabelInjection(self.num_classes, dim)

    def stage_tokens(self, dim: int, index: int) -> nn.Module | None:
        if not self._labelled(index) or self.params.label_input != "token":
            return None
        return LabelToken(self.num_classes, dim)


@hookimpl
def dicesearch_conditioning_types():
    return [
        ConditioningType(
            name="tdln",
            params=TDLNParams,
            build=TDLN,
            description="DiMR TD-LN: LayerNorm affine = sigmoid(w*tau(t)+b) interpolation of two learned vectors.",
        )
    ]
