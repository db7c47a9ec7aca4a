"""Bi-WKV: chunked, stabilised implementation vs the dense equation."""

from __future__ import annotations

import pytest
import torch

from dicesearch.ops.wkv import bi_wkv, bi_wkv_reference


def _inputs(batch, length, channels, *, k_range=3.0, w_scale=3.0, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(channels, generator=gen, dtype=dtype) * w_scale  # both signs, as Vision-RWKV allows
    u = torch.randn(channels, generator=gen, dtype=dtype)
    k = (torch.rand(batch, length, channels, generator=gen, dtype=dtype) * 2 - 1) * k_range
    v = torch.randn(batch, length, channels, generator=gen, dtype=dtype)
    return w, u, k, v


@pytest.mark.parametrize("length", [1, 2, 7, 31, 32, 33, 64, 100, 257])
@pytest.mark.parametrize("k_range", [3.0, 60.0])
def test_matches_dense_reference_float64(length, k_range):
    w, u, k, v = _inputs(2, length, 5, k_range=k_range)
    out = bi_wkv(w, u, k, v)
    ref = bi_wkv_reference(w, u, k, v)
    assert out.shape == (2, length, 5)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 500])
def test_result_does_not_depend_on_chunk_size(chunk_size):
    w, u, k, v = _inputs(1, 45, 3, k_range=60.0)
    torch.testing.assert_close(bi_wkv(w, u, k, v, chunk_size=chunk_size), bi_wkv_reference(w, u, k, v), rtol=1e-6, atol=1e-6)


def test_single_token_returns_value():
    # T = 1: both sums over i != t are empty, so wkv = exp(u+k) v / exp(u+k) = v.
    w, u, k, v = _inputs(3, 1, 4, k_range=60.0)
    torch.testing.assert_close(bi_wkv(w, u, k, v), v, rtol=0, atol=1e-15)


def test_zero_decay_and_bonus_is_softmax_pooling():
    # w = 0, u = 0: every token gets weight exp(k_i), so wkv_t = softmax(k) . v for every t.
    _, _, k, v = _inputs(2, 50, 3, k_range=20.0)
    zeros = torch.zeros(3, dtype=torch.float64)
    pooled = (torch.softmax(k, dim=1) * v).sum(dim=1, keepdim=True)  # (B, 1, C)
    torch.testing.assert_close(bi_wkv(zeros, zeros, k, v), pooled.expand_as(v), rtol=1e-12, atol=1e-12)


def test_constant_values_pass_through():
    # The weights are normalised, so a constant v comes out unchanged whatever w, u, k are.
    w, u, k, _ = _inputs(2, 70, 3, k_range=60.0, w_scale=50.0)
    v = torch.full_like(k, 2.5)
    torch.testing.assert_close(bi_wkv(w, u, k, v), v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length", [1, 33, 80])
def test_gradients_match_reference(length):
    w, u, k, v = _inputs(2, length, 4, k_range=60.0)
    leaves = [t.clone().requires_grad_() for t in (w, u, k, v)]
    ref_leaves = [t.clone().requires_grad_() for t in (w, u, k, v)]
    weight = torch.randn(2, length, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (bi_wkv(*leaves, chunk_size=16) * weight).sum().backward()
    (bi_wkv_reference(*ref_leaves) * weight).sum().backward()
    for got, want in zip(leaves, ref_leaves):
        assert got.grad is not None
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-6, atol=1e-6)


def test_gradcheck_tiny():
    w, u, k, v = (t.requires_grad_() for t in _inputs(1, 6, 2, k_range=2.0, w_scale=1.0))
    assert torch.autograd.gradcheck(lambda *a: bi_wkv(*a, chunk_size=4), (w, u, k, v))


def test_fp32_large_keys_and_decay_stay_finite_and_accurate():
    w, u, k, v = _inputs(2, 300, 8, k_range=60.0, w_scale=200.0, dtype=torch.float32)
    k[:, ::7] += 400.0  # exp(460) overflows float64; only differences of exponents matter
    out = bi_wkv(w, u, k, v)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    ref = bi_wkv(w.double(), u.double(), k.double(), v.double())
    # fp32 exponents of size ~460 carry ~3e-5 absolute rounding, hence ~1e-4 in the weights.
    torch.testing.assert_close(out.double(), ref, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_computed_in_fp32(dtype):
    w, u, k, v = (t.to(dtype) for t in _inputs(2, 90, 6, k_range=60.0, dtype=torch.float32))
    out = bi_wkv(w, u, k, v)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    ref = bi_wkv(w.float(), u.float(), k.float(), v.float())  # same rounded inputs, fp32 throughout
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
    # Computing internally in fp32 means the only error is the final rounding to `dtype`.
    assert torch.equal(out, ref.to(dtype))


def test_autocast_does_not_lower_precision():
    w, u, k, v = _inputs(1, 40, 4, k_range=30.0, dtype=torch.float32)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = bi_wkv(w, u, k, v)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, bi_wkv(w, u, k, v), rtol=0, atol=0)


def test_bad_shapes_are_rejected():
    w, u, k, v = _inputs(1, 4, 3)
    with pytest.raises(ValueError, match=r"w and u must be \(3,\)"):
        bi_wkv(w[:2], u, k, v)
    with pytest.raises(ValueError, match="k and v"):
        bi_wkv(w, u, k, v[:, :2])


def _traced_fwd_bwd(mode, length, channels, chunk):
    w, u, k, v = (t.float().requires_grad_() for t in _inputs(1, length, channels, k_range=60.0))
    with mode:
        out = bi_wkv(w, u, k, v, chunk_size=chunk)
        out.square().sum().backward()
    assert mode.calls > 0
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (w, u, k, v))
    return mode


