"""DICE's signal-extraction merge of interleaved left/right channels, with a hand-written backward.

DICE Fig. 5 merges the two depthwise convolutions' outputs l and r of each channel by

    f(l, r) = (l + r) sigma(-lambda d^2),   d = l - r,   sigma the logistic function.

The block computes both convolutions as one, so its input is ``pair`` (B, 2C, H, W) with
channel 2c = l_c and 2c + 1 = r_c, and lambda is one value or one per channel. With
s = l + r, g = sigma(-lambda d^2) and G the gradient of the output,

    df/dl = g - 2 lambda d s g (1 - g),      df/dr = g + 2 lambda d s g (1 - g),
    dL/dlambda = -sum G s g (1 - g) d^2.

Through autograd, the merge of strided views costs a zero-filled (B, C, 2, H, W) buffer per
view and a copy into NCHW memory that the convolution's backward then copies back to
channels-last (measured on the 2-core machine: about a third of the DICE block's backward
at 16x16). ``merge_pairs`` computes the forward as ``signal_merge`` (the plugin's formula) does (the same
operations in the same order: bit-identical outputs) and writes the pair's gradient at
once into channels-last memory, the layout ``dicesearch.ops.depthwise`` returns and
wants back. Its gradients equal autograd's up to float rounding (``tests/ops``).

Only float32 and float64 take this path; half precision (the merge runs in float32 there,
see the DICE plugin) goes through ``merge_pairs_reference``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["merge_pairs", "merge_pairs_reference", "signal_merge"]


def signal_merge(left: Tensor, right: Tensor, lam: Tensor) -> Tensor:
    """DICE Fig. 5: (l + r) / (1 + exp(lambda (l - r)^2)), numerically safe in fp16.

    Written as (l + r) * sigmoid(-lambda (l - r)^2) and evaluated in at least float32: in fp16,
    (l - r)^2 overflows for |l - r| > 256 and exp(.) overflows far earlier, which would give
    inf / inf = NaN in the backward pass. The result is cast back to the input dtype.
    ``lam`` broadcasts against ``left`` and ``right``.
    """
    dtype = left.dtype
    compute = torch.promote_types(dtype, torch.float32)  # fp16/bf16 -> fp32; fp64 stays fp64
    l, r = left.to(compute), right.to(compute)
    out = (l + r) * torch.sigmoid(-lam.to(compute) * (l - r).square())
    return out.to(dtype)


def merge_pairs_reference(pair: Tensor, lam: Tensor) -> Tensor:
    """The module docstring's f by autograd: pair (B, 2C, H, W), lam (1,) or (C,) -> (B, C, H, W)."""
    b, c2, h, w = pair.shape
    left, right = pair.reshape(b, c2 // 2, 2, h, w).unbind(2)  # (B, C, H, W) each
    return signal_merge(left, right, lam.view(1, -1, 1, 1))


class _MergePairs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pair: Tensor, lam: Tensor) -> Tensor:
        b, c2, h, w = pair.shape
        pairs = pair.permute(0, 2, 3, 1).reshape(b, h, w, c2 // 2, 2)  # (B, H, W, C, 2); a view of channels-last memory
        left, right = pairs[..., 0], pairs[..., 1]  # (B, H, W, C) each
        s = left + right
        d = left - right
        g = torch.mul(d, d).mul_(-lam).sigmoid_()  # sigma(-lam d^2); lam (1,) or (C,) broadcasts over the last dim
        ctx.save_for_backward(s, d, g, lam)
        return (s * g).permute(0, 3, 1, 2)  # (B, C, H, W), channels-last memory

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        s, d, g, lam = ctx.saved_tensors
        b, h, w, c = s.shape
        through = grad.permute(0, 2, 3, 1) * g  # (B, H, W, C): G g
        slope = torch.addcmul(through, through, g, value=-1.0).mul_(s).mul_(d)  # G s g (1 - g) d
        grad_pair = grad_lam = None
        if ctx.needs_input_grad[1]:  # -sum G s g (1 - g) d^2
            if lam.numel() == 1:
                grad_lam = -torch.dot(slope.reshape(-1), d.reshape(-1)).reshape(1)
            else:
                grad_lam = -(slope * d).sum((0, 1, 2))
        if ctx.needs_input_grad[0]:
            twice = 2.0 * lam
            pairs = torch.empty(b, h, w, c, 2, dtype=s.dtype, device=s.device)
            torch.addcmul(through, slope, twice, value=-1.0, out=pairs[..., 0])  # G g - 2 lambda G s g (1 - g) d
            torch.addcmul(through, slope, twice, out=pairs[..., 1])
            grad_pair = pairs.reshape(b, h, w, 2 * c).permute(0, 3, 1, 2)  # (B, 2C, H, W), channels-last memory
        return grad_pair, grad_lam


def merge_pairs(pair: Tensor, lam: Tensor) -> Tensor:
    """f of the module docstring: pair (B, 2C, H, W) (channel 2c = l_c, 2c + 1 = r_c), lam (1,) or (C,) -> (B, C, H, W).

    float32 and float64 take the hand-written backward; other dtypes the reference, and so
    does ``torch.compile`` (which fuses the reference's operations itself; the backward's
    writes into strided views would break its graph).
    """
    if pair.dtype not in (torch.float32, torch.float64) or lam.dtype != pair.dtype or lam.dim() != 1 or torch.compiler.is_compiling():
        return merge_pairs_reference(pair, lam)
    return _MergePairs.apply(pair, lam)
