"""A search space: the validated file plus its resolved base spec; sampling, and the checks made before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dicesearch.errors import DicesearchError, SpecError
from dicesearch.registry import Registry, default_registry, unknown_name_message
from dicesearch.spec import parse_spec, preset_path, spec_to_dict
from dicesearch.spec.io import check_spec_forward, read_yaml, yaml_locator
from dicesearch.spec.messages import format_path, validation_error
from dicesearch.sweep.space.config import SweepConfig
from dicesearch.sweep.space.distributions import ChoiceParam
from dicesearch.sweep.space.proposal import Proposal
from dicesearch.sweep.space.spec_paths import assign, expand, format_tokens, get
from dicesearch.yaml_files import read_text


class SearchSpace:
    """A validated search-space file (``config``) plus its resolved base spec as plain data."""

    def __init__(self, config: SweepConfig, base: dict, source: str, registry: Registry, locate=None):
        self.config = config
        self.locate = locate or (lambda path: None)  # a field path of the file -> its line
        self.base = base  # the base ModelSpec as JSON-compatible data (defaults filled)
        self.source = source
        self.registry = registry

    # -- sampling --------------------------------------------------------------------------

    def sample(self, trial) -> tuple[Any, dict[str, Any]]:
        """Ask ``trial`` (an Optuna trial) for every applicable parameter.

        Returns the validated ModelSpec and the sampled values. Raises SpecError if the
        combination is not a valid model (e.g. channels not divisible by heads).
        """
        data, values = self.base, {}
        for name, tokens, dist in self.config.ordered_parameters():
            if not self._applies(data, tokens):
                continue
            value = dist.suggest(trial, name)
            values[name] = value
            data = self._set(data, tokens, value)
        return parse_spec(data, f"{self.source} (trial)", self.registry), values

    def propose(self, trial) -> Proposal:
        """The trial's configuration (:meth:`sample`) as the lifecycle takes it."""
        spec, values = self.sample(trial)
        return Proposal(spec, values)

    def apply(self, values: dict[str, Any]):
        """The ModelSpec for given parameter values (e.g. a finished trial's params)."""
        data = self.base
        for name, tokens, _ in self.config.ordered_parameters():
            if name in values and self._applies(data, tokens):
                data = self._set(data, tokens, values[name])
        return parse_spec(data, f"{self.source} (trial)", self.registry)

    def _plugin_model(self, data: dict, owner: tuple):
        """The params model of the block/conditioning at ``owner`` (a concrete path), or None."""
        kind = get(data, (*owner, "kind"))
        table = self.registry.spec_types.block_models if owner[-1] == "block" else self.registry.spec_types.conditioning_models
        return table.get(kind)

    def _applies(self, data: dict, tokens: tuple) -> bool:
        """Does this (possibly wildcard) path name a field of what ``data`` currently holds?"""
        if len(tokens) >= 2 and tokens[-2] in ("block", "conditioning") and tokens[-1] != "kind":
            try:
                owners = {c[:-1] for c in expand(data, tokens)}
            except KeyError:
                return False
            return all(
                (model := self._plugin_model(data, owner)) is not None and tokens[-1] in model.model_fields
                for owner in owners
            )
        return True

    def _set(self, data: dict, tokens: tuple, value: Any) -> dict:
        if tokens[-1] == "kind" and len(tokens) >= 2 and tokens[-2] in ("block", "conditioning"):
            table = self.registry.spec_types.block_models if tokens[-2] == "block" else self.registry.spec_types.conditioning_models
            new_model = table.get(value)
            for owner in {c[:-1] for c in expand(data, tokens)}:
                old = get(data, owner) or {}
                kept = {k: v for k, v in old.items() if new_model is not None and k in new_model.model_fields and k != "kind"}
                data = assign(data, owner, {"kind": value, **kept})
            return data
        return assign(data, tokens, value)

    def where(self, *path) -> str:
        """``file:line: path`` of a field of the search-space file, for one-line errors."""
        line = self.locate(tuple(path))
        return f"{self.source}{f':{line}' if line else ''}: {format_path(tuple(path))}"

    # -- static checks -----------------------------------------------------------------------

    def check(self) -> None:
        """Reject parameters that cannot mean anything, one line each (SpecError)."""
        for name, tokens, dist in self.config.ordered_parameters():
            line = self.locate(("parameters", name))
            where = f"{self.source}{f':{line}' if line else ''}: parameters.{name}"
            try:
                expand(self.base, tokens)
            except KeyError as exc:
                raise SpecError(f"{where}: {exc.args[0]} in the base spec; check the stage index") from None
            if tokens[-1] == "kind" and len(tokens) >= 2 and tokens[-2] in ("block", "conditioning"):
                table = self.registry.blocks if tokens[-2] == "block" else self.registry.conditionings
                word = "block" if tokens[-2] == "block" else "conditioning method"
                if not isinstance(dist, ChoiceParam):
                    raise SpecError(f"{where}: a {word} kind must be a choice, e.g. {{choice: [{', '.join(sorted(table)[:2])}]}}")
                for value in dist.choice:
                    if value not in table:
                        raise SpecError(f"{where}: {unknown_name_message(word, str(value), table)}")
                continue
            if len(tokens) >= 2 and tokens[-2] in ("block", "conditioning"):
                self._check_plugin_field(name, tokens, where)
            else:
                self._check_model_field(tokens, where)
            self._check_values(name, tokens, dist, where)

    def _candidate_kinds(self, owner_tokens: tuple) -> set[str]:
        kinds = set()
        for concrete in expand(self.base, (*owner_tokens, "kind")):
            kinds.add(get(self.base, concrete))
        for name, tokens, dist in self.config.ordered_parameters():
            if tokens[-1] == "kind" and isinstance(dist, ChoiceParam) and _overlaps(tokens[:-1], owner_tokens):
                kinds.update(dist.choice)
        return kinds

    def _check_plugin_field(self, name: str, tokens: tuple, where: str) -> None:
        field = tokens[-1]
        kinds = self._candidate_kinds(tokens[:-1])
        table = self.registry.spec_types.block_models if tokens[-2] == "block" else self.registry.spec_types.conditioning_models
        having = [k for k in sorted(kinds) if k in table and field in table[k].model_fields]
        if not having:
            fields = sorted({f for k in kinds if k in table for f in table[k].model_fields if f != "kind"})
            from dicesearch.registry import closest

            hint = closest(str(field), fields)
            raise SpecError(
                f"{where}: no {tokens[-2]} kind this parameter can meet ({', '.join(sorted(kinds))}) has "
                f"'{field}'; their parameters: {', '.join(fields)}" + (f"; did you mean '{hint}'?" if hint else "")
            )

    def _check_model_field(self, tokens: tuple, where: str) -> None:
        from dicesearch.spec.messages import walk

        model_spec = self.registry.spec_types.ModelSpec
        concrete = [t if t != "*" else 0 for t in tokens]
        parent_path, parent = walk(model_spec, tuple(concrete[:-1]))
        leaf = concrete[-1]
        if parent is None or not isinstance(leaf, str) or leaf not in parent.model_fields:
            allowed = sorted(parent.model_fields) if parent is not None else []
            from dicesearch.registry import closest

            hint = closest(str(leaf), allowed)
            raise SpecError(
                f"{where}: '{format_tokens(tokens)}' is not a field of the spec"
                + (f"; fields here: {', '.join(allowed)}" if allowed else "")
                + (f"; did you mean '{hint}'?" if hint else "")
            )

    def _check_values(self, name: str, tokens: tuple, dist, where: str) -> None:
        """Each boundary value must make a valid spec on its own (types, ranges, geometry)."""
        problems = []
        for value in dist.values():
            if not self._applies(self.base, tokens):
                return  # a block field of a kind the base does not use: checked per trial
            try:
                parse_spec(self._set(self.base, tokens, value), "check", self.registry)
            except SpecError as exc:
                problems.append((value, str(exc).split(": ", 2)[-1]))
        if problems and len(problems) == len(dist.values()):
            value, problem = problems[0]
            raise SpecError(f"{where}: no value in the range makes a valid model (e.g. {value!r}: {problem})")


