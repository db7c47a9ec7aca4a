"""The same ops on CUDA, under fp16/bf16 autocast, against float64 CPU results (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from dicesearch.ops import BidirectionalS4DLayer, bi_wkv, linear_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

AUTOCAST = [None, torch.float16, torch.bfloat16]


def _run(fn, autocast_dtype):
    if autocast_dtype is None:
        return fn()
    with torch.autocast(device_type="cuda", dtype=autocast_dtype):
        return fn()


def _close(got, want, autocast_dtype):
    tol = 1e-4 if autocast_dtype is None else 2e-2
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("autocast_dtype", AUTOCAST)
def test_bi_wkv_cuda(autocast_dtype):
    gen = torch.Generator().manual_seed(0)
    w, u = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    k = (torch.rand(2, 300, 16, generator=gen) * 2 - 1) * 60
    v = torch.randn(2, 300, 16, generator=gen)
    want = bi_wkv(w.double(), u.double(), k.double(), v.double())
    leaves = [t.cuda().requires_grad_() for t in (w, u, k, v)]
    out = _run(lambda: bi_wkv(*leaves, chunk_size=64), autocast_dtype)
    assert out.dtype == torch.float32 and out.is_cuda
    _close(out, want, autocast_dtype)
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in leaves)


@pytest.mark.parametrize("autocast_dtype", AUTOCAST)
def test_bidirectional_s4d_cuda(autocast_dtype):
    torch.manual_seed(0)
    layer = BidirectionalS4DLayer(d_model=8, d_state=16)
    x = torch.randn(2, 256, 8)
    want = layer.double()(x.double()).detach()
    layer = layer.float().cuda()
    x = x.cuda().requires_grad_()
    out = _run(lambda: layer(x), autocast_dtype)
    assert out.dtype == torch.float32
    _close(out, want, autocast_dtype)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_attention_cuda_half(dtype):
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, 512, 64, generator=gen) * 300 for _ in range(2))
    v = torch.randn(1, 2, 512, 64, generator=gen)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    want = linear_attention(q.double(), k.double(), v.double())
    with torch.autocast(device_type="cuda", dtype=dtype):
        out = linear_attention(q.cuda(), k.cuda(), v.cuda())
    assert out.dtype == dtype and torch.isfinite(out).all()
    _close(out, want, dtype)
