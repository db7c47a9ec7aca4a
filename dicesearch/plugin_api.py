"""What a plugin author uses: the types a plugin registers and what its builder receives.

A block plugin provides a :class:`BlockType`: a name, a pydantic model of its parameters
(subclass :class:`BlockParams`), a builder ``build(params, ctx) -> nn.Module`` and,
optionally, a ``check(params, geometry)`` that rejects impossible configurations before
anything is built. The built module maps channels-last features::

    forward(x: (B, H, W, C), signal: ConditionSignal) -> (B, H, W, C)

and gets its conditioning through ``ctx.conditioning.modulator(...)``
(see :mod:`dicesearch.conditioning`). A block that mixes a token sequence may declare
``prefix_tokens=True``: it then also takes tokens that a conditioning method prepends to
its stage's sequence (DiMR's class token, see :class:`BlockType`). An operation whose cost the FLOP counter cannot
see (a custom kernel, a recurrence written as elementwise maths) is declared with
``with declared_cost(name, flops=...)`` (see :mod:`dicesearch.costs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from dicesearch.conditioning import ConditioningMethod
from dicesearch.costs import declared_cost
from dicesearch.filemodel import FileModel
from dicesearch.hookspecs import hookimpl

__all__ = [
    "BlockContext",
    "BlockParams",
    "BlockType",
    "ConditioningContext",
    "ConditioningParams",
    "ConditioningType",
    "StageGeometry",
    "declared_cost",
    "hookimpl",
]


class BlockParams(FileModel):
    """Base of every block's parameter model: frozen, unknown keys rejected, finite numbers
    only and no boolean where a number belongs (``dicesearch.filemodel.FileModel``).

    Do not declare a ``kind`` field: the registry adds it (the block's name). Every default
    must be a valid value of its field: the registry checks them when the plugin loads.
    """


class ConditioningParams(FileModel):
    """Base of every conditioning method's parameter model (``kind`` is added for you)."""


@dataclass(frozen=True)
class StageGeometry:
    """The feature map a stage's blocks work on."""

    channels: int
    height: int
    width: int

    @property
    def tokens(self) -> int:
        return self.height * self.width


@dataclass(frozen=True)
class BlockContext:
    """What a block builder is told besides its own parameters."""

    geometry: StageGeometry
    conditioning: ConditioningMethod
    index: int  # position of this block in its stage, 0-based
    depth: int  # number of blocks in the stage


@dataclass(frozen=True)
class BlockType:
    """A block a plugin contributes.

    name:   the ``kind`` users write in a spec (a Python identifier, e.g. ``"dice"``).
    params: the pydantic model of the block's parameters (subclass of ``BlockParams``).
    build:  ``build(params, ctx: BlockContext) -> nn.Module``.
    check:  optional ``check(params, geometry: StageGeometry) -> None`` that raises
            ``ValueError("field: what is wrong; how to fix it")`` for configurations the
            block cannot take (e.g. channels not divisible by heads).
    prefix_tokens: whether the built module also takes tokens ahead of the grid's::

                forward(x (B, H, W, C), signal, prefix (B, P, C)) -> (x (B, H, W, C), prefix (B, P, C))

            the P tokens joining its sequence before the H * W grid tokens (a class token:
            DiMR's transformer branch; see ``ConditioningMethod.stage_tokens``). Called
            with ``prefix`` only in a stage that has such tokens; without it, as usual.
            A spec that gives prefix tokens to a stage whose block does not declare this
            is refused when it is loaded.
    """

    name: str
    params: type[BlockParams]
    build: Callable[[BlockParams, BlockContext], nn.Module]
    description: str = ""
    check: Callable[[BlockParams, StageGeometry], None] | None = None
    prefix_tokens: bool = False


@dataclass(frozen=True)
class ConditioningContext:
    """What a conditioning builder is told about the model it conditions."""

    num_classes: int  # 0 for an unconditional model
    stage_channels: tuple[int, ...]


@dataclass(frozen=True)
class ConditioningType:
    """A conditioning method a plugin contributes.

    build: ``build(params, ctx: ConditioningContext) -> ConditioningMethod``.
    """

    name: str
    params: type[ConditioningParams]
    build: Callable[[ConditioningParams, ConditioningContext], ConditioningMethod]
    description: str = ""
