"""dicesearch.ops.depthwise against F.conv2d and a naive loop: forward, gradients, layouts, paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dicesearch.ops.depthwise import banded_depthwise_conv2d, depthwise_conv2d, takes_banded_path

# fp32: the rewrites sum the same products in another order; measured <= 4e-6 relative.
FP32_RTOL = 2e-5


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


@pytest.mark.parametrize(("height", "width", "k", "m"), [(4, 4, 3, 2), (3, 5, 5, 1), (5, 3, 7, 2)])
def test_matches_the_naive_sum(height, width, k, m, naive_depthwise):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, height, width, generator=g)
    weight = torch.randn(3 * m, 1, k, k, generator=g)
    bias = torch.randn(3 * m, generator=g)
    want = naive_depthwise(x, weight, bias)
    assert _relative(depthwise_conv2d(x, weight, bias).double(), want) < FP32_RTOL
    assert _relative(depthwise_conv2d(x.double(), weight.double(), bias.double()), want) < 1e-12


# (height, width): banded (<= k^2 positions) and oneDNN / channel-repeat paths, square and not
GRIDS = [(1, 1), (2, 3), (4, 4), (8, 8), (4, 16), (16, 16)]


@pytest.mark.parametrize(("height", "width"), GRIDS)
@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("k", [3, 7])
def test_forward_and_gradients_match_conv2d(height, width, m, k, assert_matches_reference):
    g = torch.Generator().manual_seed(height * 100 + width + m)
    c = 6
    x = torch.randn(3, height, width, c, generator=g).permute(0, 3, 1, 2)  # the blocks' permuted (B, H, W, C) input
    weight = torch.randn(c * m, 1, k, k, generator=g)
    bias = torch.randn(c * m, generator=g)
    grad_out = torch.randn(3, c * m, height, width, generator=g)
    assert_matches_reference(lambda *a: F.conv2d(*a, padding=k // 2, groups=c), depthwise_conv2d, (x, weight, bias), grad_out, FP32_RTOL)


def test_paths_and_layouts():
    x = torch.randn(2, 4, 16, 16)  # NCHW contiguous
    weight = torch.randn(8, 1, 7, 7)
    for grid in (4, 16):  # banded, channel-repeat
        out = depthwise_conv2d(x[..., :grid, :grid], weight, None)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert _relative(out, F.conv2d(x[..., :grid, :grid], weight, padding=3, groups=4)) < FP32_RTOL
    assert takes_banded_path(7, 7, 7) and not takes_banded_path(8, 8, 7) and not takes_banded_path(4, 4, 3)


def test_banded_path_on_its_own():
    """The banded rewrite also holds where the dispatcher would not pick it."""
    g = torch.Generator().manual_seed(3)
    x, weight = torch.randn(2, 3, 12, 9, generator=g), torch.randn(6, 1, 5, 5, generator=g)
    assert _relative(banded_depthwise_conv2d(x, weight, None), F.conv2d(x, weight, padding=2, groups=3)) < FP32_RTOL


def test_unsupported_inputs_go_to_conv2d():
    x, weight = torch.randn(1, 2, 8, 8), torch.randn(2, 1, 4, 4)  # even kernel: no fast path
    assert torch.equal(depthwise_conv2d(x, weight, None), F.conv2d(x, weight, padding=2, groups=2))
    x, weight = torch.randn(1, 2, 5, 5, device="meta"), torch.randn(4, 1, 3, 3, device="meta")
    assert depthwise_conv2d(x, weight, None).shape == (1, 4, 5, 5)  # meta tensors: shapes only, via F.conv2d