def _overlaps(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x == y or "*" in (x, y) for x, y in zip(a, b))


def _parse_base(base: str | dict, source: Path, registry: Registry, locate):
    """The base spec, from inline data, a path (relative to the file) or a preset; its
    errors carry the line they are on (in the search space, or in the base's own file)."""
    if isinstance(base, dict):
        spec = parse_spec(base, str(source), registry, locate=locate, prefix=("base",))
        check_spec_forward(spec, str(source), registry=registry, locate=locate, prefix=("base",))
        return spec
    candidate = (source.parent / base) if source.parent else Path(base)
    path = candidate if candidate.is_file() else Path(base) if Path(base).is_file() else preset_path(base)
    if path is None:
        line = locate(("base",))
        raise SpecError(f"{source}{f':{line}' if line else ''}: base: '{base}' is neither a spec file (relative to the search space) nor a preset")
    text = read_text(path, SpecError, "spec")
    spec = parse_spec(read_yaml(text, str(path)), str(path), registry, text)
    check_spec_forward(spec, str(path), text, registry)  # a block of the wrong shape would fail every trial
    return spec


def _read_config(path: Path):
    """(the file's validated SweepConfig, its YAML locator); one-line SpecErrors."""
    if not path.is_file():
        raise SpecError(f"{path}: no such search-space file")
    text = read_text(path, SpecError, "search space")
    data = read_yaml(text, str(path))
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping with keys such as base, parameters, budget")
    locate = yaml_locator(text)
    try:
        return SweepConfig.model_validate(data), locate
    except ValidationError as exc:
        raise validation_error(exc, SweepConfig, str(path), locate) from None
    except DicesearchError as exc:
        raise SpecError(f"{path}: {exc}") from None


def read_sweep_config(path: str | Path) -> SweepConfig:
    """A search-space file's sweep settings, validated, without its base spec or the space's
    checks (``load_search_space`` does those, the slow part): what a command needs to know
    before it loads the space, such as its backend."""
    return _read_config(Path(path))[0]


def load_search_space(path: str | Path, registry: Registry | None = None) -> SearchSpace:
    """Read, validate and statically check a search-space file (raises one-line SpecErrors)."""
    registry = registry or default_registry()
    path = Path(path)
    config, locate = _read_config(path)
    base_spec = _parse_base(config.base, path, registry, locate)
    space = SearchSpace(config, spec_to_dict(base_spec), str(path), registry, locate)
    space.check()
    return space


__all__ = ["SearchSpace", "load_search_space", "read_sweep_config"]
