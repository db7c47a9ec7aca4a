"""An official checkpoint -> a dicesearch run folder at step 0 (``dicesearch import-checkpoint``).

The folder holds ``spec.yaml`` (the preset, resolved) and ``checkpoints/step-00000000.safetensors``
(the official raw weights as ``model.*``, its EMA weights as ``ema.*``; one set in both
when the file holds one), plus ``data.yaml`` and ``train.yaml`` when data or a training
config were given. ``dicesearch sample RUN`` draws from it (``--vae DIR`` decodes latents
when the run has no data.yaml), ``dicesearch profile RUN`` analyses it, and
``dicesearch train --resume --out RUN`` fine-tunes it from the imported weights with a
fresh AdamW.

Every check runs before anything is written; the folder appears whole (it is written
beside its final place and renamed) or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from dicesearch.checkpoints.families import fitting_preset, layout_for
from dicesearch.checkpoints.files import read_official
from dicesearch.checkpoints.layout import OfficialLayout
from dicesearch.errors import CheckpointError
from dicesearch.files import ordinary_folder_mode

__all__ = ["ImportResult", "import_checkpoint"]


@dataclass(frozen=True)
class ImportResult:
    run_dir: Path
    checkpoint: Path
    family: str  # "DiT"
    kind: str  # what the file held, e.g. "state dict"
    tensors: int  # official tensors read (one weight set)
    values: int  # their values
    notes: tuple[str, ...] = ()  # how the imported model still differs from the official one (DiMR's class token)


def _check(layout: OfficialLayout, state: dict[str, torch.Tensor], where: str, registry) -> None:
    try:
        layout.check_file(state, where)
    except CheckpointError:
        fit = fitting_preset(state, registry)
        if fit is None or fit == layout.preset:
            raise
        layout.check_file(state, where, hint=f"the file fits preset {fit}")  # raises, with the hint
    layout.check_supported(where)


def _converted(layout: OfficialLayout, state: dict[str, torch.Tensor], model, where: str) -> dict[str, torch.Tensor]:
    ours = {key: tensor.float() for key, tensor in layout.to_ours(state).items()}  # fp16/bf16 files: exact upcast
    try:  # the strict load, on the meta model: nothing allocated twice
        model.load_state_dict(ours, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: does not load into preset {layout.preset} ({str(exc).splitlines()[0]})") from None
    return ours


def _refuse_existing(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"output {out}: already exists and is not an empty folder; choose a new -o/--out")


def import_checkpoint(spec, path: str | os.PathLike, out_dir: str | os.PathLike, *, data_spec=None, config=None, registry=None) -> ImportResult:
    """Convert the official checkpoint ``path`` for ``spec`` into the run folder ``out_dir``."""
    from dicesearch.model import build_model
    from dicesearch.spec.io import recorded_spec_yaml
    from dicesearch.train.checkpoint import checkpoint_path, save_weights_checkpoint
    from dicesearch.train.config import TrainConfig, dump_config

    path, out = Path(path).expanduser(), Path(out_dir).expanduser()
    where = str(path)
    layout = layout_for(spec, where)
    _refuse_existing(out)
    weights = read_official(path)
    sets = {"model": weights.model} if weights.ema is weights.model else {"model": weights.model, "ema": weights.ema}
    for state in sets.values():  # the file's side first: its keys, shapes, and what the preset lacks
        _check(layout, state, where, registry)
    with torch.device("meta"):
        model = build_model(spec, registry)
    layout.check_model({key: tuple(v.shape) for key, v in model.state_dict().items()}, where)
    converted = {name: _converted(layout, state, model, where) for name, state in sets.items()}
    converted.setdefault("ema", converted["model"])

    seed = (config or TrainConfig()).seed
    files = {"spec.yaml": recorded_spec_yaml(spec, registry)}  # with the plugins' distributions and versions
    if data_spec is not None:
        files["data.yaml"] = yaml.safe_dump(data_spec.model_dump(mode="json"), sort_keys=False)
    if config is not None:
        files["train.yaml"] = dump_config(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing-", dir=out.parent))
    try:
        for name, text in files.items():
            (staging / name).write_text(text)
        source = {"imported_from": str(path.resolve()), "official_layout": f"{layout.family} ({layout.source})", "official_content": weights.kind}
        if layout.notes:
            source["import_notes"] = "; ".join(layout.notes)
        save_weights_checkpoint(checkpoint_path(staging / "checkpoints", 0), step=0, seed=seed,
                                model=converted["model"], ema=converted["ema"], extra=source)  # fmt: skip
        staging.chmod(ordinary_folder_mode())  # mkdtemp makes it private; a run folder is an ordinary folder
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    n = sum(t.numel() for t in weights.ema.values())
    return ImportResult(out, checkpoint_path(out / "checkpoints", 0), layout.family, weights.kind, len(weights.ema), n, layout.notes)
