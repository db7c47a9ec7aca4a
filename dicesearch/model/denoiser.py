"""The composer: a spec becomes a denoiser ``forward(x_t, t, y) -> eps_hat``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dicesearch.model.init import initialize
from dicesearch.model.stage import Stage
from dicesearch.plugin_api import ConditioningContext


def _feature_width(spec, index: int) -> int:
    stage = spec.stages[index]
    if spec.cascade.features_from == "all_blocks":
        return stage.channels * (stage.depth + 1)
    return stage.channels


class Denoiser(nn.Module):
    """A (possibly multi-stage) noise-prediction network built from a ModelSpec.

    Stages run from the lowest resolution to the highest. Every stage predicts noise;
    the last stage's prediction is the model's output (with ``learn_sigma``, its second
    half of channels is the variance interpolation v, as in DiT / improved DDPM).
    """

    def __init__(self, spec, registry):
        super().__init__()
        self.spec = spec
        conditioning_type = registry.conditioning(spec.conditioning.kind)
        context = ConditioningContext(
            num_classes=spec.input.num_classes,
            stage_channels=tuple(stage.channels for stage in spec.stages),
        )
        self.conditioning = conditioning_type.build(spec.conditioning, context)
        features = spec.cascade.kind == "features" and len(spec.stages) > 1
        last = len(spec.stages) - 1
        self.stages = nn.ModuleList(
            Stage(
                spec,
                i,
                self.conditioning,
                registry,
                out_channels=spec.output_channels if i == last else spec.input.channels,
                coarse_features=_feature_width(spec, i - 1) if features and i > 0 else None,
                collect=spec.cascade.features_from if features and i < last else None,
            )
            for i in range(len(spec.stages))
        )
        initialize(self, spec.init.scheme, spec.init.std, spec.init.zero_head)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in the backward pass (less memory, ~30 % more time)."""
        for stage in self.stages:
            stage.gradient_checkpointing = enabled

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x_t: (B, C, H, W); t: (B,) or scalar timesteps; y: (B,) labels -> (B, C_out, H, W)."""
        return self.forward_stages(x_t, t, y)[-1]

    def forward_stages(self, x_t: torch.Tensor, t, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every stage's noise prediction, coarse to fine; the last is the model output."""
        t = torch.as_tensor(t, device=x_t.device)
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        signal = self.conditioning(t, y)
        channels = self.spec.input.channels
        noise_cascade = self.spec.cascade.kind == "noise"
        predictions: list[torch.Tensor] = []
        features = None
        for stage in self.stages:
            x_in = x_t
            if noise_cascade and predictions:  # DICE Sec. 3.1: clean the input with the coarse noise estimate
                coarse = predictions[-1][:, :channels]
                if coarse.shape[-2:] != x_t.shape[-2:]:
                    mode = self.spec.cascade.upsample
                    coarse = F.interpolate(coarse, size=x_t.shape[-2:], mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
                x_in = x_t - coarse
            prediction, features = stage(x_in, signal, features)
            predictions.append(prediction)
        return predictions
