"""A comparison's models, resolved: each reference (a preset, a spec file, a sweep's best) becomes a named spec.

Command-line arguments use the same forms: ``DiT-digits`` (a preset), ``best.yaml`` (a spec
file; ``dicesearch export`` writes one), ``search_spaces/cascade.yaml`` (a finished sweep:
its best trial) or ``search_spaces/cascade.yaml:top3`` (its best 3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dicesearch.compare.config import ModelRef
from dicesearch.errors import SpecError


@dataclass(frozen=True)
class NamedSpec:
    name: str  # its label in tables and plots
    spec: object  # the validated ModelSpec
    origin: str  # where it came from, in words ("preset DiT-digits", "trial 20 of sweep dice-cascade")


def reference(argument: str) -> ModelRef:
    """A command-line model argument as a reference."""
    match = re.fullmatch(r"(.+\.ya?ml):top(\d+)", argument)
    path = Path(match.group(1) if match else argument)
    if path.is_file() and _is_search_space(path):
        return ModelRef(sweep=str(path), **({"top": int(match.group(2))} if match else {}))
    if match:
        raise SpecError(f"{argument}: ':top{match.group(2)}' goes with a finished sweep's search-space file, and {path} is not one")
    return ModelRef(spec=argument) if path.is_file() else ModelRef(preset=argument)


def _is_search_space(path: Path) -> bool:
    from dicesearch.yaml_files import load_yaml_file

    _, data = load_yaml_file(path, SpecError, "file")
    return isinstance(data, dict) and "parameters" in data and "base" in data


def resolve(ref: ModelRef | str, registry, relative_to: Path | None = None) -> list[NamedSpec]:
    """The model(s) a reference names (a sweep's ``top`` k are k models)."""
    from dicesearch.spec import load_spec, parse_spec

    if isinstance(ref, str):
        file_part = re.sub(r":top\d+$", "", ref)
        near = relative_to is not None and not Path(file_part).is_absolute() and (relative_to / file_part).is_file()
        ref = reference(str(relative_to / ref) if near else ref)
    if ref.preset is not None:
        spec = load_spec(ref.preset, registry)
        return [NamedSpec(ref.name or spec.name or ref.preset, spec, f"preset {ref.preset}")]
    if isinstance(ref.spec, dict):
        spec = parse_spec(ref.spec, "models[].spec", registry)
        return [NamedSpec(ref.name or spec.name or "model", spec, "an inline spec")]
    if ref.spec is not None:
        path = _relative(ref.spec, relative_to)
        spec = load_spec(path, registry)
        return [NamedSpec(ref.name or path.stem, spec, f"spec file {path}")]
    return _from_sweep(ref, registry, relative_to)


def _relative(name: str, relative_to: Path | None) -> Path:
    path = Path(name)
    if relative_to is not None and not path.is_absolute() and (relative_to / path).is_file():
        return relative_to / path
    return path


def _from_sweep(ref: ModelRef, registry, relative_to: Path | None) -> list[NamedSpec]:
    """The best ``ref.top`` scored trials of a finished sweep, best first."""
    from dicesearch.spec import parse_spec
    from dicesearch.spec.io import read_yaml
    from dicesearch.sweep.results.export import load_study
    from dicesearch.sweep.space.search_space import load_search_space
    from dicesearch.sweep.store.locations import SweepLocations
    from dicesearch.sweep.store.queries import is_scored, ranked_trials
    from dicesearch.sweep.store.schema import ATTR_SPEC

    path = _relative(ref.sweep, relative_to)
    space = load_search_space(path, registry)
    locations = SweepLocations.for_config(space.config, storage=ref.storage)
    study = load_study(space.config.resolved_study_name, locations.storage_url)
    scored = [t for t in ranked_trials(study) if is_scored(t) and t.user_attrs.get(ATTR_SPEC)]
    if not scored:
        raise SpecError(f"{path}: the sweep '{space.config.resolved_study_name}' has no scored trial yet; run it first (dicesearch sweep {path})")
    chosen = scored[: ref.top]
    if len(chosen) < ref.top:
        raise SpecError(f"{path}: top: {ref.top}, but the sweep has {len(scored)} scored trial(s)")
    models = []
    for rank, trial in enumerate(chosen):
        spec = parse_spec(read_yaml(trial.user_attrs[ATTR_SPEC], f"trial {trial.number}"), f"{path} (trial {trial.number})", registry)
        default = f"{space.config.resolved_study_name}#{trial.number}"
        name = (ref.name if ref.top == 1 else f"{ref.name}-{rank + 1}") if ref.name else default
        models.append(NamedSpec(name, spec, f"trial {trial.number} of sweep {space.config.resolved_study_name}"))
    return models


def resolve_all(refs: list[ModelRef | str], registry, relative_to: Path | None = None) -> list[NamedSpec]:
    """Every model of a comparison; names must be distinct (a label picks one)."""
    models = [model for ref in refs for model in resolve(ref, registry, relative_to)]
    seen: dict[str, NamedSpec] = {}
    for model in models:
        if model.name in seen:
            raise SpecError(
                f"two models are named '{model.name}' ({seen[model.name].origin}; {model.origin}); give one a name: "
                f"{{preset: ..., name: other}} in the file"
            )
        seen[model.name] = model
    return models


__all__ = ["NamedSpec", "reference", "resolve", "resolve_all"]
