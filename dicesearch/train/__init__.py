"""Training and sampling: the DDPM objective, the seeded training loop, samplers.

- ``config``: ``TrainConfig``, ``SamplingConfig`` (frozen, YAML-loadable).
"""

from dicesearch.errors import TrainingDiverged, TrainingError
from dicesearch.train.config import ConfigError, SamplingConfig, TrainConfig, load_config

__all__ = ["ConfigError", "SamplingConfig", "TrainConfig", "TrainingDiverged", "TrainingError", "load_config"]
