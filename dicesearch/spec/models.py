"""The model spec: a frozen, validated description of a denoiser.

A spec has an input (channels, resolution, classes, learned sigma), one conditioning
method, a list of stages processed from the lowest resolution to the highest, and how the
stages connect (the cascade). Block and conditioning parameters are validated by each
plugin's own pydantic model: the ``block`` and ``conditioning`` fields are discriminated
unions on ``kind``, built by :func:`build_spec_types` once the plugins are loaded.

Cascades (stages run in order, lowest resolution first):

* ``noise`` (DICE Sec. 3.1): every stage predicts noise directly; the previous stage's
  prediction is upsampled to the input resolution and subtracted from ``x_t`` before the
  next stage patchifies it.
* ``features`` (DiMR Eq. 1-2): the previous stage's features (its last block's output, or
  the concatenation of its input and every block output as in DiMR's official code) are
  projected, pixel-shuffled to the next stage's grid and added to its patchified input.

Either way every stage ends in a head that predicts noise, so DiMR's multi-scale loss
(Eq. 8) can weight all predictions: ``loss_weights: auto`` gives alpha_r = 1/k_r^2 where
k_r is how much coarser stage r's prediction is than the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    create_model,
    model_validator,
)

from dicesearch.errors import SpecFieldError
from dicesearch.filemodel import FileModel
from dicesearch.plugin_api import StageGeometry

if TYPE_CHECKING:
    from dicesearch.registry import Registry


class Frozen(FileModel):
    """Frozen, unknown keys rejected, finite numbers, no boolean for a number (see ``dicesearch.filemodel``)."""


class InputSpec(Frozen):
    """What the denoiser receives and predicts."""

    channels: PositiveInt = Field(4, description="Channels of x_t (4 for SD-VAE latents, 3 for RGB).")
    resolution: PositiveInt = Field(32, description="Side of the square input (latent side for latent models).")
    num_classes: NonNegativeInt = Field(1000, description="Number of classes; 0 for an unconditional model.")
    learn_sigma: bool = Field(False, description="Also predict the variance interpolation v (doubles output channels).")


class CascadeSpec(Frozen):
    """How the stages of a multi-stage model connect (ignored for one stage)."""

    kind: Literal["noise", "features"] = Field(
        "noise", description="noise: DICE noise cascade; features: DiMR feature cascade."
    )
    features_from: Literal["last_block", "all_blocks"] = Field(
        "last_block",
        description="Feature cascade: pass the last block's output (DiMR Eq. 1) or the concatenation "
        "of the stage input and every block output (DiMR's official code).",
    )
    connector_norm: Literal["plain", "conditioned"] = Field(
        "plain",
        description="Feature cascade: the connector's two LayerNorms are plain, or the conditioning method's "
        "feature norms (DiMR's code: time-dependent).",
    )
    upsample: Literal["bilinear", "nearest"] = Field(
        "bilinear", description="Noise cascade: how a coarse noise prediction is upsampled."
    )
    loss_weights: Literal["auto"] | tuple[NonNegativeFloat, ...] = Field(
        "auto", description="Multi-scale loss weight per stage (DiMR Eq. 8); auto = 1/k^2."
    )


class InitSpec(Frozen):
    """Initialisation of linear, convolution and embedding weights (biases start at zero)."""

    scheme: Literal["normal", "trunc_normal", "xavier_uniform"] = Field(
        "normal", description="normal/trunc_normal use std (DICE, DiMR); xavier_uniform as DiT."
    )
    std: PositiveFloat = Field(0.02, description="Standard deviation of the normal schemes and of embeddings.")
    zero_head: bool = Field(False, description="Zero the output projection of every stage head (DiT).")


class StageSpecBase(Frozen):
    """Methods shared by the generated StageSpec class."""


class ModelSpecBase(Frozen):
    """Methods shared by the generated ModelSpec class (its fields come from plugins)."""

    def grid(self, index: int) -> int:
        """Side of stage ``index``'s feature map."""
        return self.input.resolution // self.stages[index].patch_size

    def geometry(self, index: int) -> StageGeometry:
        side = self.grid(index)
        return StageGeometry(channels=self.stages[index].channels, height=side, width=side)

    def prediction_side(self, index: int) -> int:
        """Side of stage ``index``'s noise prediction."""
        stage = self.stages[index]
        return self.input.resolution if stage.head == "linear" else self.grid(index)

    @property
    def output_channels(self) -> int:
        return self.input.channels * (2 if self.input.learn_sigma else 1)

    def resolved_loss_weights(self) -> tuple[float, ...]:
        if self.cascade.loss_weights != "auto":
            return tuple(self.cascade.loss_weights)
        return tuple(
            (self.prediction_side(i) / self.input.resolution) ** 2 for i in range(len(self.stages))
        )


