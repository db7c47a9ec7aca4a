"""The comparison file: which models, on what data, under what budget, over which seeds.

```yaml
name: six-families
models:                        # a preset, a spec file (an exported one too), or a finished sweep's best
  - DICE-digits                # a preset name (or a path to a spec file)
  - {preset: DiT-digits, name: DiT}
  - {spec: best.yaml}
  - {sweep: search_spaces/cascade.yaml, top: 2}     # the sweep's best 2 trials
baseline: DICE-digits          # what every other model is compared with (default: the first)
data: {kind: digits}
budget: {match: flops, train_flops: 2.0e12, batch_size: 64, fid_samples: 128, sampling_steps: 50}
seeds: 3                       # seeds seed, seed + 1, ...: every model trains with each
eval_at: [0.25, 0.5, 1.0]      # also score at these fractions of the budget (the compute curve)
equivalence: {fid: 4.0}        # margin delta per score family: "equivalent" when the interval is inside +-delta
```

Every model trains under the same :class:`~dicesearch.objective.Budget` (``match``: equal
steps, training FLOPs or seconds), with the same seeds, on the same data.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator

from dicesearch.data import DataSpec, DigitsSpec
from dicesearch.errors import SpecFieldError
from dicesearch.filemodel import FileModel
from dicesearch.objective import Budget
from dicesearch.sweep.space.config import MemoryBudget, storage_problem

# The comparison's default budget: the default sweep's full budget (search_spaces/cascade.yaml),
# shorter, so that six models x 3 seeds train on 2 CPU cores in minutes.
DEFAULT_BUDGET = {
    "train_steps": 600, "batch_size": 64, "lr": 4e-3, "warmup_steps": 100, "ema_decay": 0.995,
    "fid_samples": 128, "sampling_steps": 50, "report_every": 50,
}  # fmt: skip



class ModelRef(FileModel):
    """One model (or several: a sweep's ``top`` k) of a comparison: exactly one of ``preset``,
    ``spec`` or ``sweep``."""

    name: str | None = Field(None, description="Its label in tables and plots (default: the preset name, the file's stem, or sweep#trial).")
    preset: str | None = Field(None, description="A preset name, e.g. DiT-digits.")
    spec: str | dict[str, Any] | None = Field(None, description="A spec file (an exported one too), or an inline spec.")
    sweep: str | None = Field(None, description="A finished sweep's search-space file: its best trial(s).")
    top: PositiveInt = Field(1, description="With sweep: its best k trials, each a model.")
    storage: str | None = Field(None, description="With sweep: its Optuna storage, if not the search space's.")

    @model_validator(mode="after")
    def _one_source(self):
        given = [key for key in ("preset", "spec", "sweep") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of preset, spec or sweep (got {', '.join(given) or 'none'})")
        if self.sweep is None and ("top" in self.model_fields_set or self.storage is not None):
            raise ValueError("top and storage go with sweep")
        return self


class ComparisonConfig(FileModel):
    """A comparison file, validated."""

    name: str = "compare"
    models: list[ModelRef | str] = Field(min_length=1, description="The models: preset names, spec files, or mappings (see ModelRef).")
    baseline: str | None = Field(None, description="The model every other is compared with (default: the first).")
    data: DataSpec = Field(default_factory=DigitsSpec)
    budget: Budget = Field(default_factory=lambda: Budget(**DEFAULT_BUDGET))
    seeds: PositiveInt | list[NonNegativeInt] = Field(3, description="How many seeds (seed, seed + 1, ...), or the seeds themselves.")
    seed: NonNegativeInt = Field(42, description="The first seed; also the seed of the real images every score is against.")
    metric: Literal["fid", "kid"] = Field("fid", description="The primary score: the verdict's Holm family and the ranking.")
    eval_at: list[float] | None = Field(None, description="Fractions of the budget at which to score too (the compute curve); 1 is added.")
    equivalence: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="Margins delta per score family (fid, kid, precision, ...); fid's default is 4 (dicesearch.compare.metric)."
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="The level of the tests (Holm-adjusted over the models).")
    memory: MemoryBudget = Field(default_factory=MemoryBudget)
    backend: Literal["optuna", "ray"] = "optuna"
    parallelism: PositiveInt = Field(2, description="Trainings at once (each in its own process).")
    trial_time_limit_s: PositiveFloat | None = None
    storage: str | None = Field(None, description="Optuna storage URL; default sqlite:///optuna.db.")
    study_name: str | None = None
    tracking_uri: str | None = None
    ray_address: str | None = None
    cpus_per_trial: PositiveFloat = 1.0
    gpus_per_trial: float = Field(0.0, ge=0)

    @field_validator("storage")
    @classmethod
    def _storage_known(cls, value):
        problem = storage_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("budget", mode="before")
    @classmethod
    def _on_the_default_budget(cls, value):
        return {**DEFAULT_BUDGET, **value} if isinstance(value, dict) else value  # what the file leaves out

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, value):
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError(f"seeds: give a number of seeds (e.g. 3) or distinct seeds, e.g. [42, 43, 44]; got {value}")
        return value

    @field_validator("eval_at")
    @classmethod
    def _fractions(cls, value):
        if value is None:
            return None
        if any(not 0 < f <= 1 for f in value):
            raise ValueError(f"eval_at: fractions of the budget in (0, 1], e.g. [0.25, 0.5, 1]; got {value}")
        return sorted({*value, 1.0})

    @field_validator("equivalence")
    @classmethod
    def _known_scores(cls, value):
        from dicesearch.compare.metric import DIRECTIONS

        unknown = sorted(set(value) - set(DIRECTIONS))
        if unknown:
            raise ValueError(f"equivalence: unknown score(s) {', '.join(unknown)}; margins go with {', '.join(DIRECTIONS)}")
        return value

    @model_validator(mode="after")
    def _enough_images(self):
        from dicesearch.metrics.evaluate import MIN_IMAGES

        if self.budget.fid_samples < MIN_IMAGES:
            raise SpecFieldError(("budget", "fid_samples"), f"N = {self.budget.fid_samples} is too few to score; use {MIN_IMAGES} or more (128 compares well)")
        return self

    @property
    def seed_list(self) -> list[int]:
        return list(self.seeds) if isinstance(self.seeds, list) else [self.seed + k for k in range(self.seeds)]

    @property
    def resolved_study_name(self) -> str:
        return self.study_name or self.name



__all__ = ["DEFAULT_BUDGET", "ComparisonConfig", "ModelRef"]
