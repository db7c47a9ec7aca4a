"""Patch embedding (a convolution whose kernel equals its stride) as one matmul, channels-last out.

A ``nn.Conv2d(C, O, p, stride=p)`` (DiT's and every stage's ``patchify``) maps each
non-overlapping p x p patch to O values:

    y[b, o, i, j] = bias[o] + sum_{c, u, v} weight[o, c, u, v] x[b, c, i p + u, j p + v],

so with the patches unfolded (``pixel_unshuffle``, channel order (c, u, v), the weight's
own) it is one (B h w, C p^2) x (C p^2, O) matmul, and its backward two more. oneDNN
computes the same products (exactly the same sum for C = 1; to float rounding
otherwise, ``tests/ops/test_patchify.py``) 1.2-4x slower on 2 cores and returns NCHW
memory, which leaves every later (B, H, W, C) op of a stage on permuted, strided
tensors; this returns channels-last memory, so they run on dense ones. Other devices go
to ``F.conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["patch_conv2d"]


def patch_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (B, C, H, W), weight (O, C, p, p) -> (B, O, H / p, W / p) with stride p, no padding."""
    out_channels, channels, p, _ = weight.shape
    b, _, h, w = x.shape
    if x.device.type != "cpu" or h % p or w % p:
        return F.conv2d(x, weight, bias, stride=p)
    patches = F.pixel_unshuffle(x, p) if p > 1 else x  # (B, C p^2, h, w), channel order (c, u, v)
    rows = patches.permute(0, 2, 3, 1).reshape(-1, channels * p * p)  # (B h w, C p^2)
    flat = weight.reshape(out_channels, -1).t()  # (C p^2, O)
    out = torch.addmm(bias, rows, flat) if bias is not None else rows @ flat  # (B h w, O)
    return out.reshape(b, h // p, w // p, out_channels).permute(0, 3, 1, 2)  # (B, O, h, w), channels-last
