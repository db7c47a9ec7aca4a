"""dicesearch.ops.patchify against F.conv2d: forward, gradients, layouts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dicesearch.ops.patchify import patch_conv2d


@pytest.mark.parametrize(("channels", "p", "side"), [(1, 1, 16), (1, 2, 16), (1, 4, 16), (3, 2, 8), (4, 8, 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_gradients_match_conv2d(channels, p, side, bias):
    g = torch.Generator().manual_seed(p * 10 + channels)
    x = torch.randn(3, channels, side, side, generator=g)
    weight = torch.randn(5, channels, p, p, generator=g)
    b = torch.randn(5, generator=g) if bias else None
    grad_out = torch.randn(3, 5, side // p, side // p, generator=g)
    results = []
    for conv in (lambda x, w, b: F.conv2d(x, w, b, stride=p), patch_conv2d):
        inputs = [t.clone().requires_grad_() for t in (x, weight, b) if t is not None]
        y = conv(*inputs, *([None] if b is None else []))
        results.append((y, *torch.autograd.grad(y, inputs, grad_out)))
    for got, want in zip(results[1], results[0]):
        assert got.shape == want.shape
        # one input channel: the very same sum; more: the same products in another order
        assert float((got - want).abs().max() / want.abs().max()) < (1e-6 if channels == 1 else 2e-5)
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)


def test_a_grid_the_patches_do_not_tile_goes_to_conv2d():
    x, weight = torch.randn(1, 1, 9, 9), torch.randn(2, 1, 2, 2)
    assert torch.equal(patch_conv2d(x, weight), F.conv2d(x, weight, stride=2))
