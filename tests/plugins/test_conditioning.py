"""adaLN-Zero and TD-LN against their papers' equations."""

import pytest
import torch

from dicesearch.model import build_model
from dicesearch.testing import tiny_spec
from dicesearch_plugins.tdln import TDLNModulator, TDLNParams
from dicesearch.conditioning import ConditionSignal


def test_adaln_zero_blocks_start_as_the_identity():
    spec = tiny_spec("attention", "adaln_zero")
    model = build_model(spec)
    stage = model.stages[0]
    x = torch.randn(2, 8, 8, 32)
    signal = model.conditioning(torch.tensor([10.0, 500.0]), torch.tensor([0, 1]))
    for block in stage.blocks:
        torch.testing.assert_close(block(x, signal), x)


def test_tdln_matches_equations_5_to_7():
    params = TDLNParams(num_timesteps=1000, time_scale=5.0)
    mod = TDLNModulator(dim=6, sublayers=2, params=params)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn_like(p))
    t = torch.tensor([0.0, 250.0, 999.0])
    x = torch.randn(3, 4, 4, 6)
    modulation = mod(ConditionSignal(t=t, y=None))
    for i in range(2):
        tau = 5.0 * (t / 1000 - 0.5)
        s_gamma = torch.sigmoid(mod.w[i, 0] * tau[:, None] + mod.b[i, 0])  # Eq. 5 (scalar w, b)
        s_beta = torch.sigmoid(mod.w[i, 1] * tau[:, None] + mod.b[i, 1])
        gamma = s_gamma * mod.p[i, 0] + (1 - s_gamma) * mod.p[i, 1]  # Eq. 6
        beta = s_beta * mod.p[i, 2] + (1 - s_beta) * mod.p[i, 3]
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, unbiased=False, keepdim=True)
        expected = (x - mean) / torch.sqrt(var + 1e-6) * gamma[:, None, None, :] + beta[:, None, None, :]  # Eq. 7
        torch.testing.assert_close(modulation.norm(i, x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(modulation.gate(i, x), x)


def test_tdln_starts_as_plain_layernorm_and_depends_on_time_once_trained():
    mod = TDLNModulator(dim=4, sublayers=1, params=TDLNParams())
    x = torch.randn(2, 3, 4)
    early, late = mod(ConditionSignal(t=torch.tensor([0.0, 0.0]), y=None)), mod(ConditionSignal(t=torch.tensor([900.0, 900.0]), y=None))
    torch.testing.assert_close(early.norm(0, x), torch.nn.functional.layer_norm(x, (4,), eps=1e-6))
    with torch.no_grad():
        mod.p[0, 0].fill_(2.0)  # p1 != p2 now: gamma moves with t
    early, late = mod(ConditionSignal(t=torch.tensor([0.0, 0.0]), y=None)), mod(ConditionSignal(t=torch.tensor([900.0, 900.0]), y=None))
    assert not torch.allclose(early.norm(0, x), late.norm(0, x))


def _perturbed(spec):
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_the_class_label_reaches_the_output_with_both_methods():
    for conditioning in ("adaln_zero", "tdln"):
        for block in ("dice", "attention"):
            model = _perturbed(tiny_spec(block, conditioning))
            x, t = torch.randn(1, 3, 8, 8), torch.tensor([300])
            with torch.no_grad():
                a, b = model(x, t, torch.tensor([0])), model(x, t, torch.tensor([1]))
                null = model(x, t, None)  # unconditional: the null label
            assert not torch.allclose(a, b), (conditioning, block)
            assert not torch.allclose(a, null), (conditioning, block)


def test_the_timestep_reaches_the_output_with_both_methods():
    for conditioning in ("adaln_zero", "tdln"):
        model = _perturbed(tiny_spec("convnext", conditioning))
        x, y = torch.randn(1, 3, 8, 8), torch.tensor([2])
        with torch.no_grad():
            assert not torch.allclose(model(x, torch.tensor([10]), y), model(x, torch.tensor([900]), y)), conditioning


def _randomised(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    return module


def test_tdln_dimr_variant_is_the_official_codes_equation():
    """tau = log_snr / 4 with DiMR's log_snr = 8 n / T - 4, n = t + 1; per-channel w, b; RMS form."""
    t = torch.tensor([0.0, 250.0, 999.0])
    tau = (8 * (t + 1) / 1000 - 4) / 4  # DiMR's train.py and TimeDependentParameter.seed_time
    x = torch.randn(3, 4, 4, 6)
    layer = _randomised(TDLNModulator(6, 2, TDLNParams(time_input="dimr", per_channel=True, eps=1e-5)))
    rms = _randomised(TDLNModulator(6, 2, TDLNParams(time_input="dimr", per_channel=True, rms_eps=1e-8), kind="rms"))
    assert layer.w.shape == (2, 2, 6) and rms.p.shape == (2, 2, 6) and rms.w.shape == (2, 1, 6)
    signal = ConditionSignal(t=t, y=None)
    for i in range(2):
        s_gamma = torch.sigmoid(layer.w[i, 0] * tau[:, None] + layer.b[i, 0])  # (B, C): per channel
        s_beta = torch.sigmoid(layer.w[i, 1] * tau[:, None] + layer.b[i, 1])
        gamma = s_gamma * layer.p[i, 0] + (1 - s_gamma) * layer.p[i, 1]
        beta = s_beta * layer.p[i, 2] + (1 - s_beta) * layer.p[i, 3]
        mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        expected = (x - mean) / torch.sqrt(var + 1e-5) * gamma[:, None, None] + beta[:, None, None]
        torch.testing.assert_close(layer(signal).norm(i, x), expected, rtol=1e-5, atol=1e-5)

        s = torch.sigmoid(rms.w[i, 0] * tau[:, None] + rms.b[i, 0])
        scale = s * rms.p[i, 0] + (1 - s) * rms.p[i, 1]
        root_mean_square = torch.linalg.vector_norm(x, dim=-1, keepdim=True) / 6**0.5
        expected = x / (root_mean_square + 1e-8) * scale[:, None, None]  # DiMR's TDRMSNorm
        torch.testing.assert_close(rms(signal).norm(i, x), expected, rtol=1e-5, atol=1e-5)


def test_tdln_dimr_time_input_is_centered_at_scale_two_shifted_by_one_step():
    from dicesearch_plugins.tdln import time_condition

    t = torch.arange(0, 1000, 37).double()
    dimr = time_condition(t, TDLNParams(time_input="dimr"), torch.float64)
    centered = time_condition(t, TDLNParams(time_scale=2.0), torch.float64)
    torch.testing.assert_close(dimr, centered + 2 / 1000)
    assert dimr[0] == -1 + 2 / 1000 and time_condition(torch.tensor([999.0]), TDLNParams(time_input="dimr"), torch.float64) == 1


def test_tdln_feature_norms_are_layernorms_even_when_blocks_use_rms():
    spec = tiny_spec("convnext", "tdln", conditioning_params={"block_norm": "rms", "per_channel": True}, layout="features")
    model = build_model(spec)
    assert model.stages[0].blocks[0].modulator.kind == "rms"
    assert model.stages[0].head.modulator.kind == "layer"
    assert model.stages[0].head.modulator.p.shape == (1, 4, 32)  # gamma and beta, p1..p4


def test_tdln_label_in_the_first_stage_only():
    spec = tiny_spec("convnext", "tdln", conditioning_params={"label_stages": "first"}, layout="noise")
    model = build_model(spec)
    assert model.stages[0].label_input is not None and model.stages[1].label_input is None
    every = build_model(tiny_spec("convnext", "tdln", layout="noise"))
    assert all(stage.label_input is not None for stage in every.stages)


def test_tdln_label_as_a_token_joins_the_attention_sequence_and_leaves_before_the_head():
    """label_input token (DiMR's code): the class row is token 0 of the attention stage's sequence."""
    params = {"label_stages": "first", "label_input": "token"}
    spec = tiny_spec("attention", "tdln", block_params={"heads": 2}, conditioning_params=params, layout="features")
    model = build_model(spec)
    first = model.stages[0]
    assert first.label_input is None and first.prefix_tokens.embedding.weight.shape == (5, 32)
    assert model.stages[1].prefix_tokens is None and model.stages[1].label_input is None
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 900.0])
    signal = model.conditioning(t, torch.tensor([1, 4]))
    token = first.prefix_tokens(signal)
    assert token.shape == (2, 1, 32) and torch.equal(token[:, 0], first.prefix_tokens.embedding.weight[[1, 4]])
    none = model.conditioning(t, None)  # no labels: the null row (classifier-free guidance)
    assert torch.equal(first.prefix_tokens(none)[:, 0], first.prefix_tokens.embedding.weight[[4, 4]])

    with torch.no_grad():  # a block with the token == the same block on the sequence [token, grid]
        block, grid = first.blocks[0], torch.randn(2, 4, 4, 32)
        out, token_out = block(grid, signal, token)
        b, h, w, c = grid.shape
        seq = torch.cat([token, grid.reshape(b, h * w, c)], dim=1)  # (B, 1 + h w, C)
        mod = block.modulator(signal)
        seq = seq + block.attn(mod.norm(0, seq))
        seq = seq + block.mlp(mod.norm(1, seq))
        torch.testing.assert_close(out, seq[:, 1:].reshape(b, h, w, c))
        torch.testing.assert_close(token_out, seq[:, :1])
    with torch.no_grad():  # the label reaches the output only through the token
        a, b2 = model(x, t, torch.tensor([1, 1])), model(x, t, torch.tensor([2, 2]))
    assert not torch.allclose(a, b2)
    model.zero_grad()
    model.forward_stages(x, t, torch.tensor([1, 3]))[0].square().mean().backward()
    grad = first.prefix_tokens.embedding.weight.grad
    assert grad[[1, 3]].abs().sum() > 0 and grad[[0, 2, 4]].abs().sum() == 0


def test_tdln_label_token_needs_blocks_that_take_it():
    from dicesearch.errors import SpecError

    with pytest.raises(SpecError, match=r"stages\[0\]\.block\.kind: 'convnext' blocks cannot take the prefix tokens"):
        tiny_spec("convnext", "tdln", conditioning_params={"label_input": "token"}, layout="noise")
    # the first stage only: an attention stage takes the token, the ConvNeXt stage gets none
    data = tiny_spec("attention", "tdln", block_params={"heads": 2}, layout="features").model_dump(mode="json")
    data["conditioning"].update(label_input="token", label_stages="first")
    data["stages"][1]["block"] = {"kind": "convnext"}
    from dicesearch.spec import parse_spec

    model = build_model(parse_spec(data, "mixed.yaml"))
    assert model.stages[0].prefix_tokens is not None and model.stages[1].prefix_tokens is None


def test_adaln_norm_affine_is_layernorm_with_affine_then_modulation():
    spec = tiny_spec("rwkv", "adaln_zero", conditioning_params={"norm_affine": True, "block_eps": 1e-5})
    model = build_model(spec)
    mod = _randomised(model.stages[0].blocks[0].modulator)
    embedding = torch.randn(2, model.conditioning.embed_dim)
    signal = ConditionSignal(t=torch.tensor([1.0, 2.0]), y=None, embedding=embedding)
    shift0, scale0, gate0, shift1, scale1, gate1 = mod.regress(embedding).chunk(6, dim=-1)
    x = torch.randn(2, 8, 8, 32)
    for i, (shift, scale) in enumerate(((shift0, scale0), (shift1, scale1))):
        normed = torch.nn.functional.layer_norm(x, (32,), eps=1e-5) * mod.norm_weight[i] + mod.norm_bias[i]
        expected = normed * (1 + scale[:, None, None]) + shift[:, None, None]  # Diffusion-RWKV: modulate(ln(x))
        torch.testing.assert_close(mod(signal).norm(i, x), expected)
    head = model.stages[0].head.modulator
    assert head.norm_weight is None and head.eps == 1e-6  # heads: no affine, eps unchanged
