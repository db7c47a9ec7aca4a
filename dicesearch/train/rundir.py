"""A run folder: what was trained, on what, how, and its checkpoints.

::

    OUT/
      spec.yaml       the resolved model spec (every default filled in; `dicesearch resolve`)
      data.yaml       the data spec
      train.yaml      the TrainConfig
      checkpoints/    step-00000500.safetensors, ... (see ``checkpoint``)
      log.jsonl       log events, when the JsonlLog callback is used (the CLI adds it)

The three YAML files are written (atomically) before the first step, so a run is
self-describing from the start: ``dicesearch train --resume --out OUT`` and
``dicesearch sample OUT`` need nothing else. A resume must keep the spec, the data and
every config field that shapes the trajectory (``TrainConfig.TRAJECTORY``); ``steps``,
the logging, checkpoint and eval intervals and ``num_workers`` may change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn

from dicesearch.data import DataSpec, parse_data_spec
from dicesearch.errors import DataError, TrainingError
from dicesearch.spec import load_spec, spec_to_dict
from dicesearch.spec.io import recorded_spec_yaml
from dicesearch.train.checkpoint import latest_checkpoint, read_checkpoint_info, read_weights, write_atomically
from dicesearch.train.config import TrainConfig, dump_config, load_config
from dicesearch.yaml_files import load_yaml_file

__all__ = ["RunDir", "TrainedModel", "load_trained", "locate_checkpoint", "prepare_run"]


def _data_dict(data_spec: DataSpec) -> dict[str, Any]:
    return data_spec.model_dump(mode="json")


def _first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first (path, old, new) where two JSON-like values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            found = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if old == new else (path or "(top level)", old, new)


class RunDir:
    """The files of one run under ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self.spec_file = self.root / "spec.yaml"
        self.data_file = self.root / "data.yaml"
        self.train_file = self.root / "train.yaml"
        self.checkpoints = self.root / "checkpoints"
        self.log_file = self.root / "log.jsonl"

    def has_run(self) -> bool:
        return any(p.exists() for p in (self.spec_file, self.data_file, self.train_file)) or self.latest_checkpoint() is not None

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.checkpoints)

    def write(self, spec, data_spec: DataSpec, config: TrainConfig) -> None:
        for path, text in (
            (self.spec_file, recorded_spec_yaml(spec)),  # the plugins' distributions and versions as a header
            (self.data_file, yaml.safe_dump(_data_dict(data_spec), sort_keys=False)),
            (self.train_file, dump_config(config)),
        ):
            write_atomically(path, lambda tmp, text=text: tmp.write_text(text))

    def read_spec(self, registry=None):
        if not self.spec_file.is_file():
            raise TrainingError(f"run folder {self.root}: no spec.yaml; give a folder written by `dicesearch train`")
        return load_spec(self.spec_file, registry)

    def read_data_spec(self) -> DataSpec:
        if not self.data_file.is_file():
            raise TrainingError(f"run folder {self.root}: no data.yaml; give a folder written by `dicesearch train`")
        _, raw = load_yaml_file(self.data_file, DataError, "data file")
        return parse_data_spec(raw, where=str(self.data_file))

    def read_train_config(self) -> TrainConfig:
        if not self.train_file.is_file():
            raise TrainingError(f"run folder {self.root}: no train.yaml; give a folder written by `dicesearch train`")
        return load_config(TrainConfig, self.train_file)

    def check_resumable(self, spec, data_spec: DataSpec, config: TrainConfig) -> None:
        """Raise ``TrainingError`` unless the saved run can go on with these inputs."""
        hint = f"resume with the run's own settings or train into a new --out than {self.root}"
        if self.spec_file.is_file():
            found = _first_difference(spec_to_dict(self.read_spec()), spec_to_dict(spec))
            if found:
                raise TrainingError(f"{self.spec_file}: spec field {found[0]} was {found[1]!r}, now {found[2]!r}; {hint}")
        if self.data_file.is_file():
            found = _first_difference(_data_dict(self.read_data_spec()), _data_dict(data_spec))
            if found:
                raise TrainingError(f"{self.data_file}: data field {found[0]} was {found[1]!r}, now {found[2]!r}; {hint}")
        if self.train_file.is_file():
            saved = self.read_train_config()
            for name in TrainConfig.TRAJECTORY:
                old, new = getattr(saved, name), getattr(config, name)
                if old != new:
                    raise TrainingError(f"{self.train_file}: {name} was {old!r}, now {new!r} (it changes the trajectory); {hint}")


def prepare_run(out_dir: str | os.PathLike, spec, data_spec: DataSpec, config: TrainConfig, resume: bool) -> tuple[RunDir, Path | None]:
    """Check ``out_dir`` and write the run files; returns the folder and the checkpoint to resume from.

    A fresh run refuses a folder that already holds a run (nothing saved is ever
    overwritten); a resume refuses one whose run differs (see the module doc) and starts
    from step 0 when no checkpoint was written yet.
    """
    run = RunDir(out_dir)
    if run.root.exists() and not run.root.is_dir():
        raise TrainingError(f"output {run.root}: is a file; give a folder for the run")
    if resume:
        run.check_resumable(spec, data_spec, config)
    elif run.has_run():
        raise TrainingError(f"output {run.root}: already holds a run; pass --resume (resume=True) to continue it or choose another --out")
    checkpoint = run.latest_checkpoint() if resume else None
    run.write(spec, data_spec, config)
    return run, checkpoint


@dataclass(frozen=True)
class TrainedModel:
    """A trained denoiser ready to sample from, with what it was trained on."""

    model: nn.Module  # eval mode, no gradients
    spec: Any  # ModelSpec
    data_spec: DataSpec | None  # None: a run without data.yaml (imported weights, see dicesearch.checkpoints)
    step: int
    checkpoint: Path


def locate_checkpoint(path: Path) -> tuple[RunDir, Path]:
    """A run folder, its checkpoints/ folder or one checkpoint file -> (run, checkpoint)."""
    if path.is_file():
        root = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return RunDir(root), path
    if not path.is_dir():
        raise TrainingError(f"checkpoint {path}: no such file or folder; give a run folder written by `dicesearch train`")
    run = RunDir(path.parent if path.name == "checkpoints" and not (path / "spec.yaml").exists() else path)
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        raise TrainingError(f"run folder {run.root}: no checkpoints in {run.checkpoints}; train it first (`dicesearch train ... --out {run.root}`)")
    return run, checkpoint


def load_trained(path: str | os.PathLike, weights: Literal["ema", "model"] = "ema", device: str | torch.device = "cpu") -> TrainedModel:
    """Build the run's model and load one checkpoint's EMA (default) or raw weights into it."""
    from dicesearch.model import build_model

    run, checkpoint = locate_checkpoint(Path(path).expanduser())
    spec = run.read_spec()
    data_spec = run.read_data_spec() if run.data_file.is_file() else None
    info = read_checkpoint_info(checkpoint)
    model = build_model(spec)
    try:
        model.load_state_dict(read_weights(checkpoint, weights), strict=True)
    except RuntimeError as exc:
        raise TrainingError(f"checkpoint {checkpoint}: does not fit {run.spec_file} ({str(exc).splitlines()[0]}); keep checkpoints beside their own spec.yaml") from None
    model = model.to(device).eval().requires_grad_(False)
    return TrainedModel(model=model, spec=spec, data_spec=data_spec, step=info.step, checkpoint=checkpoint)
