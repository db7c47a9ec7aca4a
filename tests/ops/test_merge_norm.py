"""The native merge-and-norm (dicesearch/native/merge_norm.c) against float64 references: the
DICE merge (Fig. 5) and a LayerNorm with a per-sample affine written out from their
definitions, forward and every gradient, then the dispatcher and the DICE block."""

from __future__ import annotations

import pytest
import torch

from dicesearch import native
from dicesearch.ops import merge_norm
from dicesearch.ops.merge_norm import merged_norm, merged_norm_reference, native_kernels, takes_native_path

FP32_RTOL = 1e-5  # fp32 against float64: sums over C channels per row and over H W rows per image; measured <= 2e-6

pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # the kernels are taken at one torch thread (a trial's), as the dispatcher requires
    pytest.mark.skipif(native_kernels() is None, reason=f"native kernels unavailable: {native.why_unavailable('merge_norm')}"),
]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _by_definition(pair, lam, multiplier, offset, eps):
    """The formulas written out on (B, 2C, H, W), in whatever dtype they come: -> (B, H, W, C)."""
    rows = pair.permute(0, 2, 3, 1)  # (B, H, W, 2C)
    left, right = rows[..., 0::2], rows[..., 1::2]  # (B, H, W, C)
    merged = (left + right) * torch.sigmoid(-lam * (left - right) ** 2)  # DICE Fig. 5, (l + r) / (1 + exp(lam d^2))
    mean = merged.mean(-1, keepdim=True)
    var = ((merged - mean) ** 2).mean(-1, keepdim=True)  # biased, as LayerNorm's
    xhat = (merged - mean) / torch.sqrt(var + eps)
    return xhat * multiplier[:, None, None, :] + offset[:, None, None, :]


