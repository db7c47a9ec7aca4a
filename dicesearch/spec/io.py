"""Read and write model specs as YAML, and find the shipped presets."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dicesearch.errors import SpecError
from dicesearch.provenance import Provenance, spec_provenance
from dicesearch.spec.messages import format_path, validation_error
from dicesearch.spec.models import SpecFieldError
from dicesearch.yaml_files import compose, parse_yaml, read_text

PRESET_PACKAGE = "dicesearch.presets"


# -- presets ---------------------------------------------------------------------------


def _preset_key(name: str) -> str:
    """'DiT-XL/2' -> 'dit-xl-2' (file stem)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def list_presets() -> dict[str, Path]:
    """Preset display names (from each file's ``name:``) -> file path."""
    presets = {}
    for entry in importlib.resources.files(PRESET_PACKAGE).iterdir():
        if entry.name.endswith(".yaml"):
            path = Path(str(entry))
            data = yaml.safe_load(path.read_text()) or {}
            presets[data.get("name", path.stem)] = path
    return dict(sorted(presets.items()))


def preset_path(name: str) -> Path | None:
    key = _preset_key(name)
    for display, path in list_presets().items():
        if _preset_key(display) == key or path.stem == key:
            return path
    return None


# -- YAML with line numbers --------------------------------------------------------------


def read_yaml(text: str, source: str) -> Any:
    """Parsed YAML (``dicesearch.yaml_files``: UTF-8, bounded depth, no duplicate keys, no
    control characters); every problem one ``SpecError`` line with file, line and column."""
    return parse_yaml(text, source, SpecError)


def yaml_locator(text: str):
    """A function mapping a field path to the 1-based line where it is written."""
    root = compose(text)

    def locate(path) -> int | None:
        node, line = root, None
        for part in path:
            if isinstance(node, yaml.MappingNode):
                match = next((v for k, v in node.value if k.value == str(part)), None)
                key = next((k for k, v in node.value if k.value == str(part)), None)
                if match is None:
                    break
                line, node = key.start_mark.line + 1, match
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    return locate


# -- specs -------------------------------------------------------------------------------


def _registry(registry):
    if registry is None:
        from dicesearch.registry import default_registry

        registry = default_registry()
    return registry


def parse_spec(data: Any, source: str = "<spec>", registry=None, text: str | None = None, locate=None, prefix=()):
    """Validate already-parsed YAML data into a ModelSpec (raises SpecError, one line).

    ``text`` (the YAML it came from) gives the errors their line numbers; for a spec inside
    another file (a search space's inline ``base``) ``locate`` maps paths of that file to
    lines and ``prefix`` (``("base",)``) is where the spec sits in it."""
    registry = _registry(registry)
    model_spec = registry.spec_types.ModelSpec
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping with keys such as input, conditioning, stages; got {type(data).__name__}")
    try:
        return model_spec.model_validate(data)
    except ValidationError as exc:
        locate = locate or (yaml_locator(text) if text else None)
        recorded = Provenance.from_header(text) if text else None  # names the distribution of a kind gone missing
        hint = f"run `dicesearch validate {source}` to list them"
        raise validation_error(exc, model_spec, source, locate, hint, registry, recorded, prefix) from None


def check_spec_forward(spec, source: str, text: str | None = None, registry=None, locate=None, prefix=()) -> None:
    """One forward at batch 1 on the meta device (``dicesearch.model.feasibility.check_forward``):
    a block that fails or returns the wrong shape is a SpecError at its line in ``text``."""
    from dicesearch.model.feasibility import check_forward

    try:
        check_forward(spec, _registry(registry))
    except SpecFieldError as exc:
        locate = locate or (yaml_locator(text) if text else None)
        path = (*prefix, *exc.path)
        line = locate(path) if locate else None
        raise SpecError(f"{source}{f':{line}' if line else ''}: {format_path(path)}: {exc.message}") from None


def load_spec(name_or_path: str | Path, registry=None, forward: bool = False):
    """Load a spec from a YAML file or a preset name (e.g. ``DiT-XL/2``); with ``forward``,
    also run it once on the meta device (:func:`check_spec_forward`)."""
    path = Path(name_or_path)
    if not path.is_file():
        preset = preset_path(str(name_or_path))
        if preset is None:
            known = ", ".join(list_presets())
            raise SpecError(f"{name_or_path}: no such file or preset; presets: {known}")
        path = preset
    text = read_text(path, SpecError, "spec")
    data = read_yaml(text, str(path))
    spec = parse_spec(data, str(path), registry, text)
    if forward:
        check_spec_forward(spec, str(path), text, registry)
    return spec


def _kind_first(value: Any) -> Any:
    if isinstance(value, dict):
        ordered = {"kind": value["kind"]} if "kind" in value else {}
        ordered.update((k, _kind_first(v)) for k, v in value.items() if k != "kind")
        return ordered
    if isinstance(value, (list, tuple)):
        return [_kind_first(v) for v in value]
    return value


def spec_to_dict(spec: BaseModel) -> dict:
    """Every field, defaults included, JSON-compatible, ``kind`` first in each mapping."""
    return _kind_first(spec.model_dump(mode="json"))


def dump_spec(spec: BaseModel) -> str:
    """YAML text that ``load_spec`` reads back to an equal spec."""
    return yaml.safe_dump(spec_to_dict(spec), sort_keys=False, default_flow_style=None, width=100)


def recorded_spec_yaml(spec, registry=None) -> str:
    """The spec's YAML (``dump_spec``) under its provenance header: what run folders and sweep
    trials keep, and ``dicesearch export`` writes out."""
    if registry is None:
        from dicesearch.registry import default_registry

        registry = default_registry()
    return spec_provenance(spec, registry).header() + dump_spec(spec)
