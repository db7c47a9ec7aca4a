"""Training speed (optimiser steps/s) of the DICE-digits cascade on the embedded digits.

    PYTHONPATH=. python benchmarks/train_speed.py [--spec DICE-digits] [--steps 30] [--batch-sizes 16 32]
                                                  [--threads 1 2] [--precision fp32 bf16] [--kernels eager fast]

Each row is one short run (after a 3-step warm-up run that is not timed): wall-clock time
of ``config.steps`` steps of ``dicesearch.train.train`` (data, forward, multi-scale +
VLB loss, backward, AdamW, EMA; no checkpoints, no progress bar), with PyTorch's own
kernels (``eager``, ``fast_kernels: false``) or dicesearch.speed's (``fast``, the
default). Numbers depend on the machine and on whatever else runs on it; state both when
you report them (the load average is printed). For eager against fast side by side over
alternating rounds, and for sampling and scoring, see ``benchmarks/trial_speed.py``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import torch

from dicesearch.data import DigitsSpec, load_dataset
from dicesearch.spec import load_spec
from dicesearch.train import TrainConfig, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="DICE-digits")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--kernels", nargs="+", default=["eager", "fast"], choices=["eager", "fast"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()

    spec = load_spec(args.spec)
    data = DigitsSpec(resolution=spec.input.resolution)
    dataset = load_dataset(data)
    parameters = sum(p.numel() for p in __import__("dicesearch.model", fromlist=["build_model"]).build_model(spec).parameters())
    print(reporting.machine_line("cpu"))
    print(f"{spec.name} ({parameters:,} parameters) on {data.kind} {spec.input.resolution}px, {args.steps} steps per row\n")
    rows = []
    for batch, threads, precision, kernels in itertools.product(args.batch_sizes, args.threads, args.precision, args.kernels):
        torch.set_num_threads(threads)
        config = TrainConfig(
            steps=args.steps, batch_size=batch, precision=precision, gradient_checkpointing=args.gradient_checkpointing, fast_kernels=kernels == "fast"
        )
        train(spec, data, config.model_copy(update={"steps": 3}), dataset=dataset, device="cpu")  # warm-up
        start = time.perf_counter()
        train(spec, data, config, dataset=dataset, device="cpu")
        seconds = (time.perf_counter() - start) / args.steps
        rows.append([batch, threads, precision, kernels, f"{1 / seconds:.2f}", f"{batch / seconds:.0f}", f"{seconds:.3f}"])
    print(reporting.markdown_table(["batch", "threads", "precision", "kernels", "steps/s", "images/s", "s/step"], rows))
    print(f"\nat the end: {reporting.load_line()}")


if __name__ == "__main__":
    main()
