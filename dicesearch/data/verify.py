"""Every data file a run reads, checked once before the run writes anything.

Runs read their data lazily: an image folder one image at a time, as batches draw them;
a VAE's weights only when FID first decodes latents. A bad file there (truncated, empty,
not an image, a decompression bomb; a VAE weights file cut short) would fail every trial of
a sweep, or a long training run hours in, each time after the run folder, the study and the
MLflow runs were written. :func:`verify_data` reads them first:

* an image folder: every image decoded once, with the function the dataset decodes with
  (:func:`dicesearch.data.imagefile.open_rgb`; JPEGs at 1/8 scale, which still reads every
  coefficient), so what passes here decodes in a run;
* a latent file: everything ``read_latent_file`` checks when a run loads it (keys, shapes,
  dtypes, label range, NaN/inf); with ``data.vae``, the VAE folder's ``config.json`` and
  whether its weights file is whole.

What passed is remembered in the cache folder (``$DICESEARCH_CACHE_DIR/data-checks``, else
``~/.cache/dicesearch/data-checks``): one small JSON file per image folder or latent file,
holding each file's size and modification time (ns). The next run stats the files and
decodes only new or changed ones. The cache is written only when everything passed, so a
run refused for a bad file writes nothing at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dicesearch.data.sources import DataSpec
from dicesearch.errors import DataError, one_line
from dicesearch.files import cache_dir, give_ordinary_mode

__all__ = ["CACHE_SUBDIR", "verify_data"]

CACHE_SUBDIR = "data-checks"
FORMAT = 1  # of the cache files; a new format (or a new Pillow) checks everything again


def verify_data(spec: DataSpec, cache: Path | None = None) -> None:
    """Raise ``DataError`` (one line naming the file and the fix) if a file of ``spec``'s data cannot be read.

    ``cache``: the folder of verdicts (default ``cache_dir("data-checks")``). The embedded
    digits have no files to check.
    """
    folder = cache if cache is not None else cache_dir(CACHE_SUBDIR)
    passed: list[tuple[Path, dict]] = []  # cache records, written once everything passed
    if spec.kind == "folder":
        from dicesearch.data.datasets import FolderDataset

        root = spec.path.absolute()
        files = [path for path, _ in FolderDataset(spec).samples]  # scanned as the dataset does; a missing folder says so
        passed.append(_verified(folder, "folder", root, files, _check_images))
    elif spec.kind == "latents":
        files = [spec.path.absolute()]
        passed.append(_verified(folder, "latents", files[0], files, _check_latent_file))
        if spec.vae is not None:
            vae = spec.vae.absolute()
            passed.append(_verified(folder, "vae", vae, _vae_files(vae), _check_vae_weights))
    for record in filter(None, passed):
        _write(*record)


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _cache_file(folder: Path, kind: str, root: Path) -> Path:
    digest = hashlib.sha256(f"{kind}\0{root}".encode()).hexdigest()[:20]
    return folder / f"{kind}-{digest}.json"


def _header() -> dict:
    import PIL

    return {"format": FORMAT, "pillow": PIL.__version__}


def _verified(folder: Path, kind: str, root: Path, files: list[Path], check) -> tuple[Path, dict] | None:
    """``check(files)`` for the files whose size or mtime differ from the cached verdict (it raises
    on the first bad one); then the cache record of them all, or None if nothing was new."""
    path = _cache_file(folder, kind, root)
    known: dict[str, list[int]] = {}
    try:
        cached = json.loads(path.read_text())
        if {k: cached.get(k) for k in _header()} == _header() and cached.get("root") == str(root):
            known = cached["files"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no cache yet, or an unreadable one: check everything
    stamps = {}
    for file in files:
        try:
            stamps[str(file)] = _stamp(file)
        except OSError as exc:
            raise DataError(f"{kind} file {file}: cannot be read ({one_line(exc)}); fix its permissions or remove it") from None
    todo = [file for file in files if known.get(str(file)) != stamps[str(file)]]
    if not todo:
        return None
    check(todo)
    return path, {**_header(), "root": str(root), "files": stamps}


def _write(path: Path, content: dict) -> None:
    """Atomically, and never fatally: a cache that cannot be written only costs the next run the check again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(content, handle)
        give_ordinary_mode(tmp)
        os.replace(tmp, path)
    except OSError:
        pass


def _check_images(files: Iterable[Path]) -> None:
    """Decode each image (Pillow's decoders release the GIL: a thread per core); the first bad one
    in folder order raises, and the rest are not waited for."""
    from dicesearch.data.imagefile import open_rgb

    def decode(file: Path) -> None:
        open_rgb(file, reduced=True).close()

    from PIL import Image

    # a bomb's header is refused in one line by open_rgb; Pillow's own warning about it would be a second
    # (the filter is set here, around all the threads: catch_warnings is not thread-safe)
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            for _ in pool.map(decode, files):
                pass
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _check_latent_file(files: list[Path]) -> None:
    """What a run checks when it loads the file (it loads the whole file, so can this)."""
    from dicesearch.data.latentfile import read_latent_file

    for file in files:
        read_latent_file(file)  # one-line DataError; the contents it returns are dropped at once


def _vae_files(vae: Path) -> list[Path]:
    from dicesearch.data.vae import WEIGHT_FILES, inspect_vae

    inspect_vae(vae)  # the folder and its config.json: one line if either is wrong
    return [vae / name for name in WEIGHT_FILES if (vae / name).is_file()][:1]


def _check_vae_weights(files: list[Path]) -> None:
    """The weights file is whole: a safetensors header whose tensors fit in the file, or a
    zip (torch's .bin) whose central directory is at its end."""
    for file in files:
        try:
            if file.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(file), framework="pt") as handle:
                    if not list(handle.keys()):
                        raise ValueError("it holds no tensors")
            else:
                import zipfile

                with zipfile.ZipFile(file) as archive:
                    if not archive.namelist():
                        raise ValueError("it holds no tensors")
        except Exception as exc:
            raise DataError(
                f"vae {file}: the weights file cannot be read ({type(exc).__name__}: {one_line(exc)}); copy it again from the VAE's release"
            ) from None
