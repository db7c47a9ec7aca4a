"""The rearrangements between official and dicesearch tensors, against naive references."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dicesearch.checkpoints.transforms import SAME, Offset, Reshaped, ShuffledRows, Stacked
from dicesearch.layers import FeedForward


def test_shuffled_rows_turn_dimrs_pixel_shuffle_into_torchs():
    """DiMR's upsampler: out[b, h*r + i, w*r + j, c] = y[b, h, w, (i*r + j)*C + c] (channels last)."""
    b, h, w, f, c, r = 2, 3, 4, 5, 6, 2
    x = torch.randn(b, h, w, f)
    weight, bias = torch.randn(c * r * r, f), torch.randn(c * r * r)
    y = x @ weight.T + bias  # the official projection, rows in DiMR's (i, j, c) order
    expected = torch.empty(b, h * r, w * r, c)
    for i in range(r):
        for j in range(r):
            for ch in range(c):
                expected[:, i::r, j::r, ch] = y[..., (i * r + j) * c + ch]
    shuffle = ShuffledRows(r)
    ours_w, ours_b = shuffle.to_ours([weight]), shuffle.to_ours([bias])
    ours = F.pixel_shuffle((x @ ours_w.T + ours_b).permute(0, 3, 1, 2), r).permute(0, 2, 3, 1)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert torch.equal(shuffle.to_official(ours_w, [weight.shape])[0], weight)
    assert torch.equal(shuffle.to_official(ours_b, [bias.shape])[0], bias)


def test_stacked_halves_make_dimrs_geglu_from_w0_and_w1():
    """DiMR's MLP: w2(gelu(w0 x) * w1 x); ours: FeedForward(glu) with fc1 = [w0; w1]."""
    dim, hidden = 8, 12
    w0, w1, w2 = torch.nn.Linear(dim, hidden), torch.nn.Linear(dim, hidden), torch.nn.Linear(hidden, dim)
    ours = FeedForward(dim, hidden, glu=True, act="gelu")
    stacked = Stacked()
    with torch.no_grad():
        ours.fc1.weight.copy_(stacked.to_ours([w0.weight, w1.weight]))
        ours.fc1.bias.copy_(stacked.to_ours([w0.bias, w1.bias]))
        ours.fc2.load_state_dict(w2.state_dict())
        x = torch.randn(3, dim)
        torch.testing.assert_close(ours(x), w2(F.gelu(w0(x)) * w1(x)), rtol=0, atol=1e-6)
    halves = stacked.to_official(ours.fc1.weight, [w0.weight.shape, w1.weight.shape])
    assert torch.equal(halves[0], w0.weight) and torch.equal(halves[1], w1.weight)


def test_reshaped_position_table_keeps_dits_token_order():
    """DiT adds pos_embed[0, h * W + w] to the patch in row h, column w."""
    g, d = 4, 8
    official = torch.randn(1, g * g, d)
    table = Reshaped((g, g, d)).to_ours([official])
    for h in range(g):
        for w in range(g):
            assert torch.equal(table[h, w], official[0, h * g + w])
    assert torch.equal(Reshaped((g, g, d)).to_official(table, [official.shape])[0], official)


def test_same_is_the_tensor_itself():
    t = torch.randn(3)
    assert SAME.to_ours([t]) is t and SAME.to_official(t, [t.shape])[0] is t


def test_stacked_rows_make_one_table_of_several_vectors():
    """Diffusion-RWKV's ln1.weight and ln2.weight (C,) -> norm_weight (2, C), row i the (i+1)-th norm's."""
    a, b = torch.randn(5), torch.randn(5)
    stacked = Stacked((2, 5))
    table = stacked.to_ours([a, b])
    assert stacked.ours_shape([(5,), (5,)]) == (2, 5)
    assert torch.equal(table[0], a) and torch.equal(table[1], b)
    back = stacked.to_official(table, [(5,), (5,)])
    assert torch.equal(back[0], a) and torch.equal(back[1], b)
    grid = Stacked((2, 2, 3)).to_ours([torch.full((3,), float(i)) for i in range(4)])  # (sub-layer, vector, C)
    assert [grid[k, v, 0].item() for k in range(2) for v in range(2)] == [0.0, 1.0, 2.0, 3.0]


def test_offset_adds_in_fp32_and_goes_back_up_to_that_rounding():
    """DiMR's time-dependent weight is nodecay_weight + 1 in its forward: the same fp32 sum here."""
    official = torch.tensor([0.0, 0.25, -3e-8, 1e-9, -0.7])
    offset = Offset(1.0, Stacked((1, 5)))
    ours = offset.to_ours([official])
    assert ours.shape == (1, 5) and torch.equal(ours[0], official + 1)
    back = offset.to_official(ours, [(5,)])[0]
    assert torch.equal(back[[0, 1, 4]], official[[0, 1, 4]])  # exactly representable sums come back exactly
    assert (back - official).abs().max() <= 2.0**-24  # the others within half an ulp of 1
    half = Offset(1.0).to_ours([torch.tensor([1e-3], dtype=torch.float16)])
    assert half.dtype == torch.float32 and half.item() == torch.tensor(1e-3, dtype=torch.float16).float().item() + 1
