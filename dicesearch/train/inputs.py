"""What a training command needs, gathered from files and flags: spec, data, config, folder.

The rules the ``dicesearch train`` command follows, kept out of the CLI:

- data: a YAML file holding the data spec (``kind: latents``, ``path: ...``; relative paths
  are relative to that file), or ``kind`` / ``path`` / ``vae`` flags, or, with neither,
  the embedded digits at the model's input resolution. A resumed run reuses its
  ``data.yaml`` unless new data are given; a run imported without data
  (``dicesearch import-checkpoint``) has none, and its first resume needs them.
- config: a YAML file of ``TrainConfig`` fields, or the defaults (a resumed run: its
  ``train.yaml``); ``steps`` overrides either.
- the spec: a preset name or a YAML file; a resumed run may omit it (its ``spec.yaml``).
- the folder: ``runs/<spec name>`` unless given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from dicesearch.data import DataSpec, parse_data_spec
from dicesearch.errors import DataError, DicesearchError
from dicesearch.files import inside
from dicesearch.yaml_files import load_yaml_file
from dicesearch.spec import load_spec
from dicesearch.train.config import TrainConfig, load_config, parse_config
from dicesearch.train.rundir import RunDir

__all__ = ["TrainInputs", "data_spec_from_flags", "load_data_file", "resolve_train_inputs"]


def load_data_file(path: str | os.PathLike) -> DataSpec:
    """A data spec from YAML (the mapping itself, or under a top-level ``data:`` key)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path}: cannot read it (no such file); give a YAML file with the data spec")
    _, raw = load_yaml_file(path, DataError, "data file")
    if isinstance(raw, dict) and set(raw) == {"data"}:
        raw = raw["data"]
    if isinstance(raw, dict):
        raw = {k: (str(path.parent / Path(v).expanduser()) if k in ("path", "vae") and isinstance(v, str) else v) for k, v in raw.items()}
    return parse_data_spec(raw, where=str(path))


def data_spec_from_flags(kind: str | None, path: Path | None, vae: Path | None, spec) -> DataSpec:
    """A data spec from ``--data-kind/--data-path/--vae``; pixel data at the model's resolution."""
    kind = kind or ("latents" if path is not None and path.suffix in (".safetensors", ".npz") else "folder" if path is not None else "digits")
    raw: dict[str, Any] = {"kind": kind}
    if kind == "digits":
        if path is not None or vae is not None:
            raise DataError("--data-path/--vae: the digits are embedded; drop them or pick --data-kind folder/latents")
        raw["resolution"] = spec.input.resolution
    else:
        if path is None:
            raise DataError(f"--data-path: data kind {kind!r} needs a path; give --data-path (a {'latent file' if kind == 'latents' else 'image folder'})")
        raw["path"] = str(path.expanduser().absolute())
        if kind == "folder":
            raw["resolution"] = spec.input.resolution
            if vae is not None:
                raise DataError("--vae: an image folder trains in pixel space; encode it first (dicesearch encode) and train on the latent file")
        elif vae is not None:
            raw["vae"] = str(vae.expanduser().absolute())
    return parse_data_spec(raw, where="data")


@dataclass(frozen=True)
class TrainInputs:
    spec: Any  # ModelSpec
    data_spec: DataSpec
    config: TrainConfig
    out_dir: Path


def resolve_train_inputs(
    spec: str | None,
    data_file: Path | None,
    data_kind: str | None,
    data_path: Path | None,
    vae: Path | None,
    config_file: Path | None,
    steps: int | None,
    out_dir: Path | None,
    resume: bool,
) -> TrainInputs:
    """Apply the rules of the module doc; every problem is a one-line DicesearchError."""
    if spec is None and not (resume and out_dir is not None):
        raise DicesearchError("SPEC: give a spec file or preset name (`dicesearch presets`), or --resume --out DIR to continue a run")
    if data_file is not None and (data_kind or data_path or vae):
        raise DataError("--data: give either a data file or --data-kind/--data-path/--vae, not both")
    run = RunDir(out_dir) if out_dir is not None else None
    continuing = resume and run is not None and run.spec_file.is_file()
    model_spec = load_spec(spec) if spec is not None else run.read_spec()
    if data_file is not None:
        data_spec = load_data_file(data_file)
    elif data_kind or data_path or vae or not continuing:
        data_spec = data_spec_from_flags(data_kind, data_path, vae, model_spec)
    elif not run.data_file.is_file():
        raise DataError(
            f"run folder {run.root}: no data.yaml (its weights were imported without data); give the data to train on: "
            "--data FILE or --data-kind/--data-path/--vae"
        )
    else:
        data_spec = run.read_data_spec()
    if config_file is not None:
        config = load_config(TrainConfig, config_file)
    elif continuing and run.train_file.is_file():
        config = run.read_train_config()
    else:
        config = TrainConfig()
    if steps is not None:
        config = parse_config(TrainConfig, {**config.model_dump(), "steps": steps}, "--steps")
    return TrainInputs(model_spec, data_spec, config, out_dir if out_dir is not None else inside(Path("runs"), model_spec.name))
