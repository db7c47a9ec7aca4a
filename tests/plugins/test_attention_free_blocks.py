"""The ssm, rwkv and linear_attention blocks against their papers' equations, written out naively.

The kernels they call (bi_wkv, the S4D layers, the linear-attention core) are tested
against references in tests/ops; here the wiring around them is: which channels shift
where, which weights act on which positions, what is normalised by what. The block
contract with default parameters runs in test_contract.py (over every registered block);
here it also runs with non-default parameters.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dicesearch.conditioning import ConditionSignal
from dicesearch.ops import bi_wkv_reference
from dicesearch.plugin_api import BlockContext, ConditioningContext, StageGeometry
from dicesearch.testing import check_block

NEW_BLOCKS = ("ssm", "rwkv", "linear_attention")


def _built(registry, kind: str, channels: int, height: int, width: int, conditioning: str = "adaln_zero", **params):
    """A conditioning method (fp32: it embeds t in fp32) and one block on a height x width grid, in float64."""
    cond_type, block_type = registry.conditioning(conditioning), registry.block(kind)
    cond = cond_type.build(cond_type.params(), ConditioningContext(num_classes=4, stage_channels=(channels,)))
    geometry = StageGeometry(channels, height, width)
    block = block_type.build(block_type.params(**params), BlockContext(geometry, cond, index=0, depth=2))
    _perturb(cond, block)
    return cond, block.double()


@torch.no_grad()
def _perturb(*modules: torch.nn.Module, seed: int = 3) -> None:
    """Move every parameter off its initial value (zero-initialised gates, equal mixes, ...)."""
    g = torch.Generator().manual_seed(seed)
    for module in modules:
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _signal(cond, batch: int) -> ConditionSignal:
    signal = cond(torch.arange(batch) * 300.0, torch.arange(batch) % 4)
    embedding = None if signal.embedding is None else signal.embedding.double()
    return ConditionSignal(signal.t, signal.y, embedding)


# -- rwkv: quad-directional shift, spatial mix, channel mix -------------------------------


def _shift_by_loops(x: torch.Tensor, pixels: int, fraction: float) -> torch.Tensor:
    """Sec. 2.2's quad-directional shift, one output element at a time."""
    _, height, width, channels = x.shape
    g = int(channels * fraction)
    out = x.clone()
    for h in range(height):
        for w in range(width):
            for c in range(4 * g):
                src_h, src_w = [(h, w - pixels), (h, w + pixels), (h - pixels, w), (h + pixels, w)][c // g]
                inside = 0 <= src_h < height and 0 <= src_w < width
                out[:, h, w, c] = x[:, src_h, src_w, c] if inside else 0.0
    return out


@pytest.mark.parametrize(
    "shape, pixels, fraction",
    [((2, 3, 5, 8), 1, 0.25), ((1, 4, 4, 10), 2, 0.2), ((1, 1, 1, 8), 1, 0.25), ((1, 2, 2, 4), 3, 0.25), ((1, 5, 2, 12), 1, 0.1)],
)
def test_quad_shift_equals_the_loop_definition(shape, pixels, fraction):
    from dicesearch_plugins.rwkv import quad_shift

    x = torch.randn(*shape, dtype=torch.float64)
    assert torch.equal(quad_shift(x, pixels, fraction), _shift_by_loops(x, pixels, fraction))


def test_quad_shift_moves_each_channel_group_one_way():
    from dicesearch_plugins.rwkv import quad_shift

    x = torch.zeros(1, 5, 5, 8)
    x[0, 2, 2] = 1.0  # an impulse at the centre, in every channel
    out = quad_shift(x, 1, 0.25)  # groups of 2 channels
    # a token takes group 0 from its left neighbour, so the impulse shows one step to the right
    for group, (h, w) in enumerate([(2, 3), (2, 1), (3, 2), (1, 2)]):
        channels = slice(2 * group, 2 * group + 2)
        assert out[0, h, w, channels].eq(1).all() and out[0, :, :, channels].sum() == 2, group


def test_rwkv_spatial_mix_is_eq_3_6_with_bidirectional_wkv(registry):
    cond, block = _built(registry, "rwkv", 8, 3, 4)
    mix = block.spatial
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64)
    shifted = _shift_by_loops(x, 1, 0.25)

    def lerp(mu):  # mu * x_t + (1 - mu) * x_shifted, Eq. 3-5
        return (mu * x + (1 - mu) * shifted).reshape(2, 12, 8)

    k, v = lerp(mix.mix_k) @ mix.key.weight.T, lerp(mix.mix_v) @ mix.value.weight.T
    r = lerp(mix.mix_r) @ mix.receptance.weight.T
    wkv = bi_wkv_reference(mix.decay, mix.bonus / 12, k, v)  # T = 12 tokens; u / T as the released code
    expected = (torch.sigmoid(r) * wkv) @ mix.output.weight.T  # Eq. 6
    assert torch.allclose(mix(x), expected.reshape(2, 3, 4, 8), atol=1e-10)


