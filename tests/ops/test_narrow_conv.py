"""dicesearch.ops.narrow_conv against F.conv2d and a naive sum: forward, gradients, kernels, devices."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from dicesearch.ops.narrow_conv import fold_conv2d, takes_fold_path

FP32_RTOL = 2e-5  # the same products summed in another order; measured <= 2e-6 (forward), 1.7e-5 (a bias gradient over 16k terms)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _naive(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """y[b, o, i, j] = bias[o] + sum_{c, u, v} w[o, c, u, v] x[b, c, i + u - p, j + v - p], term by term (float64)."""
    b, c, h, w = x.shape
    o, _, k, _ = weight.shape
    p = k // 2
    y = bias.double().view(1, o, 1, 1).repeat(b, 1, h, w)
    for i, j, u, v in itertools.product(range(h), range(w), range(k), range(k)):
        hi, wi = i + u - p, j + v - p
        if 0 <= hi < h and 0 <= wi < w:
            y[:, :, i, j] += x[:, :, hi, wi].double() @ weight[:, :, u, v].double().t()
    return y


@pytest.mark.parametrize(("height", "width", "k", "out"), [(4, 4, 3, 1), (3, 5, 3, 2), (6, 4, 5, 1), (1, 1, 3, 1)])
def test_matches_the_naive_sum(height, width, k, out):
    g = torch.Generator().manual_seed(height * 10 + width + k)
    x, weight, bias = torch.randn(2, 8, height, width, generator=g), torch.randn(out, 8, k, k, generator=g), torch.randn(out, generator=g)
    want = _naive(x, weight, bias)
    assert _relative(fold_conv2d(x, weight, bias).double(), want) < FP32_RTOL
    assert _relative(fold_conv2d(x.double(), weight.double(), bias.double()), want) < 1e-12


@pytest.mark.parametrize(("channels", "side"), [(32, 16), (64, 8), (96, 4)])
def test_forward_and_gradients_match_conv2d(channels, side, assert_matches_reference):
    """The default space's three noise heads (3x3, one output), on the blocks' channels-last features."""
    g = torch.Generator().manual_seed(channels)
    x = torch.randn(4, side, side, channels, generator=g).permute(0, 3, 1, 2)
    weight, bias = torch.randn(1, channels, 3, 3, generator=g), torch.randn(1, generator=g)
    grad_out = torch.randn(4, 1, side, side, generator=g)
    assert_matches_reference(lambda *a: F.conv2d(*a, padding=1), fold_conv2d, (x, weight, bias), grad_out, FP32_RTOL)


def test_gradcheck_and_no_bias():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 3, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fold_conv2d(a, b, None), (x, weight))
    torch.testing.assert_close(fold_conv2d(x, weight), F.conv2d(x, weight, padding=1), rtol=1e-12, atol=1e-12)


def test_the_path_is_for_few_outputs_and_meta_goes_to_conv2d():
    assert takes_fold_path(32, 1) and takes_fold_path(32, 2) and not takes_fold_path(32, 4) and not takes_fold_path(8, 1)
    x, weight = torch.randn(2, 16, 5, 5, device="meta"), torch.randn(1, 16, 3, 3, device="meta")
    assert fold_conv2d(x, weight).shape == (2, 1, 5, 5)
