"""Training and sampling: the DDPM objective, the seeded training loop, samplers.

- ``config``: ``TrainConfig``, ``SamplingConfig`` (frozen, YAML-loadable).
- ``diffusion``: the forward process and the loss (DiMR multi-scale ε-MSE + improved
  DDPM's learned-variance VLB).
- ``seeding``: every random draw as a function of (seed, step) or (seed, sample index).
- ``trainer``: ``train(spec, data_spec, config, out_dir, callbacks, resume)``.
- ``callbacks``: the events a run reports through; progress bar and JSONL log.
- ``checkpoint``, ``rundir``: safetensors checkpoints and the run folder around them.
- ``ema``, ``precision``: weight EMA; autocast and GradScaler choices.
- ``sampling``: DDPM / DDIM / DPM-Solver++ with classifier-free guidance; ``grid``: PNGs.
- ``inputs``: the spec, data, config and folder a training command asks for.

Importing this package does not import diffusers; the schedulers do so when built.
"""

from dicesearch.errors import TrainingDiverged, TrainingError
from dicesearch.train.callbacks import Callback, EvalEvent, JsonlLog, LogEvent, ProgressBar, StartEvent, StopTraining
from dicesearch.train.checkpoint import CheckpointInfo, latest_checkpoint, list_checkpoints, read_checkpoint_info, read_weights
from dicesearch.train.config import ConfigError, SamplingConfig, TrainConfig, load_config
from dicesearch.train.diffusion import LossTerms, NoiseSchedule, diffusion_loss
from dicesearch.train.grid import image_grid, save_grid
from dicesearch.train.rundir import RunDir, TrainedModel, load_trained
from dicesearch.train.sampling import sample, sample_images, to_images
from dicesearch.train.trainer import TrainResult, train

__all__ = [
    "Callback",
    "CheckpointInfo",
    "ConfigError",
    "EvalEvent",
    "JsonlLog",
    "LogEvent",
    "LossTerms",
    "NoiseSchedule",
    "ProgressBar",
    "RunDir",
    "SamplingConfig",
    "StartEvent",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "TrainedModel",
    "TrainingDiverged",
    "TrainingError",
    "diffusion_loss",
    "image_grid",
    "latest_checkpoint",
    "list_checkpoints",
    "load_config",
    "load_trained",
    "read_checkpoint_info",
    "read_weights",
    "sample",
    "sample_images",
    "save_grid",
    "to_images",
    "train",
]
