"""Metric names and the end-to-end path: dataset -> cached reference -> image_metrics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from dicesearch.errors import DataError
from dicesearch.metrics.evaluate import (
    count_suffix,
    image_metrics,
    image_scores,
    metric_names,
    reference_stats_from_dataset,
    subsample_indices,
)
from dicesearch.metrics.features import InceptionFeatures
from dicesearch.metrics.reference import ReferenceKey, ReferenceStats


@pytest.mark.parametrize(
    ("n", "suffix"), [(500, "500"), (5000, "5k"), (50000, "50k"), (1000, "1k"), (1500, "1500")]
)
def test_count_suffix(n, suffix):
    assert count_suffix(n) == suffix


def test_metric_names_carry_the_count():
    assert metric_names(500) == {
        "fid": "fid_500", "sfid": "sfid_500", "precision": "precision_500", "recall": "recall_500",
    }  # fmt: skip


def test_subsample_is_seeded_sorted_and_without_replacement():
    a, b = subsample_indices(100, 10, seed=42), subsample_indices(100, 10, seed=42)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 10 and (np.diff(a) > 0).all()
    assert not np.array_equal(a, subsample_indices(100, 10, seed=43))
    np.testing.assert_array_equal(subsample_indices(5, 5, seed=0), np.arange(5))
    with pytest.raises(DataError, match="asked for 6 reference images but the dataset has 5"):
        subsample_indices(5, 6, seed=0)


def _toy_dataset(size: int) -> list[tuple[torch.Tensor, int]]:
    """Smooth random colour fields, 32x32, with labels, like a map-style dataset."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(size, 3, 4, 4, generator=g) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear")
    return [(images[i], i % 3) for i in range(size)]


def test_end_to_end_identical_images_and_cache(inception_network, tmp_path):
    dataset = _toy_dataset(10)
    n = 4  # the smallest set precision/recall with k=3 accepts
    ref = reference_stats_from_dataset(
        dataset, n, "toy-fields", seed=0, network=inception_network, cache_dir=tmp_path
    )
    assert ref.n == n and ref.pool_features.shape == (n, 2048) and ref.spatial is not None
    # Same images as the reference subsample: the distributions are identical.
    chosen = torch.stack([dataset[i][0] for i in subsample_indices(10, n, seed=0)])
    scores = image_metrics(chosen, ref, n, network=inception_network)
    assert set(scores) == {"fid_4", "sfid_4", "precision_4", "recall_4"}
    assert scores["fid_4"] == pytest.approx(0.0, abs=1e-3)
    assert scores["sfid_4"] == pytest.approx(0.0, abs=1e-3)
    assert scores["precision_4"] == 1.0 and scores["recall_4"] == 1.0
    # The cache answers the second request without reading a single image.
    again = reference_stats_from_dataset(
        _Unreadable(10), n, "toy-fields", seed=0, network=inception_network, cache_dir=tmp_path
    )
    np.testing.assert_array_equal(again.pool.sigma, ref.pool.sigma)
    np.testing.assert_array_equal(again.pool_features, ref.pool_features)


class _Unreadable:
    """A dataset of the right size whose images must not be needed."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        raise AssertionError("the reference was recomputed instead of read from the cache")


def test_reference_network_mismatch_is_a_clear_error(inception_network):
    feats = InceptionFeatures(pool=np.random.default_rng(0).random((6, 2048)), spatial=None)
    key = ReferenceKey(dataset_id="x", n=6, network="sha1-other")
    ref = ReferenceStats.from_features(key, feats)
    with pytest.raises(DataError, match="computed with network sha1-other"):
        image_metrics(torch.zeros(6, 3, 8, 8), ref, 6, network=inception_network)
    ok = ReferenceStats.from_features(replace(key, network=inception_network.fingerprint), feats)
    with pytest.raises(DataError, match="at least 4 images"):
        image_metrics(torch.zeros(3, 3, 8, 8), ok, 3, network=inception_network)


def test_a_reference_asked_for_after_the_features_scores_the_same(inception_network, tmp_path, monkeypatch):
    """image_scores given a function for the reference extracts the generated images' features
    first and only then asks for the statistics (the first trials on a new machine wait less
    for a reference another process computes), and scores exactly as with the statistics."""
    import dicesearch.metrics.evaluate as evaluate

    dataset = _toy_dataset(10)
    ref = reference_stats_from_dataset(dataset, 4, "toy-fields", seed=0, network=inception_network, cache_dir=tmp_path)
    generated = torch.stack([dataset[i][0] for i in range(5, 10)]) * 0.8  # (5, 3, 32, 32), not the reference's images
    want = image_scores(generated, ref, 5, network=inception_network, seed=1, progress=False)

    events = []
    extract = evaluate.extract_features
    monkeypatch.setattr(evaluate, "extract_features", lambda *a, **k: events.append("features") or extract(*a, **k))

    def later():
        events.append("reference")
        return ref

    got = image_scores(generated, later, 5, network=inception_network, seed=1, progress=False)
    assert events == ["features", "reference"]
    assert got == want and "sfid_5" in got  # every score, the spatial one included, to the bit

    other = ReferenceStats.from_features(replace(ref.key, network="sha1-other"), InceptionFeatures(pool=ref.pool_features, spatial=None))
    with pytest.raises(DataError, match="computed with network sha1-other"):
        image_scores(generated, lambda: other, 5, network=inception_network, progress=False)
