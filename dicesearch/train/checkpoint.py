"""Training checkpoints: one safetensors file per saved step, written atomically.

Layout of ``step-00001000.safetensors`` (format ``dicesearch-checkpoint/1``):

- tensors ``model.<name>`` and ``ema.<name>``: the model's and the EMA's ``state_dict``
  (fp32), and ``optimizer.<param index>.<key>``: AdamW's per-parameter state
  (``exp_avg``, ``exp_avg_sq``, ``step``);
- string metadata (the safetensors header): ``format``, ``step`` (optimiser steps done),
  ``seed``, ``optimizer_groups`` (JSON: AdamW's param groups), ``grad_scaler`` (JSON: the
  GradScaler's state, ``{}`` when off), ``rng`` and the torch / dicesearch versions.

A checkpoint without ``optimizer_groups`` (step 0 of a run whose weights were imported,
``save_weights_checkpoint``) holds weights only: resuming from it starts AdamW and the
GradScaler afresh from the run's config.

No generator state is stored: every random draw of step k is a function of (seed, k)
(see ``seeding``), so ``seed`` and ``step`` are all a resume needs. Files are written to a
hidden temporary file in the same folder, flushed to disk, then renamed over the target, so
a kill mid-write leaves the previous checkpoints intact (and a stray ``.step-*.partial``
file that ``list_checkpoints`` ignores and ``remove_partial_files`` deletes). Nothing is
unpickled on load.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from dicesearch.errors import TrainingError, one_line
from dicesearch.files import give_ordinary_mode

__all__ = [
    "FORMAT",
    "CheckpointInfo",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "read_checkpoint_info",
    "read_weights",
    "remove_partial_files",
    "save_checkpoint",
    "save_weights_checkpoint",
]

FORMAT = "dicesearch-checkpoint/1"
_NAME = re.compile(r"^step-(\d+)\.safetensors$")
_RNG_NOTE = "derived from (seed, step) by dicesearch.train.seeding; no generator state needed"


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint's header: where it is, how many steps it holds, and its metadata."""

    path: Path
    step: int
    seed: int
    metadata: dict[str, str]


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step-{step:08d}.safetensors"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := _NAME.match(name))]
    return sorted(found)


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def remove_partial_files(folder: Path) -> None:
    """Delete temporary files left by a process killed while writing a checkpoint."""
    for path in Path(folder).glob(".step-*.partial"):
        path.unlink(missing_ok=True)


def prune_checkpoints(folder: Path, keep: int | None) -> None:
    """Delete all but the ``keep`` newest checkpoints (``None`` keeps all)."""
    if keep is None:
        return
    for _, path in list_checkpoints(folder)[:-keep]:
        path.unlink(missing_ok=True)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _cpu_tensors(prefix: str, state: dict[str, torch.Tensor], seen: set[int], out: dict[str, torch.Tensor]) -> None:
    """Add ``prefix.name`` -> a contiguous CPU tensor; storage shared with one already added is copied."""
    for name, tensor in state.items():
        tensor = tensor.detach().to("cpu").contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(pointer)
        out[f"{prefix}.{name}"] = tensor


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: Path, write) -> Path:
    """Call ``write(temp_path)``, flush it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        give_ordinary_mode(tmp)  # mkstemp's 0600 would hide the file from whoever the umask lets read it
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_checkpoint(
    path: Path,
    *,
    step: int,
    seed: int,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_scaler: torch.amp.GradScaler,
) -> Path:
    """Write everything a resume needs to ``path`` (atomically)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    _cpu_tensors("model", model.state_dict(), seen, tensors)
    _cpu_tensors("ema", ema.state_dict(), seen, tensors)
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        _cpu_tensors(f"optimizer.{index}", {k: v for k, v in state.items() if torch.is_tensor(v)}, seen, tensors)
    metadata = {
        "format": FORMAT,
        "step": str(step),
        "seed": str(seed),
        "optimizer_groups": json.dumps(optimizer_state["param_groups"]),
        "grad_scaler": json.dumps(grad_scaler.state_dict()),
        "rng": _RNG_NOTE,
        "torch": torch.__version__,
        "dicesearch": _version("dicesearch"),
    }
    return write_atomically(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def save_weights_checkpoint(
    path: Path, *, step: int, seed: int, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor], extra: dict[str, str]
) -> Path:
    """Write model and EMA weights with no optimiser state (e.g. imported ones) to ``path``, atomically.

    ``extra`` adds string metadata (where the weights came from).
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    _cpu_tensors("model", model, seen, tensors)
    _cpu_tensors("ema", ema, seen, tensors)
    metadata = {**extra, "format": FORMAT, "step": str(step), "seed": str(seed), "rng": _RNG_NOTE,
                "torch": torch.__version__, "dicesearch": _version("dicesearch")}  # fmt: skip
    return write_atomically(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _open(path: Path):
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # SafetensorError, OSError: a truncated or foreign file
        raise TrainingError(f"checkpoint {path}: not a readable safetensors file ({one_line(exc)}); delete it to fall back to the previous one") from None


def _info(path: Path, metadata: dict[str, str]) -> CheckpointInfo:
    if metadata.get("format") != FORMAT:
        raise TrainingError(f"checkpoint {path}: format {metadata.get('format')!r}, expected {FORMAT!r}; give a checkpoint written by `dicesearch train`")
    return CheckpointInfo(path=path, step=int(metadata["step"]), seed=int(metadata["seed"]), metadata=metadata)


def read_checkpoint_info(path: Path) -> CheckpointInfo:
    """The header of a checkpoint (no tensors loaded)."""
    with _open(Path(path)) as handle:
        return _info(Path(path), dict(handle.metadata() or {}))


def read_weights(path: Path, which: Literal["ema", "model"] = "ema") -> dict[str, torch.Tensor]:
    """One of the two state dicts of a checkpoint, without loading the others."""
    path = Path(path)
    prefix = f"{which}."
    with _open(path) as handle:
        _info(path, dict(handle.metadata() or {}))
        return {key[len(prefix) :]: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}


def _load_module(path: Path, module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TrainingError(f"checkpoint {path}: its {what} weights do not fit this model ({one_line(exc, 160)}); resume with the run's own spec.yaml") from None


def load_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_scaler: torch.amp.GradScaler,
) -> CheckpointInfo:
    """Restore model, EMA, optimiser and GradScaler in place; returns the header."""
    path = Path(path)
    with _open(path) as handle:
        info = _info(path, dict(handle.metadata() or {}))
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optimizer": {}}
    for key, tensor in tensors.items():
        head, _, rest = key.partition(".")
        parts.setdefault(head, {})[rest] = tensor
    _load_module(path, model, parts["model"], "model")
    _load_module(path, ema, parts["ema"], "EMA")
    if "optimizer_groups" not in info.metadata:  # weights only (imported): a fresh optimiser
        return info
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in parts["optimizer"].items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = tensor
    groups = json.loads(info.metadata["optimizer_groups"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise TrainingError(f"checkpoint {path}: its optimiser state does not fit this model ({one_line(exc, 160)}); resume with the run's own spec.yaml") from None
    scaler_state = json.loads(info.metadata.get("grad_scaler", "{}"))
    if scaler_state and grad_scaler.is_enabled():
        grad_scaler.load_state_dict(scaler_state)
    return info
