"""Depthwise convolution that is fast on a CPU for the small grids of short search runs.

A depthwise ("same"-padded, stride 1) convolution with channel multiplier m maps
x (B, C, H, W) to y (B, C m, H, W) with

    y[b, c m + j, h, w] = bias[c m + j] + sum_{u, v} weight[c m + j, 0, u, v] x[b, c, h + u - p, w + v - p],

p = k // 2, x zero outside the grid (``nn.Conv2d(C, C m, k, padding=k // 2, groups=C)``;
ConvNeXt's and DICE's 7x7 convolutions, DICE's left/right pair being m = 2).

PyTorch's CPU kernel (oneDNN) is slow here in two ways, measured in
``benchmarks/train_speed.py``: with m > 1 it leaves the fast depthwise path (7x slower
than m = 1 at equal work), and on grids of a few positions most of the k x k window is
padding it still visits. Two exact rewrites avoid both; they compute the same products
and sum them in another order, so they agree with ``F.conv2d`` to float rounding
(relative 1e-6 in fp32, tested in ``tests/ops/test_depthwise.py``):

* **small grids** (H W <= ``BANDED_MAX_POSITIONS``): the convolution of one channel is a
  linear map of its H W values, a banded (H W, H W) matrix built from the kernel, so
  y = x @ band per channel: one batched matmul, whose backward is two more.
* **larger grids**: repeat each input channel m times (channel c m + j = x_c) and run the
  m = 1 depthwise convolution (oneDNN's fast path) on the channels-last result.

Both return channels-last memory, the layout the blocks' (B, H, W, C) linears want.
Other devices, dtypes or settings go to ``F.conv2d`` unchanged.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BANDED_MAX_POSITIONS", "banded_depthwise_conv2d", "depthwise_conv2d", "supports"]

BANDED_MAX_POSITIONS = 64  # banded matmul up to 8x8 grids (faster than oneDNN there on 2 cores; slower at 16x16)


def supports(x: Tensor, weight: Tensor) -> bool:
    """Whether ``depthwise_conv2d`` has a fast path for this input (a CPU tensor, odd square kernel)."""
    k = weight.shape[-1]
    return x.device.type == "cpu" and x.dim() == 4 and weight.shape[-2] == k and k % 2 == 1 and weight.shape[0] % x.shape[1] == 0


@functools.lru_cache(maxsize=64)
def _band_index(height: int, width: int, k: int) -> Tensor:
    """(H W_in, H W_out) long: the kernel tap joining input position q to output p; k*k where none."""
    p = k // 2
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)  # (HW,)
    du = rows[:, None] - rows[None, :] + p  # (HW_in, HW_out): u with h_in = h_out + u - p
    dv = cols[:, None] - cols[None, :] + p
    inside = (du >= 0) & (du < k) & (dv >= 0) & (dv < k)
    return torch.where(inside, du * k + dv, torch.full_like(du, k * k))


def banded_depthwise_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The small-grid rewrite: x (B, C, H, W), weight (C m, 1, k, k) -> (B, C m, H, W) channels-last."""
    b, c, h, w = x.shape
    out_channels, _, k, _ = weight.shape
    m = out_channels // c
    taps = torch.cat([weight.reshape(c, m, k * k), weight.new_zeros(c, m, 1)], dim=-1)  # (C, m, k*k + 1), last = 0
    band = taps[:, :, _band_index(h, w, k).to(x.device)]  # (C, m, HW_in, HW_out)
    band = band.permute(0, 2, 1, 3).reshape(c, h * w, m * h * w)  # (C, HW_in, m HW_out)
    columns = x.permute(1, 0, 2, 3).reshape(c, b, h * w)  # (C, B, HW_in)
    out = torch.bmm(columns, band)  # (C, B, m HW_out)
    out = out.reshape(c, b, m, h, w).permute(1, 3, 4, 0, 2).reshape(b, h, w, c * m)  # (B, H, W, C m)
    if bias is not None:
        out = out + bias
    return out.permute(0, 3, 1, 2)  # (B, C m, H, W), channels-last memory


def depthwise_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Same-padded stride-1 depthwise convolution: x (B, C, H, W), weight (C m, 1, k, k) -> (B, C m, H, W).

    Equal to ``F.conv2d(x, weight, bias, padding=k // 2, groups=C)`` up to float rounding
    (module docstring); channels-last memory on the fast paths.
    """
    c, k = x.shape[1], weight.shape[-1]
    if not supports(x, weight):
        return F.conv2d(x, weight, bias, padding=k // 2, groups=c)
    b, _, h, w = x.shape
    if h * w <= BANDED_MAX_POSITIONS:
        return banded_depthwise_conv2d(x, weight, bias)
    m = weight.shape[0] // c
    x = x.contiguous(memory_format=torch.channels_last)  # a no-op for the blocks' permuted (B, H, W, C) input
    if m > 1:
        cl = x.permute(0, 2, 3, 1)  # (B, H, W, C), contiguous
        x = cl.unsqueeze(-1).expand(b, h, w, c, m).reshape(b, h, w, c * m).permute(0, 3, 1, 2)  # (B, C m, H, W)
    return F.conv2d(x, weight, bias, padding=k // 2, groups=c * m)
