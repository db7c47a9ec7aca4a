"""Model FLOPs of a forward pass, and of a training step by the usual MFU convention.

Forward FLOPs come from ``dicesearch.analysis.flops.count_flops`` (matmuls, convolutions,
attention; 2 per multiply-add) on a model built on the meta device, so nothing is
allocated. A training step is counted as 3x the forward pass (the backward pass as twice
the forward, as in MFU figures elsewhere) rather than by counting the backward pass:
PyTorch's FlopCounterMode counts a grouped convolution's backward as if it were dense
(a 7x7 depthwise convolution's backward at 256 channels as 257x its forward), which would
inflate DICE's and ConvNeXt's figures by an order of magnitude.
"""

from __future__ import annotations

import torch

from dicesearch.analysis.flops import count_flops
from dicesearch.model import build_model


def forward_flops(spec) -> float:
    """FLOPs of one forward pass of one image (batch 1)."""
    with torch.device("meta"):
        model = build_model(spec)
        side, channels = spec.input.resolution, spec.input.channels
        x, t = torch.zeros(1, channels, side, side), torch.zeros(1)  # (1, C, H, W), (1,)
        y = torch.zeros(1, dtype=torch.long) if spec.input.num_classes else None
    return float(count_flops(lambda: model(x, t, y)).flops)


def training_step_flops(spec, batch_size: int) -> float:
    """Model FLOPs of one training step at ``batch_size``: 3 x forward x batch."""
    return 3.0 * batch_size * forward_flops(spec)
