"""What bf16 autocast training does to the scores: full-budget fid_N, fp32 against bf16, seed by seed.

    PYTHONPATH=. python benchmarks/precision_scores.py [--space search_spaces/cascade.yaml] [--seeds 3] [--jobs 2]

Several configurations of the search space (``CONFIGURATIONS``: the default sweep's pick, a
wide one, a small one) are trained at the budget's full steps with seeds seed, seed + 1, ...,
each in fp32 and under bf16 autocast (``budget.precision``), every run a trial process like
a sweep's (one torch thread), ``--jobs`` at a time, all scored against the seed's real images.
The two precisions of one configuration and seed train on the same images, timesteps and
noise and sample from the same noise, so they pair.

Printed per configuration: the fid_N of each seed in both precisions, the mean paired
difference (bf16 - fp32) and the seed-to-seed sd of each precision; then whether every
configuration's mean difference lies inside the seed spread (the sd), which is the
condition for ``precision: auto`` to choose bf16 where it is faster
(``dicesearch.speed.precision``). The machine and its load are printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402

# parameter values of search_spaces/cascade.yaml
CONFIGURATIONS = {
    "pick (adaLN-Zero, 96 ch, 3 blocks, λ 2)": {
        "conditioning.kind": "adaln_zero", "stages[0].channels": 96, "stages[2].depth": 3, "stages[*].block.lambda_init": 2.0,
    },
    "wide (adaLN-Zero, 128 ch, 2 blocks, λ 5.4)": {
        "conditioning.kind": "adaln_zero", "stages[0].channels": 128, "stages[2].depth": 2, "stages[*].block.lambda_init": 5.4,
    },
    "small (TD-LN, 64 ch, 1 block, λ 0.45)": {
        "conditioning.kind": "tdln", "stages[0].channels": 64, "stages[2].depth": 1, "stages[*].block.lambda_init": 0.45,
    },
}  # fmt: skip
PRECISIONS = ("fp32", "bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/cascade.yaml")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one trial process of one thread each)")
    parser.add_argument("--steps", type=int, help="training steps (default: the budget's full steps)")
    parser.add_argument("--only", nargs="+", help="configuration names (prefixes) to run; default: all")
    args = parser.parse_args()

    from dicesearch.sweep.lifecycle.messages import TrialSettings
    from dicesearch.sweep.lifecycle.process import run_trial
    from dicesearch.sweep.space.search_space import load_search_space

    space = load_search_space(args.space)
    config = space.config
    budget = config.budget if args.steps is None else config.budget.model_copy(update={"train_steps": args.steps})
    key = config.metric_keys[0]
    settings = TrialSettings.for_sweep(config.model_copy(update={"fidelity": None, "budget": budget}), "cpu", threads=1)
    seeds = [config.seed + s for s in range(args.seeds)]
    names = [n for n in CONFIGURATIONS if not args.only or any(n.startswith(p) for p in args.only)]
    print(reporting.machine_line("cpu") + " (at the start)")
    print(f"{len(names)} configurations x {len(seeds)} seeds x {len(PRECISIONS)} precisions at {budget.train_steps} steps, {args.jobs} at a time", flush=True)

    jobs = []
    for name in names:
        spec = space.apply(CONFIGURATIONS[name])
        spec_yaml = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
        for seed in seeds:
            for precision in PRECISIONS:
                request = settings.request(spec_yaml, None, count_static=False)
                request = request.model_copy(update={"seed": seed, "reference_seed": config.seed, "budget": budget.model_copy(update={"precision": precision})})
                jobs.append((name, seed, precision, request))

    def run(job):
        name, seed, precision, request = job
        outcome = run_trial(request, lambda step, loss: False).checked([key])
        if outcome.status != "complete":
            raise SystemExit(f"{name} seed {seed} {precision}: {outcome.reason}")
        m = outcome.metrics
        print(f"  {name}, seed {seed}, {precision}: {key} {m[key]:.4g}, train {m['train_seconds']:.0f} s ({m['train_steps_per_second']:.2f} steps/s); {reporting.load_line()}", flush=True)
        return (name, seed, precision), m

    start = time.monotonic()
    with tempfile.TemporaryDirectory():
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = dict(pool.map(run, jobs))
    print(f"\n{len(jobs)} runs in {(time.monotonic() - start) / 60:.1f} min\n")

    rows, inside = [], []
    for name in names:
        fp32 = [results[(name, s, "fp32")][key] for s in seeds]
        bf16 = [results[(name, s, "bf16")][key] for s in seeds]
        diffs = [b - f for f, b in zip(fp32, bf16)]
        sd = statistics.stdev(fp32) if len(seeds) > 1 else float("nan")
        mean_diff = statistics.mean(diffs)
        inside.append(abs(mean_diff) <= sd)
        speed = statistics.mean(results[(name, s, "fp32")]["train_seconds"] / results[(name, s, "bf16")]["train_seconds"] for s in seeds)
        rows.append([
            name, ", ".join(f"{v:.4g}" for v in fp32), ", ".join(f"{v:.4g}" for v in bf16),
            f"{statistics.mean(fp32):.4g} ± {sd:.2g}", f"{statistics.mean(bf16):.4g} ± {statistics.stdev(bf16) if len(seeds) > 1 else float('nan'):.2g}",
            f"{mean_diff:+.3g} ({', '.join(f'{d:+.3g}' for d in diffs)})", f"{speed:.2f}",
        ])  # fmt: skip
    headers = ["configuration", f"fp32 {key} (seeds {', '.join(map(str, seeds))})", f"bf16 {key}", "fp32 mean ± sd", "bf16 mean ± sd", "bf16 - fp32 (per seed)", "bf16 speed (x fp32, training)"]
    print(reporting.markdown_table(headers, rows))
    verdict = "yes" if all(inside) else "no"
    print(f"\nevery configuration's mean difference inside its fp32 seed sd: {verdict}; at the end: {reporting.load_line()}")


if __name__ == "__main__":
    main()
