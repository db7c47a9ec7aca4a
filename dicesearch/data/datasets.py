"""Torch datasets for the three data kinds, and ``load_dataset(spec)``.

Every dataset yields ``(x, y)``: ``x`` float32 (C, H, W) -- pixels in [-1, 1], or latents
already times the VAE's scaling factor -- and ``y`` a 0-d int64 label in [0, num_classes).
Items are never flipped here: a dataset is a pure function of the index, and all training
randomness (order and horizontal flips) comes from ``fixed_batches``, which reads
``hflip`` to know whether flips are allowed.

``fingerprint`` names the data and its preprocessing (not the flips, which are training
augmentation); FID reference statistics are cached under it.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from dicesearch.data.crop import adm_center_crop, pil_to_tensor
from dicesearch.data.imagefile import open_rgb
from dicesearch.data.latentfile import read_latent_file
from dicesearch.data.sources import DataSpec, DigitsSpec, FolderSpec, LatentsSpec
from dicesearch.data.vae import VaeInfo, inspect_vae
from dicesearch.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "DiffusionDataset", "DigitsDataset", "FolderDataset", "LatentsDataset", "load_dataset"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class DiffusionDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """What every dicesearch dataset exposes besides ``__len__`` and ``__getitem__``."""

    kind: Literal["pixels", "latents"]
    num_classes: int
    channels: int
    resolution: int  # the model's input side: image side for pixels, latent side for latents
    hflip: bool  # whether fixed_batches may flip items horizontally

    @cached_property
    def fingerprint(self) -> str:
        """Stable identity of the data and its preprocessing, e.g. ``digits-16px-3f2a...``."""
        raise NotImplementedError


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits file inside the scikit-learn wheel, read without importing scikit-learn
    (1.5 s a process, paid by every sweep trial); ``load_digits`` if the file moved."""
    import importlib.util

    found = importlib.util.find_spec("sklearn")
    locations = list(found.submodule_search_locations or []) if found else []
    for location in locations:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")  # (N, 65): 64 pixels, then the label
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


class DigitsDataset(DiffusionDataset):
    """scikit-learn's 1797 handwritten digits (8x8, 17 grey levels), 1 channel, 10 classes.

    Resized once to ``resolution`` with antialiased bilinear interpolation (smooth strokes
    instead of nearest's 2x2 blocks; a convex filter, so values stay in [-1, 1]) and kept
    in memory. No flips: a mirrored digit is not the same digit.
    """

    kind = "pixels"
    channels = 1
    num_classes = 10
    hflip = False

    def __init__(self, spec: DigitsSpec = DigitsSpec()) -> None:
        images, targets = read_digits()  # (N, 8, 8) float64 in 0..16, (N,) int
        self.resolution = spec.resolution
        self._raw = (images.astype(np.uint8), targets.astype(np.int64))  # (N, 8, 8) in 0..16, (N,)
        x = torch.from_numpy(images).float()[:, None] / 8.0 - 1.0  # (N, 1, 8, 8) in [-1, 1]
        if self.resolution != x.shape[-1]:
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", align_corners=False, antialias=True)
        self.images = x.clamp(-1.0, 1.0).contiguous()  # (N, 1, R, R)
        self.labels = torch.from_numpy(targets).long()  # (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].clone(), self.labels[index].clone()  # (1, R, R), ()

    @cached_property
    def fingerprint(self) -> str:
        images, labels = self._raw
        data = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
        return f"digits-{self.resolution}px-{_digest('digits', self.resolution, 'bilinear-antialias', data)}"


