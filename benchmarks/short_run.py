"""The default short run (the sweep's objective) on the embedded digits: time and FID,
trained vs the same model untrained. Prints a table.

    python benchmarks/short_run.py [--space search_spaces/cascade.yaml] [--steps N] [--fid-samples N]

Targets (issue 4): train + sample + FID within 3 minutes on 2 CPU cores, and a trained
model clearly better than the untrained one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/cascade.yaml", help="take the base spec and budget from this search space")
    parser.add_argument("--steps", type=int, help="override the budget's train_steps")
    parser.add_argument("--fid-samples", type=int, help="override the budget's fid_samples")
    args = parser.parse_args()

    from dicesearch.data import load_dataset
    from dicesearch.data.images import ImageView
    from dicesearch.metrics import image_metrics, reference_stats_from_dataset
    from dicesearch.model import build_model
    from dicesearch.objective import evaluate
    from dicesearch.spec import parse_spec
    from dicesearch.sweep.space.search_space import load_search_space
    from dicesearch.train import SamplingConfig
    from dicesearch.train.sampling import sample_images

    space = load_search_space(args.space)
    spec = parse_spec(space.base)
    data = space.config.data
    updates = {k: v for k, v in {"train_steps": args.steps, "fid_samples": args.fid_samples}.items() if v}
    budget = space.config.budget.model_copy(update=updates)
    n, seed = budget.fid_samples, space.config.seed

    rows = []
    start = time.perf_counter()
    dataset = load_dataset(data)
    reference = reference_stats_from_dataset(ImageView(dataset, data), n, dataset.fingerprint, seed=seed)
    reference_seconds = time.perf_counter() - start

    torch.manual_seed(seed)
    untrained = build_model(spec).eval()
    start = time.perf_counter()
    sampling = SamplingConfig(sampler=budget.sampler, steps=budget.sampling_steps, num_samples=n, seed=seed)
    images = sample_images(untrained, spec, data, sampling)
    untrained_fid = image_metrics(images, reference, n)[f"fid_{n}"]
    rows.append(("untrained (same init)", untrained_fid, 0.0, time.perf_counter() - start))

    start = time.perf_counter()
    evaluation = evaluate(spec, data, budget, seed=seed)
    total = time.perf_counter() - start
    m = evaluation.metrics
    rows.append((f"trained {budget.train_steps} steps", m[f"fid_{n}"], m["train_seconds"], total))

    print(reporting.machine_line("cpu"))
    print(f"spec: {spec.name} ({int(m['params']):,} params), data: {data.kind}, budget: {budget.train_steps} steps x batch "
          f"{budget.batch_size}, {n} samples x {budget.sampling_steps} {budget.sampler} steps")
    print(f"reference statistics of {n} real images (cached after the first run): {reference_seconds:.1f} s\n")
    cells = [[name, f"{fid:.1f}", f"{train_s:.1f}", f"{total_s:.1f}"] for name, fid, train_s, total_s in rows]
    print(reporting.markdown_table(["model", f"fid_{n}", "train s", "total s (train + sample + FID)"], cells))


if __name__ == "__main__":
    main()
