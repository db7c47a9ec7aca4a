"""How one official tensor (or a few) becomes one dicesearch tensor, and back, exactly.

Each transform is a pure rearrangement (reshape, permutation, concatenation): no value is
rounded, so import -> export -> import is bit-identical.

- ``SAME``: the tensor as it is.
- ``Reshaped(shape)``: the same values in another shape, e.g. DiT's ``pos_embed``
  (1, H*W, D) -> our (H, W, D) table, or RWKV's (1, 1, C) mixing weights -> (C,).
- ``Stacked()``: several official tensors concatenated along dim 0, e.g. DiMR's GeGLU
  ``w0`` and ``w1`` -> our ``fc1`` (``FeedForward`` chunks it into value, gate halves).
- ``ShuffledRows(ratio)``: a pixel-shuffle projection's output rows reordered from DiMR's
  (r1, r2, c) order to ``F.pixel_shuffle``'s (c, r1, r2).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

Shape = tuple[int, ...]

__all__ = ["SAME", "Reshaped", "Shape", "ShuffledRows", "Stacked", "Transform"]


class Transform(ABC):
    """Official tensors (with the official shapes) <-> one dicesearch tensor."""

    @abstractmethod
    def ours_shape(self, official: Sequence[Shape]) -> Shape:
        """The dicesearch shape made from official tensors of these shapes."""

    @abstractmethod
    def to_ours(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Official tensors (already checked against their shapes) -> our tensor."""

    @abstractmethod
    def to_official(self, tensor: torch.Tensor, official: Sequence[Shape]) -> tuple[torch.Tensor, ...]:
        """Our tensor -> the official tensors, of the shapes ``official``."""


@dataclass(frozen=True)
class _Same(Transform):
    def ours_shape(self, official: Sequence[Shape]) -> Shape:
        return official[0]

    def to_ours(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return tensors[0]

    def to_official(self, tensor: torch.Tensor, official: Sequence[Shape]) -> tuple[torch.Tensor, ...]:
        return (tensor,)


SAME: Transform = _Same()


@dataclass(frozen=True)
class Reshaped(Transform):
    """The same values (same count, same order) in ``shape``."""

    shape: Shape

    def ours_shape(self, official: Sequence[Shape]) -> Shape:
        return self.shape

    def to_ours(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return tensors[0].reshape(self.shape)

    def to_official(self, tensor: torch.Tensor, official: Sequence[Shape]) -> tuple[torch.Tensor, ...]:
        return (tensor.reshape(official[0]),)


@dataclass(frozen=True)
class Stacked(Transform):
    """Official tensors concatenated along dim 0 (their other dims equal)."""

    def ours_shape(self, official: Sequence[Shape]) -> Shape:
        return (sum(shape[0] for shape in official), *official[0][1:])

    def to_ours(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(tensors), dim=0)

    def to_official(self, tensor: torch.Tensor, official: Sequence[Shape]) -> tuple[torch.Tensor, ...]:
        return tuple(tensor.split([shape[0] for shape in official], dim=0))


@dataclass(frozen=True)
class ShuffledRows(Transform):
    """Rows (dim 0) indexed (r1, r2, c) officially and (c, r1, r2) here, r1, r2 < ratio.

    Official row (r1 * ratio + r2) * C + c is our row c * ratio^2 + r1 * ratio + r2.
    """

    ratio: int

    def ours_shape(self, official: Sequence[Shape]) -> Shape:
        return official[0]

    def to_ours(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        t, r = tensors[0], self.ratio
        rest = t.shape[1:]
        return t.reshape(r, r, t.shape[0] // (r * r), *rest).movedim(2, 0).reshape(t.shape)

    def to_official(self, tensor: torch.Tensor, official: Sequence[Shape]) -> tuple[torch.Tensor, ...]:
        r, rest = self.ratio, tensor.shape[1:]
        return (tensor.reshape(tensor.shape[0] // (r * r), r, r, *rest).movedim(0, 2).reshape(tensor.shape),)
