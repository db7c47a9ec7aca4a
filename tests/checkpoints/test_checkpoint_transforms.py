"""The rearrangements between official and dicesearch tensors, against naive references."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dicesearch.checkpoints.transforms import SAME, Reshaped, ShuffledRows, Stacked
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
