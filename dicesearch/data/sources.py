"""The `data:` section of a spec: which images a trial trains on, parsed once at the boundary.

Three kinds, told apart by the ``kind`` field (a missing ``kind`` means ``digits``, the
offline default):

- ``digits``: scikit-learn's 1797 handwritten 8x8 digits, resized to ``resolution``.
- ``folder``: an image folder with one subfolder per class, ADM centre-cropped (pixels).
- ``latents``: a latent file written by ``dicesearch.data.encode.encode_folder``.

The specs only describe; nothing here touches the disk. ``load_dataset`` checks paths.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, TypeAdapter, ValidationError, field_validator

from dicesearch.errors import DataError
from dicesearch.filemodel import FileModel

__all__ = ["DataSpec", "DigitsSpec", "FolderSpec", "LatentsSpec", "parse_data_spec"]


class _Spec(FileModel):
    """Finite numbers, no boolean for a number, unknown keys rejected."""


class _PathSpec(_Spec):
    @field_validator("path", "vae", check_fields=False)
    @classmethod
    def _expand_home(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()


class DigitsSpec(_Spec):
    """scikit-learn's handwritten digits: 1 channel, 10 classes, shipped with scikit-learn."""

    kind: Literal["digits"] = "digits"
    # Side of the square image the model sees; the 8x8 originals are resized bilinearly.
    resolution: int = Field(16, ge=8, le=128)


class FolderSpec(_PathSpec):
    """An RGB image folder, ``path/<class name>/**/<image>``; sorted class names give labels."""

    kind: Literal["folder"]
    # Root folder; each non-hidden subfolder is a class.
    path: Path
    # Side of the square crop (ADM centre crop: BOX halvings, BICUBIC resize, centre crop).
    resolution: int = Field(256, ge=8, le=4096)
    # Random horizontal flips at training time, drawn by `fixed_batches` from its seed.
    hflip: bool = True


class LatentsSpec(_PathSpec):
    """Precomputed VAE latents plus labels (``.safetensors`` or ``.npz``, see ``latentfile``)."""

    kind: Literal["latents"]
    # The latent file: `latents` (N, C, h, w) float, already times the VAE scaling factor,
    # and `labels` (N,) int.
    path: Path
    # Local diffusers AutoencoderKL folder (config.json + weights); needed only to decode
    # samples to pixels, e.g. for FID.
    vae: Path | None = None
    # Random horizontal flips of the latent's width axis, drawn by `fixed_batches`.
    hflip: bool = True


def _kind_of(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return value.get("kind", "digits")
    return getattr(value, "kind", None)


DataSpec = Annotated[
    Union[
        Annotated[DigitsSpec, Tag("digits")],
        Annotated[FolderSpec, Tag("folder")],
        Annotated[LatentsSpec, Tag("latents")],
    ],
    Discriminator(
        _kind_of,
        custom_error_type="unknown_data_kind",
        custom_error_message="kind must be one of 'digits', 'folder', 'latents'",
    ),
]
"""One of the data specs, chosen by ``kind`` (default ``digits``)."""

_KINDS = ("digits", "folder", "latents")
_ADAPTER: TypeAdapter[DataSpec] = TypeAdapter(DataSpec)


def parse_data_spec(raw: Mapping[str, Any] | DataSpec | None, where: str = "data") -> DataSpec:
    """Validate a ``data:`` mapping (e.g. from YAML); ``None`` gives the digits default.

    A bad field raises ``DataError`` naming its dotted path, e.g. ``data.resolution: ...``.
    """
    if raw is None:
        return DigitsSpec()
    if isinstance(raw, Mapping):
        kind = raw.get("kind", "digits")
        if kind not in _KINDS:
            close = difflib.get_close_matches(str(kind), _KINDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(f"{where}.kind: unknown data kind {kind!r}; {hint}use one of {', '.join(map(repr, _KINDS))}")
    elif not isinstance(raw, (DigitsSpec, FolderSpec, LatentsSpec)):
        raise DataError(f"{where}: expected a mapping with a `kind` field, got {type(raw).__name__}; fix the `{where}` section of the spec")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        # The first loc entry is the union tag ("folder"); the field path follows it.
        loc = [str(part) for part in first["loc"][1:]] if len(first["loc"]) > 1 else []
        field = ".".join([where, *loc])
        message = " ".join(str(first["msg"]).split())
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise DataError(f"{field}: {message}{more}; fix the `{where}` section of the spec") from None
