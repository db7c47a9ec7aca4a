"""The eager channels-last Inception (metrics.inception_eager) against the TorchScript file.

Stated tolerances: pool and spatial features relative 1e-5 of their largest value
(measured ~3e-6); FID and sFID relative 1e-5 (measured ~4e-7).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicesearch.metrics import extract_features, frechet_distance_to_samples, gaussian_stats
from dicesearch.metrics.inception import InceptionNetwork
from dicesearch.metrics.inception_eager import CPU_MICRO_BATCH, EagerInception, eager_inception

FEATURE_RTOL, SCORE_RTOL = 1e-5, 1e-5


def _images(n: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 16, 16, generator=g) * 2 - 1) * scale  # grayscale 16x16 digits-like


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def both_paths(inception_network):
    """Features of 6 real-like and 9 generated-like images, through both networks (TorchScript
    in batches of 2, a shape it has seen: it re-specialises slowly for every new one)."""
    real, fake = _images(6, seed=0), _images(9, seed=1, scale=0.5)
    return {
        fast: tuple(extract_features(x, inception_network, batch_size=9 if fast else 2, fast=fast, progress=False) for x in (real, fake))
        for fast in (False, True)
    }


def test_eager_network_is_built_once_and_used(inception_network):
    eager = eager_inception(inception_network)
    assert isinstance(eager, EagerInception)
    assert eager_inception(inception_network) is eager


def test_features_match_the_torchscript_network(both_paths):
    assert 9 > CPU_MICRO_BATCH  # the generated images ran in two micro-batches
    for eager, scripted in zip(both_paths[True], both_paths[False]):
        for kind in ("pool", "spatial"):
            assert _relative(getattr(eager, kind), getattr(scripted, kind)) < FEATURE_RTOL, kind


def test_scores_match_the_torchscript_network(both_paths):
    (real_e, fake_e), (real_s, fake_s) = both_paths[True], both_paths[False]
    for kind in ("pool", "spatial"):
        want = frechet_distance_to_samples(getattr(fake_s, kind), gaussian_stats(getattr(real_s, kind)))
        got = frechet_distance_to_samples(getattr(fake_e, kind), gaussian_stats(getattr(real_e, kind)))
        mixed = frechet_distance_to_samples(getattr(fake_e, kind), gaussian_stats(getattr(real_s, kind)))  # a cached reference
        assert want > 1.0
        assert abs(got - want) <= SCORE_RTOL * want and abs(mixed - want) <= SCORE_RTOL * want, kind


def test_a_network_of_another_layout_keeps_the_torchscript_path(inception_network):
    class Plain(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3)).repeat(1, 683)[:, :2048]

    other = InceptionNetwork(module=torch.jit.script(Plain()), path=inception_network.path, sha1="0" * 40, device=torch.device("cpu"))
    assert eager_inception(other) is None
    feats = extract_features(_images(2, seed=2), other, spatial=False, fast=True, progress=False)
    assert feats.pool.shape == (2, 2048)


def test_features_are_the_same_bits_at_every_thread_count(inception_network):
    """With k threads the micro-batches run on k workers of one intra-op thread each (the
    one-thread kernels), so a trial that takes an idle core scores exactly as on its own."""
    images = _images(3 * CPU_MICRO_BATCH + 3, seed=4)
    batch = CPU_MICRO_BATCH + 2  # raised for the workers at 2 and 3 threads (16, 24 images): other batches, other micro-batches
    before = torch.get_num_threads()
    try:
        feats = {}
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            feats[threads] = extract_features(images, inception_network, batch_size=batch, fast=True, progress=False)
            assert torch.get_num_threads() == threads  # given back as it was
    finally:
        torch.set_num_threads(before)
    for threads in (2, 3):
        assert np.array_equal(feats[threads].pool, feats[1].pool) and np.array_equal(feats[threads].spatial, feats[1].spatial)
