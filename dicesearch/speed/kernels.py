"""Run a built model on the fast kernels of ``dicesearch.ops.depthwise``, then put it back.

``fast_kernels(model)`` is a context manager: inside it, every plain ``nn.Conv2d`` of the
model that is a same-padded, stride-1, odd-kernel depthwise convolution (DICE's pair,
ConvNeXt's 7x7, LiT's depthwise conv on V) computes with ``depthwise_conv2d``; on exit
they are plain ``nn.Conv2d`` again. Only the modules' class changes: the parameters, the
state-dict keys, hooks and devices stay, so checkpoints, the EMA and optimisers never see
a difference. Modules already swapped (a nested call) are left to the outer call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from dicesearch.ops.depthwise import depthwise_conv2d

__all__ = ["DepthwiseConv2d", "eligible", "fast_kernels"]


class DepthwiseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (depthwise, same padding, stride 1) computed by ``depthwise_conv2d``."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return depthwise_conv2d(input, weight, bias)  # (B, C, H, W) -> (B, C m, H, W)


def eligible(module: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` that ``depthwise_conv2d`` computes exactly."""
    if type(module) is not nn.Conv2d:
        return False
    k = module.kernel_size
    return (
        module.groups == module.in_channels > 1
        and module.out_channels % module.in_channels == 0
        and k[0] == k[1] and k[0] % 2 == 1
        and module.stride == (1, 1) and module.dilation == (1, 1)
        and module.padding == (k[0] // 2, k[0] // 2) and module.padding_mode == "zeros"
    )  # fmt: skip


@contextmanager
def fast_kernels(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Within the block, ``model``'s eligible depthwise convolutions use the fast kernels."""
    swapped = [m for m in model.modules() if eligible(m)] if enabled else []
    for module in swapped:
        module.__class__ = DepthwiseConv2d
    try:
        yield model
    finally:
        for module in swapped:
            module.__class__ = nn.Conv2d
