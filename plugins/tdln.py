"""Time-Dependent Layer Normalisation, TD-LN (DiMR, Liu et al. 2024, Sec. 4.2, Eq. 5-7).

Each conditioned LayerNorm's affine parameters are functions of time, interpolating two
learned vectors each::

    s_g(t) = sigmoid(w_g * tau(t) + b_g)                        (Eq. 5)
    gamma(t) = s_g(t) * p1 + (1 - s_g(t)) * p2                  (Eq. 6)
    beta(t)  = s_b(t) * p3 + (1 - s_b(t)) * p4   ("formulated similarly")
    z = LN(x; gamma(t), beta(t))                                (Eq. 7)

There is no gate (residual branches are added as they are) and no conditioning MLP.

Choices where the paper is silent, stated here:

* tau(t) = time_scale * (t / num_timesteps - 0.5). DiMR's code feeds log-SNR / 4, which
  spans about [-2.5, 2.3] on DiT's linear schedule; the default time_scale 5 gives the same
  range without making blocks depend on the noise schedule.
* w, b are scalars per interpolated vector (the paper's "learnable weight and bias");
  ``per_channel: true`` makes them per-channel as in DiMR's official code. w starts at 1
  and b at 0; p1 = p2 = 1 and p3 = p4 = 0, so TD-LN starts as a plain LayerNorm.
* The class label: DiMR feeds it as an extra token to its transformer branch only. Here,
  so that it reaches every block kind (convolutions included), each stage adds a learned
  class embedding (with a null row for classifier-free guidance) to every position of its
  patchified input, through ``stage_input``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from dicesearch.conditioning import ConditioningMethod, ConditionSignal, Modulation, Modulator, per_sample
from dicesearch.plugin_api import ConditioningContext, ConditioningParams, ConditioningType, hookimpl


class TDLNParams(ConditioningParams):
    num_timesteps: PositiveInt = Field(1000, description="Training timesteps T; tau is computed from t / T.")
    time_scale: PositiveFloat = Field(5.0, description="tau(t) = time_scale * (t / T - 0.5).")
    per_channel: bool = Field(False, description="Per-channel w and b (DiMR code) instead of scalars (paper).")
    eps: PositiveFloat = Field(1e-6, description="LayerNorm epsilon.")


class _TDLNModulation(Modulation):
    def __init__(self, gamma: torch.Tensor, beta: torch.Tensor, eps: float):
        self.gamma, self.beta, self.eps = gamma, beta, eps  # (B, sublayers, C) each

    def norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return x * per_sample(self.gamma[:, index], x) + per_sample(self.beta[:, index], x)

    def gate(self, index: int, h: torch.Tensor) -> torch.Tensor:
        return h


class TDLNModulator(Modulator):
    """The TD-LN parameters of one block's ``sublayers`` norms."""

    def __init__(self, dim: int, sublayers: int, params: TDLNParams):
        super().__init__()
        self.params = params
        width = dim if params.per_channel else 1
        self.p = nn.Parameter(torch.empty(sublayers, 4, dim))  # p1, p2 (gamma); p3, p4 (beta)
        self.w = nn.Parameter(torch.empty(sublayers, 2, width))  # for s_gamma, s_beta
        self.b = nn.Parameter(torch.empty(sublayers, 2, width))
        self.reset_special_parameters()

    def reset_special_parameters(self) -> None:
        with torch.no_grad():
            self.p[:, :2].fill_(1.0)
            self.p[:, 2:].fill_(0.0)
            self.w.fill_(1.0)
            self.b.fill_(0.0)

    def forward(self, signal: ConditionSignal) -> Modulation:
        t = signal.t.to(torch.promote_types(self.p.dtype, torch.float32))  # fp32, or fp64 after model.double()
        tau = self.params.time_scale * (t / self.params.num_timesteps - 0.5)  # (B,)
        s = torch.sigmoid(self.w * tau[:, None, None, None] + self.b)  # (B, sublayers, 2, 1|C)
        p = self.p
        gamma = s[:, :, 0] * p[:, 0] + (1 - s[:, :, 0]) * p[:, 1]  # (B, sublayers, C)
        beta = s[:, :, 1] * p[:, 2] + (1 - s[:, :, 1]) * p[:, 3]
        return _TDLNModulation(gamma, beta, self.params.eps)


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


class TDLN(ConditioningMethod):
    def __init__(self, params: TDLNParams, ctx: ConditioningContext):
        super().__init__()
        self.params = params
        self.num_classes = ctx.num_classes

    def forward(self, t: torch.Tensor, y: torch.Tensor | None) -> ConditionSignal:
        return ConditionSignal(t=t, y=y, embedding=None)

    def modulator(self, dim: int, sublayers: int, gated: bool = True) -> Modulator:
        return TDLNModulator(dim, sublayers, self.params)

    def stage_input(self, dim: int) -> nn.Module | None:
        return LabelInjection(self.num_classes, dim) if self.num_classes > 0 else None


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
