"""adaLN-Zero and TD-LN against their papers' equations."""

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
