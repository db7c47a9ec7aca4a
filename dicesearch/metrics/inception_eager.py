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
* the 1x1 convolutions that open a mixed block's branches (all of the block's input) as one
  matrix product, the average-pool branch's convolution among them with its pool moved after
  it (both linear): 1x1 convolutions were a third of the network's time, at 60-80 % of the
  CPU's matmul rate one by one (``_OpeningConvs``);
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
Pool and spatial features agree with it to a few 1e-6 relative (``tests/metrics``; 3e-6 measured with Winograd's layers).
"""

from __future__ import annotations

import functools
import warnings

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
from dicesearch.speed.worker_threads import each_on_one_thread

__all__ = ["CPU_MICRO_BATCH", "EagerInception", "MAX_RELATIVE_ERROR", "cpu_workers", "eager_inception"]

BN_EPS = 0.001  # the TF graph's batch-norm epsilon (the file's Conv2dLayer code)
CPU_MICRO_BATCH = 8
MAX_RELATIVE_ERROR = 1e-4  # probe check at build time; measured ~1e-6 direct, ~3e-6 with Winograd
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


def _is_pointwise(part) -> bool:
    """A folded 1x1 convolution of stride 1: a matrix product over the channels."""
    return isinstance(part, _FoldedConv) and tuple(part.weight.shape[2:]) == (1, 1) and part.stride == 1 and part.padding == [0, 0]


def _is_average_pool(part) -> bool:
    """The file's average pool (linear, unlike its max pools)."""
    return getattr(part, "original_name", None) == "AvgPool2d"


class _OpeningConvs:
    """The 1x1 convolutions that open a mixed block's branches, all of one input, as one matrix product.

    A branch that opens with the file's average pool and then a 1x1 convolution is computed as
    the convolution (without its bias), the pool, then the bias: pool and convolution are both
    linear, so their order does not change the sums, and its convolution then joins the others
    (the pool runs on its O channels instead of the input's I). One product of (B H W, I) by
    (I, sum O) keeps the CPU's matmul units busier than several narrow convolutions: 0.72-0.93
    of their time at the network's shapes (``benchmarks/sweep_speed.py --only winograd``).
    """

    def __init__(self, convs: list[_FoldedConv], pools: list, together: bool = True):
        self.convs, self.together = convs, together
        self.weight = torch.cat([c.weight.reshape(c.weight.shape[0], -1) for c in convs]).t().contiguous()  # (I, sum O)
        self.bias = torch.cat([torch.zeros_like(c.bias) if pool is not None else c.bias for c, pool in zip(convs, pools)])  # (sum O,)
        ends = torch.tensor([c.weight.shape[0] for c in convs]).cumsum(0).tolist()
        self.slices = [slice(end - c.weight.shape[0], end) for c, end in zip(convs, ends)]
        self.pools = pools
        self.pool_biases = [c.bias.view(1, -1, 1, 1) for c in convs]

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, I, H, W) channels-last -> each branch's opening activation (B, O_k, H, W)."""
        if not self.together:  # as the file does: each its own convolution, a pool first
            return [conv(x if pool is None else pool(x)) for conv, pool in zip(self.convs, self.pools)]
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c)  # (B H W, I); a view of channels-last memory
        out = torch.addmm(self.bias, rows, self.weight).view(b, h, w, -1).permute(0, 3, 1, 2)  # (B, sum O, H, W)
        opened = []
        for part, pool, bias in zip(self.slices, self.pools, self.pool_biases):
            branch = out[:, part]
            opened.append((pool(branch) + bias).relu_() if pool is not None else branch.relu_())
        return opened


class _MixedBlock:
    """A mixed block: its branches, concatenated in order, those that open with a 1x1 convolution
    (or an average pool and one) opened together (``_OpeningConvs``)."""

    def __init__(self, parts: list, together: bool = True):
        self.branches = []  # (index of its opening convolution or None, the rest of the branch)
        convs, pools = [], []
        for name, part in parts:
            steps = part if isinstance(part, list) else [(name, part)]
            first = steps[0][1]
            if _is_pointwise(first):
                self.branches.append((len(convs), steps[1:]))
                convs.append(first)
                pools.append(None)
            elif _is_average_pool(first) and len(steps) == 2 and _is_pointwise(steps[1][1]):
                self.branches.append((len(convs), []))
                convs.append(steps[1][1])
                pools.append(first)
            else:
                self.branches.append((None, steps))
        self.opening = _OpeningConvs(convs, pools, together) if convs else None

    def branches_of(self, x: torch.Tensor) -> list[torch.Tensor]:
        opened = self.opening(x) if self.opening is not None else []
        return [_run(rest, x if index is None else opened[index]) for index, rest in self.branches]


class _Mixed9Or10:
    """mixed_9 and mixed_10: three 1x1 convolutions of the input (two of them shared by two
    branches each) and a pool branch, opened together where the pool is an average."""

    def __init__(self, parts: list, together: bool = True):
        self.p = p = dict(parts)
        self.pooled = _is_average_pool(p["tower_2_pool"])  # mixed_9's; mixed_10's is a max pool
        convs = [p["conv"], p["tower_conv"], p["tower_1_conv"]] + ([p["tower_2_conv"]] if self.pooled else [])
        self.opening = _OpeningConvs(convs, [None, None, None] + ([p["tower_2_pool"]] if self.pooled else []), together)

    def branches_of(self, x: torch.Tensor) -> list[torch.Tensor]:
        p, opened = self.p, self.opening(x)
        first, a, b = opened[0], opened[1], p["tower_1_conv_1"](opened[2])  # a, b: (B, 384, 8, 8), each shared by two branches
        last = opened[3] if self.pooled else p["tower_2_conv"](p["tower_2_pool"](x))
        return [first, p["tower_mixed_conv"](a), p["tower_mixed_conv_1"](a), p["tower_1_mixed_conv"](b), p["tower_1_mixed_conv_1"](b), last]


class EagerInception:
    """``run_inception``'s contract on eager channels-last modules (module docstring)."""

    def __init__(self, network: InceptionNetwork, *, open_together: bool = True):
        """``open_together``: each mixed block's opening 1x1 convolutions as one matrix product
        (``_OpeningConvs``); False computes them one by one as the file does (for comparison)."""
        self.device = network.device
        self.layers = []
        for name, layer in spatial_layers(network.module):
            part = _build(layer)
            if name in ("mixed_9", "mixed_10"):
                part = _Mixed9Or10(part, open_together)
            elif isinstance(part, list):
                part = _MixedBlock(part, open_together)
            self.layers.append((name, part))

    def _forward(self, x: torch.Tensor, spatial: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = x.contiguous(memory_format=_CHANNELS_LAST)  # (B, 3, 299, 299)
        spatial_map = None
        for name, part in self.layers:
            if isinstance(part, (_MixedBlock, _Mixed9Or10)):  # its branches concatenated in order
                branches = part.branches_of(h)
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

        return each_on_one_thread(forward, chunks, workers, "inception")


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