def test_rwkv_channel_mix_is_eq_9_11(registry):
    cond, block = _built(registry, "rwkv", 8, 3, 4, hidden_ratio=2.0)
    mix = block.channel
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64)
    shifted = _shift_by_loops(x, 1, 0.25)
    r = (mix.mix_r * x + (1 - mix.mix_r) * shifted) @ mix.receptance.weight.T  # Eq. 9
    z = (mix.mix_k * x + (1 - mix.mix_k) * shifted) @ mix.key.weight.T  # Eq. 10, (.., 16)
    expected = torch.sigmoid(r) * (z.clamp(min=0).square() @ mix.value.weight.T)  # Eq. 11
    assert torch.allclose(mix(x), expected, atol=1e-12)


def test_rwkv_init_follows_the_layer_position(registry):
    from dicesearch_plugins.rwkv import RWKVBlock, RWKVParams

    cond_type = registry.conditioning("adaln_zero")
    cond = cond_type.build(cond_type.params(), ConditioningContext(num_classes=0, stage_channels=(16,)))
    first, last = (RWKVBlock(RWKVParams(), BlockContext(StageGeometry(16, 4, 4), cond, i, 5)) for i in (0, 4))
    for block in (first, last):  # decays spread over [-5, 3]; equations in plugins/rwkv.py
        assert block.spatial.decay[0].item() == pytest.approx(-5) and block.spatial.decay[-1].item() == pytest.approx(3)
    # the first layer mixes mostly the shifted token into k (mu_k = (c/C)^1), the last almost none (mu_k ~ 1)
    assert first.spatial.mix_k.mean() < 0.5 < last.spatial.mix_k.mean()


# -- ssm: the hourglass of DiffuSSM Sec. 4.2 ---------------------------------------------


def test_ssm_hourglass_is_the_equations_of_sec_4_2(registry):
    dim, m = 6, 3  # D_m = 2D / M = 4
    cond, block = _built(registry, "ssm", dim, 2, 3, downscale=m, state_size=4, expansion=1.5)
    hg = block.hourglass
    x = torch.randn(2, 2, 3, dim, dtype=torch.float64)
    short = x.reshape(2, 6, dim)  # I: J = 6 tokens in raster order
    act = F.gelu
    u = torch.zeros(2, 6 * m, dim, dtype=torch.float64)
    for j in range(6):
        for k in range(m):  # U_l = act(W_up_k act(W_0 I_j)), l = j M + k
            rows = slice(k * dim, (k + 1) * dim)
            u[:, j * m + k] = act(F.linear(act(hg.w0(short[:, j])), hg.up.weight[rows], hg.up.bias[rows]))
    y = hg.ssm(u)  # (2, L, 2D), the op is tested on its own
    d_m = 2 * dim // m
    reduced = torch.zeros(2, 6, 2 * dim, dtype=torch.float64)
    for j in range(6):
        for k in range(m):  # I'_{j, D_m k : D_m (k+1)} = act(W_down_k Y_l)
            rows = slice(k * d_m, (k + 1) * d_m)
            reduced[:, j, rows] = act(F.linear(y[:, j * m + k], hg.down.weight[rows], hg.down.bias[rows]))
    expected = hg.w3(act(hg.w2(reduced)) * act(hg.w1(short)))  # O_j
    assert torch.allclose(hg(x), expected.reshape(2, 2, 3, dim), atol=1e-10)


