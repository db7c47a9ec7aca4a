"""What ``dicesearch compare`` does, outside the click layer: plan, run through the sweep backends, judge, report.

1. The comparison: a comparison file, or models named on the command line, with the
   command's options over the file's settings; the models resolved (presets, spec files, a
   finished sweep's best), checked against the data, and the steps each model's budget buys.
   Nothing is written before all of that holds.
2. The plan is written to ``<out>/comparison.yaml`` (a resumed comparison reads it back and
   must be the same comparison), then run by the Optuna or the Ray backend: every model x
   seed a trial, each in its own process, through the sweep's trial lifecycle, logged to
   MLflow (a parent run, a nested run per model and seed). Ctrl-C and the same command resume.
3. The verdict (:mod:`dicesearch.compare.verdict`) and the report: the Tab. 1-style table
   and the verdict lines printed, written as Markdown and CSV, the pictures, all logged to
   the parent run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from dicesearch.compare.config import ComparisonConfig
from dicesearch.compare.plan import RESOLVED, ComparisonPlan, PlannedModel, load_plan, plan_document, read_plan_models, write_plan
from dicesearch.errors import DataError, SpecError
from dicesearch.files import inside

# settings that may change when a comparison is resumed: how it runs, not what it measures
OPERATIONAL = ("backend", "parallelism", "trial_time_limit_s", "storage", "tracking_uri", "ray_address", "cpus_per_trial", "gpus_per_trial")


@dataclass(frozen=True)
class Overrides:
    """The command's options over the file's settings (None: the file's, else the default)."""

    name: str | None = None
    seeds: int | None = None
    baseline: str | None = None
    match: str | None = None
    steps: int | None = None
    flops: float | None = None
    seconds: float | None = None
    fid_samples: int | None = None
    eval_at: tuple[float, ...] | None = None
    parallelism: int | None = None
    backend: str | None = None

    def apply(self, data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        budget = dict(data.get("budget") or {})
        for key, value in (("name", self.name), ("seeds", self.seeds), ("baseline", self.baseline), ("parallelism", self.parallelism), ("backend", self.backend)):
            if value is not None:
                data[key] = value
        if self.eval_at is not None:
            data["eval_at"] = list(self.eval_at)
        if self.fid_samples is not None:
            budget["fid_samples"] = self.fid_samples
        amounts = {"steps": ("train_steps", self.steps), "flops": ("train_flops", self.flops), "seconds": ("train_seconds", self.seconds)}
        given = [match for match, (_, value) in amounts.items() if value is not None]
        if len(given) > 1:
            raise SpecError(f"--{given[0]} and --{given[1]}: give one budget (equal steps, training FLOPs or seconds)")
        match = self.match or (given[0] if given else None)
        if match is not None:
            budget["match"] = match
            for other, (field, _) in amounts.items():
                if other != match and other != "steps":
                    budget.pop(field, None)
        for _, (field, value) in amounts.items():
            if value is not None:
                budget[field] = value
        if budget:
            data["budget"] = budget
        return data


def load_comparison(arguments: Sequence[str], overrides: Overrides) -> tuple[ComparisonConfig, str, Path | None, Any]:
    """(config, source, folder its relative paths start from, a line locator) for a comparison
    file (one argument whose file has ``models:``) or models named on the command line."""
    from dicesearch.spec.io import yaml_locator
    from dicesearch.spec.messages import validation_error
    from dicesearch.yaml_files import load_yaml_file

    if not arguments:
        raise SpecError("name the models to compare (presets, spec files, a finished sweep's search space) or a comparison file")
    path = Path(arguments[0])
    if len(arguments) == 1 and path.is_file():
        text, data = load_yaml_file(path, SpecError, "comparison")
        if isinstance(data, dict) and "models" in data:
            source, relative_to, locate = str(path), path.parent, yaml_locator(text)
        else:
            raise SpecError(f"{path}: a comparison needs at least two models, or a comparison file (with models:); name more models")
    else:
        data, source, relative_to, locate = {"models": list(arguments), "name": default_name(arguments)}, "the command line", None, (lambda p: None)
    try:
        config = ComparisonConfig.model_validate(overrides.apply(data))
    except ValidationError as exc:
        raise validation_error(exc, ComparisonConfig, source, locate) from None
    return config, source, relative_to, locate


def default_name(arguments: Sequence[str]) -> str:
    """A study name from the models named (short, one path component)."""
    name = "compare-" + "-".join(re.sub(r"[^A-Za-z0-9]+", "", Path(a).stem or a) for a in arguments)
    if len(name) > 60:
        name = name[:48] + "-" + hashlib.sha1("\0".join(arguments).encode()).hexdigest()[:8]
    return name


def plan_comparison(config: ComparisonConfig, source: str, relative_to: Path | None, out_dir: Path, registry, device: str, console: Console) -> list[PlannedModel]:
    """The models and the steps each trains: read back from ``out_dir``'s resolved plan when this
    comparison was planned before (the same models and settings), else resolved and measured now."""
    from dicesearch.compare.models import resolve_all
    from dicesearch.train.matching import matched_steps

    models = resolve_all(config.models, registry, relative_to)
    _check_fits_data(models, config)
    stored = out_dir / RESOLVED
    if stored.is_file():
        previous_config, previous = read_plan_models(stored, registry)
        fresh = [PlannedModel(m.name, m.spec, m.origin, 0, 0) for m in models]
        if _what_is_measured(config, fresh) == _what_is_measured(previous_config, previous):
            return previous
        raise SpecError(
            f"{stored}: this comparison was started with other models or settings; give it another --name (or name:), "
            f"or delete {out_dir} to start it again"
        )
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(config.budget.threads or threads)  # a trial process's threads: what match: seconds measures
    try:
        planned = []
        for model in models:
            if config.budget.match == "seconds":
                console.print(f"measuring a training step of {model.name} ...", highlight=False)
            matched = matched_steps(model.spec, config.data, config.budget, device)
            planned.append(PlannedModel(model.name, model.spec, model.origin, matched.steps, matched.step_flops, matched.step_seconds))
    finally:
        torch.set_num_threads(threads)
    return planned


def _what_is_measured(config: ComparisonConfig, models: list[PlannedModel]) -> dict[str, Any]:
    document = plan_document(config, models)
    document.pop("resolved")
    for key in (*OPERATIONAL, "study_name"):
        document.pop(key, None)
    return document


def _check_fits_data(models, config: ComparisonConfig) -> None:
    from dicesearch.data import load_dataset
    from dicesearch.data.verify import verify_data
    from dicesearch.train.trainer import check_data_fits

    verify_data(config.data)  # every file decoded once, before anything is written
    dataset = load_dataset(config.data)
    for model in models:
        try:
            check_data_fits(model.spec, dataset, config.data)
        except DataError as exc:
            raise DataError(f"model {model.name} ({model.origin}): {exc}") from None
    if config.budget.fid_samples > len(dataset):
        raise DataError(f"budget.fid_samples: {config.budget.fid_samples:,} reference images asked for, but the data holds {len(dataset):,}")


def build_plan(config: ComparisonConfig, models: list[PlannedModel], out_dir: Path, registry) -> ComparisonPlan:
    return ComparisonPlan(config, models, str(out_dir / RESOLVED), registry)


def out_folder(config: ComparisonConfig, out_dir: Path | None) -> Path:
    return Path(out_dir or inside(Path("runs"), config.resolved_study_name)).absolute()  # a name never leaves runs/


__all__ = ["OPERATIONAL", "Overrides", "build_plan", "default_name", "load_comparison", "load_plan", "out_folder", "plan_comparison", "write_plan"]
