"""Official checkpoints in and out: DiT, Diffusion-RWKV and DiMR weights -> dicesearch runs, DiT's back.

Each model family's state-dict layout is data (``dit.py``, ``drwkv.py``, ``dimr.py``: every
official key, its shape and where it goes), checked strictly in both directions
(``layout.py``) with exact rearrangements (``transforms.py``). The public names below are
imported on first use, so the command line starts without importing torch.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "Entry": "layout",
    "OfficialLayout": "layout",
    "ExportResult": "exporter",
    "export_checkpoint": "exporter",
    "ImportResult": "importer",
    "import_checkpoint": "importer",
    "fitting_preset": "families",
    "layout_for": "families",
    "OfficialWeights": "files",
    "read_official": "files",
    "write_official": "files",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'dicesearch.checkpoints' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dicesearch.checkpoints.{_PUBLIC[name]}"), name)
