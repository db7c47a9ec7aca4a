"""The FID Inception network as eager, channels-last PyTorch: the same function, twice as fast on a CPU.

The TorchScript file (``dicesearch.metrics.inception``) computes every ``Conv2dLayer`` as
conv -> batch-norm -> ReLU, three passes over activations of up to 147 x 147 x 64 per
image, and makes every branch ``contiguous()`` before concatenating, which forces the
NCHW layout back after each mixed block. Here the same weights run as:

* each conv + batch-norm (inference: y = (conv(x) - mean) / sqrt(var + 0.001) + beta, no
  scale) folded into one convolution with bias, w' = w / sqrt(var + eps) and
  b' = beta - mean / sqrt(var + eps), followed by an in-place ReLU;
* every activation channels-last (oneDNN's fast layout), concatenations included;
* on a CPU, micro-batches of ``CPU_MICRO_BATCH`` images (activations stay in cache; 4-8
  measured fastest on 2 cores, ``benchmarks/trial_speed.py``), each on one intra-op thread:
  with torch set to k > 1 threads, k worker threads take the micro-batches in turn instead of
  oneDNN splitting each convolution k ways. Every micro-batch then runs the one-thread kernels,
  so the features are the same bits at every thread count, and a busy core delays only the
  micro-batches on it (oneDNN's threads wait for each other at every layer: on the 2-core
  machine with another job running, two intra-op threads ran 3x slower than one, two
  workers as fast as one; with both cores free both reach ~1.9x, ``benchmarks/sweep_speed.py``);
* pools as the file's own modules; mixed_6/conv (sFID's layer) read on the way, not
  recomputed;
* on a CPU at one thread (every micro-batch), the stride-1 convolutions of 3x3, 5x5, 1x7,
  7x1, 1x3 and 3x1 filters (two thirds of the network's time) by Winograd's minimal
  filtering on native kernels (``dicesearch.ops.winograd``): 2-2.7x faster each, with bias
  and ReLU in the same pass; their outputs round differently (about 5e-6 relative against the
  direct sum's 1e-6), and the pool features stay within about 2e-6 of the file's own forward
  (the build-time check below holds them to 1e-4).

The wiring mirrors the 2015 graph's scopes (``_LAYER_NAMES``): the stem in order, the
mixed blocks concatenating their branches in their children's order, mixed_9 and mixed_10
with their shared 1x1 convolutions. When built, the result is checked against the
TorchScript forward on a probe image (``MAX_RELATIVE_ERROR``); a network that does not
have this layout, or does not match, gets ``None`` and callers use the TorchScript path.
Pool and spatial features agree with it to ~1e-6 relative (``tests/metrics``), Winograd's layers included.
"""

from __future__ import annotations

import functools
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from dicesearch.metrics.inception import (
    SPATIAL_CHANNELS,
    SPATIAL_DIM,
    SPATIAL_LAYER,
    InceptionNetwork,
    run_inception,
    spatial_layers,
)
from dicesearch.ops import winograd
from dicesearch.speed.worker_threads import one_intra_op_thread

__all__ = ["CPU_MICRO_BATCH", "EagerInception", "MAX_RELATIVE_ERROR", "cpu_workers", "eager_inception"]

BN_EPS = 0.001  # the TF graph's batch-norm epsilon (the file's Conv2dLayer code)
CPU_MICRO_BATCH = 8
MAX_RELATIVE_ERROR = 1e-4  # probe check at build time; measured ~1e-6
_CHANNELS_LAST = torch.channels_last


class _FoldedConv:
    """One Conv2dLayer (conv, inference batch-norm without scale, ReLU) as conv-with-bias + ReLU."""

    def __init__(self, layer: torch.jit.ScriptModule):
        inv_std = 1.0 / torch.sqrt(layer.var.float() + BN_EPS)  # (O,)
        self.weight = (layer.weight.float() * inv_std[:, None, None, None]).contiguous(memory_format=_CHANNELS_LAST)
        self.bias = (layer.beta.float() - layer.mean.float() * inv_std).contiguous()  # (O,)
        padding = layer.padding
        self.padding = [padding, padding] if isinstance(padding, int) else list(padding)
        self.stride = int(layer.stride)
        # a layer Winograd's algorithms take on a CPU: also its plan, for the native kernels (module docstring)
        self.winograd = winograd.winograd_plan(self.weight, self.stride, self.padding)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.winograd is not None and x.device.type == "cpu" and x.dtype == torch.float32 and torch.get_num_threads() == 1:
            return winograd.conv_relu(x, self.winograd, self.bias)  # (B, O, H', W'), channels-last
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding).relu_()  # (B, O, H', W')


def _is_conv_layer(module) -> bool:
    return not list(module.named_children()) and all(hasattr(module, a) for a in ("weight", "mean", "var", "beta", "stride", "padding"))


