"""Depthwise convolution that is fast on a CPU for the small grids of short search runs.

A depthwise ("same"-padded, stride 1) convolution with channel multiplier m maps
x (B, C, H, W) to y (B, C m, H, W) with

    y[b, c m + j, h, w] = bias[c m + j] + sum_{u, v} weight[c m + j, 0, u, v] x[b, c, h + u - p, w + v - p],

p = k // 2, x zero outside the grid (``nn.Conv2d(C, C m, k, padding=k // 2, groups=C)``;
ConvNeXt's and DICE's 7x7 convolutions, DICE's left/right pair being m = 2).

PyTorch's CPU kernel (oneDNN) is slow here in three ways (measured on 2 cores, CPU time of
forward + backward at batch 64, ``benchmarks/trial_speed.py``): with m > 1 the forward and
the input gradient leave the fast depthwise path (8x slower than m = 1 at equal work); with
the blocks' permuted (B, H, W, C) input in NCHW memory everything is 3x slower than in
channels-last memory; and on grids of a few positions most of the k x k window is padding
it still visits. Exact rewrites avoid all three; they compute the same products and sum
them in another order, so they agree with ``F.conv2d`` to float rounding (relative 1e-6 in
fp32, tested in ``tests/ops/test_depthwise.py``):

* **small grids** (H W <= k^2, e.g. up to 7x7 for k = 7): the convolution of one channel is
  a linear map of its H W values, a banded (H W, H W) matrix built from the kernel, so
  y = x @ band per channel: one batched matmul, whose backward is two more (7x faster
  than oneDNN at 4x4 for DICE's pair).
* **larger grids**, channels-last: repeat each input channel m times (channel c m + j =
  x_c; nothing for m = 1) for the forward, oneDNN's fast m = 1 kernel; take the input
  gradient as the forward kernel's correlation of the gradient with the flipped filter
  (the gradient of a same-padded correlation; 1.3-2.3x faster than oneDNN's backward
  kernel), and the weight gradient from the m > 1 kernel, the faster one there (2.3x
  faster than oneDNN alone at 16x16 for DICE's pair).

* **larger grids at one thread** (a trial's process, or each of its chunks' worker
  threads), k = 3, 5 or 7 and C m a whole number of the kernels' vectors (16 channels
  where the CPU has AVX-512, else 8): the native kernels of
  ``dicesearch/native/depthwise.c``, compiled for the machine on first use
  (``dicesearch.native``): each image copied once into a zero-bordered buffer with its
  channels repeated, then the taps of a kernel row and eight outputs of a grid row in
  registers. oneDNN's gradient kernels are the slow part of the path above (its weight
  gradient alone is 2-3x the forward); the native ones run at about the CPU's matmul rate
  (30-40 GMAC/s at one thread on the project's machine). With m = 1 the forward stays on
  oneDNN's kernel, the faster one there; with m > 1 the native forward saves the channel
  repeat's copy. Measured in ``benchmarks/sweep_speed.py --only native``. Without a C
  compiler, or with ``DICESEARCH_NATIVE=0``, the oneDNN path runs.

All return channels-last memory, the layout the blocks' (B, H, W, C) linears want.
Other devices, dtypes or settings go to ``F.conv2d`` unchanged.
"""

from __future__ import annotations

import ctypes
import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from dicesearch import native

__all__ = ["banded_depthwise_conv2d", "depthwise_conv2d", "native_kernels", "takes_banded_path", "takes_native_path", "supports"]


def supports(x: Tensor, weight: Tensor) -> bool:
    """Whether ``depthwise_conv2d`` has a fast path for this input (a CPU tensor, odd square kernel)."""
    k = weight.shape[-1]
    return x.device.type == "cpu" and x.dim() == 4 and weight.shape[-2] == k and k % 2 == 1 and weight.shape[0] % x.shape[1] == 0


def takes_banded_path(height: int, width: int, k: int) -> bool:
    """Grids of at most k^2 positions: there the banded matmul beats oneDNN (measured, module docstring)."""
    return height * width <= k * k


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


NATIVE_KERNEL_SIZES = (3, 5, 7)
WHAT = "native depthwise convolution"  # names it in a failed call's MemoryError


@functools.cache
def native_kernels() -> ctypes.CDLL | None:
    """``dicesearch/native/depthwise.c`` built for this machine, or None (``native.why_unavailable``)."""
    library = native.load_library("depthwise")
    if library is None:
        return None
    pointer, count = ctypes.c_void_p, ctypes.c_int
    library.dw_forward.argtypes = [pointer] * 4 + [count] * 6
    library.dw_input_grad.argtypes = [pointer] * 3 + [count] * 6
    library.dw_weight_grad.argtypes = [pointer] * 3 + [count] * 6
    for function in (library.dw_forward, library.dw_input_grad, library.dw_weight_grad, library.dw_vector_width):
        function.restype = count
    library.vector_width = library.dw_vector_width()  # channels per vector: asked once, not at every convolution
    return library


def takes_native_path(channels_out: int, k: int) -> bool:
    """Whether a float32 convolution of this shape at this thread count runs the native kernels."""
    if k not in NATIVE_KERNEL_SIZES or torch.get_num_threads() != 1:
        return False  # the kernels use one thread; at more, oneDNN's threads are the faster way
    if torch.compiler.is_compiling():
        return False  # a foreign call cannot be traced: a compiled model keeps oneDNN's kernels
    library = native_kernels()
    return library is not None and channels_out % library.vector_width == 0


def _rows(t: Tensor) -> Tensor:
    """(B, C, H, W) -> its (B, H, W, C) view, contiguous (a no-op for channels-last memory)."""
    return t.permute(0, 2, 3, 1).contiguous()


