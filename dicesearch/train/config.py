"""How a model is trained and how it is sampled: two frozen, validated configs.

Both are read from YAML (``yaml.safe_load``) once, at the boundary; a bad field raises a
one-line ``ConfigError`` naming the file, the line and the field. Defaults are sized for a
CPU: a few thousand steps of a small model on the embedded digits. The paper setups
(DICE Sec. 4.1: AdamW, lr 1e-4 constant, EMA 0.9999, fp16 + checkpointing, seed 42;
250 DDPM steps without guidance for evaluation) are a few overrides away.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, ClassVar, Literal, TypeVar

import yaml
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError

from dicesearch.errors import DicesearchError
from dicesearch.filemodel import FileModel
from dicesearch.yaml_files import compose, load_yaml_file

__all__ = ["ConfigError", "Precision", "SamplingConfig", "TrainConfig", "load_config"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
"""auto: fp16 autocast + GradScaler on CUDA; on a CPU fp32 unless bf16 was measured to pay there (dicesearch.speed.precision)."""
_Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class ConfigError(DicesearchError):
    """A training or sampling config that does not validate."""


class _Config(FileModel):
    """Finite numbers, no boolean for a number, unknown keys rejected."""


class TrainConfig(_Config):
    """One training run's hyper-parameters (the model and the data are specs of their own)."""

    # Optimiser steps in all (a resumed run continues up to this number).
    steps: PositiveInt = 2000
    # Images (or latents) per step; part of the seeded data order, so fixed for a run.
    batch_size: PositiveInt = 32
    # AdamW learning rate, constant after warm-up (DiT, DICE: 1e-4).
    lr: PositiveFloat = 1e-4
    # AdamW decoupled weight decay, applied to every parameter (DiT: 0).
    weight_decay: NonNegativeFloat = 0.0
    # AdamW (beta1, beta2).
    betas: tuple[_Beta, _Beta] = (0.9, 0.999)
    # Linear learning-rate warm-up from lr/warmup_steps to lr over this many steps (0: none).
    warmup_steps: NonNegativeInt = 0
    # EMA decay of the weights kept for evaluation (DiT, DICE: 0.9999).
    ema_decay: float = Field(0.9999, ge=0.0, le=1.0)
    # Use min(ema_decay, (1 + k) / (10 + k)) at step k, so the EMA of a short run is not
    # stuck near the initial weights; false gives the papers' constant decay.
    ema_warmup: bool = True
    # Probability of replacing a label by the null label (classifier-free guidance; DiT: 0.1).
    class_dropout: float = Field(0.1, ge=0.0, le=1.0)
    # Clip the global gradient norm to this value (None: no clipping, as DiT).
    grad_clip: PositiveFloat | None = None
    # Arithmetic of forward/backward; the weights and the loss are always fp32.
    precision: Precision = "auto"
    # Recompute block activations in the backward pass (less memory, ~30 % more time).
    gradient_checkpointing: bool = False
    # Seeds the initial weights, the data order, timesteps, noise and label dropout (DICE: 42).
    seed: NonNegativeInt = 42
    # Steps between log events (mean loss, steps/s) sent to callbacks.
    log_every: PositiveInt = 10
    # Steps between checkpoints (a checkpoint is also written after the last step).
    checkpoint_every: PositiveInt = 500
    # Checkpoints kept on disk, newest first (None: keep all).
    keep_checkpoints: PositiveInt | None = 2
    # Steps between eval events (e.g. FID) sent to callbacks (None: never).
    eval_every: PositiveInt | None = None
    # DataLoader worker processes decoding images (the batches do not depend on it).
    num_workers: NonNegativeInt = 0
    # dicesearch.speed's CPU kernels (depthwise, patch and narrow convolutions, DICE's merge)
    # and fused AdamW: 2.9x faster steps for the digits cascade at one thread, the same
    # trajectory up to float rounding (tests/speed); false: PyTorch's own kernels.
    fast_kernels: bool = True
    # torch.compile the training step: auto compiles only where the measured compile cost
    # is paid back within the run (dicesearch.speed.compile; never on a CPU, where
    # compiled steps measured slower); always; never.
    compile: Literal["auto", "always", "never"] = "auto"
    # On a CPU at k > 1 torch threads: each batch's forward and backward as k chunks, one per
    # worker thread of one intra-op thread, which meet once a step instead of at every op
    # (dicesearch.speed.chunks; the batch's gradient summed in another order, as torch's
    # threads sum it too). Trial processes use it when they take an idle worker's core.
    thread_chunks: bool = False

    # Fields that change the trajectory: a resumed run must keep them.
    TRAJECTORY: ClassVar[tuple[str, ...]] = (
        "batch_size", "lr", "weight_decay", "betas", "warmup_steps", "ema_decay", "ema_warmup",
        "class_dropout", "grad_clip", "precision", "seed",
    )  # fmt: skip

    def ema_decay_at(self, step: int) -> float:
        """EMA decay applied after optimiser step ``step`` (1-based)."""
        if self.ema_warmup:
            return min(self.ema_decay, (1.0 + step) / (10.0 + step))
        return self.ema_decay

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (1-based): linear warm-up, then constant."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * step / self.warmup_steps
        return self.lr


