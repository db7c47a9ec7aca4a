"""DICE's signal-extraction function (Fig. 5, dicesearch.ops.signal_merge) against its formula, and in fp16."""

import torch

from dicesearch.ops.signal_merge import signal_merge


def formula(l, r, lam):
    return (l + r) / (1 + torch.exp(lam * (l - r) ** 2))


def test_merge_equals_the_paper_formula_in_float64():
    g = torch.Generator().manual_seed(0)
    l = torch.randn(4, 8, 5, 5, generator=g, dtype=torch.float64) * 3
    r = torch.randn(4, 8, 5, 5, generator=g, dtype=torch.float64) * 3
    for lam in (0.0, 0.3, 1.0, 2.5, -0.5):
        lam_t = torch.tensor(lam, dtype=torch.float64)
        torch.testing.assert_close(signal_merge(l, r, lam_t), formula(l, r, lam_t), rtol=1e-12, atol=1e-12)


def test_merge_keeps_matching_signals_and_damps_disagreeing_ones():
    lam = torch.tensor(1.0)
    same = signal_merge(torch.tensor([2.0]), torch.tensor([2.0]), lam)
    apart = signal_merge(torch.tensor([2.0]), torch.tensor([-1.0]), lam)
    assert torch.allclose(same, torch.tensor([2.0]))  # (2 + 2) / (1 + e^0) = 2
    assert abs(apart.item()) < 1e-3  # (1) / (1 + e^9)


def test_merge_is_finite_in_fp16_for_differences_up_to_1e4_forward_and_backward():
    diffs = torch.tensor([0.0, 1.0, 255.0, 257.0, 1e3, 5e3, 1e4])
    l = (diffs / 2).half().requires_grad_()
    r = (-diffs / 2).half().requires_grad_()
    lam = torch.tensor([1.0, 0.01, 3.0]).view(3, 1)
    for value in lam:
        lam_p = value.clone().half().requires_grad_()
        out = signal_merge(l, r, lam_p)
        assert out.dtype == torch.float16
        assert torch.isfinite(out).all()
        out.float().sum().backward()
        assert torch.isfinite(l.grad).all() and torch.isfinite(r.grad).all() and torch.isfinite(lam_p.grad).all()
        l.grad = r.grad = None


def test_the_naive_fp16_formula_breaks_on_these_inputs():
    """Shows the fp16 test above probes the regime where a direct implementation fails."""
    l = torch.tensor([5e3]).half().requires_grad_()
    r = torch.tensor([-5e3]).half().requires_grad_()
    lam = torch.tensor(1.0).half().requires_grad_()
    formula(l, r, lam).sum().backward()
    assert not torch.isfinite(lam.grad).all()


def test_merge_gradient_matches_autograd_of_the_formula():
    g = torch.Generator().manual_seed(1)
    l = torch.randn(16, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.randn(16, generator=g, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad(signal_merge(l, r, lam).sum(), (l, r, lam))
    expected = torch.autograd.grad(formula(l, r, lam).sum(), (l, r, lam))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
