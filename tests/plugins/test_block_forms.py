"""Block variants that reproduce official code: DiMR's ConvNeXt form, Diffusion-RWKV's extra norms."""

import copy

import pytest
import torch
import torch.nn.functional as F

from dicesearch.testing import build_block


def _perturbed(built):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in built.module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return built


def _depthwise_by_loops(x, weight, bias):
    """x (B, H, W, C), weight (C, 1, k, k): sum over the k x k window, zero padding."""
    b, h, w, c = x.shape
    k = weight.shape[-1]
    padded = F.pad(x, (0, 0, k // 2, k // 2, k // 2, k // 2))
    out = torch.zeros_like(x) + bias
    for i in range(k):
        for j in range(k):
            out = out + padded[:, i : i + h, j : j + w, :] * weight[:, 0, i, j]
    return out


def _geglu_mlp(mlp, x):
    a, gate = (x @ mlp.fc1.weight.T + mlp.fc1.bias).chunk(2, dim=-1)
    return (F.gelu(a) * gate) @ mlp.fc2.weight.T + mlp.fc2.bias


@pytest.mark.parametrize("conditioning", ["adaln_zero", "tdln"])
def test_convnext_dimr_form_is_x_plus_dwconv_then_x_plus_mlp_of_norm(conditioning):
    params = {"kernel_size": 5, "mlp_ratio": 2.0, "glu": True, "form": "dimr"}
    block, x, signal = _perturbed(build_block("convnext", conditioning, block_params=params))
    mod = block.modulator(signal)
    with torch.no_grad():
        after_conv = x + _depthwise_by_loops(x, block.dwconv.weight, block.dwconv.bias)  # x = x + dwconv(x)
        expected = after_conv + mod.gate(0, _geglu_mlp(block.mlp, mod.norm(0, after_conv)))  # x = x + MLP(norm(x))
        torch.testing.assert_close(block(x, signal), expected, rtol=1e-4, atol=1e-4)

        convnext = copy.deepcopy(block)
        convnext.form = "convnext"  # the same weights wired as ConvNeXt: x + MLP(norm(dwconv(x)))
        conv = _depthwise_by_loops(x, block.dwconv.weight, block.dwconv.bias)
        torch.testing.assert_close(convnext(x, signal), x + mod.gate(0, _geglu_mlp(block.mlp, mod.norm(0, conv))), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(convnext(x, signal), block(x, signal), atol=1e-3)


def test_rwkv_stack_norms_normalise_the_first_input_and_the_last_output():
    """Diffusion-RWKV's ln0 (block 0, before its first sub-layer) and norm_f (after the last block)."""
    from dicesearch.model import build_model
    from dicesearch.testing import tiny_spec

    model = build_model(tiny_spec("rwkv", block_params={"stack_norms": True}))  # one stage of depth 2
    first, last = model.stages[0].blocks
    assert first.final_norm is None and last.input_norm is None
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(2, 8, 8, 32)
    signal = model.conditioning(torch.tensor([3.0, 600.0]), torch.tensor([0, 1]))
    plain_first, plain_last = copy.deepcopy(first), copy.deepcopy(last)
    plain_first.input_norm = plain_last.final_norm = None
    with torch.no_grad():
        ln0 = F.layer_norm(x, (32,), first.input_norm.weight, first.input_norm.bias, eps=1e-5)
        torch.testing.assert_close(first(x, signal), plain_first(ln0, signal))
        norm_f = last.final_norm
        expected = F.layer_norm(plain_last(x, signal), (32,), norm_f.weight, norm_f.bias, eps=1e-5)
        torch.testing.assert_close(last(x, signal), expected)
