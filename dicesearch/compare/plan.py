"""A comparison as a study of fixed configurations: every model x every seed is one trial.

A :class:`ComparisonPlan` is what the sweep backends run (the same trial lifecycle,
:mod:`dicesearch.sweep.lifecycle.trial`): its ``config`` is the sweep settings the backends
read, ``fixed()`` the configurations ``{"model": name, "seed": s}`` to run as they are,
``propose(trial)`` one of them as a proposal: the model's spec, the seed, the steps its
budget buys (:mod:`dicesearch.train.matching`) and the steps at which it is also scored
(``eval_at``).

Paired by construction: every run of seed s trains on the images, labels, timesteps and
noise of (s, step) (:mod:`dicesearch.train.seeding`), samples image i from the noise of
(s, i), and is scored against the same real images (those of the comparison's ``seed``),
whatever the model.

The plan is resolved once (models, steps, measured step times) and written to
``<out>/comparison.yaml``; a resumed comparison reads it back, so its runs keep their steps,
and Ray re-opens the plan from it in whichever process needs it (:func:`load_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dicesearch.compare.config import ComparisonConfig
from dicesearch.errors import SpecError
from dicesearch.sweep.space.config import SweepConfig
from dicesearch.sweep.space.proposal import Proposal

RESOLVED = "comparison.yaml"  # in the comparison's folder


@dataclass(frozen=True)
class PlannedModel:
    name: str
    spec: Any  # the validated ModelSpec
    origin: str
    steps: int  # optimiser steps its budget buys
    step_flops: int  # FLOPs of one training step
    step_seconds: float | None = None  # measured (match: seconds)

    @property
    def train_flops(self) -> float:
        return float(self.steps) * self.step_flops


class ComparisonPlan:
    """The trial source of a comparison (see the module docstring)."""

    def __init__(self, config: ComparisonConfig, models: list[PlannedModel], source: str, registry):
        self.comparison, self.models, self.source, self.registry = config, models, source, registry
        self.by_name = {m.name: m for m in models}
        self.baseline = config.baseline or models[0].name
        if self.baseline not in self.by_name:
            raise SpecError(f"{source}: baseline: '{self.baseline}' is none of the models ({', '.join(self.by_name)})")
        self.seeds = config.seed_list
        self.config = _sweep_settings(config, [m.name for m in models], self.seeds)

    def fixed(self) -> list[dict[str, Any]]:
        """Every run, seed by seed (so the first seeds pair up early in a long comparison)."""
        return [{"model": m.name, "seed": seed} for seed in self.seeds for m in self.models]

    def propose(self, trial) -> Proposal:
        name = trial.suggest_categorical("model", [m.name for m in self.models])
        seed = trial.suggest_categorical("seed", self.seeds)
        model = self.by_name[name]
        return Proposal(model.spec, {"model": name, "seed": seed}, seed=seed, train_steps=model.steps, rungs=self.rungs(model))

    def rungs(self, model: PlannedModel) -> tuple[int, ...] | None:
        """The steps at which ``model`` is scored: ``eval_at``'s fractions of its budget (the last
        its full budget), or None (scored once, at the end)."""
        fractions = self.comparison.eval_at
        if not fractions or fractions == [1.0]:
            return None
        steps = sorted({max(1, round(f * model.steps)) for f in fractions} | {model.steps})
        return tuple(steps) if len(steps) > 1 else None


def _sweep_settings(config: ComparisonConfig, names: list[str], seeds: list[int]) -> SweepConfig:
    """The settings the backends read, as a sweep of the fixed configurations model x seed."""
    return SweepConfig(
        name=config.name, study_name=config.study_name, base={"stages": []}, data=config.data,
        parameters={"model": {"choice": names}, "seed": {"choice": seeds}},
        objective={"metrics": [config.metric]}, budget=config.budget, memory=config.memory, backend=config.backend,
        trials=len(names) * len(seeds), parallelism=config.parallelism, storage=config.storage, seed=config.seed, pruner="none",
        idle_cores="keep",  # paired runs must reproduce exactly, and more threads may change a run's rounding
        tracking_uri=config.tracking_uri, ray_address=config.ray_address, cpus_per_trial=config.cpus_per_trial,
        gpus_per_trial=config.gpus_per_trial, trial_time_limit_s=config.trial_time_limit_s,
    )  # fmt: skip


# -- the resolved plan on disk ------------------------------------------------------------------------------


def plan_document(config: ComparisonConfig, models: list[PlannedModel]) -> dict[str, Any]:
    """The resolved comparison: the file's settings with every model as an inline spec and its steps."""
    from dicesearch.spec.io import spec_to_dict

    document = config.model_dump(mode="json", exclude={"models"})
    document["models"] = [{"name": m.name, "spec": spec_to_dict(m.spec)} for m in models]
    document["resolved"] = [
        {"name": m.name, "origin": m.origin, "steps": m.steps, "step_flops": m.step_flops, "step_seconds": m.step_seconds} for m in models
    ]  # fmt: skip
    return document


def write_plan(path: Path, config: ComparisonConfig, models: list[PlannedModel]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# The resolved comparison (dicesearch compare): its models as inline specs, the steps each trains.\n"
    path.write_text(header + yaml.safe_dump(plan_document(config, models), sort_keys=False, width=120))


def read_plan_models(path: Path, registry) -> tuple[ComparisonConfig, list[PlannedModel]]:
    """A resolved comparison file back as its settings and planned models."""
    from dicesearch.spec import parse_spec
    from dicesearch.yaml_files import load_yaml_file

    _, document = load_yaml_file(path, SpecError, "resolved comparison")
    if not isinstance(document, dict) or "resolved" not in document:
        raise SpecError(f"{path}: not a resolved comparison (written by dicesearch compare); delete it to resolve the models again")
    resolved = {r["name"]: r for r in document.pop("resolved")}
    config = ComparisonConfig.model_validate(document)
    models = []
    for entry in document["models"]:
        r = resolved[entry["name"]]
        spec = parse_spec(entry["spec"], f"{path} ({entry['name']})", registry)
        models.append(PlannedModel(entry["name"], spec, r["origin"], int(r["steps"]), int(r["step_flops"]), r.get("step_seconds")))
    return config, models


def load_plan(path: str) -> ComparisonPlan:
    """The plan a resolved comparison file holds (the loader the Ray backend pickles)."""
    from dicesearch.registry import default_registry

    registry = default_registry()
    config, models = read_plan_models(Path(path), registry)
    return ComparisonPlan(config, models, str(path), registry)


__all__ = ["RESOLVED", "ComparisonPlan", "PlannedModel", "load_plan", "read_plan_models", "write_plan"]
