"""A same-padded convolution to few output channels as one matmul and one ``fold``, channels-last in.

The stages' noise heads are 3x3 convolutions from C features to the image's few channels
(``nn.Conv2d(C, O, 3, padding=1)``, O = 1..8 against C = 32..1152). For O much smaller
than C, compute each position's k^2 tap contributions first and add them where they land:

    T[b, q, (o, u, v)] = sum_c x[b, c, q] w[o, c, k-1-u, k-1-v]          (one (B HW, C) x (C, O k^2) matmul)
    y[b, o, p] = bias[o] + sum_{u, v} T[b, p + (u - k//2, v - k//2) ... ]  (``F.fold``: col2im, zero outside)

``F.fold`` scatters column (o, u, v) of position q to q + (u, v) - k//2, so with the taps
flipped it gathers exactly y[p] = sum_{u, v} w[o, :, u, v] . x[:, p + (u, v) - k//2]: the
convolution (a correlation, as ``F.conv2d``). Its backward is ``unfold`` and two small
matmuls. The products are the same as ``F.conv2d``'s and summed in another order (relative
1e-6 in fp32, ``tests/ops/test_narrow_conv.py``); on the 2-core machine forward +
backward at batch 64 is 1.7x (C = 32, 16x16) to 2.4x (C = 96, 4x4) faster than oneDNN
for O = 1, and equal at O = C / 16, so ``takes_fold_path`` asks for O <= C / 16.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["fold_conv2d", "takes_fold_path"]


def takes_fold_path(in_channels: int, out_channels: int) -> bool:
    """Few enough outputs that the tap matmul beats oneDNN (measured, module docstring)."""
    return out_channels * 16 <= in_channels


def fold_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (B, C, H, W), weight (O, C, k, k) with k odd -> (B, O, H, W): stride 1, padding k // 2.

    Equal to ``F.conv2d(x, weight, bias, padding=k // 2)`` up to float rounding; CPU only
    (other devices go to ``F.conv2d``).
    """
    out_channels, channels, k, _ = weight.shape
    if x.device.type != "cpu":
        return F.conv2d(x, weight, bias, padding=k // 2)
    b, _, h, w = x.shape
    taps = weight.flip(-2, -1).permute(1, 0, 2, 3).reshape(channels, out_channels * k * k)  # (C, O k k), order (o, u, v)
    columns = x.permute(0, 2, 3, 1).reshape(b, h * w, channels) @ taps  # (B, HW, O k k)
    out = F.fold(columns.transpose(1, 2), (h, w), k, padding=k // 2)  # (B, O, H, W)
    return out if bias is None else out + bias.view(1, -1, 1, 1)
