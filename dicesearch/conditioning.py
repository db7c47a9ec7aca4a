"""How the timestep and class label reach the blocks.

A conditioning method (a plugin, e.g. adaLN-Zero or TD-LN) is built once per model. Per
forward pass it turns the timestep ``t`` and label ``y`` into a :class:`ConditionSignal`.
Each block asks it, at build time, for a :class:`Modulator` covering the block's
normalised sub-layers; at run time the block writes its residual branches as::

    mod = self.modulator(signal)                       # one Modulation per call
    x = x + mod.gate(0, self.mixer(mod.norm(0, x)))    # sub-layer 0
    x = x + mod.gate(1, self.mlp(mod.norm(1, x)))      # sub-layer 1

``norm(i, x)`` is the i-th conditioned normalisation and ``gate(i, h)`` the i-th residual
gate (identity for methods without gates). Blocks never see ``t`` or ``y`` themselves.

A method whose norm is a plain LayerNorm followed by a per-sample affine may also say so
(``layer_norm_affine(i)``, a :class:`NormAffine`), so that a block can fuse the norm into
its own kernel (the DICE block: ``dicesearch.ops.merge_norm``); ``norm`` stays the
definition and the fused kernel must equal it to float rounding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ConditionSignal:
    """What one forward pass knows about its conditioning.

    t: (B,) float diffusion timesteps (0 = clean, num_train_timesteps - 1 = pure noise).
    y: (B,) int64 class labels, or None for an unconditional model; the index
       ``num_classes`` is the "null" label used by classifier-free guidance.
    embedding: (B, E) a conditioning vector, for methods that make one (adaLN-Zero), else None.
    """

    t: torch.Tensor
    y: torch.Tensor | None
    embedding: torch.Tensor | None = None


@dataclass(frozen=True)
class NormAffine:
    """A conditioned norm written as LN(x) * multiplier + offset.

    LN without an affine of its own, over the last dimension, with epsilon ``eps``;
    multiplier and offset (B, C) or (1, C), one row per sample.
    """

    multiplier: torch.Tensor
    offset: torch.Tensor
    eps: float


class Modulation(ABC):
    """The conditioned norms and gates of one block for one forward pass."""

    @abstractmethod
    def norm(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (B, ..., C) over C and apply sub-layer ``index``'s conditioning."""

    @abstractmethod
    def gate(self, index: int, h: torch.Tensor) -> torch.Tensor:
        """Scale the residual branch ``h`` (B, ..., C) of sub-layer ``index``."""

    def layer_norm_affine(self, index: int) -> NormAffine | None:
        """``norm(index, x)`` as a :class:`NormAffine` where it is one, for blocks that fuse it; else None."""
        return None


class Modulator(nn.Module, ABC):
    """Owns a block's conditioning parameters; produces a :class:`Modulation` per call."""

    @abstractmethod
    def forward(self, signal: ConditionSignal) -> Modulation: ...


class ConditioningMethod(nn.Module, ABC):
    """A model-wide conditioning method (built by a ``ConditioningType`` plugin)."""

    @abstractmethod
    def forward(self, t: torch.Tensor, y: torch.Tensor | None) -> ConditionSignal:
        """Embed timesteps ``t`` (B,) and labels ``y`` (B,) once per forward pass."""

    @abstractmethod
    def modulator(self, dim: int, sublayers: int, gated: bool = True) -> Modulator:
        """A new modulator for a block of width ``dim`` with ``sublayers`` conditioned norms.

        ``gated=False`` asks for norms only (what :meth:`feature_norm` does by default),
        where the method has gates at all.
        """

    def feature_norm(self, dim: int) -> Modulator:
        """A conditioned norm (no gate) for the composer's own layers of width ``dim``.

        Stage heads (``head_norm: conditioned``) and cascade connectors
        (``connector_norm: conditioned``) use ``feature_norm(dim)(signal).norm(0, x)``.
        By default this is ``modulator(dim, sublayers=1, gated=False)``; a method whose
        block norms differ from the norms it puts elsewhere overrides it (TD-LN: DiMR's
        blocks may use RMSNorm, its heads and upsampler always LayerNorm).
        """
        return self.modulator(dim, sublayers=1, gated=False)

    def stage_input(self, dim: int, index: int) -> nn.Module | None:
        """Optional module ``(x (B, H, W, dim), signal) -> x`` applied to stage ``index``'s input.

        Methods whose blocks do not see the class label use this to inject it (TD-LN).
        ``index`` counts stages from the coarsest (0), so a method can serve some only.
        """
        return None

    def stage_tokens(self, dim: int, index: int) -> nn.Module | None:
        """Optional module ``signal -> (B, P, dim)``: tokens prepended to stage ``index``'s sequence.

        The tokens run through the stage's blocks (and long skips) ahead of the grid's
        H * W tokens and are dropped before the head and the features a feature cascade
        passes on: DiMR's class token (TD-LN ``label_input: token``). Only blocks whose
        ``BlockType`` declares ``prefix_tokens`` take them; a spec that gives them to
        another stage is refused at load.
        """
        return None


def per_sample(vector: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a per-sample vector (B, C) so it broadcasts over ``like`` (B, ..., C)."""
    if vector.shape[0] == 1 or vector.dim() == 1:
        return vector.reshape(*([1] * (like.dim() - 1)), vector.shape[-1])
    return vector.reshape(vector.shape[0], *([1] * (like.dim() - 2)), vector.shape[-1])
