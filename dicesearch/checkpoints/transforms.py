"""How one official tensor (or a few) becomes one dicesearch tensor, and back.

Every transform but ``Offset`` is a pure rearrangement (reshape, permutation,
concatenation): no value is rounded, so import -> export -> import is bit-identical.

- ``SAME``: the tensor as it is.
- ``Reshaped(shape)``: the same values in another shape, e.g. DiT's ``pos_embed``
  (1, H*W, D) -> our (H, W, D) table, or RWKV's (1, 1, C) mixing weights -> (C,).
- ``Stacked(shape)``: several official tensors concatenated along dim 0 (then, given a
  shape, viewed as it), e.g. DiMR's GeGLU ``w0`` and ``w1`` -> our ``fc1``
  (``FeedForward`` chunks it into value, gate halves), or Diffusion-RWKV's ``ln1.weight``
  and ``ln2.weight`` (C,) -> one (2, C) ``norm_weight``.
- ``Offset(by, inner)``: ``inner``'s tensor plus a constant, e.g. DiMR's time-dependent
  weight, which the official forward uses as ``nodecay_weight + 1``. The sum is taken
  in fp32 (fp64 stays fp64), as the official forward takes it, so the imported model
  computes with the same value; the way back subtracts the constant again, which gives
  back the original only up to that rounding (an official value below 2^-24 in
  magnitude becomes 0), so an offset layout is not exported.
- ``ShuffledRows(ratio)``: a pixel-shuffle projection's output rows reordered from DiMR's
  (r1, r2, c) order to ``F.pixel_shuffle``'s (c, r1, r2).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

Shape = tuple[int, ...]

__all__ = ["SAME", "Offset", "Reshaped", "Shape", "ShuffledRows", "Stacked", "Transform"]


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
    """Official tensors concatenated along dim 0 (their other dims equal), viewed as ``shape`` if given.

    ``Stacked((2, C))`` of two (C,) tensors a, b is the (2, C) tensor with rows a, b.
    """

    shape: Shape | None = None

    def _joined(self, official: Sequence[Shape]) -> Shape:
        return (sum(shape[0] for shape in official), *official[0][1:])

    def ours_shape(self, official: Sequence[Shape]) -> Shape:
        return self.shape if self.shape is not None else self._joined(official)

    def to_ours(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        joined = torch.cat(list(tensors), dim=0)
        return joined.reshape(self.shape) if self.shape is not None else joined

    def to_official(self, tensor: torch.Tensor, official: Sequence[Shape]) -> tuple[torch.Tensor, ...]:
        joined = tensor.reshape(self._joined(official))
        return tuple(part.clone() for part in joined.split([shape[0] for shape in official], dim=0))


@dataclass(frozen=True)
class Offset(Transform):
    """``inner``'s tensor plus ``by`` (in at least fp32); back: minus ``by``, exact up to that rounding."""

    by: float
    inner: Transform = SAME

    def ours_shape(self, official: Sequence[Shape]) -> Shape:
        return self.inner.ours_shape(official)

    def to_ours(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        t = self.inner.to_ours(tensors)
        return t.to(torch.promote_types(t.dtype, torch.float32)) + self.by

    def to_official(self, tensor: torch.Tensor, official: Sequence[Shape]) -> tuple[torch.Tensor, ...]:
        return self.inner.to_official(tensor - self.by, official)


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
