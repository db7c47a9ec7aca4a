"""The native depthwise kernels (dicesearch/native/depthwise.c) against float64 references:
the module docstring's naive sum and F.conv2d, forward and both gradients, every multiplier
and kernel size they take, grids square and not, and the dispatcher's choice of them."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from dicesearch import native
from dicesearch.ops import depthwise
from dicesearch.ops.depthwise import NATIVE_KERNEL_SIZES, depthwise_conv2d, native_kernels, takes_native_path

# fp32 against float64: the kernels sum k^2 products (forward, input gradient) or B H W of
# them (weight gradient) in their own order, with fused multiply-adds; measured <= 1e-6.
FP32_RTOL = 1e-5

def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # the kernels are taken at one torch thread (a trial's), as the dispatcher requires
    pytest.mark.skipif(native_kernels() is None, reason=f"native kernels unavailable: {native.why_unavailable('depthwise')}"),
]


def _native(x, weight, bias):
    return depthwise._NativeDepthwise.apply(x.contiguous(memory_format=torch.channels_last), weight, bias)


def _inputs(batch, c, m, k, height, width, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, height, width, c, generator=g).permute(0, 3, 1, 2)  # the blocks' (B, H, W, C) input, permuted
    weight = torch.randn(c * m, 1, k, k, generator=g)
    bias = torch.randn(c * m, generator=g)
    grad_out = torch.randn(batch, c * m, height, width, generator=g)
    return x, weight, bias, grad_out


def _value_and_grads(conv, x, weight, bias, grad_out):
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    y = conv(*leaves)
    return (y, *torch.autograd.grad(y, leaves, grad_out.to(y.dtype)))


@pytest.mark.parametrize(("c", "m", "k", "height", "width"), [(16, 1, 3, 5, 6), (8, 2, 5, 4, 9), (16, 3, 7, 6, 3)])
def test_forward_matches_the_naive_sum(c, m, k, height, width, naive_depthwise):
    x, weight, bias, _ = _inputs(2, c, m, k, height, width, seed=c + m + k)
    assert _relative(_native(x, weight, bias).double(), naive_depthwise(x, weight, bias)) < FP32_RTOL


@pytest.mark.parametrize("k", NATIVE_KERNEL_SIZES)
@pytest.mark.parametrize(("c", "m"), [(32, 1), (16, 2), (16, 3), (64, 2)])
@pytest.mark.parametrize(("height", "width"), [(16, 16), (8, 8), (9, 13), (3, 20), (1, 1)])
def test_forward_and_gradients_match_float64_conv2d(c, m, k, height, width):
    x, weight, bias, grad_out = _inputs(3, c, m, k, height, width, seed=height * 100 + width + m + k)
    got = _value_and_grads(_native, x, weight, bias, grad_out)
    want = _value_and_grads(lambda *a: F.conv2d(*a, padding=k // 2, groups=c), x.double(), weight.double(), bias.double(), grad_out)
    for name, g, w in zip(("output", "input gradient", "weight gradient", "bias gradient"), got, want):
        assert g.shape == w.shape and g.dtype == torch.float32, name
        assert _relative(g.double(), w) < FP32_RTOL, name
    assert got[0].is_contiguous(memory_format=torch.channels_last)


def test_without_bias_and_without_the_input_gradient():
    x, weight, _, grad_out = _inputs(2, 16, 2, 7, 10, 10, seed=5)
    weight = weight.requires_grad_()
    y = _native(x, weight, None)  # x needs no gradient: only the weight's is computed
    (grad_w,) = torch.autograd.grad(y, [weight], grad_out)
    want = torch.ops.aten.convolution_backward(grad_out.double(), x.double(), weight.double(), None, [1, 1], [3, 3], [1, 1], False, [0, 0], 16, [False, True, False])[1]
    assert _relative(y.double(), F.conv2d(x.double(), weight.double(), padding=3, groups=16)) < FP32_RTOL
    assert _relative(grad_w.double(), want) < FP32_RTOL


def test_reruns_are_bit_identical():
    x, weight, bias, grad_out = _inputs(4, 16, 2, 7, 16, 16, seed=9)
    first, second = (_value_and_grads(_native, x, weight, bias, grad_out) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_worker_threads_call_the_kernels_side_by_side():
    """ctypes releases the GIL: two threads (a trial's chunks) get each its own batch's results."""
    x, weight, bias, grad_out = _inputs(8, 16, 2, 7, 16, 16, seed=11)
    alone = [_value_and_grads(_native, x[i::2], weight, bias, grad_out[i::2]) for i in range(2)]
    together = [None, None]

    def run(i):
        together[i] = _value_and_grads(_native, x[i::2], weight, bias, grad_out[i::2])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(a, b) for i in range(2) for a, b in zip(alone[i], together[i]))


def test_the_dispatcher_takes_them_only_where_they_apply():
    width = native_kernels().dw_vector_width()
    assert width in (8, 16)
    assert takes_native_path(2 * width, 7) and takes_native_path(width, 3)
    assert not takes_native_path(width + 1, 7)  # channels not a whole number of vectors
    assert not takes_native_path(2 * width, 9)  # a kernel size the C file does not build
    torch.set_num_threads(2)
    assert not takes_native_path(2 * width, 7)  # more than one thread: oneDNN's threads instead
    torch.set_num_threads(1)
    x, weight, bias, _ = _inputs(2, width, 2, 7, 12, 12, seed=1)
    y = depthwise_conv2d(x.requires_grad_(), weight, bias)
    assert type(y.grad_fn).__name__ == "_NativeDepthwiseBackward"
    assert type(depthwise_conv2d(x.double(), weight.double(), bias.double()).grad_fn).__name__ != "_NativeDepthwiseBackward"
