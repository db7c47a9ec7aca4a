"""Forward+backward time of the sequence-mixing ops against sequence length.

Usage: python benchmarks/ops_scaling.py [--lengths 256 1024 4096 16384] [--channels 384]
                                        [--repeats 3] [--device cpu]

Prints, for every op and length, the fwd+bwd wall time and process CPU time (the best of
``--repeats`` runs after one warm-up, the least disturbed by other load) and the growth of
wall time from the previous length. With 4x longer sequences a linear op grows ~4x, and
S4D's O(L log L) FFT slightly more. Timings are for comparison on one machine only;
nothing is asserted.

On a machine shared with other work, OpenMP's default busy-waiting can make small
elementwise ops 100x slower (two threads spinning at a barrier while one is descheduled).
Run with OMP_WAIT_POLICY=PASSIVE there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import torch

from dicesearch.ops import BidirectionalS4DLayer, bi_wkv, linear_attention

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402


def bi_wkv_case(length: int, channels: int, device: str, chunk_size: int | None = None) -> Callable[[], torch.Tensor]:
    w = torch.randn(channels, device=device, requires_grad=True)
    u = torch.randn(channels, device=device, requires_grad=True)
    k = torch.randn(1, length, channels, device=device, requires_grad=True)
    v = torch.randn(1, length, channels, device=device, requires_grad=True)
    return lambda: bi_wkv(w, u, k, v, chunk_size=chunk_size)


def s4d_case(length: int, channels: int, device: str) -> Callable[[], torch.Tensor]:
    layer = BidirectionalS4DLayer(channels, d_state=64).to(device)  # kernel generation + FFT conv
    x = torch.randn(1, length, channels, device=device, requires_grad=True)
    return lambda: layer(x)


def linear_attention_case(length: int, channels: int, device: str, heads: int = 2) -> Callable[[], torch.Tensor]:
    # LiT-S: hidden 384 with 2 heads (LiT supplement, Tab. 1).
    q, k, v = (torch.randn(1, heads, length, channels // heads, device=device, requires_grad=True) for _ in range(3))
    return lambda: linear_attention(q, k, v)


CASES = {
    "bi_wkv": bi_wkv_case,
    "bidirectional S4D": s4d_case,
    "linear attention": linear_attention_case,
}


def time_fwd_bwd(run: Callable[[], torch.Tensor], repeats: int, device: str) -> tuple[float, float]:
    """Best (wall seconds, process CPU seconds) of ``repeats`` fwd+bwd runs."""

    def once() -> tuple[float, float]:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        run().square().mean().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu

    once()  # warm-up
    runs = [once() for _ in range(repeats)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)

    print(reporting.machine_line(args.device))
    print(f"device={args.device} B=1 C={args.channels}")
    table = reporting.TextTable(("op", "<20"), ("T", ">7"), ("wall ms", ">11"), ("x prev", ">8"), ("cpu ms", ">11"), ("wall us/token", ">15"), sep="")
    print(table.header())
    for name, make in CASES.items():
        previous = None
        for length in args.lengths:
            wall, cpu = time_fwd_bwd(make(length, args.channels, args.device), args.repeats, args.device)
            growth = f"{wall / previous:.2f}" if previous else "-"
            print(table.row(name, length, f"{wall * 1e3:.1f}", growth, f"{cpu * 1e3:.1f}", f"{wall / length * 1e6:.1f}"), flush=True)
            previous = wall


if __name__ == "__main__":
    main()