class SamplingConfig(_Config):
    """How samples are drawn from a trained denoiser."""

    # ddpm: ancestral DDPM (learned variance when the model learns sigma); ddim: eta = 0;
    # dpmsolver++: DPM-Solver++(2M), deterministic.
    sampler: Literal["ddpm", "ddim", "dpmsolver++"] = "ddpm"
    # Denoising steps (DiT, DICE evaluate with 250 DDPM steps).
    steps: int = Field(250, ge=1, le=1000)
    # Classifier-free guidance scale; 1.0 is the plain conditional model (no guidance).
    cfg_scale: float = Field(1.0, ge=0.0)
    # Sample i's noise depends only on (seed, i): not on the batch size or the device.
    seed: NonNegativeInt = 0
    # Samples to draw.
    num_samples: PositiveInt = 64
    # Samples per forward pass (guidance doubles the model's batch).
    batch_size: PositiveInt = 64
    # Arithmetic of the model's forward passes; the scheduler's is always fp32.
    precision: Precision = "auto"
    # The model's forward passes on dicesearch.speed's fast kernels (the same samples up to
    # float rounding); false: PyTorch's own kernels.
    fast_kernels: bool = True


C = TypeVar("C", bound=_Config)


def _line_of(text: str, field: str) -> int | None:
    """1-based line of top-level key ``field`` in YAML ``text``."""
    root = compose(text)
    if isinstance(root, yaml.MappingNode):
        for key, _ in root.value:
            if key.value == field:
                return key.start_mark.line + 1
    return None


def parse_config(cls: type[C], data: object, source: str, text: str | None = None) -> C:
    """Validate a mapping into ``cls``; problems raise ``ConfigError`` (one line)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}; see `dicesearch.train.{cls.__name__}`")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"]]
        field = ".".join(loc) or "(top level)"
        line = _line_of(text, loc[0]) if text and loc else None
        where = f"{source}:{line}" if line else source
        if first["type"] == "extra_forbidden":
            known = ", ".join(name for name in cls.model_fields)
            message = f"unknown field; known fields: {known}"
        else:
            message = " ".join(str(first["msg"]).split())
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{where}: {field}: {message}{more}; fix the {cls.__name__} field") from None


def load_config(cls: type[C], path: str | os.PathLike) -> C:
    """Read a ``TrainConfig`` or ``SamplingConfig`` from a YAML file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: cannot read the config (no such file); give an existing YAML file")
    text, data = load_yaml_file(path, ConfigError, "config")  # UTF-8, no duplicate keys, one line per problem
    return parse_config(cls, data, str(path), text)


def dump_config(config: _Config) -> str:
    """YAML that ``load_config`` reads back to an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
