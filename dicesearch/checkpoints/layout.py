"""An official model's state-dict layout as data, and the strict checks on a file against it.

An :class:`OfficialLayout` lists, in the official state dict's order (the keys of one
stacked entry kept together), every official tensor with its shape and where it goes in
the preset's model: one :class:`Entry` per dicesearch tensor (made from one official
tensor, or several, by a :mod:`transform <dicesearch.checkpoints.transforms>`), or an
entry for an official tensor the spec has no place for, with the reason and the setting
that gives it one. Each model family builds its layout from a spec (``dit.py``,
``drwkv.py``, ``dimr.py``); ``notes`` say what an imported model still computes
differently from the official one (DiMR's class token).

The checks name one key and its expected shape in one line (``CheckpointError``):

- a file's unknown key, missing key or wrong shape;
- an official key this preset has no place for;
- a parameter of the preset's model that no official key fills, or of the wrong shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from dicesearch.checkpoints.transforms import SAME, Shape, Transform
from dicesearch.errors import CheckpointError

__all__ = ["Entry", "OfficialLayout", "absent", "entry", "format_shape"]


def format_shape(shape) -> str:
    """(1152, 4, 2, 2) as '(1152, 4, 2, 2)', a 1-d shape as '(384,)'."""
    return str(tuple(int(n) for n in shape))


@dataclass(frozen=True)
class Entry:
    """One dicesearch tensor and the official tensor(s) it is made from.

    ``ours`` is None for an official tensor the preset has no counterpart for; ``why``
    then says what the preset lacks.
    """

    ours: str | None
    official: tuple[tuple[str, Shape], ...]
    transform: Transform = SAME
    why: str = ""

    @property
    def official_shapes(self) -> tuple[Shape, ...]:
        return tuple(shape for _, shape in self.official)

    @property
    def ours_shape(self) -> Shape:
        return tuple(self.transform.ours_shape(self.official_shapes))


def entry(ours: str, official: str | tuple[tuple[str, Shape], ...], shape: Shape = (), transform: Transform = SAME) -> Entry:
    """``entry(ours, official_key, official_shape[, transform])``, or several official keys as ((key, shape), ...)."""
    keys = official if isinstance(official, tuple) else ((official, tuple(shape)),)
    return Entry(ours=ours, official=keys, transform=transform)


def absent(official: str, shape: Shape, why: str) -> Entry:
    """An official tensor the preset has no counterpart for."""
    return Entry(ours=None, official=((official, tuple(shape)),), why=why)


@dataclass(frozen=True)
class OfficialLayout:
    """Every tensor of one official model (``family``, from ``source``) for one spec."""

    family: str  # "DiT"
    source: str  # "facebookresearch/DiT models.py"
    preset: str  # the spec's name, for messages
    entries: tuple[Entry, ...]
    notes: tuple[str, ...] = ()  # what the imported model still computes differently, said on every import

    def official_shapes(self) -> dict[str, Shape]:
        """Official key -> shape, in the entries' order (the official state dict's, but within a stacked entry)."""
        return {key: shape for item in self.entries for key, shape in item.official}

    def ours_shapes(self) -> dict[str, Shape]:
        return {item.ours: item.ours_shape for item in self.entries if item.ours is not None}

    # -- checks ---------------------------------------------------------------------------

    def check_file(self, state: Mapping[str, torch.Tensor], where: str, hint: str = "") -> None:
        """Raise unless ``state`` has exactly the official keys, with their shapes, all floating point."""
        expected = self.official_shapes()
        suffix = f"; {hint}" if hint else ""
        unknown = [key for key in state if key not in expected]
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise CheckpointError(
                f"{where}: key '{unknown[0]}' {format_shape(state[unknown[0]].shape)}{more} is not in the official "
                f"{self.family} layout of preset {self.preset}{suffix or '; import it with the preset it was trained as'}"
            )
        missing = [key for key in expected if key not in state]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise CheckpointError(
                f"{where}: key '{missing[0]}'{more} is missing; preset {self.preset} expects it with shape "
                f"{format_shape(expected[missing[0]])}{suffix or '; give the complete state dict'}"
            )
        for key, shape in expected.items():
            if tuple(state[key].shape) != shape:
                raise CheckpointError(
                    f"{where}: key '{key}' has shape {format_shape(state[key].shape)}; preset {self.preset} expects "
                    f"{format_shape(shape)}{suffix or '; import it with the preset it was trained as'}"
                )
        for key, value in state.items():
            if not value.is_floating_point():
                raise CheckpointError(f"{where}: key '{key}' holds {value.dtype} values; a weight must be floating point")

    def check_supported(self, where: str) -> None:
        """Raise if an official tensor has no dicesearch counterpart in this preset."""
        for item in self.entries:
            if item.ours is None:
                key, shape = item.official[0]
                raise CheckpointError(
                    f"{where}: key '{key}' {format_shape(shape)} has no counterpart in preset {self.preset}: {item.why}"
                )

    def check_model(self, model_shapes: Mapping[str, Shape], where: str) -> None:
        """Raise unless the preset's model has exactly the tensors the entries make."""
        ours = self.ours_shapes()
        for item in self.entries:
            if item.ours is None:
                continue
            if item.ours not in model_shapes:
                key = item.official[0][0]
                raise CheckpointError(
                    f"{where}: preset {self.preset} has no parameter '{item.ours}' {format_shape(item.ours_shape)} "
                    f"for the official key '{key}'; the preset and the {self.family} layout disagree"
                )
            if tuple(model_shapes[item.ours]) != item.ours_shape:
                raise CheckpointError(
                    f"{where}: preset {self.preset}'s parameter '{item.ours}' has shape {format_shape(model_shapes[item.ours])}, "
                    f"the official key '{item.official[0][0]}' needs {format_shape(item.ours_shape)}"
                )
        for key, shape in model_shapes.items():
            if key not in ours:
                raise CheckpointError(
                    f"{where}: preset {self.preset}'s parameter '{key}' {format_shape(shape)} has no counterpart in the "
                    f"official {self.family} layout ({self.source})"
                )

    # -- conversion -----------------------------------------------------------------------

    def to_ours(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checked official state dict -> the preset's state dict."""
        return {
            item.ours: item.transform.to_ours([state[key] for key, _ in item.official])
            for item in self.entries
            if item.ours is not None
        }

    def to_official(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The preset's state dict (checked with ``check_model``) -> the official one, in its order."""
        out: dict[str, torch.Tensor] = {}
        for item in self.entries:
            parts = item.transform.to_official(state[item.ours], item.official_shapes)
            for (key, _), tensor in zip(item.official, parts):
                out[key] = tensor
        return {key: out[key] for key in self.official_shapes()}