def test_memory_is_linear_in_length(largest_tensor_mode):
    # T = 16384: a T x T intermediate would hold 2.7e8 elements. Every tensor created in
    # forward and backward must stay within a constant times B*T*C.
    length, channels, chunk = 16384, 2, 256  # few chunks: the dispatch-mode tracing is slow per op
    mode = _traced_fwd_bwd(largest_tensor_mode(), length, channels, chunk)
    linear_bound = 2 * max(length * channels, (chunk + 1) * chunk * channels)  # 2B rows: both directions
    assert mode.max_numel <= linear_bound < length * length


def test_full_length_tensors_do_not_scale_with_chunk_count(largest_tensor_mode):
    # Per-chunk work must touch only its chunk. If every chunk allocated a (T, C) tensor
    # (e.g. the zero-filled gradient of a slice), the run would cost O(T^2 / chunk).
    length, channels = 2048, 3
    counts = [
        _traced_fwd_bwd(largest_tensor_mode(count_at_least=length * channels), length, channels, chunk).n_at_least
        for chunk in (8, 16)  # 256 and 128 chunks; per-chunk blocks stay below T*C elements
    ]
    assert counts[0] == counts[1] < 100


def test_saved_activations_are_linear_in_length(saved_bytes):
    # Checkpointing each chunk keeps what autograd stores to O(B*T*C): without it the
    # (chunk+1) x chunk weights of every chunk would be kept (>= 33x the input here).
    length, channels = 4096, 4
    w, u, k, v = (t.float().requires_grad_() for t in _inputs(1, length, channels))
    saved = saved_bytes(lambda: bi_wkv(w, u, k, v, chunk_size=32))
    assert saved < 24 * length * channels * 4


def test_the_default_chunk_follows_the_sequence_on_cpu_and_the_accelerator_when_estimating():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from dicesearch.ops.wkv import CHUNK_SIZE_ACCELERATOR, CHUNK_SIZE_CPU, CHUNK_SIZE_CPU_LONG, LONG_SEQUENCE, default_chunk_size

    assert default_chunk_size(torch.zeros(1, 64, 4)) == CHUNK_SIZE_CPU
    assert default_chunk_size(torch.zeros(1, LONG_SEQUENCE + 1, 4)) == CHUNK_SIZE_CPU_LONG
    with FakeTensorMode():  # the memory estimate traces a GPU run's step: its blocks, not the CPU's
        assert default_chunk_size(torch.zeros(1, 64, 4)) == CHUNK_SIZE_ACCELERATOR