def _build(module):
    """Leaves: folded convs or the file's own pools; inner modules: [(name, part), ...]."""
    children = list(module.named_children())
    if not children:
        return _FoldedConv(module) if _is_conv_layer(module) else module
    return [(name, _build(child)) for name, child in children]


def _run(part, x: torch.Tensor) -> torch.Tensor:
    if isinstance(part, list):  # a tower: its children in order
        for _, child in part:
            x = _run(child, x)
        return x
    return part(x)


class EagerInception:
    """``run_inception``'s contract on eager channels-last modules (module docstring)."""

    def __init__(self, network: InceptionNetwork):
        self.device = network.device
        self.layers = [(name, _build(layer)) for name, layer in spatial_layers(network.module)]

    def _mixed_9_or_10(self, parts, x: torch.Tensor) -> torch.Tensor:
        p = dict(parts)
        a = p["tower_conv"](x)  # (B, 384, 8, 8), shared by two branches
        b = p["tower_1_conv_1"](p["tower_1_conv"](x))  # (B, 384, 8, 8)
        branches = [
            p["conv"](x), p["tower_mixed_conv"](a), p["tower_mixed_conv_1"](a),
            p["tower_1_mixed_conv"](b), p["tower_1_mixed_conv_1"](b), p["tower_2_conv"](p["tower_2_pool"](x)),
        ]  # fmt: skip
        return torch.cat(branches, 1)  # (B, 2048, 8, 8)

    def _forward(self, x: torch.Tensor, spatial: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = x.contiguous(memory_format=_CHANNELS_LAST)  # (B, 3, 299, 299)
        spatial_map = None
        for name, part in self.layers:
            if name in ("mixed_9", "mixed_10"):
                h = self._mixed_9_or_10(part, h)
            elif isinstance(part, list):  # a mixed block: its branches concatenated in order
                branches = [_run(child, h) for _, child in part]
                if name == SPATIAL_LAYER:
                    spatial_map = branches[0][:, :SPATIAL_CHANNELS]  # mixed_6/conv: (B, 7, 17, 17)
                h = torch.cat(branches, 1)
            else:
                h = part(h)
        pool = h.reshape(x.shape[0], -1)  # (B, 2048, 1, 1) -> (B, 2048)
        if not spatial:
            return pool, None
        flat = spatial_map.permute(0, 2, 3, 1).reshape(x.shape[0], SPATIAL_DIM)  # (B, 2023), TF's NHWC order
        return pool, flat

    def __call__(self, x: torch.Tensor, *, spatial: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, 3, 299, 299) float32 in the TF range -> pool (B, 2048), spatial (B, 2023) or None."""
        if self.device.type != "cpu":
            return self._forward(x, spatial)
        chunks = x.split(CPU_MICRO_BATCH)  # the same micro-batches at every thread count
        if len(chunks) == 1 and torch.get_num_threads() == 1:
            return self._forward(x, spatial)
        parts = self._one_thread_each(chunks, spatial)
        pool = torch.cat([p for p, _ in parts])
        return pool, (torch.cat([s for _, s in parts]) if spatial else None)

    def _one_thread_each(self, chunks, spatial: bool) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Every micro-batch on one intra-op thread; with torch at k > 1 threads, k worker threads
        take them in turn (module docstring)."""
        workers = min(cpu_workers(), len(chunks))

        def forward(chunk: torch.Tensor):
            with torch.inference_mode():  # grad modes are per thread
                return self._forward(chunk, spatial)

        with one_intra_op_thread():
            if workers == 1:
                return [self._forward(chunk, spatial) for chunk in chunks]
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inception") as pool:
                return list(pool.map(forward, chunks))


def cpu_workers() -> int:
    """How many micro-batches run at once on a CPU: torch's intra-op thread count."""
    return torch.get_num_threads()


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


@functools.lru_cache(maxsize=8)
def eager_inception(network: InceptionNetwork) -> EagerInception | None:
    """The eager version of ``network`` (built and checked once per network), or None if it has another layout."""
    if spatial_layers(network.module) is None:
        return None
    try:
        eager = EagerInception(network)
        generator = torch.Generator().manual_seed(0)
        probe = (torch.rand(1, 3, 299, 299, generator=generator) * 2 - 1).to(network.device)  # load_inception's probe shape
        with torch.inference_mode():
            want_pool, want_spatial = run_inception(network, probe, spatial=True)
            pool, spatial = eager(probe, spatial=True)
        error = max(_relative_error(pool, want_pool), _relative_error(spatial, want_spatial))
    except Exception as exc:  # an unexpected module inside a file with the right scope names
        warnings.warn(f"the eager Inception could not be built ({type(exc).__name__}: {exc}); using the TorchScript network", stacklevel=2)
        return None
    if error > MAX_RELATIVE_ERROR:
        warnings.warn(f"the eager Inception differs from {network.path} by {error:.1e} (relative); using the TorchScript network", stacklevel=2)
        return None
    return eager
