"""Quantisation, TF1 bilinear resize and TF scaling on known pixel values (no network)."""

from __future__ import annotations

import math

import pytest
import torch

from dicesearch.errors import DataError
from dicesearch.metrics.features import resize_bilinear_tf1, to_inception_input, to_uint8


def test_quantisation_matches_png_rounding():
    # (x + 1) * 127.5 rounded half up and clamped, as a saved PNG stores it.
    values = [-1.0, 1.0, 0.0, -1.0 + 1.0 / 127.5, 0.5, -0.5, 1.7, -3.0]
    expected = [0, 255, 128, 1, 191, 64, 255, 0]  # 0.5 -> 191.25 -> 191; -0.5 -> 63.75 -> 64
    x = torch.tensor(values).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    out = to_uint8(x)
    assert out.dtype == torch.uint8
    assert out[0, 0, 0].tolist() == expected


def test_grayscale_is_replicated_and_uint8_passes_through():
    gray = torch.linspace(-1, 1, 12).view(1, 1, 3, 4)
    rgb = to_uint8(gray)
    assert rgb.shape == (1, 3, 3, 4)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])
    pixels = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    assert torch.equal(to_uint8(pixels), pixels)


def test_tf_range_scaling_on_known_pixels():
    pixels = torch.tensor([0, 128, 255, 64], dtype=torch.uint8).repeat_interleave(299 * 299 // 4 + 1)
    pixels = pixels[: 299 * 299].view(1, 1, 299, 299).expand(1, 3, 299, 299)
    x = to_inception_input(pixels)  # 299x299: no resize, scaling only
    assert x.dtype == torch.float32 and x.shape == (1, 3, 299, 299)
    assert x.flatten()[0].item() == -1.0
    assert sorted(set(x.flatten().tolist())) == [-1.0, -0.5, 0.0, 0.9921875]


def _naive_tf1_resize(img: list[list[float]], out_h: int, out_w: int) -> list[list[float]]:
    """TF1 ResizeBilinear (align_corners=False, no half-pixel centres), pixel by pixel."""
    in_h, in_w = len(img), len(img[0])
    out = []
    for i in range(out_h):
        y = i * in_h / out_h
        y0 = min(math.floor(y), in_h - 1)
        y1, fy = min(y0 + 1, in_h - 1), y - y0
        row = []
        for j in range(out_w):
            x = j * in_w / out_w
            x0 = min(math.floor(x), in_w - 1)
            x1, fx = min(x0 + 1, in_w - 1), x - x0
            top = img[y0][x0] + (img[y0][x1] - img[y0][x0]) * fx
            bottom = img[y1][x0] + (img[y1][x1] - img[y1][x0]) * fx
            row.append(top + (bottom - top) * fy)
        out.append(row)
    return out


@pytest.mark.parametrize(("in_hw", "out_hw"), [((5, 7), (3, 4)), ((4, 6), (9, 13)), ((8, 8), (299, 299))])
def test_resize_matches_pixelwise_tf1_bilinear(in_hw, out_hw):
    img = torch.randint(0, 256, (1, 1, *in_hw)).float()
    expected = torch.tensor(_naive_tf1_resize(img[0, 0].tolist(), *out_hw))
    ours = resize_bilinear_tf1(img, out_hw)[0, 0]
    torch.testing.assert_close(ours, expected, atol=1e-3, rtol=0)


def test_resize_keeps_constants_and_299_inputs():
    const = torch.full((2, 3, 64, 48), 77.0)
    torch.testing.assert_close(resize_bilinear_tf1(const, (299, 299)), torch.full((2, 3, 299, 299), 77.0))
    same = torch.rand(1, 3, 299, 299)
    assert torch.equal(resize_bilinear_tf1(same, (299, 299)), same)


def test_bad_images_raise_one_line_errors():
    with pytest.raises(DataError, match="C = 1 or 3"):
        to_uint8(torch.zeros(2, 4, 8, 8))
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        to_uint8(torch.zeros(3, 8, 8))
    with pytest.raises(DataError, match="NaN"):
        to_uint8(torch.tensor([float("nan")]).view(1, 1, 1, 1))
    with pytest.raises(DataError, match="dtype"):
        to_uint8(torch.zeros(1, 3, 2, 2, dtype=torch.int64))