class _NativeDepthwise(torch.autograd.Function):
    """Forward and both gradients from ``dicesearch/native/depthwise.c`` (module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        b, c, h, w = x.shape
        cm, _, k, _ = weight.shape
        rows = _rows(x)  # (B, H, W, C)
        ctx.save_for_backward(rows, weight)
        ctx.has_bias = bias is not None
        if cm == c:  # m = 1: oneDNN's forward kernel is the faster one there (module docstring)
            return F.conv2d(rows.permute(0, 3, 1, 2), weight, bias, padding=k // 2, groups=c)  # (B, C, H, W), channels-last
        taps = weight.reshape(cm, k * k).t().contiguous()  # (k k, C m)
        out = x.new_empty(b, h, w, cm)  # (B, H, W, C m)
        bias_arg = bias.contiguous() if bias is not None else None
        native.call(native_kernels().dw_forward, rows, taps, bias_arg, out, b, h, w, c, cm // c, k, what=WHAT)
        return out.permute(0, 3, 1, 2)  # (B, C m, H, W), channels-last memory

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        rows, weight = ctx.saved_tensors
        b, h, w, c = rows.shape
        cm, _, k, _ = weight.shape
        grad_rows = _rows(grad)  # (B, H, W, C m)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            flipped = weight.flip(-2, -1).reshape(cm, k * k).t().contiguous()  # (k k, C m)
            grad_x = rows.new_empty(b, h, w, c)
            native.call(native_kernels().dw_input_grad, grad_rows, flipped, grad_x, b, h, w, c, cm // c, k, what=WHAT)
            grad_x = grad_x.permute(0, 3, 1, 2)  # (B, C, H, W), channels-last
        if ctx.needs_input_grad[1]:
            taps = rows.new_empty(k * k, cm)
            native.call(native_kernels().dw_weight_grad, rows, grad_rows, taps, b, h, w, c, cm // c, k, what=WHAT)
            grad_w = taps.t().reshape(cm, 1, k, k)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_rows.sum((0, 1, 2))  # (C m,)
        return grad_x, grad_w, grad_b


class _RepeatedChannels(torch.autograd.Function):
    """The channel-repeat rewrite with each gradient from oneDNN's faster kernel for it.

    Forward and input gradient: the m = 1 forward convolution of the repeated channels and
    of the gradient with the flipped filter (the m > 1 kernels are 8x slower at the input
    gradient, oneDNN's backward kernel up to 2.3x). Weight gradient: the m > 1 convolution's
    own (the m = 1 one of m times the channels is 2x slower). Measured in ``benchmarks``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        repeated = _repeat_channels(x, weight.shape[0] // x.shape[1])  # (B, C m, H, W)
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.multiplier = bias is not None, weight.shape[0] // x.shape[1]
        return F.conv2d(repeated, weight, bias, padding=weight.shape[-1] // 2, groups=weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        cm, k, m = weight.shape[0], weight.shape[-1], ctx.multiplier
        c, pad = cm // m, [k // 2, k // 2]
        grad = grad.contiguous(memory_format=torch.channels_last)  # (B, C m, H, W)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # the input gradient of a same-padded correlation is the correlation of the
            # gradient with the flipped kernel: oneDNN's forward kernel, 2x its backward one
            grad_rep = F.conv2d(grad, weight.flip(-2, -1), None, padding=k // 2, groups=cm).permute(0, 2, 3, 1)  # (B, H, W, C m)
            grad_x = grad_rep[..., 0::m]
            for j in range(1, m):
                grad_x = grad_x + grad_rep[..., j::m]
            grad_x = grad_x.permute(0, 3, 1, 2)  # (B, C, H, W), channels-last
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], pad, [1, 1], False, [0, 0], c, [False, True, False]
            )[1]  # (C m, 1, k, k)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))  # (C m,)
        return grad_x, grad_w, grad_b


def _repeat_channels(x: Tensor, m: int) -> Tensor:
    """(B, C, H, W) channels-last -> (B, C m, H, W) channels-last with channel c m + j = x_c."""
    if m == 1:
        return x
    b, c, h, w = x.shape
    cl = x.permute(0, 2, 3, 1)  # (B, H, W, C), contiguous
    return cl.unsqueeze(-1).expand(b, h, w, c, m).reshape(b, h, w, c * m).permute(0, 3, 1, 2)


def depthwise_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Same-padded stride-1 depthwise convolution: x (B, C, H, W), weight (C m, 1, k, k) -> (B, C m, H, W).

    Equal to ``F.conv2d(x, weight, bias, padding=k // 2, groups=C)`` up to float rounding
    (module docstring); channels-last memory on the fast paths.
    """
    c, k = x.shape[1], weight.shape[-1]
    if not supports(x, weight):
        return F.conv2d(x, weight, bias, padding=k // 2, groups=c)
    _, _, h, w = x.shape
    if takes_banded_path(h, w, k):
        return banded_depthwise_conv2d(x, weight, bias)
    m = weight.shape[0] // c
    x = x.contiguous(memory_format=torch.channels_last)  # a no-op for the blocks' permuted (B, H, W, C) input
    if x.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
        if takes_native_path(weight.shape[0], k) and (bias is None or bias.dtype == torch.float32):
            return _NativeDepthwise.apply(x, weight, bias)
        return _RepeatedChannels.apply(x, weight, bias)
    if m == 1:
        return F.conv2d(x, weight, bias, padding=k // 2, groups=c)
    return F.conv2d(_repeat_channels(x, m), weight, bias, padding=k // 2, groups=c * m)
