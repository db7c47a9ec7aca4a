from __future__ import annotations

import torch

from dicesearch.data import DigitsSpec, load_dataset


def test_shapes_range_and_classes():
    dataset = load_dataset(DigitsSpec())
    assert (dataset.kind, dataset.channels, dataset.resolution, dataset.num_classes) == ("pixels", 1, 16, 10)
    assert len(dataset) == 1797
    x, y = dataset[5]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.ndim == 0
    assert dataset.images.min() == -1.0 and dataset.images.max() == 1.0
    assert set(dataset.labels.tolist()) == set(range(10))
    assert dataset.hflip is False


def test_resolution_8_is_the_raw_data_scaled_to_unit_range():
    from sklearn.datasets import load_digits

    dataset = load_dataset(DigitsSpec(resolution=8))
    raw = torch.from_numpy(load_digits().images).float()  # (N, 8, 8) in 0..16
    torch.testing.assert_close(dataset.images[:, 0], raw / 8 - 1)


def test_upsampled_images_keep_the_digit():
    small, large = load_dataset(DigitsSpec(resolution=8)), load_dataset(DigitsSpec(resolution=32))
    assert large[0][0].shape == (1, 32, 32)
    # Averaging 4x4 blocks of the (smooth) bilinear upsample gives back the 8x8 originals,
    # up to blur: strongly correlated pixel by pixel.
    pooled = torch.nn.functional.avg_pool2d(large.images, 4).flatten()  # (N * 64,)
    assert torch.corrcoef(torch.stack([pooled, small.images.flatten()]))[0, 1] > 0.95


def test_fingerprint_stable_and_resolution_sensitive():
    first, again = load_dataset(DigitsSpec()), load_dataset(DigitsSpec())
    assert first.fingerprint == again.fingerprint
    assert first.fingerprint.startswith("digits-16px-")
    assert load_dataset(DigitsSpec(resolution=32)).fingerprint != first.fingerprint


def test_the_digits_are_read_exactly_as_scikit_learn_loads_them():
    import numpy as np
    from sklearn.datasets import load_digits

    from dicesearch.data.datasets import read_digits

    images, targets = read_digits()  # without importing scikit-learn
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(targets, reference.target)
