"""The search-space file: what to sweep, how to score it, and under what budget.

```yaml
name: dice-cascade
base: {...}                       # a model spec inline, a preset name, or a path
data: {kind: digits}
parameters:                       # path -> distribution
  stages[0].channels: {int: [64, 128], step: 32}
  stages[*].block.lambda_init: {float: [0.1, 10.0], log: true}
  conditioning.kind: {choice: [adaln_zero, tdln]}
objective: {metrics: [fid]}       # or [fid, gflops] for a Pareto front (NSGA-II)
budget: {train_steps: 300, batch_size: 64, fid_samples: 200, sampling_steps: 25}
memory: {budget_gb: 24, precision: fp16, batch_size: 256}
```

Sampling order: every ``...kind`` parameter first (so a block's own parameters are
sampled for the kind actually chosen); a parameter whose block or conditioning kind, as
chosen, has no such field is skipped for that trial. Changing a kind keeps the base's
parameters the new kind also has.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Tag,
    field_validator,
    model_validator,
)

from dicesearch.data import DataSpec, DigitsSpec
from dicesearch.objective import Budget
from dicesearch.sweep.paths import Token, format_tokens, get, parse_path


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IntParam(_Frozen):
    """Integers in [low, high] (both included), every ``step``, optionally log-uniform."""

    int: tuple[int, int]
    step: PositiveInt = 1
    log: bool = False

    @model_validator(mode="after")
    def _check(self):
        low, high = self.int
        if low > high:
            raise ValueError(f"low {low} > high {high}; write [low, high]")
        if (high - low) % self.step:
            raise ValueError(f"high - low = {high - low} is not a multiple of step {self.step}; adjust the range or step")
        if self.log and (low <= 0 or self.step != 1):
            raise ValueError("log needs low > 0 and step 1")
        return self

    def suggest(self, trial, name: str):
        return trial.suggest_int(name, self.int[0], self.int[1], step=self.step, log=self.log)

    def values(self) -> list:
        return [self.int[0], self.int[1]]


class FloatParam(_Frozen):
    """Floats in [low, high], uniform or log-uniform, optionally quantised by ``step``."""

    float: tuple[float, float]
    log: bool = False
    step: PositiveFloat | None = None

    @model_validator(mode="after")
    def _check(self):
        low, high = self.float
        if low > high:
            raise ValueError(f"low {low} > high {high}; write [low, high]")
        if self.log and low <= 0:
            raise ValueError(f"log needs low > 0, got {low}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined; drop one")
        return self

    def suggest(self, trial, name: str):
        return trial.suggest_float(name, self.float[0], self.float[1], log=self.log, step=self.step)

    def values(self) -> list:
        return [self.float[0], self.float[1]]


Scalar = Union[bool, int, float, str, None]  # noqa: UP007


class ChoiceParam(_Frozen):
    """One of the listed values."""

    choice: tuple[Scalar, ...]

    @field_validator("choice")
    @classmethod
    def _non_empty(cls, value):
        if not value:
            raise ValueError("the choice list is empty; list at least one value")
        if len(set(map(repr, value))) != len(value):
            raise ValueError("the choice list repeats a value; list each once")
        return value

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, list(self.choice))

    def values(self) -> list:
        return list(self.choice)


def _param_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        keys = [k for k in ("int", "float", "choice") if k in value]
        return keys[0] if len(keys) == 1 else None
    return {IntParam: "int", FloatParam: "float", ChoiceParam: "choice"}.get(type(value))


Distribution = Annotated[
    Union[Annotated[IntParam, Tag("int")], Annotated[FloatParam, Tag("float")], Annotated[ChoiceParam, Tag("choice")]],  # noqa: UP007
    Discriminator(
        _param_tag,
        custom_error_type="distribution",
        custom_error_message="write one of {int: [low, high]}, {float: [low, high]} or {choice: [a, b, ...]}",
    ),
]

Metric = Literal["fid", "gmacs", "gflops", "params", "samples_per_second"]
DIRECTIONS: dict[str, str] = {
    "fid": "minimize",  # fid_<N> at the budget's fid_samples
    "gmacs": "minimize",  # multiply-adds per forward (what DiT and DiMR call Gflops)
    "gflops": "minimize",  # 2 x gmacs
    "params": "minimize",
    "samples_per_second": "maximize",  # measured while sampling the FID images
}


class Objective(_Frozen):
    """What the sweep optimises. One metric: TPE; several: NSGA-II and a Pareto front."""

    metrics: tuple[Metric, ...] = Field(("fid",), min_length=1)

    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS[m] for m in self.metrics]


class MemoryBudget(_Frozen):
    """The budget configurations must fit: full-length training on the target GPU."""

    budget_gb: PositiveFloat = 24.0
    precision: Literal["fp16", "bf16", "fp32"] = "fp16"
    batch_size: PositiveInt | None = Field(None, description="Batch of full-length training; default: the trial batch.")
    gradient_checkpointing: bool = False


class SweepSpec(_Frozen):
    name: str = "sweep"
    base: str | dict[str, Any] = Field(description="The model spec to vary: inline, a preset name, or a path.")
    data: DataSpec = Field(default_factory=DigitsSpec)
    parameters: dict[str, Distribution]
    objective: Objective = Field(default_factory=Objective)
    budget: Budget = Field(default_factory=Budget)
    trial_time_limit_s: PositiveFloat | None = Field(None, description="Stop and record a trial that runs longer than this.")
    memory: MemoryBudget = Field(default_factory=MemoryBudget)
    backend: Literal["optuna", "ray"] = "optuna"
    trials: PositiveInt = 6
    parallelism: PositiveInt = 1
    storage: str | None = Field(None, description="Optuna storage URL; default sqlite:///<out>/optuna.db.")
    study_name: str | None = None
    seed: int = 42
    pruner: Literal["none", "median", "hyperband"] = "median"
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///mlflow.db.")
    ray_address: str | None = Field(None, description="An existing Ray cluster; default: a local runtime.")
    gpus_per_trial: NonNegativeFloat = 0.0
    cpus_per_trial: PositiveFloat = 1.0

    @field_validator("parameters")
    @classmethod
    def _paths_parse(cls, value):
        if not value:
            raise ValueError("nothing to sweep; add a parameter such as  stages[0].channels: {int: [64, 128], step: 32}")
        for path in value:
            parse_path(path)
        return value

    @property
    def resolved_study_name(self) -> str:
        return self.study_name or self.name

    def ordered_parameters(self) -> list[tuple[str, tuple[Token, ...], Any]]:
        """(name, tokens, distribution), kind parameters first."""
        items = [(name, parse_path(name), dist) for name, dist in self.parameters.items()]
        return sorted(items, key=lambda item: 0 if item[1][-1] == "kind" else 1)


__all__ = [
    "ChoiceParam",
    "DIRECTIONS",
    "FloatParam",
    "IntParam",
    "MemoryBudget",
    "Objective",
    "SweepSpec",
    "format_tokens",
    "get",
]
