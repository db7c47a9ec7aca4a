"""Winograd's minimal filtering (dicesearch/native/winograd.c) against float64 convolutions: the
Toom-Cook matrices' algebra, the native kernels on the FID network's kinds of layer and on
ragged shapes, and where they are not taken."""

from __future__ import annotations

import pytest
import torch

from dicesearch import native
from dicesearch.ops import winograd
from dicesearch.ops.winograd import (
    FILTER_TRANSFORM, INPUT_TRANSFORM, OUTPUT_TRANSFORM, POINTS, conv_relu, conv_relu_reference, native_kernels, toom_cook, winograd_plan,
)  # fmt: skip

# fp32 against float64, of the output's largest value: the transforms scale by up to 21/4 and
# 1/24 around the sums, measured 1.5e-6-1.7e-5 (the direct fp32 sum: up to 2.5e-6)
FP32_RTOL = 5e-5


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).abs().max() / b.abs().max().clamp(min=1e-30))


@pytest.mark.parametrize("r", sorted(POINTS))
def test_toom_cook_matrices_compute_the_correlation_exactly_in_float64(r):
    """A^T [(G g) . (B^T d)] is the m-output correlation of d with g, for random d and g."""
    m, points = POINTS[r]
    at, g, bt = toom_cook(m, r, points)
    gen = torch.Generator().manual_seed(r)
    d, taps = torch.randn(m + r - 1, 5, generator=gen, dtype=torch.float64), torch.randn(r, generator=gen, dtype=torch.float64)
    y = at @ ((g @ taps)[:, None] * (bt @ d))  # (m, 5)
    direct = torch.stack([(d[i : i + r] * taps[:, None]).sum(0) for i in range(m)])
    assert torch.allclose(y, direct, rtol=0, atol=1e-12)


def test_the_written_out_f4x4_3x3_is_toom_cook_at_its_points():
    at, g, bt = toom_cook(4, 3, POINTS[3][1])
    assert torch.allclose(at, OUTPUT_TRANSFORM, atol=1e-14) and torch.allclose(g, FILTER_TRANSFORM, atol=1e-14)
    assert torch.allclose(bt, INPUT_TRANSFORM, atol=1e-12)
    gen = torch.Generator().manual_seed(0)
    d, taps = torch.randn(6, 6, generator=gen, dtype=torch.float64), torch.randn(3, 3, generator=gen, dtype=torch.float64)
    y = at @ ((g @ taps @ g.T) * (bt @ d @ bt.T)) @ at.T  # (4, 4): F(4x4, 3x3) in two dimensions
    direct = torch.stack([torch.stack([(d[i : i + 3, j : j + 3] * taps).sum() for j in range(4)]) for i in range(4)])
    assert torch.allclose(y, direct, rtol=0, atol=1e-12)


pytestmark = pytest.mark.usefixtures("one_thread")  # the kernels are taken at one torch thread (a trial's)
needs_native = pytest.mark.skipif(native_kernels() is None, reason=f"native kernels unavailable: {native.why_unavailable('winograd')}")


@needs_native
@pytest.mark.parametrize(
    ("batch", "i", "o", "kernel", "grid", "padding"),
    [
        ((2, 16, 32, (3, 3), (7, 7), (1, 1))),  # fewer tiles than a block; the last tiles hang over the edge
        ((3, 16, 48, (3, 3), (9, 6), (0, 0))),  # not square, outputs not a multiple of 4, 3 output vectors
        ((1, 80, 192, (3, 3), (19, 19), (0, 0))),  # conv_4's channels
        ((2, 448, 384, (3, 3), (8, 8), (1, 1))),  # mixed_9's widest: the filters far beyond a block
        ((1, 16, 16, (3, 3), (3, 3), (0, 0))),  # one output
        ((2, 32, 48, (5, 5), (11, 9), (2, 2))),  # the 5x5 of mixed..mixed_2
        ((2, 48, 32, (1, 7), (17, 17), (0, 3))),  # mixed_4..7's
        ((2, 48, 32, (7, 1), (17, 13), (3, 0))),
        ((1, 32, 64, (1, 3), (8, 8), (0, 1))),  # mixed_9/10's
        ((1, 32, 64, (3, 1), (8, 5), (1, 0))),
        ((1, 16, 16, (3, 3), (10, 10), (1, 0))),  # uneven padding: the general kernel
    ],
)
def test_native_conv_matches_float64_with_bias_and_relu(batch, i, o, kernel, grid, padding):
    gen = torch.Generator().manual_seed(i + o + grid[0])
    x = torch.randn(batch, i, *grid, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(o, i, *kernel, generator=gen) / (kernel[0] * kernel[1] * i) ** 0.5
    bias = 0.1 * torch.randn(o, generator=gen)
    plan = winograd_plan(weight, 1, list(padding))
    assert plan is not None and plan.written_out == (kernel == (3, 3) and padding[0] == padding[1])
    got = conv_relu(x, plan, bias)
    want = conv_relu_reference(x.double(), weight.double(), bias.double(), list(padding))
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert _relative(got, want) < FP32_RTOL
    assert (got >= 0).all() and ((want == 0) == (got == 0)).float().mean() > 0.99  # the ReLU, up to rounding at 0
    assert torch.equal(conv_relu(x, plan, bias), got)  # reruns: the same bits


@needs_native
def test_other_convolutions_are_not_taken():
    weight = torch.randn(32, 16, 3, 3)
    assert winograd_plan(weight, 1, [1, 1]) is not None
    assert winograd_plan(weight, 2, [1, 1]) is None  # strided
    assert winograd_plan(weight, 1, [2, 2]) is None  # padding past "same"
    assert winograd_plan(torch.randn(32, 16, 1, 1), 1, [0, 0]) is None  # 1x1: a matrix product already
    assert winograd_plan(torch.randn(32, 16, 9, 9), 1, [4, 4]) is None  # no algorithm for 9 taps
    assert winograd_plan(torch.randn(32, 3, 3, 3), 1, [0, 0]) is None  # channels not whole vectors
    assert winograd_plan(weight.double(), 1, [1, 1]) is None
    assert winograd_plan(weight.to("meta"), 1, [1, 1]) is None


def test_switched_off_it_is_never_taken(monkeypatch):
    monkeypatch.setattr(winograd, "native_kernels", lambda: None)
    assert winograd_plan(torch.randn(32, 16, 3, 3), 1, [1, 1]) is None
