"""S4D: kernel + FFT convolution vs the direct state-space recurrence."""

from __future__ import annotations

import math

import pytest
import torch

from dicesearch.ops.s4d import (
    BidirectionalS4DLayer,
    S4DKernel,
    S4DLayer,
    fft_bidirectional_conv,
    fft_causal_conv,
    s4d_init_a,
    s4d_kernel,
    zoh_discretize,
)


def _zoh_by_matrix_exponential(a, b, log_dt):
    """Ā, B̄ from expm([[dt A, dt B], [0, 0]]) = [[Ā, B̄], [0, 1]] (independent of the closed form)."""
    dt = torch.exp(log_dt)[:, None]  # (H, 1)
    block = torch.zeros(*a.shape, 2, 2, dtype=a.dtype)
    block[..., 0, 0] = dt * a
    block[..., 0, 1] = dt * b
    expo = torch.linalg.matrix_exp(block)
    return expo[..., 0, 0], expo[..., 0, 1]


def _recurrence(u, a, b, c, log_dt, skip):
    """x_k = Ā x_{k-1} + B̄ u_k, y_k = 2 Re(C x_k) + D u_k, one step at a time. u: (B, L, H)."""
    a_bar, b_bar = _zoh_by_matrix_exponential(a, b, log_dt)  # (H, M)
    batch, length, channels = u.shape
    x = torch.zeros(batch, *a.shape, dtype=torch.complex128)  # (B, H, M)
    ys = []
    for step in range(length):
        x = a_bar * x + b_bar * u[:, step, :, None]
        ys.append(2 * (c * x).sum(-1).real + skip * u[:, step])
    return torch.stack(ys, dim=1)  # (B, L, H)


def _random_ssm(channels, d_state, seed=0, init="lin"):
    gen = torch.Generator().manual_seed(seed)
    a = s4d_init_a(d_state, init).to(torch.complex128).expand(channels, -1).clone()
    a = a * (1 + 0.3 * torch.rand(a.shape, generator=gen, dtype=torch.float64))  # perturb, keep Re < 0
    b = torch.randn(a.shape, generator=gen, dtype=torch.complex128)
    c = torch.randn(a.shape, generator=gen, dtype=torch.complex128)
    log_dt = torch.empty(channels, dtype=torch.float64).uniform_(math.log(1e-3), math.log(1e-1), generator=gen)
    return a, b, c, log_dt


def _rel_err(got, want):
    return ((got - want).abs().max() / want.abs().max()).item()


def test_init_spectra():
    n = torch.arange(8, dtype=torch.float64)
    lin, inv = s4d_init_a(16, "lin"), s4d_init_a(16, "inv")
    assert lin.shape == inv.shape == (8,)
    assert torch.all(lin.real == -0.5) and torch.all(inv.real == -0.5)
    torch.testing.assert_close(lin.imag.double(), math.pi * n, rtol=1e-6, atol=0)
    torch.testing.assert_close(inv.imag.double(), 16 / math.pi * (16 / (2 * n + 1) - 1), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="even"):
        s4d_init_a(7)
    with pytest.raises(ValueError, match="unknown S4D init"):
        s4d_init_a(8, "legs")


