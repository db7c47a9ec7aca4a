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

from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator

from dicesearch.data import DataSpec, DigitsSpec
from dicesearch.filemodel import FileModel
from dicesearch.objective import Budget
from dicesearch.spec.models import SpecFieldError
from dicesearch.sweep.space.distributions import Distribution
from dicesearch.sweep.space.fidelity import Fidelity
from dicesearch.sweep.space.spec_paths import Token, parse_path

RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")  # SQLAlchemy dialects Optuna's RDBStorage runs on


def storage_problem(url: str) -> str | None:
    """Why ``url`` is not an Optuna storage dicesearch can open (None if it is): an RDB URL
    (``sqlite:///optuna.db``, ``postgresql://...``, optionally ``+driver``) or a journal file path."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        if url.endswith((".journal", ".log")):
            return None
        return f"'{url}' is neither a database URL nor a journal file; give sqlite:///optuna.db or a path ending in .journal"
    if scheme.split("+", 1)[0].lower() in RDB_SCHEMES:
        return None
    return (
        f"'{scheme}://' is not a storage Optuna can use; give sqlite:///optuna.db (one process), a journal file "
        "such as runs/study.journal (several), or a postgresql:// or mysql:// URL (many machines)"
    )



Metric = Literal["fid", "kid", "gmacs", "gflops", "params", "samples_per_second"]
DIRECTIONS: dict[str, str] = {
    "fid": "minimize",  # fid_<N> at the budget's fid_samples
    "kid": "minimize",  # kid_<N>: unbiased at small N, so it suits short runs
    "gmacs": "minimize",  # multiply-adds per forward (what DiT and DiMR call Gflops)
    "gflops": "minimize",  # 2 x gmacs
    "params": "minimize",
    "samples_per_second": "maximize",  # measured while sampling the FID images
}


class Objective(FileModel):
    """What the sweep optimises. One metric: TPE; several: NSGA-II and a Pareto front."""

    metrics: tuple[Metric, ...] = Field(("fid",), min_length=1)

    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS[m] for m in self.metrics]


class MemoryBudget(FileModel):
    """The budget configurations must fit: full-length training on the target GPU."""

    budget_gb: PositiveFloat = 24.0
    precision: Literal["fp16", "bf16", "fp32"] = "fp16"
    batch_size: PositiveInt | None = Field(None, description="Batch of full-length training; default: the trial batch.")
    gradient_checkpointing: bool = False


class SweepConfig(FileModel):
    """A search-space file, validated: the base spec, what to vary, how to score it and the budgets."""

    name: str = "sweep"
    base: str | dict[str, Any] = Field(description="The model spec to vary: inline, a preset name, or a path.")
    data: DataSpec = Field(default_factory=DigitsSpec)
    parameters: dict[str, Distribution]
    objective: Objective = Field(default_factory=Objective)
    budget: Budget = Field(default_factory=Budget)
    replicates: PositiveInt = Field(1, description="Seeds per trial (init, data order, noise); the objective is their mean.")
    fidelity: Fidelity | None = Field(None, description="Rungs of training steps scored like the full budget (successive halving).")
    trial_time_limit_s: PositiveFloat | None = Field(None, description="Stop and record a trial that runs longer than this.")
    memory: MemoryBudget = Field(default_factory=MemoryBudget)
    backend: Literal["optuna", "ray"] = "optuna"
    trials: PositiveInt = 6
    parallelism: PositiveInt = 1
    idle_cores: Literal["keep", "share"] = Field(
        "share",
        description=(
            "share (default): a worker with nothing to claim lends its cores to the trials still running (faster tails); "
            "their steps then run on more threads, which changes their rounding, so a rerun may not score them "
            "bit for bit alike (full-budget scores moved inside the seed spread: benchmarks/precision_scores.py --lever threads). "
            "keep: every trial on its own threads, reruns identical (a comparison always keeps)."
        ),
    )
    draw_order: Literal["fixed", "finishing"] = Field(
        "fixed",
        description=(
            "fixed (default): the k-th configuration is drawn from the first-rung results of those drawn before it (the "
            "last parallelism - 1 as running trials), waiting for any still in its first rung, so that one space and seed draw the same "
            "configurations whatever order trials finish in. finishing: from every trial finished so far (Optuna's own way; "
            "no wait, but the path depends on which trial finishes first). The Optuna backend with one objective; "
            "with several objectives or the Ray backend configurations are drawn as trials finish."
        ),
    )
    storage: str | None = Field(None, description="Optuna storage URL; default sqlite:///optuna.db in the working directory (or --storage).")
    study_name: str | None = None
    seed: int = 42
    pruner: Literal["none", "median", "hyperband"] = "median"
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///mlflow.db.")
    ray_address: str | None = Field(None, description="An existing Ray cluster; default: a local runtime.")
    gpus_per_trial: NonNegativeFloat = 0.0
    cpus_per_trial: PositiveFloat = 1.0

    @field_validator("storage")
    @classmethod
    def _storage_known(cls, value):
        problem = storage_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _enough_images(self):
        from dicesearch.metrics.evaluate import MIN_IMAGES

        if self.budget.fid_samples < MIN_IMAGES:
            raise SpecFieldError(
                ("budget", "fid_samples"),
                f"N = {self.budget.fid_samples} is too few to score: FID's covariances and precision/recall's nearest "
                f"neighbours need at least {MIN_IMAGES} images; use {MIN_IMAGES} or more (FID is biased by about 1/N: 128 or more compare well)",
            )
        from pydantic import ValidationError

        from dicesearch.train.config import SamplingConfig

        try:  # what every trial's sampler would refuse (more steps than the noise schedule has)
            SamplingConfig(sampler=self.budget.sampler, steps=self.budget.sampling_steps)
        except ValidationError as exc:
            raise SpecFieldError(("budget", "sampling_steps"), f"{exc.errors()[0]['msg']} (got {self.budget.sampling_steps})") from None
        return self

    @model_validator(mode="after")
    def _draw_order_known(self):
        if self.draw_order == "fixed" and "draw_order" in self.model_fields_set:
            if self.backend == "ray":
                raise SpecFieldError(("draw_order",), "fixed is the Optuna backend's (Ray Tune's searcher draws as trials finish); remove draw_order or use backend: optuna")
            if len(self.objective.metrics) > 1:
                raise SpecFieldError(("draw_order",), "fixed draws with TPE for one objective; NSGA-II draws a Pareto front by generations; remove draw_order")
        return self

    @property
    def fixed_draw_order(self) -> bool:
        """Whether configurations are drawn from a fixed history (:mod:`dicesearch.sweep.store.draw_order`)."""
        return self.draw_order == "fixed" and self.backend == "optuna" and len(self.objective.metrics) == 1

    @field_validator("parameters")
    @classmethod
    def _paths_parse(cls, value):
        if not value:
            raise ValueError("nothing to sweep; add a parameter such as  stages[0].channels: {int: [64, 128], step: 32}")
        for path in value:
            parse_path(path)
        return value

    @model_validator(mode="after")
    def _fidelity_fits(self):
        fidelity = self.fidelity
        if fidelity is None:
            return self
        if self.pruner != "none" and "pruner" in self.model_fields_set:
            raise SpecFieldError(("pruner",), f"fidelity rungs already stop trials on their scores; remove pruner: {self.pruner} (or the fidelity section)")
        if len(self.objective.metrics) > 1 or self.objective.metrics[0] not in ("fid", "kid"):
            raise SpecFieldError(("fidelity",), "fidelity rungs rank trials by one score; use objective: {metrics: [fid]} (or [kid])")
        if "train_steps" in self.budget.model_fields_set and self.budget.train_steps != fidelity.rungs[-1]:
            raise SpecFieldError(
                ("budget", "train_steps"),
                f"{self.budget.train_steps}, but the last rung is {fidelity.rungs[-1]}; the last rung is the full budget: "
                "drop train_steps or make them equal",
            )
        if fidelity.samples is not None:
            self._check_rung_samples(fidelity)
        budget = self.budget.model_copy(update={"train_steps": fidelity.rungs[-1]})
        return self.model_copy(update={"budget": budget, "pruner": "none"})

    def _check_rung_samples(self, fidelity: Fidelity) -> None:
        from dicesearch.metrics.evaluate import MIN_IMAGES

        samples, full, where = list(fidelity.samples), self.budget.fid_samples, ("fidelity", "samples")
        if len(samples) != len(fidelity.rungs):
            raise SpecFieldError(where, f"{samples} gives {len(samples)} image counts for {len(fidelity.rungs)} rungs; give one per rung, e.g. {[min(32, full)] + [full] * (len(fidelity.rungs) - 1)}")
        if samples[-1] != full:
            raise SpecFieldError(where, f"the last rung is the full budget and scores budget.fid_samples ({full}) images, not {samples[-1]}; end the list with {full}")
        if any(b < a for a, b in zip(samples, samples[1:])) or max(samples) > full:
            raise SpecFieldError(where, f"{samples}: a rung scores at most the images of the rung after it, up to budget.fid_samples ({full}); e.g. {[min(32, full)] + [full] * (len(samples) - 1)}")
        if min(samples) < MIN_IMAGES:
            raise SpecFieldError(where, f"{min(samples)} images are too few to score (FID's covariances and precision/recall need at least {MIN_IMAGES}); use {MIN_IMAGES} or more")

    @property
    def rung_samples(self) -> tuple[int, ...] | None:
        """Images scored at each rung (multi-fidelity), or None without rungs."""
        if self.fidelity is None:
            return None
        return self.fidelity.samples or (self.budget.fid_samples,) * len(self.fidelity.rungs)

    @property
    def resolved_study_name(self) -> str:
        return self.study_name or self.name

    @property
    def metric_keys(self) -> list[str]:
        """The metric keys the objective reads: 'fid' means fid_<N> at the budget's N, 'kid' kid_<N>."""
        from dicesearch.metrics import score_names

        names = score_names(self.budget.fid_samples)
        return [names.get(m, m) for m in self.objective.metrics]

    @property
    def rung_keys(self) -> tuple[str, ...] | None:
        """The score each rung ranks by (multi-fidelity: one objective), e.g. ('fid_32', 'fid_128', 'fid_128'); None without rungs."""
        from dicesearch.metrics import score_names

        if self.rung_samples is None:
            return None
        return tuple(score_names(n)[self.objective.metrics[0]] for n in self.rung_samples)

    @property
    def memory_batch(self) -> int:
        """The batch the memory budget is checked at: full-length training's, else the trial's."""
        return self.memory.batch_size or self.budget.batch_size

    def ordered_parameters(self) -> list[tuple[str, tuple[Token, ...], Any]]:
        """(name, tokens, distribution), kind parameters first."""
        items = [(name, parse_path(name), dist) for name, dist in self.parameters.items()]
        return sorted(items, key=lambda item: 0 if item[1][-1] == "kind" else 1)


__all__ = ["DIRECTIONS", "RDB_SCHEMES", "MemoryBudget", "Objective", "SweepConfig", "storage_problem"]