def _scan_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Sorted class names and (image path, label) pairs; hidden files and folders skipped."""
    if not root.exists():
        raise DataError(f"image folder {root}: no such directory; point data.path at a folder with one subfolder per class")
    if not root.is_dir():
        raise DataError(f"image folder {root}: is a file, not a directory; point data.path at a folder with one subfolder per class")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {root}: no class subfolders; put the images in {root}/<class name>/, one subfolder per class")
    samples: list[tuple[Path, int]] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        found = []
        for folder, subfolders, files in os.walk(root / name, followlinks=True):
            subfolders[:] = [sub for sub in subfolders if not sub.startswith(".")]
            found += [Path(folder, file) for file in files if not file.startswith(".") and file.lower().endswith(IMAGE_SUFFIXES)]
        if not found:
            empty.append(name)
        samples += [(path, label) for path in sorted(found)]
    if not samples:
        kinds = "/".join(IMAGE_SUFFIXES)
        raise DataError(f"image folder {root}: no images ({kinds}) in its {len(classes)} class subfolders; add images to {root}/<class name>/")
    if empty:
        raise DataError(f"image folder {root}: class subfolder {empty[0]!r} has no images; add images to it or remove it")
    return classes, samples


class FolderDataset(DiffusionDataset):
    """An RGB image folder, ``root/<class>/**/<image>``, decoded lazily, ADM centre-cropped."""

    kind = "pixels"
    channels = 3

    def __init__(self, spec: FolderSpec) -> None:
        self.root = spec.path
        self.resolution = spec.resolution
        self.hflip = spec.hflip
        self.classes, self.samples = _scan_image_folder(self.root)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, label = self.samples[index]
        rgb = open_rgb(path)  # one-line DataError for a bad file (all were checked once up front: dicesearch.data.verify)
        x = pil_to_tensor(adm_center_crop(rgb, self.resolution))  # (3, R, R) in [-1, 1]
        return x, torch.tensor(label, dtype=torch.int64)

    @cached_property
    def fingerprint(self) -> str:
        """Class names, relative paths and file sizes (not contents: hashing a large folder
        is slow), plus the crop. An image edited in place at the same size goes unnoticed."""
        files = hashlib.sha256()
        for path, label in self.samples:
            files.update(f"{path.relative_to(self.root).as_posix()}\0{label}\0{path.stat().st_size}\n".encode())
        return f"folder-{self.resolution}px-{_digest('folder', self.resolution, 'adm-center-crop', self.classes, files.hexdigest())}"


class LatentsDataset(DiffusionDataset):
    """Precomputed latents held in memory (see ``latentfile`` for the file format)."""

    kind = "latents"

    def __init__(self, spec: LatentsSpec) -> None:
        file = read_latent_file(spec.path)
        self.path = spec.path
        self.latents = file.latents  # (N, C, h, h), stored dtype
        self.labels = file.labels  # (N,) int64
        self.metadata = file.metadata
        self.num_classes = file.num_classes
        self.channels = self.latents.shape[1]
        self.resolution = self.latents.shape[-1]
        self.hflip = spec.hflip
        self.vae: VaeInfo | None = None if spec.vae is None else inspect_vae(spec.vae)
        if self.vae is not None:
            self._check_vae(self.vae)

    def _check_vae(self, vae: VaeInfo) -> None:
        if vae.latent_channels != self.channels:
            raise DataError(
                f"vae {vae.path}: makes {vae.latent_channels}-channel latents but {self.path} holds {self.channels}; "
                "give data.vae the VAE the file was encoded with"
            )
        for key in ("scaling_factor", "shift_factor"):
            expected, recorded = getattr(vae, key), self.metadata.get(key)
            if recorded is None:
                continue
            try:
                matches = abs(float(recorded) - expected) <= 1e-6 * max(abs(expected), 1.0)
            except ValueError:
                raise DataError(f"latent file {self.path}: metadata {key}={recorded!r} is not a number; re-encode it with `dicesearch encode`") from None
            if not matches:
                raise DataError(
                    f"vae {vae.path}: {key} {expected} but {self.path} was encoded with {recorded}; "
                    "give data.vae the VAE the file was encoded with"
                )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latents[index].to(torch.float32, copy=True), self.labels[index].clone()  # (C, h, h), ()

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the latents and labels themselves (not of the file's metadata)."""
        data = hashlib.sha256(str((self.latents.dtype, tuple(self.latents.shape))).encode())
        data.update(self.latents.contiguous().view(-1).view(torch.uint8).numpy().data)
        data.update(self.labels.numpy().tobytes())
        return f"latents-{self.resolution}px-{_digest('latents', data.hexdigest())}"


_DATASETS = {"digits": DigitsDataset, "folder": FolderDataset, "latents": LatentsDataset}


def load_dataset(spec: DataSpec) -> DiffusionDataset:
    """Build the dataset a ``DataSpec`` describes; user problems raise one-line ``DataError``s."""
    return _DATASETS[spec.kind](spec)
