"""dicesearch.ops.signal_merge against DICE's Fig. 5 formula and autograd: forward, gradients, layouts, fallbacks."""

from __future__ import annotations

import pytest
import torch

from dicesearch.ops.signal_merge import merge_pairs, merge_pairs_reference


def _paper(pair: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(l + r) / (1 + exp(lambda (l - r)^2)) with l = channel 2c, r = channel 2c + 1, term by term."""
    left, right = pair[:, 0::2], pair[:, 1::2]  # (B, C, H, W) each
    return (left + right) / (1 + torch.exp(lam.view(1, -1, 1, 1) * (left - right) ** 2))


def _pair(b: int, c: int, h: int, w: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """(B, 2C, H, W) in channels-last memory, as the depthwise kernels return it."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, w, 2 * c, generator=g, dtype=dtype) * 2).permute(0, 3, 1, 2)


@pytest.mark.parametrize("per_channel", [False, True])
def test_forward_equals_the_paper_formula(per_channel):
    pair = _pair(3, 5, 4, 6)
    lam = torch.linspace(-0.5, 3.0, 5, dtype=torch.float64) if per_channel else torch.tensor([0.7], dtype=torch.float64)
    out = merge_pairs(pair, lam)
    assert out.shape == (3, 5, 4, 6)
    torch.testing.assert_close(out, _paper(pair, lam), rtol=1e-12, atol=1e-12)


def test_forward_is_bit_identical_to_the_autograd_reference_in_float32():
    pair, lam = _pair(4, 8, 16, 16, torch.float32), torch.tensor([1.3])
    assert torch.equal(merge_pairs(pair, lam), merge_pairs_reference(pair, lam))


@pytest.mark.parametrize("per_channel", [False, True])
def test_gradients_match_autograd_of_the_formula_in_float64(per_channel):
    pair = _pair(2, 4, 3, 5, seed=1).requires_grad_()
    lam = (torch.linspace(0.1, 2.0, 4, dtype=torch.float64) if per_channel else torch.tensor([0.9], dtype=torch.float64)).requires_grad_()
    grad_out = torch.randn(2, 4, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = torch.autograd.grad(merge_pairs(pair, lam), (pair, lam), grad_out)
    want = torch.autograd.grad(_paper(pair, lam), (pair, lam), grad_out)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    pair = _pair(1, 2, 2, 3, seed=3).requires_grad_()
    lam = torch.tensor([0.6, 1.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(merge_pairs, (pair, lam))


def test_float32_gradients_match_the_reference_to_rounding():
    pair = _pair(8, 16, 8, 8, torch.float32, seed=4).requires_grad_()
    lam = torch.tensor([2.0], requires_grad=True)
    grad_out = torch.randn(8, 16, 8, 8, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad(merge_pairs(pair, lam), (pair, lam), grad_out)
    want = torch.autograd.grad(merge_pairs_reference(pair, lam), (pair, lam), grad_out)
    for a, b in zip(got, want):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-5


def test_the_pair_gradient_comes_back_in_channels_last_memory():
    """The depthwise kernels' backward takes channels-last gradients without a copy."""
    pair = _pair(2, 3, 5, 5, torch.float32).requires_grad_()
    (grad,) = torch.autograd.grad(merge_pairs(pair, torch.tensor([1.0])).sum(), (pair,))
    assert grad.is_contiguous(memory_format=torch.channels_last)


def test_nchw_input_and_a_frozen_lambda():
    pair = _pair(2, 3, 4, 4).contiguous().requires_grad_()  # NCHW memory: permuted into channels-last inside
    lam = torch.tensor([0.5], dtype=torch.float64)  # no gradient asked for lambda
    (grad,) = torch.autograd.grad(merge_pairs(pair, lam).sum(), (pair,))
    (want,) = torch.autograd.grad(_paper(pair, lam).sum(), (pair,))
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)


def test_half_precision_takes_the_reference():
    pair = (torch.randn(1, 4, 3, 3) * 100).half()
    lam = torch.tensor([1.0], dtype=torch.float16)
    out = merge_pairs(pair, lam)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert torch.equal(out, merge_pairs_reference(pair, lam))


def test_torch_compile_traces_it_in_one_graph():
    """Compiled, it is the reference (inductor fuses it): no graph break, the same values and gradients."""
    pair = _pair(2, 3, 4, 4, torch.float32, seed=6).requires_grad_()
    lam = torch.tensor([0.8], requires_grad=True)
    compiled = torch.compile(lambda p, l: merge_pairs(p, l).square().sum(), fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(pair, lam), (pair, lam))
    want = torch.autograd.grad(merge_pairs(pair, lam).square().sum(), (pair, lam))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