def _check_model(spec: ModelSpecBase, registry: Registry) -> ModelSpecBase:
    """Geometry and block checks that need the whole spec."""
    res = spec.input.resolution
    for i, stage in enumerate(spec.stages):
        if res % stage.patch_size:
            divisors = [d for d in range(1, res + 1) if res % d == 0]
            raise SpecFieldError(
                ("stages", i, "patch_size"),
                f"{stage.patch_size} does not divide input.resolution {res}; use one of "
                f"{', '.join(map(str, divisors))}",
            )
        if stage.position_embedding == "sincos" and stage.channels % 4:
            raise SpecFieldError(
                ("stages", i, "channels"),
                f"sincos position embedding needs channels divisible by 4, got {stage.channels}",
            )
        check = registry.block(stage.block.kind).check
        if check is not None:
            try:
                check(stage.block, spec.geometry(i))
            except SpecFieldError as exc:
                raise SpecFieldError(("stages", i, "block", *exc.path), exc.message) from None
            except ValueError as exc:
                field, sep, message = str(exc).partition(": ")
                if sep and field.isidentifier():
                    raise SpecFieldError(("stages", i, "block", field), message) from None
                raise SpecFieldError(("stages", i, "block"), str(exc)) from None
    last = len(spec.stages) - 1
    if spec.prediction_side(last) != res:
        raise SpecFieldError(
            ("stages", last, "head"),
            "the last stage must predict at the input resolution; use head 'linear' "
            "(unpatchify) or patch_size 1",
        )
    if spec.cascade.kind == "features":
        for i in range(1, len(spec.stages)):
            low, high = spec.grid(i - 1), spec.grid(i)
            if high % low:
                raise SpecFieldError(
                    ("stages", i, "patch_size"),
                    f"a feature cascade needs each stage's grid to be a multiple of the previous "
                    f"one ({low}x{low} -> {high}x{high}); order stages from coarse to fine",
                )
    weights = spec.cascade.loss_weights
    if weights != "auto" and len(weights) != len(spec.stages):
        raise SpecFieldError(
            ("cascade", "loss_weights"),
            f"{len(weights)} weights for {len(spec.stages)} stages; give one per stage or 'auto'",
        )
    from dicesearch.model.feasibility import check_buildable, check_prefix_tokens  # refused in milliseconds

    check_buildable(spec, registry)  # sizes no device could build
    check_prefix_tokens(spec, registry)  # tokens (DiMR's class token) only where the blocks take them
    return spec


@dataclass(frozen=True)
class SpecTypes:
    """The spec classes generated for one registry."""

    ModelSpec: type[ModelSpecBase]
    StageSpec: type[StageSpecBase]
    block_models: dict[str, type[BaseModel]]
    conditioning_models: dict[str, type[BaseModel]]


def _class_name(name: str, suffix: str) -> str:
    return "".join(part.capitalize() for part in name.split("_")) + suffix


def tagged_params_model(params: type[BaseModel], name: str, suffix: str, description: str) -> type[BaseModel]:
    """The plugin's params model plus the ``kind`` tag that selects it."""
    return create_model(
        _class_name(name, suffix),
        __base__=params,
        __doc__=description or params.__doc__,
        kind=(Literal[name], Field(description=f"'{name}'")),
    )


def _union(models: list[type[BaseModel]]) -> Any:
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="kind")]  # noqa: UP007


def build_spec_types(registry: Registry) -> SpecTypes:
    """Generate StageSpec and ModelSpec whose unions hold the registry's plugins."""
    block_models = {
        name: tagged_params_model(reg.type.params, name, "Block", reg.type.description)
        for name, reg in sorted(registry.blocks.items())
    }
    conditioning_models = {
        name: tagged_params_model(reg.type.params, name, "Conditioning", reg.type.description)
        for name, reg in sorted(registry.conditionings.items())
    }
    if not block_models or not conditioning_models:
        from dicesearch.errors import PluginError

        raise PluginError("no block or no conditioning plugins are installed; reinstall dicesearch")

    stage_spec = create_model(
        "StageSpec",
        __base__=StageSpecBase,
        __doc__="One resolution of the model: a stack of blocks on a patchified grid.",
        patch_size=(PositiveInt, Field(1, description="Patchify stride: the stage works at resolution / patch_size.")),
        channels=(PositiveInt, Field(description="Width of the stage's features.")),
        depth=(PositiveInt, Field(description="Number of blocks.")),
        block=(_union(list(block_models.values())), Field(description="Block kind and its parameters.")),
        position_embedding=(
            Literal["none", "learned", "sincos"],
            Field("none", description="Added after patchify: learned (DiMR) or fixed 2D sin-cos (DiT)."),
        ),
        long_skip=(bool, Field(False, description="U-ViT long skips: concat + linear from block i to block depth-1-i.")),
        head=(
            Literal["conv3x3", "linear"],
            Field("conv3x3", description="conv3x3: predict at the stage grid (DiMR); linear: unpatchify to the input (DiT)."),
        ),
        head_norm=(
            Literal["conditioned", "plain"],
            Field(
                "conditioned",
                description="The head's norm: conditioned by the conditioning method (DiT: adaLN shift and scale) "
                "or a LayerNorm without affine.",
            ),
        ),
    )
    default_conditioning = (
        {"kind": "adaln_zero"} if "adaln_zero" in conditioning_models else ...
    )

    def check(spec: ModelSpecBase) -> ModelSpecBase:
        return _check_model(spec, registry)

    model_spec = create_model(
        "ModelSpec",
        __base__=ModelSpecBase,
        __doc__="A denoiser: input, conditioning, cascade wiring, initialisation and stages.",
        __validators__={"check_geometry": model_validator(mode="after")(check)},
        name=(str, Field("model", description="A name for humans and logs.")),
        description=(str, Field("", description="Free text: where the configuration comes from.")),
        input=(InputSpec, Field(default_factory=InputSpec)),
        conditioning=(
            _union(list(conditioning_models.values())),
            Field(default_conditioning, validate_default=True, description="Conditioning method and its parameters."),
        ),
        cascade=(CascadeSpec, Field(default_factory=CascadeSpec)),
        init=(InitSpec, Field(default_factory=InitSpec)),
        stages=(tuple[stage_spec, ...], Field(min_length=1, description="Stages, lowest resolution first.")),
    )
    return SpecTypes(model_spec, stage_spec, block_models, conditioning_models)


__all__ = [
    "CascadeSpec",
    "InitSpec",
    "InputSpec",
    "ModelSpecBase",
    "NonNegativeInt",
    "SpecFieldError",
    "SpecTypes",
    "StageSpecBase",
    "build_spec_types",
]
