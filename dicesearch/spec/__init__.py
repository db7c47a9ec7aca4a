"""Declarative model specs: validated pydantic models, read from and written to YAML."""

from dicesearch.spec.io import dump_spec, list_presets, load_spec, parse_spec, preset_path, spec_to_dict
from dicesearch.spec.models import CascadeSpec, InitSpec, InputSpec, ModelSpecBase, SpecFieldError

__all__ = [
    "CascadeSpec",
    "InitSpec",
    "InputSpec",
    "ModelSpecBase",
    "SpecFieldError",
    "dump_spec",
    "list_presets",
    "load_spec",
    "parse_spec",
    "preset_path",
    "spec_to_dict",
]
