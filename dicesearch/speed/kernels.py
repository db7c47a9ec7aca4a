"""Run a built model on the fast kernels of ``dicesearch.ops``, then put it back.

``fast_kernels(model)`` is a context manager. Inside it, every plain ``nn.Conv2d`` of the
model that is

* a same-padded, stride-1, odd-kernel depthwise convolution (DICE's pair, ConvNeXt's 7x7,
  LiT's depthwise convolution on V) computes with ``ops.depthwise.depthwise_conv2d``;
* a patch embedding (kernel = stride, no padding: every stage's ``patchify``) computes
  with ``ops.patchify.patch_conv2d``;
* a dense same-padded, stride-1, odd-kernel convolution to at most a sixteenth of its
  input channels (the stages' 3x3 noise heads) computes with ``ops.narrow_conv.fold_conv2d``;

on exit they are plain ``nn.Conv2d`` again. Only the modules' class changes: the
parameters, the state-dict keys, hooks and devices stay, so checkpoints, the EMA and
optimisers never see a difference. Modules already swapped (a nested call) are left to
the outer call. Both kernels compute the same products as PyTorch's and differ from it
by float rounding only (``tests/speed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from dicesearch import native
from dicesearch.ops import depthwise, merge_norm, winograd
from dicesearch.ops.depthwise import depthwise_conv2d
from dicesearch.ops.narrow_conv import fold_conv2d, takes_fold_path
from dicesearch.ops.patchify import patch_conv2d

__all__ = ["DepthwiseConv2d", "NarrowConv2d", "PatchConv2d", "fast_class", "fast_kernels", "native_note", "uses_fast_kernels"]


class DepthwiseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (depthwise, same padding, stride 1) computed by ``depthwise_conv2d``."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return depthwise_conv2d(input, weight, bias)  # (B, C, H, W) -> (B, C m, H, W)


class PatchConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` with kernel = stride and no padding, computed by ``patch_conv2d``."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return patch_conv2d(input, weight, bias)  # (B, C, H, W) -> (B, O, H / p, W / p)


class NarrowConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (dense, same padding, stride 1, few outputs) computed by ``fold_conv2d``."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return fold_conv2d(input, weight, bias)  # (B, C, H, W) -> (B, O, H, W)


def fast_class(module: nn.Module) -> type[nn.Conv2d] | None:
    """The fast class for a plain ``nn.Conv2d`` whose computation it reproduces, else None."""
    if type(module) is not nn.Conv2d or module.padding_mode != "zeros" or module.dilation != (1, 1):
        return None
    k = module.kernel_size
    if (
        module.groups == module.in_channels > 1
        and module.out_channels % module.in_channels == 0
        and k[0] == k[1] and k[0] % 2 == 1
        and module.stride == (1, 1) and module.padding == (k[0] // 2, k[0] // 2)
    ):  # fmt: skip
        return DepthwiseConv2d
    if module.groups == 1 and k[0] == k[1] and module.stride == k and module.padding == (0, 0):
        return PatchConv2d
    if (
        module.groups == 1 and k[0] == k[1] and k[0] % 2 == 1 and module.stride == (1, 1)
        and module.padding == (k[0] // 2, k[0] // 2) and takes_fold_path(module.in_channels, module.out_channels)
    ):  # fmt: skip
        return NarrowConv2d
    return None


def uses_fast_kernels(module: nn.Module) -> bool:
    """Whether ``module`` is inside ``fast_kernels`` now: a block may then take its own fast path too.

    The DICE block asks this of its convolution pair and then merges the pair with
    ``ops.signal_merge.merge_pairs`` instead of autograd's composition.
    """
    return type(module) in (DepthwiseConv2d, NarrowConv2d, PatchConv2d)


@contextmanager
def fast_kernels(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Within the block, ``model``'s depthwise and patch convolutions use the fast kernels."""
    swapped = [(m, fast) for m in model.modules() if (fast := fast_class(m)) is not None] if enabled else []
    for module, fast in swapped:
        module.__class__ = fast
    try:
        yield model
    finally:
        for module, _ in swapped:
            module.__class__ = nn.Conv2d


def native_note(device: torch.device) -> str | None:
    """One line for a command's start where CPU runs will go without some native kernels, else None.

    Asking builds them (``dicesearch.native``), so a command that asks before its runs start
    builds them once, not in every run's process.
    """
    if device.type != "cpu":
        return None
    kernels = {"depthwise": depthwise.native_kernels, "merge_norm": merge_norm.native_kernels, "winograd": winograd.native_kernels}
    missing = {name: native.why_unavailable(name) for name, load in kernels.items() if load() is None}
    if not missing:
        return None
    whys = set(missing.values())
    why = whys.pop() if len(whys) == 1 else "; ".join(f"{name}: {why}" for name, why in missing.items())
    *others, last = missing
    names = f"{', '.join(others)} and {last}" if others else last
    return f"native {names} kernels unavailable ({why}): CPU runs use PyTorch's for them, slower (docs/training.md)"
