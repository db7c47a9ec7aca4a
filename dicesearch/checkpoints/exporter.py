"""A run's weights -> a state dict in the official layout (``dicesearch export-checkpoint``).

The file is what DiT's official sampling script loads: ``sample.py --model DiT-XL/2
--ckpt model.pt`` (``torch.load`` gives a plain state dict of the run's EMA weights, or
its raw weights with ``weights="model"``). Export is offered for DiT models only: the
Diffusion-RWKV and DiMR layouts import (``import-checkpoint``), but writing them back is
not part of the product (DiMR's would not be bit-exact: see ``transforms.Offset``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dicesearch.checkpoints import dit
from dicesearch.checkpoints.families import layout_for
from dicesearch.checkpoints.files import write_official
from dicesearch.errors import CheckpointError

__all__ = ["ExportResult", "export_checkpoint"]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    family: str
    source: str  # the official code that loads it
    checkpoint: Path  # the run's checkpoint it came from
    step: int
    tensors: int
    command: str | None  # the official script's command line that runs it, where known


def export_checkpoint(
    run: str | os.PathLike, out: str | os.PathLike, *, weights: Literal["ema", "model"] = "ema", overwrite: bool = False
) -> ExportResult:
    """Write the weights of ``run`` (a run folder or one checkpoint file) to ``out`` in the official layout."""
    from dicesearch.train.checkpoint import read_checkpoint_info, read_weights
    from dicesearch.train.rundir import locate_checkpoint

    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise CheckpointError(f"output {out}: already exists; choose another -o or pass --overwrite")
    run_dir, checkpoint = locate_checkpoint(Path(run).expanduser())
    spec = run_dir.read_spec()
    where = str(run_dir.spec_file)
    layout = layout_for(spec, where)
    if layout.family != dit.NAME:
        raise CheckpointError(
            f"{where}: export-checkpoint writes DiT's layout only; {spec.name} is a {layout.family} model, whose "
            "official checkpoints import (import-checkpoint) but are not written back"
        )
    layout.check_supported(where)
    state = read_weights(checkpoint, weights)
    layout.check_model({key: tuple(t.shape) for key, t in state.items()}, str(checkpoint))
    official = layout.to_official(state)
    write_official(out, official)
    info = read_checkpoint_info(checkpoint)
    command = dit.sample_command(spec, out) if layout.family == dit.NAME else None
    return ExportResult(out, layout.family, layout.source, checkpoint, info.step, len(official), command)

