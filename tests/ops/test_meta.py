"""The ops run on meta tensors, so presets built on the meta device can be counted."""

from __future__ import annotations

import torch

from dicesearch.ops import BidirectionalS4DLayer, S4DLayer, bi_wkv, linear_attention


def test_every_op_gives_its_shapes_and_a_backward_on_meta_tensors():
    with torch.device("meta"):
        w = torch.randn(8, requires_grad=True)
        k = torch.randn(2, 70, 8, requires_grad=True)
        wkv = bi_wkv(w, w, k, k)
        q = torch.randn(2, 3, 50, 4, requires_grad=True)
        attended = linear_attention(q, q, q)
        u = torch.randn(2, 30, 8, requires_grad=True)
        causal, both = S4DLayer(8)(u), BidirectionalS4DLayer(8)(u)
    assert wkv.shape == (2, 70, 8) and attended.shape == (2, 3, 50, 4)
    assert causal.shape == (2, 30, 8) and both.shape == (2, 30, 16)
    assert all(t.is_meta for t in (wkv, attended, causal, both))
    (wkv.sum() + attended.sum() + both.sum()).backward()
    assert k.grad.shape == k.shape and q.grad.shape == q.shape and u.grad.shape == u.shape
