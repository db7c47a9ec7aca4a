"""LiT ReLU linear attention: O(N d^2) core vs the explicit N x N kernelised form."""

from __future__ import annotations

import pytest
import torch

from dicesearch.ops.linear_attention import linear_attention, linear_attention_reference


def _qkv(batch=2, heads=3, n=50, d=8, dv=None, dtype=torch.float64, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n, d, generator=gen, dtype=dtype) * scale
    k = torch.randn(batch, heads, n, d, generator=gen, dtype=dtype) * scale
    v = torch.randn(batch, heads, n, dv or d, generator=gen, dtype=dtype)
    return q, k, v


def _rel_err(got, want):
    return ((got - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize("n, d, dv, heads", [(1, 4, 4, 1), (17, 8, 8, 2), (256, 32, 32, 4), (100, 16, 24, 3)])
def test_matches_quadratic_reference_float64(n, d, dv, heads):
    q, k, v = _qkv(heads=heads, n=n, d=d, dv=dv)
    got = linear_attention(q, k, v)
    assert got.shape == (2, heads, n, dv) and got.dtype == torch.float64
    assert _rel_err(got, linear_attention_reference(q, k, v)) < 1e-10


def test_queries_and_keys_may_differ_in_length():
    q, _, _ = _qkv(n=7)
    _, k, v = _qkv(n=40, seed=1)
    assert _rel_err(linear_attention(q, k, v), linear_attention_reference(q, k, v)) < 1e-10


def test_eps_scaling_matches_sum_form():
    # Alg. 1's mean form with eps equals the sum form with N * eps (feature_eps = 0).
    q, k, v = _qkv(n=64)
    eps_sum = 1e-2
    phi_q, phi_k = q.relu(), k.relu()
    sum_form = (phi_q @ (phi_k.transpose(-2, -1) @ v)) / (phi_q @ phi_k.sum(-2).unsqueeze(-1) + eps_sum)
    got = linear_attention(q, k, v, eps=eps_sum / 64, feature_eps=0.0)
    assert _rel_err(got, sum_form) < 1e-12


def test_constant_values_pass_through_without_eps():
    # With eps = 0 the weights phi(q_i).phi(k_j) are normalised exactly: constant v is returned.
    q, k, _ = _qkv(n=30)
    v = torch.full((2, 3, 30, 5), -1.75, dtype=torch.float64)
    torch.testing.assert_close(linear_attention(q, k, v, eps=0.0), v, rtol=1e-13, atol=1e-13)


def test_all_negative_scores_stay_finite():
    # ReLU kills every feature, so phi = feature_eps everywhere; Alg. 1's +1e-6 keeps the
    # normaliser positive and the result is analytic: mean(v) * d fe^2 / (d fe^2 + eps).
    q, k, v = _qkv(n=20, d=8)
    fe, eps = 1e-3, 1e-6
    out = linear_attention(-q.abs(), -k.abs(), v, eps=eps, feature_eps=fe)
    assert torch.isfinite(out).all()
    shrink = 8 * fe**2 / (8 * fe**2 + eps)
    want = v.mean(dim=-2, keepdim=True).expand_as(out) * shrink
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_finite_and_close_to_fp32(dtype):
    # |q|,|k| ~ 300, d = 64: phi(q).sum(phi(k)) reaches ~1e6, beyond fp16's 65504, so a
    # half-precision normaliser would overflow. Done in fp32, the output is a weighted
    # average of v and fits easily.
    q, k, v = (t.to(dtype) for t in _qkv(batch=1, heads=2, n=512, d=64, dtype=torch.float32, scale=300.0))
    out = linear_attention(q, k, v)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    ref = linear_attention_reference(q.double(), k.double(), v.double())
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)


def test_every_internal_op_runs_in_fp32_for_half_inputs(op_dtype_recorder):
    q, k, v = _qkv(n=32, dtype=torch.float16)
    with op_dtype_recorder() as rec:
        out = linear_attention(q, k, v)
    assert out.dtype == torch.float16
    *internal, (last_op, last_dtype) = rec.records
    assert last_dtype == torch.float16 and "_to_copy" in last_op  # only the final cast back
    assert internal and all(dt == torch.float32 for _, dt in internal), internal


def test_autocast_does_not_lower_precision():
    q, k, v = _qkv(n=40, dtype=torch.float32)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = linear_attention(q, k, v)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, linear_attention(q, k, v), rtol=0, atol=0)


def test_gradients_match_reference():
    q, k, v = (t.requires_grad_() for t in _qkv(n=33, d=6, dv=5))
    qr, kr, vr = (t.detach().clone().requires_grad_() for t in (q, k, v))
    weight = torch.randn(2, 3, 33, 5, dtype=torch.float64)
    (linear_attention(q, k, v) * weight).sum().backward()
    (linear_attention_reference(qr, kr, vr) * weight).sum().backward()
    for got, want in ((q, qr), (k, kr), (v, vr)):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-9, atol=1e-10)


def test_no_quadratic_intermediate(largest_tensor_mode):
    n, d = 16384, 16
    q, k, v = (t.requires_grad_() for t in _qkv(batch=1, heads=2, n=n, d=d, dtype=torch.float32))
    with largest_tensor_mode() as mode:
        linear_attention(q, k, v).sum().backward()
    assert mode.max_numel <= 2 * n * d < n * n


def test_bad_shapes_are_rejected():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="incompatible shapes"):
        linear_attention(q, k[..., :4], v)
