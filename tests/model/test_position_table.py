"""The fixed sin-cos position table is DiT's, so a fresh DiT preset starts where DiT's model does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicesearch.layers import sincos_position_embedding
from dicesearch.model import build_model
from dicesearch.spec import parse_spec


def dit_table(grid: int, dim: int) -> np.ndarray:
    """DiT / MAE's 2-D table from its formula, one token at a time, float64.

    The patch in row i, column j gets [sin(j w), cos(j w), sin(i w), cos(i w)] with
    w_k = 10000^(-k / (dim / 4)), k < dim / 4: the column in the first half of the
    channels, the row in the second (DiT's grid is meshgrid(w, h)).
    """
    quarter = dim // 4
    omega = np.array([10000.0 ** (-k / quarter) for k in range(quarter)])
    table = np.empty((grid, grid, dim))
    for i in range(grid):
        for j in range(grid):
            table[i, j] = np.concatenate([np.sin(j * omega), np.cos(j * omega), np.sin(i * omega), np.cos(i * omega)])
    return table


@pytest.mark.parametrize(("grid", "dim"), [(16, 384), (16, 1152), (4, 8)])
def test_the_table_is_dits(grid, dim):
    ours = sincos_position_embedding(grid, grid, dim)
    assert ours.dtype == torch.float32 and ours.shape == (grid, grid, dim)
    np.testing.assert_allclose(ours.numpy(), dit_table(grid, dim).astype(np.float32), rtol=0, atol=1e-7)


def test_columns_fill_the_first_half_and_rows_the_second():
    table = sincos_position_embedding(3, 5, 8)  # height 3, width 5
    assert torch.equal(table[0, :, :4], table[2, :, :4]) and not torch.equal(table[:, 0, :4], table[:, 4, :4])
    assert torch.equal(table[:, 0, 4:], table[:, 4, 4:]) and not torch.equal(table[0, :, 4:], table[2, :, 4:])


def test_a_fresh_dit_model_carries_the_table(registry):
    spec = parse_spec(
        {
            "name": "tiny-dit",
            "input": {"channels": 4, "resolution": 16, "num_classes": 4},
            "stages": [{"patch_size": 2, "channels": 32, "depth": 1, "position_embedding": "sincos", "head": "linear",
                        "block": {"kind": "attention", "heads": 2}}],
        },
        "tiny-dit.yaml",
        registry,
    )  # fmt: skip
    position = build_model(spec).stages[0].position
    assert not position.requires_grad  # frozen, as DiT keeps it
    np.testing.assert_allclose(position.detach().numpy(), dit_table(8, 32).astype(np.float32), rtol=0, atol=1e-7)
