"""The latent file: precomputed VAE latents, their labels and a little metadata.

One format, two containers, chosen by the file's suffix:

- ``.safetensors`` (what ``encode_folder`` writes by default): tensors ``latents`` and
  ``labels``; metadata in the safetensors header (a str -> str mapping).
- ``.npz`` (``numpy.savez``, read with ``allow_pickle=False``): arrays ``latents`` and
  ``labels``, and optionally ``metadata``, a 0-d unicode array holding a JSON object of
  str -> str.

``latents``: (N, C, h, w), float16 / bfloat16 (safetensors only) / float32, already
multiplied by the VAE's scaling factor, with h == w. ``labels``: (N,), any integer dtype,
values in [0, num_classes). Metadata keys written by ``encode_folder`` (all optional when
reading): ``format`` (``dicesearch-latents/1``), ``vae``, ``scaling_factor``,
``shift_factor``, ``posterior`` (``sample`` or ``mean``), ``seed``, ``source``,
``source_fingerprint``, ``image_resolution``, ``num_classes``, ``classes`` (JSON list).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dicesearch.errors import DataError, one_line
from dicesearch.files import give_ordinary_mode

__all__ = ["FORMAT", "SUFFIXES", "LatentFile", "check_latent_path", "read_latent_file", "write_latent_file"]

FORMAT = "dicesearch-latents/1"
SUFFIXES = (".safetensors", ".npz")
_FIX = "write it with `dicesearch encode` (see dicesearch.data.latentfile for the format)"


@dataclass(frozen=True)
class LatentFile:
    """The validated contents of a latent file."""

    latents: torch.Tensor  # (N, C, h, w) floating, scaled by the VAE's scaling factor
    labels: torch.Tensor  # (N,) int64, >= 0
    metadata: dict[str, str]

    @property
    def num_classes(self) -> int:
        """``metadata["num_classes"]`` if recorded, else the largest label + 1."""
        if "num_classes" in self.metadata:
            return int(self.metadata["num_classes"])
        return int(self.labels.max()) + 1


def check_latent_path(path: Path) -> None:
    """Raise ``DataError`` unless ``path`` has a latent-file suffix (cheap: call it before encoding)."""
    if path.suffix not in SUFFIXES:
        raise DataError(f"latent file {path}: unsupported suffix {path.suffix!r}; name it *.safetensors or *.npz")


def write_latent_file(path: str | os.PathLike, latents: torch.Tensor, labels: torch.Tensor, metadata: dict[str, str]) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename over ``path``."""
    path = Path(path)
    check_latent_path(path)
    meta = {"format": FORMAT, **{str(k): str(v) for k, v in metadata.items()}}
    latents = latents.detach().cpu().contiguous()  # (N, C, h, w)
    labels = labels.detach().cpu().to(torch.int64).contiguous()  # (N,)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({"latents": latents, "labels": labels}, str(tmp), metadata=meta)
        else:
            if latents.dtype == torch.bfloat16:
                raise DataError(f"latent file {path}: .npz cannot hold bfloat16; use float16/float32 or a .safetensors file")
            with open(tmp, "wb") as handle:
                np.savez(handle, latents=latents.numpy(), labels=labels.numpy(), metadata=np.array(json.dumps(meta)))
        give_ordinary_mode(tmp)  # not mkstemp's 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _read_arrays(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Raw tensors and metadata from either container; bad containers raise DataError."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(f"latent file {path}: not a readable safetensors file ({one_line(exc)}); {_FIX}") from None
        return tensors, metadata
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"latent file {path}: not a readable .npz archive ({one_line(exc)}); {_FIX}") from None
    metadata: dict[str, str] = {}
    if "metadata" in arrays:
        try:
            metadata = {str(k): str(v) for k, v in json.loads(str(arrays.pop("metadata"))).items()}
        except (ValueError, AttributeError):
            raise DataError(f"latent file {path}: `metadata` is not a JSON object; {_FIX}") from None
    tensors = {}
    for key, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise DataError(f"latent file {path}: array {key!r} has dtype {array.dtype}, not numeric; {_FIX}")
        tensors[key] = torch.from_numpy(np.ascontiguousarray(array))
    return tensors, metadata


def read_latent_file(path: str | os.PathLike) -> LatentFile:
    """Load and validate a latent file; every problem raises a one-line ``DataError``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"latent file {path}: no such file; check data.path or create it with `dicesearch encode`")
    check_latent_path(path)
    tensors, metadata = _read_arrays(path)
    missing = [key for key in ("latents", "labels") if key not in tensors]
    if missing:
        found = ", ".join(sorted(tensors)) or "nothing"
        raise DataError(f"latent file {path}: missing {' and '.join(map(repr, missing))} (found {found}); {_FIX}")
    latents, labels = tensors["latents"], tensors["labels"]
    if latents.ndim != 4 or latents.shape[-1] != latents.shape[-2]:
        raise DataError(f"latent file {path}: `latents` has shape {tuple(latents.shape)}; expected (N, C, h, h); {_FIX}")
    if not latents.is_floating_point():
        raise DataError(f"latent file {path}: `latents` has dtype {latents.dtype}; expected float16/bfloat16/float32; {_FIX}")
    if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise DataError(f"latent file {path}: `labels` has shape {tuple(labels.shape)} and dtype {labels.dtype}; expected (N,) integers; {_FIX}")
    if len(labels) != len(latents):
        raise DataError(f"latent file {path}: {len(latents)} latents but {len(labels)} labels; the counts must match; {_FIX}")
    if len(latents) == 0:
        raise DataError(f"latent file {path}: holds no latents; {_FIX}")
    labels = labels.to(torch.int64)
    file = LatentFile(latents=latents, labels=labels, metadata=metadata)
    try:
        num_classes = file.num_classes
    except ValueError:
        raise DataError(f"latent file {path}: metadata num_classes={metadata['num_classes']!r} is not an integer; {_FIX}") from None
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise DataError(f"latent file {path}: labels span [{int(labels.min())}, {int(labels.max())}], outside [0, {num_classes}); {_FIX}")
    if not bool(torch.isfinite(latents).all()):
        raise DataError(f"latent file {path}: `latents` contains NaN or inf; re-encode it with `dicesearch encode`")
    return file
