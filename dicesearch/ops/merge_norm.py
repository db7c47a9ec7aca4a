"""DICE's merge of a depthwise pair and the conditioned LayerNorm after it, as one native op.

The DICE block (``plugins/dice.py``) merges its convolution pair and normalises the result
with the conditioning's modulation::

    m = (l + r) sigma(-lambda (l - r)^2)                       (DICE Fig. 5, ops.signal_merge)
    y = LN(m) * multiplier[b] + offset[b]                      (LN over channels, no affine)

where the per-sample multiplier and offset (B, C) are adaLN-Zero's 1 + scale and shift or
TD-LN's gamma and beta (``Modulation.layer_norm_affine``). In PyTorch that is about fifteen
passes over (B, H, W, C) tensors forward and backward, each reading what the last wrote: on
the 2-core machine 5.5 ms of a 94 ms training step per DICE block at 16x16 (batch 64, 32
channels), more than the block's depthwise convolutions. ``merged_norm`` runs
``dicesearch/native/merge_norm.c`` instead: one pass over the pair's rows forward (keeping
only each row's mean and reciprocal deviation) and one backward (recomputing the merge from
the pair), at one thread. The same sums in another order, so it agrees with the PyTorch
composition to float rounding (``tests/ops/test_merge_norm.py``).

It runs where the native depthwise kernels do (``ops.depthwise``): float32 on a CPU at one
thread, C a whole number of the kernels' vectors, not under autocast or ``torch.compile``;
elsewhere, or without a C compiler or with ``DICESEARCH_NATIVE`` not naming ``merge_norm``,
``merged_norm`` is the PyTorch composition the block used before, to the bit.
"""

from __future__ import annotations

import ctypes
import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from dicesearch import native
from dicesearch.ops.signal_merge import merge_pairs

__all__ = ["merged_norm", "merged_norm_reference", "native_kernels", "takes_native_path"]

WHAT = "native merge and norm"  # names it in a failed call's MemoryError


@functools.cache
def native_kernels() -> ctypes.CDLL | None:
    """``dicesearch/native/merge_norm.c`` built for this machine, or None (``native.why_unavailable``)."""
    library = native.load_library("merge_norm")
    if library is None:
        return None
    pointer, count, index = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    library.mn_forward.argtypes = [pointer] * 6 + [index, index, count, ctypes.c_float]
    library.mn_backward.argtypes = [pointer] * 9 + [index, index, count]
    for function in (library.mn_forward, library.mn_backward, library.mn_vector_width):
        function.restype = count
    library.vector_width = library.mn_vector_width()
    return library


def takes_native_path(pair: Tensor, lam: Tensor, multiplier: Tensor, offset: Tensor) -> bool:
    """Whether ``merged_norm`` of these tensors runs the native kernels (module docstring)."""
    tensors = (pair, lam, multiplier, offset)
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors) or pair.dim() != 4:
        return False
    if torch.get_num_threads() != 1 or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return False
    library = native_kernels()
    channels = pair.shape[1] // 2
    return library is not None and pair.shape[1] % 2 == 0 and channels % library.vector_width == 0


def _per_sample(vector: Tensor) -> Tensor:
    """(B, C) or (1, C) -> (B or 1, 1, 1, C), broadcasting over a (B, H, W, C) tensor."""
    return vector.reshape(vector.shape[0], 1, 1, vector.shape[-1])


def merged_norm_reference(pair: Tensor, lam: Tensor, multiplier: Tensor, offset: Tensor, eps: float) -> Tensor:
    """The PyTorch composition: pair (B, 2C, H, W), lam (1,) or (C,) -> (B, H, W, C)."""
    merged = merge_pairs(pair, lam).permute(0, 2, 3, 1)  # (B, H, W, C)
    x = F.layer_norm(merged, merged.shape[-1:], eps=eps)
    return x * _per_sample(multiplier) + _per_sample(offset)


def merged_norm(pair: Tensor, lam: Tensor, multiplier: Tensor, offset: Tensor, eps: float) -> Tensor:
    """LN(merge(pair)) * multiplier + offset (module docstring): pair (B, 2C, H, W) -> (B, H, W, C).

    ``pair``: channel 2c is left_c, 2c + 1 right_c; ``lam``: (1,) or (C,); ``multiplier``
    and ``offset``: (B, C) or (1, C), per sample; ``eps``: the LayerNorm's.
    """
    if not takes_native_path(pair, lam, multiplier, offset):
        return merged_norm_reference(pair, lam, multiplier, offset, eps)
    b, c2, h, w = pair.shape
    c = c2 // 2
    multiplier = multiplier.expand(b, c).contiguous()  # (B, C); autograd sums a broadcast back
    offset = offset.expand(b, c).contiguous()  # (B, C)
    lam_c = lam.expand(c).contiguous()  # (C,)
    return _MergedNorm.apply(pair, lam_c, multiplier, offset, float(eps))


class _MergedNorm(torch.autograd.Function):
    """Forward and backward from ``dicesearch/native/merge_norm.c`` (module docstring)."""

    @staticmethod
    def forward(ctx, pair: Tensor, lam: Tensor, multiplier: Tensor, offset: Tensor, eps: float) -> Tensor:
        b, c2, h, w = pair.shape
        rows = pair.permute(0, 2, 3, 1).contiguous()  # (B, H, W, 2C); a no-op for the native convolution's output
        out = pair.new_empty(b, h, w, c2 // 2)  # (B, H, W, C)
        stats = pair.new_empty(b * h * w, 2)  # each row's mean and 1 / deviation
        native.call(native_kernels().mn_forward, rows, lam, multiplier, offset, out, stats, b * h * w, h * w, c2 // 2, eps, what=WHAT)
        ctx.save_for_backward(rows, lam, multiplier, stats)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        rows, lam, multiplier, stats = ctx.saved_tensors
        b, h, w, c2 = rows.shape
        c = c2 // 2
        grad = grad.contiguous()  # (B, H, W, C)
        grad_rows = torch.empty_like(rows)  # (B, H, W, 2C)
        per_image = rows.new_zeros(3, b, c)  # the sums for lambda, the multiplier and the offset, per image
        native.call(native_kernels().mn_backward, rows, lam, multiplier, stats, grad, grad_rows,
                    per_image[0], per_image[1], per_image[2], b * h * w, h * w, c, what=WHAT)  # fmt: skip
        grad_lam = per_image[0].sum(0) if ctx.needs_input_grad[1] else None  # (C,)
        return grad_rows.permute(0, 3, 1, 2), grad_lam, per_image[1], per_image[2], None
