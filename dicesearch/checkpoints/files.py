"""Reading official checkpoint files without running code from them, and writing one.

What a file may hold (``torch.load(weights_only=True)``: tensors, containers and numbers
only; the ``argparse.Namespace`` of training arguments DiT's and Diffusion-RWKV's
``train.py`` save is allowed as plain data):

- a state dict: DiT's released ``DiT-XL-2-256x256.pt`` (its EMA weights), DiMR's
  ``nnet_ema.pth``, or a ``.safetensors`` file with the official keys;
- a training checkpoint ``{"model": ..., "ema": ..., "opt": ..., "args": ...}`` of DiT's
  or Diffusion-RWKV's ``train.py``: both weight sets are read;
- a DiMR training-state folder (``<step>.ckpt/`` with ``nnet.pth`` and ``nnet_ema.pth``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from dicesearch.errors import CheckpointError

__all__ = ["OfficialWeights", "read_official", "write_official"]

_FORMS = "a state dict, a DiT/Diffusion-RWKV training checkpoint ({model, ema, ...}) or a DiMR <step>.ckpt folder"


@dataclass(frozen=True)
class OfficialWeights:
    """The raw and the EMA weights of an official file (the same dict when it holds one set)."""

    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    kind: str  # "state dict", "training checkpoint (model + ema)", ...


def _allowed_globals():
    safe = getattr(torch.serialization, "safe_globals", None)
    if safe is not None:
        return safe([argparse.Namespace])
    torch.serialization.add_safe_globals([argparse.Namespace])  # torch < 2.5
    return contextlib.nullcontext()


def _load(path: Path) -> object:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # SafetensorError, OSError
            raise CheckpointError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    try:
        with _allowed_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc}); give the checkpoint file") from None
    except Exception as exc:  # UnpicklingError (an object that is not plain data), RuntimeError (not a torch file)
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise CheckpointError(
                f"{path}: holds a Python object of type {found.group(1)}, not only tensors; dicesearch reads weights "
                "with torch.load(weights_only=True) and never unpickles code: save the state dict alone"
            ) from None
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (torch.load: {type(exc).__name__} {first[:160]}); give {_FORMS}") from None


def _state(value: object, path: Path, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping) or not value:
        raise CheckpointError(f"{path}: {what} is {type(value).__name__}, not a state dict; give {_FORMS}")
    for key, tensor in value.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(
                f"{path}: {what} entry {key!r} holds a {type(tensor).__name__}, not a tensor; give {_FORMS}"
            )
    return dict(value)


def _from_folder(path: Path) -> OfficialWeights:
    ema_file, model_file = path / "nnet_ema.pth", path / "nnet.pth"
    if not ema_file.is_file() and not model_file.is_file():
        raise CheckpointError(f"{path}: a folder without nnet_ema.pth or nnet.pth; give {_FORMS}")
    model = _state(_load(model_file), model_file, "the file") if model_file.is_file() else None
    ema = _state(_load(ema_file), ema_file, "the file") if ema_file.is_file() else None
    kind = "DiMR training state (nnet + nnet_ema)" if model and ema else f"DiMR training state ({'nnet_ema' if ema else 'nnet'} only)"
    return OfficialWeights(model=model or ema, ema=ema or model, kind=kind)


def read_official(path: str | os.PathLike) -> OfficialWeights:
    """The weights of an official checkpoint; ``CheckpointError`` (one line) if it is not one."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _from_folder(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file; give the downloaded checkpoint (e.g. DiT-XL-2-256x256.pt)")
    loaded = _load(path)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("ema"), Mapping):
        ema = _state(loaded["ema"], path, "its 'ema'")
        if isinstance(loaded.get("model"), Mapping):
            return OfficialWeights(model=_state(loaded["model"], path, "its 'model'"), ema=ema, kind="training checkpoint (model + ema)")
        return OfficialWeights(model=ema, ema=ema, kind="training checkpoint (ema)")
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        model = _state(loaded["model"], path, "its 'model'")
        return OfficialWeights(model=model, ema=model, kind="training checkpoint (model)")
    state = _state(loaded, path, "the file")
    return OfficialWeights(model=state, ema=state, kind="state dict")


def write_official(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Save a state dict with ``torch.save`` (what the official ``sample.py`` scripts load), atomically."""
    from dicesearch.train.checkpoint import write_atomically

    def own(tensor: torch.Tensor) -> torch.Tensor:  # a view would save its whole storage
        whole = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        return tensor.contiguous() if whole else tensor.contiguous().clone()

    plain = {key: own(tensor.detach().cpu()) for key, tensor in state.items()}
    write_atomically(Path(path), lambda tmp: torch.save(plain, tmp))