def _inputs(batch, c, height, width, lam_shape, per_sample, seed, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    pair = (torch.randn(batch, height, width, 2 * c, generator=g) * spread).permute(0, 3, 1, 2)  # channels-last memory
    lam = torch.rand(lam_shape, generator=g) * 2 + 0.1
    rows = batch if per_sample else 1
    multiplier = 1 + 0.3 * torch.randn(rows, c, generator=g)
    offset = torch.randn(rows, c, generator=g)
    grad = torch.randn(batch, height, width, c, generator=g)
    return (pair, lam, multiplier, offset), grad


def _value_and_grads(function, inputs, grad, dtype=None):
    leaves = [(t.to(dtype) if dtype else t).detach().clone().requires_grad_() for t in inputs]
    if dtype is not None:
        leaves[0] = leaves[0].contiguous(memory_format=torch.channels_last)
    y = function(*leaves, 1e-6)
    return (y, *torch.autograd.grad(y, leaves, grad.to(y.dtype)))


@pytest.mark.parametrize(
    ("batch", "c", "height", "width", "lam_shape", "per_sample"),
    [(2, 16, 5, 6, (1,), True), (3, 32, 16, 16, (32,), True), (2, 48, 1, 1, (1,), False), (4, 64, 4, 3, (64,), False)],
)
def test_native_forward_and_gradients_match_the_definition(batch, c, height, width, lam_shape, per_sample):
    inputs, grad = _inputs(batch, c, height, width, lam_shape, per_sample, seed=c + height)
    assert takes_native_path(*inputs)
    got = _value_and_grads(merge_norm.merged_norm, inputs, grad)
    want = _value_and_grads(_by_definition, inputs, grad, dtype=torch.float64)
    for name, g, w in zip(("output", "pair", "lambda", "multiplier", "offset"), got, want):
        assert g.shape == w.shape, name
        assert _relative(g, w) < FP32_RTOL, name


def test_large_and_negative_lambda_stay_finite_and_right():
    """lambda d^2 far past exp's range sends the gate to 0 (the clamp), a negative lambda towards 1 + e^|.|."""
    inputs, grad = _inputs(2, 16, 4, 4, (16,), True, seed=3, spread=8.0)
    pair, lam, multiplier, offset = inputs
    lam = torch.linspace(-0.05, 60.0, 16)  # up to exp(60 * 256) on the widest pairs
    got = _value_and_grads(merged_norm, (pair, lam, multiplier, offset), grad)
    want = _value_and_grads(_by_definition, (pair, lam, multiplier, offset), grad, dtype=torch.float64)
    assert all(torch.isfinite(g).all() for g in got)
    for g, w in zip(got, want):
        assert _relative(g, w) < FP32_RTOL


def test_agrees_with_the_pytorch_composition_and_reruns_bit_identically():
    inputs, grad = _inputs(8, 32, 8, 8, (1,), True, seed=5)
    native_once = _value_and_grads(merged_norm, inputs, grad)
    native_twice = _value_and_grads(merged_norm, inputs, grad)
    composed = _value_and_grads(merged_norm_reference, inputs, grad)
    for a, b, c in zip(native_once, native_twice, composed):
        assert torch.equal(a, b)
        assert _relative(a, c.double()) < FP32_RTOL


@pytest.mark.parametrize(
    "change",
    ["two threads", "float64", "channels not whole vectors", "switched off"],
)
def test_elsewhere_it_is_the_pytorch_composition_to_the_bit(change, monkeypatch):
    c = 24 if change == "channels not whole vectors" else 32
    inputs, grad = _inputs(2, c, 4, 4, (1,), True, seed=7)
    if change == "two threads":
        torch.set_num_threads(2)
    if change == "float64":
        inputs = tuple(t.double() for t in inputs)
    if change == "switched off":
        monkeypatch.setattr(merge_norm, "native_kernels", lambda: None)
    assert not takes_native_path(*inputs)
    got = _value_and_grads(merged_norm, inputs, grad)
    want = _value_and_grads(merged_norm_reference, inputs, grad)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("conditioning", "conditioning_params", "fuses"),
    [("adaln_zero", {}, True), ("tdln", {}, True), ("tdln", {"block_norm": "rms"}, False), ("adaln_zero", {"norm_affine": True}, False)],
    ids=["adaln-zero", "tdln", "tdln-rms", "adaln-zero-norm-affine"],
)
def test_the_dice_block_fuses_where_the_norm_is_one_affine_and_matches_its_norm(conditioning, conditioning_params, fuses):
    """Inside ``fast_kernels`` the DICE block takes the fused op where ``Modulation.layer_norm_affine``
    offers one, and then equals the block computing the merge and ``Modulation.norm`` itself."""
    from dicesearch.model import build_model
    from dicesearch.speed import fast_kernels
    from dicesearch.testing import tiny_spec

    spec = tiny_spec("dice", conditioning, conditioning_params=conditioning_params, resolution=16, channels=16)
    torch.manual_seed(0)
    model = build_model(spec).train()
    with torch.no_grad():  # zero-initialised modulations would hide a wrong multiplier or offset
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    x, t, y = torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 1000, (4,), generator=g), torch.randint(0, 4, (4,), generator=g)
    real = merge_norm._MergedNorm.apply
    results = {}
    for fused in (True, False):
        calls = []
        model.zero_grad(set_to_none=True)
        with fast_kernels(model), pytest.MonkeyPatch.context() as patch:
            patch.setattr(merge_norm._MergedNorm, "apply", lambda *a: calls.append(1) or real(*a))
            if not fused:
                patch.setattr(merge_norm, "native_kernels", lambda: None)
            out = model(x, t, y)
            out.square().mean().backward()
        results[fused] = (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls))
    (a, grads_a, calls_a), (b, grads_b, calls_b) = results[True], results[False]
    assert (calls_a, calls_b) == ((2, 0) if fuses else (0, 0))  # both blocks, on the fused run only
    assert _relative(a, b.double()) < FP32_RTOL
    assert grads_a.keys() == grads_b.keys()
    worst = max(grads_a, key=lambda k: _relative(grads_a[k], grads_b[k].double()))
    assert _relative(grads_a[worst], grads_b[worst].double()) < 1e-4, worst  # as tests/speed's fast-vs-eager gradients