def test_ssm_block_reads_tokens_before_and_after_through_its_two_directions(registry):
    cond, block = _built(registry, "ssm", 8, 4, 5)
    signal = _signal(cond, 1)
    x = torch.randn(1, 4, 5, 8, dtype=torch.float64)
    x_moved = x.clone()
    x_moved[0, 2, 1] += torch.randn(8, dtype=torch.float64)  # token 11 of 20 (not a constant: LayerNorm removes those)

    def change_per_token():
        with torch.no_grad():
            return (block(x_moved, signal) - block(x, signal)).abs().amax(-1).flatten()

    change = change_per_token()
    assert change[:11].min() > 1e-8 and change[12:].min() > 1e-8
    with torch.no_grad():  # silence the backward-direction SSM (channels D..2D of the kernel)
        block.hourglass.ssm.kernel.c[8:].zero_()
    change = change_per_token()
    assert change[:11].max() < 1e-12, "only the backward SSM may carry later tokens to earlier ones"
    assert change[12:].min() > 1e-8


# -- linear_attention: LiT Alg. 1 ---------------------------------------------------------


def test_linear_attention_equals_a_naive_alg_1(registry):
    dim, heads, kernel = 12, 3, 3
    cond, block = _built(registry, "linear_attention", dim, 4, 5, heads=heads, kernel_size=kernel)
    attn = block.attn
    x = torch.randn(2, 4, 5, dim, dtype=torch.float64)
    tokens, n, d = x.reshape(2, 20, dim), 20, dim // heads
    q, kv = attn.q(tokens), attn.kv(tokens)
    k, v = kv[..., :dim], kv[..., dim:]
    heads_out = []
    for h in range(heads):
        part = slice(h * d, (h + 1) * d)
        phi_q, phi_k, v_h = F.relu(q[..., part]) + 1e-6, F.relu(k[..., part]) + 1e-6, v[..., part]
        scores = phi_q @ phi_k.transpose(1, 2)  # (2, N, N), the quadratic form
        z = 1 / (phi_q @ phi_k.mean(dim=1, keepdim=True).transpose(1, 2) + 1e-6)  # Alg. 1's normaliser
        attended = (scores @ v_h) / n * z
        v_map = v_h.reshape(2, 4, 5, d).permute(0, 3, 1, 2)  # each head's values as a 2D map
        local = F.conv2d(v_map, attn.dwc.weight, attn.dwc.bias, padding=kernel // 2, groups=d)
        heads_out.append(attended + local.permute(0, 2, 3, 1).reshape(2, n, d))
    expected = attn.proj(torch.cat(heads_out, dim=-1))
    assert torch.allclose(attn(x), expected.reshape(2, 4, 5, dim), atol=1e-10)


# -- every grid, both conditionings, non-default parameters -------------------------------


@pytest.mark.parametrize("kind", NEW_BLOCKS)
@pytest.mark.parametrize("conditioning", ["adaln_zero", "tdln"])
@pytest.mark.parametrize("height, width", [(1, 1), (1, 6), (5, 3)])
def test_block_maps_any_grid_to_itself_with_gradients(registry, kind, conditioning, height, width):
    cond, block = _built(registry, kind, 8, height, width, conditioning)
    x = torch.randn(2, height, width, 8, dtype=torch.float64, requires_grad=True)
    out = block(x, _signal(cond, 2))
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kind, params",
    [
        ("ssm", {"downscale": 4, "expansion": 1.0, "state_size": 8, "s4d_init": "inv", "activation": "silu"}),
        ("rwkv", {"shift_pixels": 2, "shift_fraction": 0.125, "bonus_over_length": False, "key_norm": True}),
        ("linear_attention", {"heads": 4, "kernel_size": 3, "glu": True, "qkv_bias": False}),
    ],
)
def test_contract_with_non_default_parameters(registry, kind, params):
    check_block(kind, block_params=params, registry=registry)
