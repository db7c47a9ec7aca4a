"""The six families at digits scale, side by side: parameters, multiply-adds and training images/s.

    PYTHONPATH=. python benchmarks/digits_presets.py [--presets DICE-digits DiT-digits ...]
        [--batch 64] [--threads 1] [--steps 20] [--rounds 3]

For each preset (default: the six ``*-digits`` presets): parameters, multiply-adds per
forward at batch 1 (``dicesearch profile``'s count) and the ratio to DICE-digits', then
training images/s on the embedded digits at ``--batch`` with ``--threads`` torch threads,
as a trial process trains (``dicesearch.train.train``: data, forward, loss, backward,
AdamW, EMA; dicesearch.speed's kernels, freed memory kept), each measurement in a fresh
spawned process. A measurement times ``--steps`` steps after its first (which pays the
warm-up); the presets take turns for ``--rounds`` rounds, so that they share the
machine's load alike, and the median round is shown with its range. Also shown: the
seconds a ``dicesearch compare`` training run of 600 steps would take at that rate.

Numbers depend on the machine and what else runs on it: state both (the load average
before and after is printed).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

import torch
from rich.console import Console

from dicesearch.train.callbacks import Callback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402

PRESETS = ["DICE-digits", "DiT-digits", "DiMR-digits", "DiffuSSM-digits", "DRWKV-digits", "LiT-digits"]


class _Clock(Callback):
    def __init__(self):
        self.marks: list[float] = []

    def on_step(self, step: int, loss: float) -> None:
        self.marks.append(time.perf_counter())


def _train_once(name: str, batch: int, steps: int, threads: int, results) -> None:
    """In a fresh process: train ``steps + 1`` steps; put the seconds of the last ``steps``."""
    from dicesearch.data import DigitsSpec, load_dataset
    from dicesearch.spec import load_spec
    from dicesearch.speed.allocator import keep_freed_memory
    from dicesearch.train import TrainConfig, train

    keep_freed_memory()
    torch.set_num_threads(threads)
    spec = load_spec(name)
    data = DigitsSpec(resolution=spec.input.resolution)
    config = TrainConfig(steps=steps + 1, batch_size=batch, lr=4e-3, checkpoint_every=10**9, precision="fp32")
    clock = _Clock()
    train(spec, data, config, callbacks=[clock], dataset=load_dataset(data), device="cpu")
    results.put(clock.marks[-1] - clock.marks[0])


def images_per_second(name: str, batch: int, steps: int, threads: int) -> float:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=_train_once, args=(name, batch, steps, threads, results))
    worker.start()
    seconds = results.get()
    worker.join()
    if worker.exitcode:
        raise SystemExit(f"benchmark: training {name} exited with status {worker.exitcode}")
    return batch * steps / seconds


def counts(name: str) -> tuple[int, float]:
    """(parameters, multiply-adds per forward at batch 1)."""
    from dicesearch.analysis.flops import count_flops
    from dicesearch.model import build_model
    from dicesearch.spec import load_spec

    spec = load_spec(name)
    with torch.device("meta"):
        model = build_model(spec)
    side, channels = spec.input.resolution, spec.input.channels
    x, t = torch.zeros(1, channels, side, side, device="meta"), torch.zeros(1, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta") if spec.input.num_classes else None
    return sum(p.numel() for p in model.parameters()), count_flops(lambda: model(x, t, y)).macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    console = Console(width=160)
    sizes = {name: counts(name) for name in args.presets}
    reference = sizes.get("DICE-digits", next(iter(sizes.values())))[1]
    console.print(reporting.machine_line(), highlight=False)
    before = reporting.load_line()
    rates: dict[str, list[float]] = {name: [] for name in args.presets}
    for r in range(args.rounds):
        for name in args.presets:
            rates[name].append(images_per_second(name, args.batch, args.steps, args.threads))
            console.print(f"  round {r + 1}/{args.rounds} {name}: {rates[name][-1]:.0f} images/s", highlight=False)
    console.print(f"digits presets: training at batch {args.batch}, {args.threads} thread(s), {args.steps} timed steps x {args.rounds} rounds", highlight=False)
    rows = []
    for name in args.presets:
        params, macs = sizes[name]
        median = statistics.median(rates[name])
        rows.append((
            name, f"{params:,}", f"{macs / 1e6:.2f}", f"{macs / reference:.2f}", f"{median:.0f}",
            f"{min(rates[name]):.0f}-{max(rates[name]):.0f}", f"{600 * args.batch / median:.0f}",
        ))  # fmt: skip
    headers = ("preset", "parameters", "M multiply-adds", "x DICE-digits", "images/s (median)", "range", "s per 600 steps")
    console.print(reporting.markdown_table(headers, rows), highlight=False)
    console.print(f"before: {before}; after: {reporting.load_line()}", highlight=False)


if __name__ == "__main__":
    main()
