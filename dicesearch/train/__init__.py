"""Training and sampling: the DDPM objective, the seeded training loop, samplers.

- ``config``: ``TrainConfig``, ``SamplingConfig`` (frozen, YAML-loadable).
- ``diffusion``: the forward process and the loss (DiMR multi-scale ε-MSE + improved
  DDPM's learned-variance VLB).
"""

from dicesearch.errors import TrainingDiverged, TrainingError
from dicesearch.train.config import ConfigError, SamplingConfig, TrainConfig, load_config
from dicesearch.train.diffusion import LossTerms, NoiseSchedule, diffusion_loss

__all__ = [
    "ConfigError",
    "LossTerms",
    "NoiseSchedule",
    "SamplingConfig",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingError",
    "diffusion_loss",
    "load_config",
]
