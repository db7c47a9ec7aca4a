"""Image-quality metrics of generated images against cached real-image statistics.

Metric names carry the number of generated images: ``fid_500``, ``sfid_5k``,
``precision_50k``, ``recall_50k``. FID and sFID are biased estimators whose bias shrinks
roughly like 1/N, and precision/recall also move with N, so only values with the same
suffix (and the same reference statistics) are comparable. The DICE paper (Sec. 4)
evaluates 500 samples drawn with a fixed seed; its numbers are ``*_500`` here.

- FID: Heusel et al. 2017, Fréchet distance of Inception pool features (2048-d).
- sFID: Nash et al. 2021, Fréchet distance of the first 7 channels of mixed_6/conv
  (7 x 17 x 17 = 2023-d), the layer ADM's evaluator uses.
- precision/recall: Kynkäänniemi et al. 2019, k = 3 nearest-neighbour manifolds of the
  pool features.
- KID: Bińkowski et al. 2018, unbiased MMD² of the pool features (``metrics.kernel``).
- IS: Salimans et al. 2016, from a user-given classifier (``metrics.inception_score``).

:func:`image_scores` adds each score's uncertainty: ``<name>_sd`` (and for FID the
bootstrap interval ``fid_N_lo`` .. ``fid_N_hi``, ``metrics.bootstrap``), ``kid_N`` with
``kid_N_sd`` over subsets, and ``is_N`` / ``is_N_sd`` when a classifier is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dicesearch.errors import DataError
from dicesearch.metrics.bootstrap import fid_bootstrap
from dicesearch.metrics.features import Images, InceptionFeatures, extract_features
from dicesearch.metrics.frechet import frechet_distance_to_samples
from dicesearch.metrics.inception_score import inception_score
from dicesearch.metrics.kernel import kernel_inception_distance
from dicesearch.metrics.inception import InceptionNetwork, load_inception
from dicesearch.metrics.precision_recall import DEFAULT_K, precision_recall
from dicesearch.metrics.reference import ReferenceKey, ReferenceStats, cached_reference_stats

MIN_IMAGES = max(2, DEFAULT_K + 1)  # the fewest images every score (covariances, k-NN radii) can be computed from


def count_suffix(n: int) -> str:
    """500 -> "500", 5000 -> "5k", 50000 -> "50k", 1500 -> "1500"."""
    if n < 1:
        raise DataError(f"a sample count must be >= 1, got {n}")
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def metric_names(n: int) -> dict[str, str]:
    """Plain metric -> name carrying the count, e.g. {"fid": "fid_500", ...}."""
    suffix = count_suffix(n)
    return {m: f"{m}_{suffix}" for m in ("fid", "sfid", "precision", "recall")}


def score_names(n: int) -> dict[str, str]:
    """``metric_names`` plus the scores :func:`image_scores` adds: {"kid": "kid_500", "is": "is_500", ...}."""
    suffix = count_suffix(n)
    return {**metric_names(n), "kid": f"kid_{suffix}", "is": f"is_{suffix}"}


def image_metrics(
    generated: Images,
    reference: ReferenceStats,
    n: int,
    *,
    network: InceptionNetwork | None = None,
    k: int = DEFAULT_K,
    batch_size: int = 50,
    progress: bool | None = None,
    fast: bool = True,
) -> dict[str, float]:
    """FID, sFID, precision and recall of the first ``n`` generated images.

    generated: a (N, C, H, W) tensor or an iterable of batches, float in [-1, 1] (or
        uint8), C in {1, 3}; exactly the first ``n`` images are used.
    reference: statistics of real images under the same network
        (``reference_stats_from_dataset``).
    Returns {"fid_<n>", "sfid_<n>", "precision_<n>", "recall_<n>"} as floats; sFID is
    left out when the reference has no spatial statistics. ``fast``: the eager Inception
    (``extract_features``).
    """
    feats, reference = _features(generated, reference, n, network, k, batch_size, progress, fast=fast)
    with blas_threads_like_torch():
        return _point_scores(feats, reference, n, k)


def image_scores(
    generated: Images,
    reference: ReferenceStats | Callable[[], ReferenceStats],
    n: int,
    *,
    network: InceptionNetwork | None = None,
    classifier: torch.jit.ScriptModule | None = None,
    k: int = DEFAULT_K,
    batch_size: int = 50,
    seed: int = 0,
    progress: bool | None = None,
    fast: bool = True,
) -> dict[str, float]:
    """:func:`image_metrics` with each score's uncertainty, KID and (with a classifier) IS.

    Adds ``fid_<n>_sd``, ``fid_<n>_lo`` and ``fid_<n>_hi`` (percentile bootstrap over the
    generated images, 95 %), ``kid_<n>`` and ``kid_<n>_sd`` (over subsets), and with
    ``classifier`` ``is_<n>`` and ``is_<n>_sd`` (over 10 splits). ``seed`` seeds the
    resamples and subsets, so the same images always give the same numbers. ``fast``: the
    eager Inception (``extract_features``). ``reference`` may be a function that returns the
    statistics: it is called once the generated images' features are extracted, so that a
    reference another process is still computing (``metrics.reference``: the first trials of
    a sweep on a new machine) has those seconds to finish before this process waits for it.
    """
    feats, reference = _features(generated, reference, n, network, k, batch_size, progress, classifier, fast)
    with blas_threads_like_torch():
        return _scores_with_uncertainty(feats, reference, n, k, seed)


def _scores_with_uncertainty(feats: InceptionFeatures, reference: ReferenceStats, n: int, k: int, seed: int) -> dict[str, float]:
    names = score_names(n)
    out = _point_scores(feats, reference, n, k)
    interval = fid_bootstrap(feats.pool, reference.pool, seed=seed)
    fid = names["fid"]
    out.update({f"{fid}_sd": interval.std, f"{fid}_lo": interval.lo, f"{fid}_hi": interval.hi})
    kid = kernel_inception_distance(feats.pool, reference.pool_features, seed=seed)
    out.update({names["kid"]: kid.value, f"{names['kid']}_sd": kid.std})
    if feats.logits is not None:
        score = inception_score(feats.logits, splits=min(10, n))
        out.update({names["is"]: score.value, f"{names['is']}_sd": score.std})
    return out


def blas_threads_like_torch():
    """NumPy's BLAS with as many threads as torch (a context manager).

    The scores' linear algebra (eigendecompositions, Gram matrices, the bootstrap's 200
    resamples) runs in NumPy's OpenBLAS, which starts one thread per core whatever torch
    was told. In a trial process set to one thread on a shared 2-core machine its two
    threads wait for each other: the bootstrap took 3.3 s instead of 0.3 s. Same numbers.
    """
    return threadpool_limits(limits=torch.get_num_threads(), user_api="blas")


def _features(generated, reference, n, network, k, batch_size, progress, classifier=None, fast=True) -> tuple[InceptionFeatures, ReferenceStats]:
    """The generated images' features and the reference statistics. ``reference`` given as a
    function is called after the extraction (the network's spatial features then decide sFID,
    as they decided the reference's own)."""
    if n < max(2, k + 1):
        raise DataError(f"image metrics need at least {max(2, k + 1)} images, got n={n}")
    net = network if network is not None else load_inception()
    later = callable(reference)
    if not later:
        _check_network(reference, net)
    spatial = net.has_spatial if later else reference.spatial is not None
    feats = extract_features(generated, net, n=n, spatial=spatial, batch_size=batch_size, progress=progress, classifier=classifier, fast=fast)
    if later:
        reference = reference()
        _check_network(reference, net)
    return feats, reference


def _check_network(reference: ReferenceStats, net: InceptionNetwork) -> None:
    if reference.key.network != net.fingerprint:
        raise DataError(
            f"reference statistics were computed with network {reference.key.network}, "
            f"not {net.fingerprint} ({net.path}); recompute them with this network"
        )


def _point_scores(feats: InceptionFeatures, reference: ReferenceStats, n: int, k: int) -> dict[str, float]:
    names = metric_names(n)
    out = {names["fid"]: frechet_distance_to_samples(feats.pool, reference.pool)}
    if reference.spatial is not None and feats.spatial is not None:
        out[names["sfid"]] = frechet_distance_to_samples(feats.spatial, reference.spatial)
    precision, recall = precision_recall(reference.pool_features, feats.pool, k=k)
    out[names["precision"]] = precision
    out[names["recall"]] = recall
    return out


def _image_of(item: Any) -> torch.Tensor:
    image = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise DataError(
            "a reference dataset item must be a (C, H, W) tensor or a tuple starting with "
            f"one, got {type(image).__name__}"
            + (f" of shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else "")
        )
    return image


def subsample_indices(source_size: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices (n,) of a seeded subsample without replacement; all if n == size."""
    if n > source_size:
        raise DataError(f"asked for {n} reference images but the dataset has {source_size}")
    if n == source_size:
        return np.arange(source_size)
    return np.sort(np.random.default_rng(seed).choice(source_size, size=n, replace=False))


def _dataset_batches(dataset: Sequence, indices: np.ndarray, batch_size: int) -> Iterator:
    for start in range(0, len(indices), batch_size):
        images = [_image_of(dataset[int(i)]) for i in indices[start : start + batch_size]]
        try:
            yield torch.stack(images)  # (B, C, H, W)
        except RuntimeError as exc:
            raise DataError(
                "reference images must share one shape to be batched: "
                + str(exc).splitlines()[0]
            ) from exc


def reference_stats_from_dataset(
    dataset: Sequence,
    n: int,
    dataset_id: str,
    *,
    seed: int = 0,
    network: InceptionNetwork | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 50,
    progress: bool | None = None,
    fast: bool = True,
) -> ReferenceStats:
    """Reference statistics of a seeded subsample of ``n`` images of ``dataset``, cached.

    dataset: map-style (``len`` and integer indexing), each item a (C, H, W) image tensor
        in [-1, 1] (or uint8) or a tuple whose first element is one (e.g. (image, label)).
    dataset_id: a stable name for the data (it names the cache file together with n,
        seed, the dataset size and the network fingerprint).
    fast: extract with the eager Inception (``extract_features``); not part of the cache
        key, as both paths give the same statistics to a few 1e-6 relative (``tests/metrics``).
    """
    net = network if network is not None else load_inception()
    size = len(dataset)
    key = ReferenceKey(dataset_id=dataset_id, n=n, network=net.fingerprint, seed=seed,
                       source_size=size)  # fmt: skip
    indices = subsample_indices(size, n, seed)  # (n,)

    def compute():
        batches = _dataset_batches(dataset, indices, batch_size)
        return extract_features(
            batches, net, n=n, spatial=net.has_spatial, batch_size=batch_size, progress=progress, fast=fast
        )

    with blas_threads_like_torch():  # the statistics' covariance products
        return cached_reference_stats(key, compute, cache_dir)