def test_zoh_matches_matrix_exponential():
    a, b, _, log_dt = _random_ssm(3, 16)
    log_dt = log_dt - torch.tensor([0.0, 6.0, 12.0], dtype=torch.float64)  # dt down to ~1e-8: cancellation-prone
    dt_a, b_bar = zoh_discretize(a, b, log_dt)
    a_bar_ref, b_bar_ref = _zoh_by_matrix_exponential(a, b, log_dt)
    torch.testing.assert_close(torch.exp(dt_a), a_bar_ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(b_bar, b_bar_ref, rtol=1e-10, atol=0)


@pytest.mark.parametrize("length", [1, 2, 7, 16, 100, 1000])
def test_kernel_matches_explicit_vandermonde(length):
    a, b, c, log_dt = _random_ssm(4, 32)
    dt_a, b_bar = zoh_discretize(a, b, log_dt)
    powers = torch.exp(dt_a[:, :, None] * torch.arange(length, dtype=torch.float64))  # (H, M, L)
    want = 2 * torch.einsum("hm,hml->hl", c * b_bar, powers).real
    got = s4d_kernel(a, b, c, log_dt, length)
    assert got.shape == (4, length) and got.dtype == torch.float64
    assert _rel_err(got, want) < 1e-12


@pytest.mark.parametrize("length", [1, 5, 64, 127, 300])
def test_fft_conv_matches_direct_sum(length):
    gen = torch.Generator().manual_seed(length)
    u = torch.randn(2, length, 3, generator=gen, dtype=torch.float64)
    kernel = torch.randn(3, length, generator=gen, dtype=torch.float64)
    want = torch.zeros_like(u)
    for t in range(length):
        for s in range(t + 1):
            want[:, t] += kernel[:, t - s] * u[:, s]
    assert _rel_err(fft_causal_conv(u, kernel), want) < 1e-12


@pytest.mark.parametrize("length", [1, 5, 64, 127, 300])
@pytest.mark.parametrize("init", ["lin", "inv"])
def test_causal_ssm_matches_recurrence(length, init):
    a, b, c, log_dt = _random_ssm(3, 16, seed=length, init=init)
    skip = torch.randn(3, dtype=torch.float64)
    u = torch.randn(2, length, 3, dtype=torch.float64)
    got = fft_causal_conv(u, s4d_kernel(a, b, c, log_dt, length)) + skip * u
    assert _rel_err(got, _recurrence(u, a, b, c, log_dt, skip)) < 1e-8


@pytest.mark.parametrize("length", [1, 9, 128, 200])
def test_bidirectional_matches_two_recurrences(length):
    fwd, bwd = _random_ssm(3, 16, seed=1), _random_ssm(3, 16, seed=2)
    u = torch.randn(2, length, 3, dtype=torch.float64)
    got = fft_bidirectional_conv(u, s4d_kernel(*fwd, length), s4d_kernel(*bwd, length))
    zero = torch.zeros(3, dtype=torch.float64)
    want_fwd = _recurrence(u, *fwd, zero)
    want_bwd = _recurrence(u.flip(1), *bwd, zero).flip(1)  # the SSM run on the reversed sequence
    assert got.shape == (2, length, 6)
    assert _rel_err(got[..., :3], want_fwd) < 1e-8
    assert _rel_err(got[..., 3:], want_bwd) < 1e-8


def test_layer_matches_recurrence_with_its_own_parameters():
    torch.manual_seed(0)
    layer = S4DLayer(d_model=4, d_state=8).double()
    u = torch.randn(2, 50, 4, dtype=torch.float64)
    a, b, c, log_dt = (t.detach() for t in layer.kernel.ssm())
    want = _recurrence(u, a, b, c, log_dt, layer.skip.detach())
    assert _rel_err(layer(u), want) < 1e-8


def test_bidirectional_layer_matches_recurrences():
    torch.manual_seed(0)
    layer = BidirectionalS4DLayer(d_model=3, d_state=8).double()
    u = torch.randn(2, 40, 3, dtype=torch.float64)
    a, b, c, log_dt = (t.detach() for t in layer.kernel.ssm())
    skip = layer.skip.detach()
    fwd = _recurrence(u, a[:3], b[:3], c[:3], log_dt[:3], skip[:3])
    bwd = _recurrence(u.flip(1), a[3:], b[3:], c[3:], log_dt[3:], skip[3:]).flip(1)
    assert _rel_err(layer(u), torch.cat([fwd, bwd], dim=-1)) < 1e-8


def test_initial_parameters_are_stable():
    kernel = S4DKernel(channels=6, d_state=16, init="inv", dt_min=1e-3, dt_max=1e-1)
    a, b, _, log_dt = kernel.ssm()
    assert a.shape == b.shape == (6, 8)
    assert torch.all(a.real < 0)
    assert torch.all(b == 1)
    assert torch.all((log_dt >= math.log(1e-3)) & (log_dt <= math.log(1e-1)))


@pytest.mark.parametrize("cls, out_mult", [(S4DLayer, 1), (BidirectionalS4DLayer, 2)])
def test_shapes_and_every_parameter_gets_a_gradient(cls, out_mult):
    torch.manual_seed(0)
    layer = cls(d_model=5, d_state=8)
    u = torch.randn(3, 37, 5, requires_grad=True)
    y = layer(u)
    assert y.shape == (3, 37, 5 * out_mult) and y.dtype == torch.float32
    y.square().mean().backward()
    assert u.grad is not None and torch.isfinite(u.grad).all()
    for name, param in layer.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_autocast_and_half_inputs_keep_fp32_fft():
    torch.manual_seed(0)
    layer = BidirectionalS4DLayer(d_model=4, d_state=8)
    u = torch.randn(2, 64, 4)
    want = layer(u)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = layer(u)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # nothing inside ran in bf16
    got_bf16 = layer(u.bfloat16())
    assert got_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(got_bf16.float(), layer(u.bfloat16().float()), rtol=2e-2, atol=2e-2)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"kernel must be \(H, L\)"):
        fft_causal_conv(torch.zeros(1, 8, 3), torch.zeros(3, 7))


def test_half_precision_module_still_builds_its_kernel_in_fp32():
    torch.manual_seed(0)
    layer = S4DLayer(d_model=4, d_state=8)
    u = torch.randn(2, 64, 4).half()
    want = layer(u.float())
    got = layer.half()(u)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    assert all(t.dtype in (torch.float32, torch.complex64) for t in layer.kernel.ssm())
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("length", [37, 300])
def test_half_inputs_of_any_length_are_convolved_in_fp32(dtype, length):
    # 2L = 74 or 600 is not a power of two: there is no half-precision FFT of that size on a
    # GPU (cuFFT) and none at all on a CPU, so this only passes if the FFTs run upcast.
    gen = torch.Generator().manual_seed(length)
    u = torch.randn(2, length, 3, generator=gen).to(dtype)  # (B, L, H)
    kf, kb = torch.randn(3, length, generator=gen), torch.randn(3, length, generator=gen)  # (H, L)
    causal = fft_causal_conv(u, kf)
    both = fft_bidirectional_conv(u, kf, kb)
    assert causal.dtype == both.dtype == dtype
    # computed in fp32 from the same rounded inputs: the only error is the final rounding
    assert torch.equal(causal, fft_causal_conv(u.float(), kf).to(dtype))
    assert torch.equal(both, fft_bidirectional_conv(u.float(), kf, kb).to(dtype))
    want = torch.zeros(2, length, 3, dtype=torch.float64)  # the direct sum, from the rounded inputs
    u64, k64 = u.double(), kf.double()
    for t in range(length):
        want[:, t] = (k64[:, : t + 1].flip(-1).T[None] * u64[:, : t + 1]).sum(1)
    scale = want.abs().max()
    torch.testing.assert_close(causal.double() / scale, want / scale, rtol=0, atol=1e-2)


@pytest.mark.parametrize("length", [37, 300])
def test_fp16_autocast_leaves_the_ffts_in_fp32(length):
    torch.manual_seed(0)
    layer = BidirectionalS4DLayer(d_model=4, d_state=8)
    u = torch.randn(2, length, 4)
    want = layer(u)
    with torch.autocast(device_type="cpu", dtype=torch.float16):
        got = layer(u)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)
