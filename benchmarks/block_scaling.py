"""Forward+backward time and peak memory of one block of each kind against the token grid.

Usage: python benchmarks/block_scaling.py [--grids 16 32 64 128] [--channels 384]
           [--blocks dice convnext attention ssm rwkv linear_attention] [--repeats 1]
           [--max-attention-grid 128] [--device cpu] [--plot block_scaling.png]

Every block is built at the same width (default D = 384, DiT-S/LiT-S/DRWKV-S's) with its
default parameters, except attention, which gets DiT-S's 6 heads, and is conditioned by
adaLN-Zero. One block, batch 1, fp32, on a G x G grid of tokens. For each, the table
gives:

* time: the best of ``--repeats`` forward+backward passes (loss = mean of the squared
  output), in wall seconds, and its growth over the previous grid. The memory pass
  below runs first and serves as the warm-up.
  With 4x the tokens a linear-time block grows about 4x, attention about 16x once its
  L^2 term dominates.
* peak memory: the most memory the pass holds at once beyond what existed before it:
  activations saved for the backward pass and temporaries. The block's parameters, the
  input and their gradients (allocated before the pass, accumulated into in place) are
  not included, so the figure is what grows with the grid. On CUDA,
  ``torch.cuda.max_memory_allocated``. On the CPU, from the PyTorch profiler's
  allocation events (``profile_memory=True``): every allocation and free by PyTorch's
  CPU allocator, replayed in time order. Measured, not estimated, in its own pass (the
  profiler slows a pass down, so it is not timed).
* the exponent of time and of memory against tokens, fitted over the two largest grids.

Then it writes a log-log plot of time (and memory) against tokens, with reference slopes
1 and 2. ``--max-attention-grid`` skips larger grids for attention; by default nothing is
skipped. The defaults take about 1.5 minutes on a 2-core CPU, about 4 when other jobs
share it; the two 128x128 attention passes are a third of that (``--max-attention-grid
64`` leaves them out).

On a machine shared with other work, OpenMP's default busy-waiting can make small ops
100x slower; run with OMP_WAIT_POLICY=PASSIVE there. Timings compare blocks on one
machine only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from dicesearch.plugin_api import BlockContext, ConditioningContext, StageGeometry
from dicesearch.registry import default_registry

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402

BLOCKS = ("dice", "convnext", "attention", "ssm", "rwkv", "linear_attention")
OVERRIDES = {"attention": {"heads": 6}}  # DiT-S's heads at width 384 (default 16 suits 1152)


@dataclass
class Result:
    block: str
    grid: int
    seconds: float
    peak_bytes: int

    @property
    def tokens(self) -> int:
        return self.grid * self.grid


def block_case(kind: str, grid: int, channels: int, device: str) -> Callable[[], None]:
    """One fwd+bwd of a ``kind`` block on a grid x grid input, as a closure."""
    registry = default_registry()
    cond_type, block_type = registry.conditioning("adaln_zero"), registry.block(kind)
    cond = cond_type.build(cond_type.params(), ConditioningContext(num_classes=1000, stage_channels=(channels,)))
    params = block_type.params(**OVERRIDES.get(kind, {}))
    block = block_type.build(params, BlockContext(StageGeometry(channels, grid, grid), cond, index=0, depth=1))
    cond, block = cond.to(device), block.to(device)
    with torch.no_grad():  # adaLN-Zero starts with zero gates; give the branch something to do
        for p in block.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = torch.randn(1, grid, grid, channels, device=device, requires_grad=True)  # (B, H, W, C)
    t = torch.full((1,), 500.0, device=device)
    y = torch.zeros(1, dtype=torch.long, device=device)

    leaves = (x, *block.parameters(), *cond.parameters())
    for leaf in leaves:  # allocated up front, so the passes accumulate into them in place
        leaf.grad = torch.zeros_like(leaf)

    def run() -> None:
        for leaf in leaves:
            leaf.grad.zero_()
        block(x, cond(t, y)).square().mean().backward()

    return run


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_seconds(run: Callable[[], None], repeats: int, device: str) -> float:
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def _native_output_silenced():
    """Some torch builds' profiler prints start/stop lines from C++; keep them out of the table."""
    sys.stdout.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def peak_bytes(run: Callable[[], None], device: str) -> int:
    """Most bytes held at once by what ``run`` allocates (see the module docstring)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with _native_output_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    level = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        level += event.nbytes()  # negative for a free
        peak = max(peak, level)
    return peak


def measure(kind: str, grid: int, channels: int, device: str, repeats: int = 1) -> Result:
    """Peak memory (a first pass, which also warms up) and the best time of ``repeats`` passes."""
    run = block_case(kind, grid, channels, device)
    peak = peak_bytes(run, device)
    return Result(kind, grid, best_seconds(run, repeats, device), peak)


def slope(results: list[Result], value: Callable[[Result], float]) -> float:
    """d log(value) / d log(tokens) between the two largest grids measured."""
    if len(results) < 2:
        return float("nan")
    a, b = results[-2], results[-1]
    return math.log(value(b) / value(a)) / math.log(b.tokens / a.tokens)


def _plot(results: dict[str, list[Result]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 5))
    for kind, rows in results.items():
        tokens = [r.tokens for r in rows]
        ax_time.loglog(tokens, [r.seconds for r in rows], "o-", label=kind)
        ax_mem.loglog(tokens, [r.peak_bytes / 2**20 for r in rows], "o-", label=kind)
    all_rows = [r for rows in results.values() for r in rows]
    low, high = min(r.tokens for r in all_rows), max(r.tokens for r in all_rows)
    anchor = min(r.seconds for r in all_rows if r.tokens == low)
    for power, style in ((1, "k--"), (2, "k:")):  # reference slopes through the fastest smallest point
        ax_time.loglog([low, high], [anchor, anchor * (high / low) ** power], style, lw=1, label=f"~ tokens^{power}")
    ax_time.set(xlabel="tokens (H x W)", ylabel="forward+backward seconds", title="time")
    ax_mem.set(xlabel="tokens (H x W)", ylabel="peak MiB", title="peak memory")
    for ax in (ax_time, ax_mem):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[16, 32, 64, 128], help="grid sides G (G x G tokens)")
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--blocks", nargs="+", default=list(BLOCKS))
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per case (the best is kept)")
    parser.add_argument("--max-attention-grid", type=int, default=None, help="skip larger grids for attention")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--plot", default="block_scaling.png", help="where to write the PNG ('' for none)")
    args = parser.parse_args()
    torch.manual_seed(0)

    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(reporting.machine_line(args.device))
    print(f"one block, batch 1, width {args.channels}, adaLN-Zero, fp32, fwd+bwd on {where}")
    table = reporting.TextTable(("block", "<17"), ("grid", ">8"), ("tokens", ">7"), ("seconds", ">9"), ("x prev", ">7"), ("peak MiB", ">9"), ("x prev", ">7"))
    print(table.header())
    results: dict[str, list[Result]] = {}
    for kind in args.blocks:
        rows = results.setdefault(kind, [])
        for grid in args.grids:
            if kind == "attention" and args.max_attention_grid and grid > args.max_attention_grid:
                print(table.row(kind, f"{grid}x{grid}", grid * grid, "  skipped (--max-attention-grid)"))
                continue
            row = measure(kind, grid, args.channels, args.device, args.repeats)
            growth_t = f"{row.seconds / rows[-1].seconds:6.1f}x" if rows else ""
            growth_m = f"{row.peak_bytes / rows[-1].peak_bytes:6.1f}x" if rows else ""
            rows.append(row)
            print(table.row(kind, f"{grid}x{grid}", row.tokens, f"{row.seconds:.4f}", growth_t, f"{row.peak_bytes / 2**20:.1f}", growth_m), flush=True)
    print("\nexponent of tokens over the two largest grids (1 = linear, 2 = quadratic)")
    for kind, rows in results.items():
        print(f"{kind:17s} time {slope(rows, lambda r: r.seconds):5.2f}   memory {slope(rows, lambda r: r.peak_bytes):5.2f}")
    if args.plot:
        _plot(results, args.plot, f"one block at width {args.channels}, batch 1, fwd+bwd ({where})")
        print(f"\nwrote {args.plot}")
    print(f"at the end: {reporting.load_line()}")


if __name__ == "__main__":
    main()
